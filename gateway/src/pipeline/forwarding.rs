//! Proxy header hygiene: hop-by-hop headers removed in both directions, `X-Forwarded-*`
//! and `Via` added, `X-Forwarded-Client-Cert` set by the gateway alone, and the `Host`
//! the upstream sees.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::hop_by_hop;

/// Only the gateway sets it, from the verified client certificate.
static CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// [`hop_by_hop::remove`] for a client's request, which also loses any
/// `X-Forwarded-Client-Cert`: in the same pass over the names, so a request that carries
/// neither costs no more than before.
pub(super) fn clean_client_request(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|k| hop_by_hop::is_hop_by_hop(k) || *k == CLIENT_CERT)
    {
        return;
    }
    headers.remove(&CLIENT_CERT);
    hop_by_hop::strip(headers);
}

/// Appends the client's address to `X-Forwarded-For`, and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` to what this gateway saw (it is the edge, so it overwrites them).
pub(super) fn add_forwarded(
    headers: &mut HeaderMap,
    client_ip: &HeaderValue,
    scheme: &'static str,
    host: Option<&HeaderValue>,
) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

    let xff = match headers.get(&XFF).map(HeaderValue::as_bytes) {
        Some(prior) if !prior.trim_ascii().is_empty() => {
            let mut joined = Vec::with_capacity(prior.len() + 2 + client_ip.len());
            joined.extend_from_slice(prior);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| client_ip.clone())
        }
        _ => client_ip.clone(),
    };
    headers.insert(&XFF, xff);
    headers.insert(&XFP, HeaderValue::from_static(scheme));
    match host {
        Some(h) => {
            headers.insert(&XFH, h.clone());
        }
        None => {
            headers.remove(&XFH);
        }
    }
}

/// Sets `X-Forwarded-Client-Cert` to the verified client certificate (after
/// [`clean_client_request`] removed the client's own).
pub(super) fn set_client_cert(headers: &mut HeaderMap, client_cert: &HeaderValue) {
    headers.insert(&CLIENT_CERT, client_cert.clone());
}

/// Appends this gateway's entry to `Via`.
pub(super) fn append_via(headers: &mut HeaderMap, via: &HeaderValue) {
    headers.append(header::VIA, via.clone());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_cert_header_is_the_gateways_alone() {
        let mut h = HeaderMap::new();
        let forged = HeaderValue::from_static("Hash=forged");
        h.append("x-forwarded-client-cert", forged.clone());
        h.append("x-forwarded-client-cert", forged.clone());
        h.insert("x-keep", HeaderValue::from_static("yes"));
        clean_client_request(&mut h);
        assert!(!h.contains_key("x-forwarded-client-cert"));
        assert!(h.contains_key("x-keep"));
        h.append("x-forwarded-client-cert", forged);
        set_client_cert(&mut h, &HeaderValue::from_static("Hash=real"));
        let values: Vec<_> = h.get_all("x-forwarded-client-cert").iter().collect();
        assert_eq!(values, [HeaderValue::from_static("Hash=real")]);
    }

    #[test]
    fn a_client_request_loses_hop_by_hop_headers_too() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        let forged = HeaderValue::from_static("Hash=forged");
        h.insert("x-forwarded-client-cert", forged);
        clean_client_request(&mut h);
        assert!(h.is_empty(), "{h:?}");
    }

    #[test]
    fn appends_to_x_forwarded_for() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        add_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "http", None);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
    }
}
