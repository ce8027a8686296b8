//! Proxy header hygiene: hop-by-hop headers removed in both directions, `X-Forwarded-*`
//! and `Via` added, `X-Forwarded-Client-Cert` set by the gateway alone, and the `Host`
//! the upstream sees.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
];

/// Only the gateway sets it, from the verified client certificate.
static CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Removes hop-by-hop headers: the fixed list, every header `Connection` names, every
/// `Proxy-*` header, and `TE` unless it is exactly `trailers` (which gRPC needs).
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (cheap comparisons for standard
    // headers) avoids a hashed lookup per hop-by-hop name.
    if headers.keys().any(is_hop_by_hop) {
        strip_hop_by_hop(headers);
    }
}

/// [`remove_hop_by_hop`] for a client's request, which also loses any
/// `X-Forwarded-Client-Cert`: in the same pass over the names, so a request that carries
/// neither costs no more than before.
pub(super) fn clean_client_request(headers: &mut HeaderMap) {
    if !headers
        .keys()
        .any(|k| is_hop_by_hop(k) || *k == CLIENT_CERT)
    {
        return;
    }
    headers.remove(&CLIENT_CERT);
    strip_hop_by_hop(headers);
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers listed in Connection go first, while Connection is still there.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(te) = headers.get(header::TE)
        && te.as_bytes() != b"trailers"
    {
        headers.remove(header::TE);
    }
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let proxy: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in proxy {
            headers.remove(name);
        }
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::TE || name.as_str().starts_with("proxy-")
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
    fn strips_hop_by_hop_and_what_connection_names() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-keep", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        remove_hop_by_hop(&mut h);
        assert!(h.contains_key(header::TE));
    }

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
