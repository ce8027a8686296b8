//! Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, so the gateway
//! removes them from what it relays in both directions, and plugins cannot set them.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// How many names [`HOP_BY_HOP`] has.
const FIXED: usize = 5;

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; FIXED] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TRAILER,
];

/// Whether a `Connection` header of `headers` lists `token` (case-insensitive).
pub(crate) fn connection_lists(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers: the fixed list, every header `Connection` names, every
/// `Proxy-*` header, and `TE` unless it is exactly `trailers` (which gRPC needs).
pub fn remove(headers: &mut HeaderMap) {
    // Most messages carry none: one pass over the names (cheap comparisons for standard
    // headers) avoids a hashed lookup per hop-by-hop name.
    if headers.keys().any(is_hop_by_hop) {
        strip(headers);
    }
}

/// Removes them unconditionally (see [`remove`]). One pass over the names finds which
/// of the fixed ones are there, so a message that carries only `Connection:
/// keep-alive` (every browser's HTTP/1.1 request) costs one lookup per name it has, not
/// one per name on the list (`cargo bench -p weir-tests --bench hot_path`).
pub(crate) fn strip(headers: &mut HeaderMap) {
    // Headers listed in Connection go first, with Connection itself.
    remove_connection_options(headers);
    let mut present = [false; FIXED];
    let (mut te, mut proxy) = (false, false);
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|hop| hop == name) {
            present[i] = true;
        } else if name == header::TE {
            te = true;
        } else if name.as_str().starts_with("proxy-") {
            proxy = true;
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if te
        && headers
            .get(header::TE)
            .is_some_and(|te| te.as_bytes() != b"trailers")
    {
        headers.remove(header::TE);
    }
    if proxy {
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

/// Removes `Connection` and every header its values name. The names are looked up as
/// they are written (`HeaderMap` lower-cases them on the stack), so a common option
/// such as `keep-alive` or `close` costs no allocation.
fn remove_connection_options(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::CONNECTION).iter();
    let several = values.next().is_some() && values.next().is_some();
    if several {
        let values: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        headers.remove(header::CONNECTION);
        for value in &values {
            remove_named(headers, value);
        }
    } else if let Some(value) = headers.remove(header::CONNECTION) {
        remove_named(headers, &value);
    }
}

/// Removes the headers one `Connection` value names. An option that names a header of
/// the fixed list (`keep-alive`, in nearly every HTTP/1.1 response from an upstream
/// such as nginx) is left to [`strip`]'s pass over the names, which removes those
/// anyway, instead of costing a hashed removal here.
fn remove_named(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(options) = connection.to_str() else {
        return;
    };
    for option in options.split(',').map(str::trim) {
        if option.is_empty()
            || HOP_BY_HOP
                .iter()
                .any(|hop| option.eq_ignore_ascii_case(hop.as_str()))
        {
            continue;
        }
        headers.remove(option);
    }
}

/// Whether a header of this name is hop-by-hop (`TE` counts, whatever its value).
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name == header::TE || name.as_str().starts_with("proxy-")
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
        remove(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    /// Options naming the fixed list are left to the pass over the names: the headers
    /// still go, and so does one named by another option (`close` names a header too).
    #[test]
    fn options_naming_the_fixed_list_still_remove_their_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, UPGRADE, close, te"),
        );
        for name in ["keep-alive", "upgrade", "close", "x-kept"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip(&mut h);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    #[test]
    fn keeps_te_trailers() {
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        remove(&mut h);
        assert!(h.contains_key(header::TE));
    }

    #[test]
    fn every_connection_value_is_read_whatever_its_case() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        h.append(
            header::CONNECTION,
            HeaderValue::from_static(" X-One ,, x-two"),
        );
        for name in ["keep-alive", "x-one", "x-two", "x-kept"] {
            h.insert(name, HeaderValue::from_static("1"));
        }
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        strip(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["te", "x-kept"], "{h:?}");

        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, not a name"),
        );
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip(&mut h);
        assert_eq!(
            h.keys().map(HeaderName::as_str).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }
}
