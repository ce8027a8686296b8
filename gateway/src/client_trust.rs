//! Which clients may speak for others: proxies in `[server] trusted_proxies` may tell the
//! gateway who the real client is (`X-Forwarded-For`) and how it arrived; every other
//! client's forwarding headers, and the headers in `strip_client_headers`, are dropped
//! so that no client can pose as another address, consumer or request.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// `[server] trusted_proxies` and `strip_client_headers`, ready for the request path.
#[derive(Debug, Default)]
pub struct ClientTrust {
    trusted: Box<[IpNet]>,
    stripped: Box<[HeaderName]>,
}

impl ClientTrust {
    /// Trusts `proxies`; strips `stripped` from everyone else's requests.
    pub fn new(proxies: &[IpNet], stripped: &[HeaderName]) -> ClientTrust {
        ClientTrust {
            trusted: proxies.into(),
            stripped: stripped.into(),
        }
    }

    /// Whether `peer` is a trusted proxy (an IPv4 peer on a dual-stack socket counts as
    /// its IPv4 address).
    #[inline]
    pub fn trusts(&self, peer: IpAddr) -> bool {
        !self.trusted.is_empty() && {
            let peer = peer.to_canonical();
            self.trusted.iter().any(|net| net.contains(&peer))
        }
    }

    /// Whether a client that is not a trusted proxy may not send `name`: forwarding
    /// headers (`X-Forwarded-*`, `Forwarded`, `X-Real-IP`) and `strip_client_headers`.
    #[inline]
    pub fn refuses(&self, name: &HeaderName) -> bool {
        is_forwarding(name) || self.stripped.contains(name)
    }

    /// The client's address: the peer's own, or for a trusted proxy the nearest address
    /// in `X-Forwarded-For` (read from the right, over every such header) that is not a
    /// trusted proxy's. An entry that is not an address ends the walk at the last
    /// address read (as nginx's `real_ip_recursive` does).
    pub fn client_address(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        let values: Vec<&[u8]> = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .map(http::HeaderValue::as_bytes)
            .collect();
        for value in values.iter().rev() {
            for entry in value.rsplit(|&b| b == b',') {
                let Some(address) = std::str::from_utf8(entry)
                    .ok()
                    .and_then(|e| e.trim().parse::<IpAddr>().ok())
                else {
                    return client;
                };
                client = address;
                if !self.trusts(address) {
                    return address;
                }
            }
        }
        client
    }
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// `X-Forwarded-*`, `Forwarded` (RFC 7239) and `X-Real-IP`.
fn is_forwarding(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("x-forwarded-") || name == "forwarded" || name == "x-real-ip"
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn trust(nets: &[&str]) -> ClientTrust {
        let nets: Vec<IpNet> = nets.iter().map(|n| n.parse().unwrap()).collect();
        ClientTrust::new(&nets, &[HeaderName::from_static("x-consumer")])
    }

    fn xff(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_static(v));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn only_a_trusted_peer_names_the_client() {
        let t = trust(&["10.0.0.0/8"]);
        let headers = xff(&["203.0.113.9"]);
        assert_eq!(
            t.client_address(ip("198.51.100.1"), &headers),
            ip("198.51.100.1")
        );
        assert_eq!(
            t.client_address(ip("10.1.2.3"), &headers),
            ip("203.0.113.9")
        );
        // Nobody trusted: always the peer.
        assert_eq!(
            trust(&[]).client_address(ip("10.1.2.3"), &headers),
            ip("10.1.2.3")
        );
    }

    #[test]
    fn the_walk_skips_trusted_hops_from_the_right_across_headers() {
        let t = trust(&["10.0.0.0/8", "192.0.2.7/32"]);
        // The client forged the leftmost entry; the first untrusted from the right wins.
        let headers = xff(&["1.1.1.1, 203.0.113.9", "10.0.0.5, 192.0.2.7"]);
        assert_eq!(
            t.client_address(ip("10.0.0.1"), &headers),
            ip("203.0.113.9")
        );
        // All trusted: the leftmost address read.
        let headers = xff(&["10.0.0.9, 10.0.0.5"]);
        assert_eq!(t.client_address(ip("10.0.0.1"), &headers), ip("10.0.0.9"));
        // Garbage stops the walk at the last address read.
        let headers = xff(&["203.0.113.9, garbage, 10.0.0.5"]);
        assert_eq!(t.client_address(ip("10.0.0.1"), &headers), ip("10.0.0.5"));
        // No header: the proxy itself.
        assert_eq!(
            t.client_address(ip("10.0.0.1"), &HeaderMap::new()),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn an_ipv4_peer_on_a_dual_stack_socket_is_trusted_as_ipv4() {
        let t = trust(&["10.0.0.0/8"]);
        assert!(t.trusts(ip("::ffff:10.0.0.1")));
        assert!(!t.trusts(ip("::ffff:11.0.0.1")));
    }

    #[test]
    fn forwarding_and_listed_headers_are_refused_from_untrusted_clients() {
        let t = trust(&[]);
        for name in [
            "x-forwarded-for",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "forwarded",
            "x-real-ip",
            "x-consumer",
        ] {
            assert!(t.refuses(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["x-forwarded", "x-request-id", "accept", "x-forwardedfor"] {
            assert!(!t.refuses(&HeaderName::from_static(name)), "{name}");
        }
    }
}
