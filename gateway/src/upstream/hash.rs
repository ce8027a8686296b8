//! Hashing for `consistent_hash`: the key a request is placed by (a header, a cookie or
//! the client's IP), and the 64-bit hash of it and of ring points.
//!
//! The hash is FNV-1a followed by a 64-bit avalanche finaliser: cheap on short keys,
//! well spread, and stable across runs and builds (unlike `std`'s `DefaultHasher`), so
//! every gateway replica places a key on the same endpoint.

use std::net::IpAddr;

use http::{HeaderMap, header};

use crate::config::HashOn;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// An incremental hash: feed bytes, then [`Hasher64::finish`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hasher64(u64);

impl Hasher64 {
    pub(crate) fn new() -> Hasher64 {
        Hasher64(FNV_OFFSET)
    }

    pub(crate) fn write(mut self, bytes: &[u8]) -> Hasher64 {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        self
    }

    /// The hash, with every input bit spread over every output bit.
    pub(crate) fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The hash of `bytes`.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    Hasher64::new().write(bytes).finish()
}

/// The hash of the request's key under `hash_on`, or `None` when the request has no such
/// key (the balancer then picks at random, as Envoy does).
pub(crate) fn request_key(hash_on: &HashOn, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
    match hash_on {
        HashOn::Header(name) => headers.get(name).map(|v| hash(v.as_bytes())),
        HashOn::Cookie(name) => cookie(headers, name).map(hash),
        HashOn::Ip => Some(match client {
            IpAddr::V4(ip) => hash(&ip.octets()),
            IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
                Some(v4) => hash(&v4.octets()),
                None => hash(&ip.octets()),
            },
        }),
    }
}

/// The value of cookie `name` in the request's `Cookie` headers (the first, if several).
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (key, value) = pair.split_at(pair.iter().position(|&b| b == b'=')?);
            (key.trim_ascii() == name.as_bytes()).then(|| value[1..].trim_ascii())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn cookies_are_found_among_several_headers_and_pairs() {
        let mut headers = HeaderMap::new();
        headers.append(header::COOKIE, HeaderValue::from_static("a=1; session=xyz"));
        headers.append(header::COOKIE, HeaderValue::from_static("other=2"));
        assert_eq!(cookie(&headers, "session"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&headers, "other"), Some(&b"2"[..]));
        assert_eq!(cookie(&headers, "sess"), None);
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn keys_come_from_the_configured_place() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", HeaderValue::from_static("alice"));
        headers.insert(header::COOKIE, HeaderValue::from_static("u=alice"));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let by_header = HashOn::Header(http::HeaderName::from_static("x-user"));
        assert_eq!(request_key(&by_header, &headers, ip), Some(hash(b"alice")));
        let by_cookie = HashOn::Cookie("u".into());
        assert_eq!(request_key(&by_cookie, &headers, ip), Some(hash(b"alice")));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            request_key(&HashOn::Ip, &headers, ip),
            request_key(&HashOn::Ip, &headers, mapped),
            "an IPv4-mapped address is the same client"
        );
        let none = HashOn::Header(http::HeaderName::from_static("x-missing"));
        assert_eq!(request_key(&none, &headers, ip), None);
    }

    #[test]
    fn the_hash_is_stable_and_spread() {
        // Fixed forever: replicas and restarts must agree on where a key goes.
        assert_eq!(hash(b"alice"), hash(b"alice"));
        assert_ne!(hash(b"alice"), hash(b"alicf"));
        // Sequential keys land evenly in 16 buckets.
        let mut buckets = [0u32; 16];
        for i in 0..16_000u32 {
            buckets[(hash(&i.to_le_bytes()) >> 60) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
