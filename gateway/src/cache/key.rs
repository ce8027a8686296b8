//! Cache keys: `ROUTE:HOST/PATH?QUERY`, then ` NAME=VALUE` for each of the route's
//! `vary` headers. The URL part is what purging by key matches (every variant of it).

use std::fmt::Write as _;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};

/// A request's cache key.
#[derive(Debug, Clone)]
pub struct CacheKey {
    text: Arc<str>,
    url_len: usize,
}

impl CacheKey {
    /// The key of a request on `route` for `host` (lower-cased here) and
    /// `path_and_query`, with the values of the `vary` headers in `headers`.
    pub fn new(
        route: &str,
        host: Option<&[u8]>,
        path_and_query: &str,
        vary: &[HeaderName],
        headers: &HeaderMap,
    ) -> CacheKey {
        let host = host.unwrap_or_default();
        let mut text = String::with_capacity(route.len() + host.len() + path_and_query.len() + 1);
        text.push_str(route);
        text.push(':');
        text.extend(host.iter().map(|b| char::from(b.to_ascii_lowercase())));
        text.push_str(path_and_query);
        let url_len = text.len();
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
            &vary,
            &headers,
        );
        assert_ne!(key.as_str(), other.as_str());
        let bare = CacheKey::new("users", None, "/", &[], &headers);
        assert_eq!(bare.as_str(), "users:/");
    }
}
