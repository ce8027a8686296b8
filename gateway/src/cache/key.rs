//! Cache keys: `ROUTE:HOST/PATH?QUERY`, then ` +LEN:PART` for each part the route's
//! plugins appended, then ` NAME=VALUE` for each of the route's `vary` headers. The URL
//! part is what purging by key matches (every variant of it).
//!
//! A plugin part is length-prefixed, so no part, and no client-sent `vary` value after
//! the parts, can pass for another split: the URL holds no space, a part ends where its
//! length says, and a `vary` name never holds `:`.

use std::fmt::Write as _;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

/// The most bytes of parts the plugins may append to one request's key (as given,
/// before escaping): keys are held in memory with every entry.
pub const MAX_KEY_PARTS: usize = 1024;

/// What a request's plugins appended to its cache key, held as the key writes it. Empty
/// (and not allocated) until a plugin appends.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyParts {
    /// The parts as they join the key: ` +LEN:ESCAPED` each.
    text: String,
    /// The bytes appended, as given.
    given: usize,
}

/// Appending would take a request's key parts past [`MAX_KEY_PARTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the cache key parts of a request are limited to {MAX_KEY_PARTS} bytes")]
pub struct KeyPartsFull;

impl KeyParts {
    /// Appends `part` (control characters, quotes and backslashes escaped, so the key
    /// stays printable).
    pub fn push(&mut self, part: &str) -> Result<(), KeyPartsFull> {
        let given = self.given + part.len();
        if given > MAX_KEY_PARTS {
            return Err(KeyPartsFull);
        }
        let escaped: String = part.escape_debug().collect();
        let _ = write!(self.text, " +{}:{escaped}", escaped.len());
        self.given = given;
        Ok(())
    }

    /// Whether nothing was appended.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// A mark to [`KeyParts::undo`] back to.
    pub fn mark(&self) -> (usize, usize) {
        (self.text.len(), self.given)
    }

    /// Drops what was appended since `mark` (a failed plugin call's parts).
    pub fn undo(&mut self, mark: (usize, usize)) {
        self.text.truncate(mark.0);
        self.given = mark.1;
    }

    /// The parts as the key holds them.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// A request's cache key.
#[derive(Debug, Clone)]
pub struct CacheKey {
    text: Arc<str>,
    url_len: usize,
}

impl CacheKey {
    /// The key of a request on `route` for `host` (lower-cased here) and
    /// `path_and_query`, with the parts its plugins appended and the values of the
    /// `vary` headers in `headers`.
    pub fn new(
        route: &str,
        host: Option<&[u8]>,
        path_and_query: &str,
        parts: Option<&KeyParts>,
        vary: &[HeaderName],
        headers: &HeaderMap,
    ) -> CacheKey {
        let host = host.unwrap_or_default();
        let parts = parts.map_or("", KeyParts::as_str);
        let mut text = String::with_capacity(
            route.len() + host.len() + path_and_query.len() + parts.len() + 1,
        );
        text.push_str(route);
        text.push(':');
        text.extend(host.iter().map(|b| char::from(b.to_ascii_lowercase())));
        text.push_str(path_and_query);
        let url_len = text.len();
        text.push_str(parts);
        for name in vary {
            let _ = write!(text, " {name}=");
            for (i, value) in headers.get_all(name).iter().enumerate() {
                if i > 0 {
                    text.push_str(", ");
                }
                // Header values are visible ASCII or opaque bytes: the latter escaped,
                // so two different values never make one key.
                text.extend(value.as_bytes().escape_ascii().map(char::from));
            }
        }
        CacheKey {
            text: Arc::from(text),
            url_len,
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The key, shared.
    pub fn shared(&self) -> Arc<str> {
        self.text.clone()
    }

    /// The length of its URL part.
    pub fn url_len(&self) -> usize {
        self.url_len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn a_key_names_the_route_host_url_and_vary_values() {
        let mut headers = HeaderMap::new();
        headers.insert("accept-language", HeaderValue::from_static("fr"));
        let vary = [
            HeaderName::from_static("accept-language"),
            HeaderName::from_static("x-tenant"),
        ];
        let key = CacheKey::new(
            "users",
            Some(b"API.Example.com"),
            "/users/1?x=2",
            None,
            &vary,
            &headers,
        );
        assert_eq!(
            key.as_str(),
            "users:api.example.com/users/1?x=2 accept-language=fr x-tenant="
        );
        assert_eq!(
            &key.as_str()[..key.url_len()],
            "users:api.example.com/users/1?x=2"
        );
        headers.insert("accept-language", HeaderValue::from_static("de"));
        let other = CacheKey::new(
            "users",
            Some(b"api.example.com"),
            "/users/1?x=2",
            None,
            &vary,
            &headers,
        );
        assert_ne!(key.as_str(), other.as_str());
        let bare = CacheKey::new("users", None, "/", None, &[], &headers);
        assert_eq!(bare.as_str(), "users:/");
    }

    #[test]
    fn plugin_parts_split_keys_and_cannot_pass_for_others() {
        let headers = HeaderMap::new();
        let key = |parts: &[&str], vary: &[HeaderName], headers: &HeaderMap| {
            let mut kept = KeyParts::default();
            for part in parts {
                kept.push(part).unwrap();
            }
            CacheKey::new("r", None, "/a", Some(&kept), vary, headers)
        };
        let acme = key(&["acme"], &[], &headers);
        assert_eq!(acme.as_str(), "r:/a +4:acme");
        assert_eq!(&acme.as_str()[..acme.url_len()], "r:/a", "purging by URL");
        assert_ne!(acme.as_str(), key(&["other"], &[], &headers).as_str());
        assert_eq!(key(&[], &[], &headers).as_str(), "r:/a");
        // Two parts are not one part holding both, nor the same parts swapped.
        assert_ne!(
            key(&["a", "b"], &[], &headers).as_str(),
            key(&["a +1:b"], &[], &headers).as_str()
        );
        assert_ne!(
            key(&["a", "b"], &[], &headers).as_str(),
            key(&["b", "a"], &[], &headers).as_str()
        );
        // A client's vary value cannot forge a part: parts come before the vary values.
        let vary = [HeaderName::from_static("x-v")];
        let mut forged = HeaderMap::new();
        forged.insert("x-v", http::HeaderValue::from_static("1 +4:acme"));
        let mut plain = HeaderMap::new();
        plain.insert("x-v", http::HeaderValue::from_static("1"));
        assert_ne!(
            key(&[], &vary, &forged).as_str(),
            key(&["acme"], &vary, &plain).as_str()
        );
        // Control characters are escaped, and the length counts the escaped text.
        assert_eq!(key(&["a\nb"], &[], &headers).as_str(), "r:/a +4:a\\nb");
        assert_eq!(key(&["a\nb"], &[], &headers).as_str().len(), 12);
    }

    #[test]
    fn key_parts_are_bounded_and_undone() {
        let mut parts = KeyParts::default();
        parts.push(&"x".repeat(MAX_KEY_PARTS - 1)).unwrap();
        let mark = parts.mark();
        assert_eq!(parts.push("ab"), Err(KeyPartsFull));
        parts.push("y").unwrap();
        assert_eq!(parts.push("z"), Err(KeyPartsFull));
        parts.undo(mark);
        assert_eq!(parts.mark(), mark);
        parts.push("q").unwrap();
        assert!(parts.as_str().ends_with(" +1:q"));
        let mut empty = KeyParts::default();
        empty.undo(empty.mark());
        assert!(empty.is_empty());
    }
}
