//! Proxy header hygiene: hop-by-hop headers removed in both directions, `X-Forwarded-*`
//! and `Via` added (a trusted proxy's kept, anyone else's replaced, see
//! [`ClientTrust`]), `X-Forwarded-Client-Cert` set by the gateway alone.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::client_trust::ClientTrust;
use crate::hop_by_hop;

/// What a request's head gets on its way upstream besides the plugins' edits: the
/// facts of the connection it came on. See [`upstream_request`].
#[derive(Debug, Clone, Copy)]
pub struct Hygiene<'a> {
    /// The client's trust rules, when the peer is not a trusted proxy (its forwarding
    /// and identity headers are then removed or replaced).
    pub untrusted: Option<&'a ClientTrust>,
    /// The peer's address, appended to `X-Forwarded-For`.
    pub peer_ip: &'a HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// The host the client asked for, for `X-Forwarded-Host`.
    pub host: Option<&'a HeaderValue>,
    /// This gateway's `Via` entry for the client's HTTP version.
    pub via: &'a HeaderValue,
    /// The verified client certificate, for `X-Forwarded-Client-Cert`.
    pub client_cert: Option<&'a HeaderValue>,
}

/// Converts a client's request head into the one that goes upstream: hop-by-hop and
/// refused headers removed, `X-Forwarded-*` and `Via` added, the client certificate
/// set. Public for the hot-path benchmark (`cargo bench -p weir-tests --bench
/// hot_path`).
pub fn upstream_request(headers: &mut HeaderMap, hygiene: &Hygiene<'_>) {
    clean_client_request(headers, hygiene.untrusted);
    add_forwarded(headers, hygiene.peer_ip, hygiene.scheme, hygiene.host);
    append_via(headers, hygiene.via);
    if let Some(client_cert) = hygiene.client_cert {
        set_client_cert(headers, client_cert);
    }
}

/// Converts an upstream's response head into the one the client gets: hop-by-hop
/// headers removed and this gateway's `Via` appended.
pub fn client_response(headers: &mut HeaderMap, via: &HeaderValue) {
    hop_by_hop::remove(headers);
    append_via(headers, via);
}

/// Only the gateway sets it, from the verified client certificate.
static CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// [`hop_by_hop::remove`] for a client's request, which also loses any
/// `X-Forwarded-Client-Cert` and, from a client that is not a trusted proxy
/// (`untrusted`), what [`ClientTrust::refuses`]: in the same pass over the names, so a
/// request that carries none of them costs no more than before.
fn clean_client_request(headers: &mut HeaderMap, untrusted: Option<&ClientTrust>) {
    let refused = |k: &HeaderName| untrusted.is_some_and(|t| t.refuses(k));
    if !headers
        .keys()
        .any(|k| hop_by_hop::is_hop_by_hop(k) || *k == CLIENT_CERT || refused(k))
    {
        return;
    }
    headers.remove(&CLIENT_CERT);
    if untrusted.is_some() {
        let names: Vec<HeaderName> = headers.keys().filter(|k| refused(k)).cloned().collect();
        for name in names {
            headers.remove(&name);
        }
    }
    hop_by_hop::strip(headers);
}

/// Adds the peer's address to `X-Forwarded-For` and sets `X-Forwarded-Proto` and
/// `X-Forwarded-Host` to what this gateway saw. A trusted proxy's own values are kept
/// (its `X-Forwarded-For` chain is appended to, its scheme and host stand); anyone
/// else's were removed by [`clean_client_request`], so theirs are replaced.
fn add_forwarded(
    headers: &mut HeaderMap,
    peer_ip: &HeaderValue,
    scheme: &'static str,
    host: Option<&HeaderValue>,
) {
    static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
    static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");
    static XFH: HeaderName = HeaderName::from_static("x-forwarded-host");

    let mut prior = headers
        .get_all(&XFF)
        .iter()
        .map(HeaderValue::as_bytes)
        .filter(|v| !v.trim_ascii().is_empty())
        .peekable();
    let xff = match prior.peek() {
        None => peer_ip.clone(),
        Some(_) => {
            let mut joined = Vec::with_capacity(64);
            for value in prior {
                joined.extend_from_slice(value);
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(peer_ip.as_bytes());
            HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer_ip.clone())
        }
    };
    headers.insert(&XFF, xff);
    if !headers.contains_key(&XFP) {
        headers.insert(&XFP, HeaderValue::from_static(scheme));
    }
    if let (Some(h), false) = (host, headers.contains_key(&XFH)) {
        headers.insert(&XFH, h.clone());
    }
}

/// Sets `X-Forwarded-Client-Cert` to the verified client certificate (after
/// [`clean_client_request`] removed the client's own).
fn set_client_cert(headers: &mut HeaderMap, client_cert: &HeaderValue) {
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
        clean_client_request(&mut h, None);
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
        clean_client_request(&mut h, None);
        assert!(h.is_empty(), "{h:?}");
    }

    /// Every header a client must not control, as a client sends them.
    fn forged() -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "2.2.2.2"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-port", "443"),
            ("forwarded", "for=1.1.1.1"),
            ("x-real-ip", "1.1.1.1"),
            ("x-consumer", "admin"),
            ("x-request-id", "forged-id"),
            ("x-forwarded-client-cert", "Hash=forged"),
            ("x-kept", "yes"),
        ] {
            h.append(name, HeaderValue::from_static(value));
        }
        h
    }

    fn forward(h: &mut HeaderMap, untrusted: Option<&ClientTrust>) {
        clean_client_request(h, untrusted);
        let host = HeaderValue::from_static("shop.example");
        add_forwarded(
            h,
            &HeaderValue::from_static("192.0.2.7"),
            "http",
            Some(&host),
        );
    }

    #[test]
    fn an_untrusted_clients_forwarding_and_identity_headers_are_replaced_or_removed() {
        let trust = ClientTrust::new(
            &[],
            &[
                HeaderName::from_static("x-consumer"),
                HeaderName::from_static("x-request-id"),
            ],
        );
        let mut h = forged();
        forward(&mut h, Some(&trust));
        let one = |name: &str| {
            let values: Vec<_> = h.get_all(name).iter().collect();
            assert_eq!(values.len(), 1, "{name}: {values:?}");
            values[0].to_str().unwrap().to_owned()
        };
        assert_eq!(one("x-forwarded-for"), "192.0.2.7");
        assert_eq!(one("x-forwarded-proto"), "http");
        assert_eq!(one("x-forwarded-host"), "shop.example");
        for gone in [
            "x-forwarded-port",
            "forwarded",
            "x-real-ip",
            "x-consumer",
            "x-request-id",
            "x-forwarded-client-cert",
        ] {
            assert!(!h.contains_key(gone), "{gone}: {h:?}");
        }
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn a_trusted_proxys_headers_are_kept_and_appended_to() {
        let mut h = forged();
        forward(&mut h, None);
        assert_eq!(h["x-forwarded-for"], "1.1.1.1, 2.2.2.2, 192.0.2.7");
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        for kept in [
            "x-forwarded-port",
            "forwarded",
            "x-real-ip",
            "x-consumer",
            "x-request-id",
        ] {
            assert!(h.contains_key(kept), "{kept}: {h:?}");
        }
        // The client certificate header is the gateway's alone, whoever sends it.
        assert!(!h.contains_key("x-forwarded-client-cert"));
    }
}
