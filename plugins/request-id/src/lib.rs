//! `request-id`: every request gets an id, on its way upstream and on its response.
//!
//! An incoming id in the configured header (default `x-request-id`) is kept when it is
//! valid: 1 to 200 visible ASCII characters, none of `"`, `,`, `;` or `\`. Otherwise
//! (absent, empty, too long, odd characters, or several values) the plugin generates a
//! UUID v7 (time-ordered, so ids sort by arrival) and sets it, replacing what came in.
//! The response carries the same id in the same header, queued from the request phase
//! so the plugin costs one call per request.
//!
//! ```toml
//! plugins = [{ name = "request-id", config = { header = "x-correlation-id" } }]
//! ```

use serde::Deserialize;
use weir_plugin_sdk::{Action, Phase, Plugin, Request, is_header_name};

/// The longest incoming id that is kept.
const MAX_ID_LEN: usize = 200;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The header that carries the id.
    header: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: "x-request-id".to_owned(),
        }
    }
}

/// The plugin: the header name, lower-cased.
#[derive(Debug)]
pub struct RequestId {
    header: String,
}

/// Whether an incoming id is kept as it is.
pub fn is_valid_id(id: &[u8]) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|&b| b.is_ascii_graphic() && !b"\",;\\".contains(&b))
}

/// A new id: a UUID v7 in its hyphenated lower-case form.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().hyphenated().to_string()
}

impl Plugin for RequestId {
    type Config = Config;
    const PHASES: &'static [Phase] = &[Phase::RequestHeaders];

    fn new(config: Config) -> Result<Self, String> {
        if !is_header_name(&config.header) {
            return Err(format!(
                "`header`: {:?} is not a valid HTTP header name",
                config.header
            ));
        }
        Ok(RequestId {
            header: config.header.to_ascii_lowercase(),
        })
    }

    fn on_request_headers(&self, request: &mut Request<'_>) -> Action {
        let incoming = request.headers.get_all(&self.header);
        let id = match incoming.as_slice() {
            [one] if is_valid_id(one) => one.clone(),
            _ => {
                let id = new_id().into_bytes();
                request.headers.set(&self.header, &id);
                id
            }
        };
        request.response_headers.set(&self.header, id);
        Action::Continue
    }
}

weir_plugin_sdk::export_plugin!(RequestId);

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(header: &str) -> RequestId {
        RequestId::new(Config {
            header: header.to_owned(),
        })
        .unwrap()
    }

    fn is_uuid_v7(id: &str) -> bool {
        uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)
    }

    #[test]
    fn generates_a_uuid_v7_when_absent() {
        let mut request = Request::new("GET", "/");
        plugin("x-request-id").on_request_headers(&mut request);
        let id = request.headers.get_str("x-request-id").unwrap();
        assert!(is_uuid_v7(&id), "{id}");
        assert_eq!(
            request.edits().response_set,
            [("x-request-id".to_owned(), id.into_bytes())],
            "the response gets the same id"
        );
    }

    #[test]
    fn keeps_a_valid_incoming_id() {
        let mut request = Request::new("GET", "/").with_header("X-Request-Id", "abc-123:def.456");
        plugin("x-request-id").on_request_headers(&mut request);
        assert_eq!(
            request.headers.get_str("x-request-id").as_deref(),
            Some("abc-123:def.456")
        );
        let edits = request.edits();
        assert!(edits.set.is_empty(), "nothing was changed");
        assert_eq!(
            edits.response_set,
            [("x-request-id".to_owned(), b"abc-123:def.456".to_vec())]
        );
    }

    #[test]
    fn replaces_invalid_or_repeated_ids() {
        for bad in [
            vec!["has space"],
            vec![""],
            vec!["quote\"d"],
            vec!["a", "b"],
        ] {
            let mut request = Request::new("GET", "/");
            for value in &bad {
                request = request.with_header("x-request-id", value);
            }
            plugin("x-request-id").on_request_headers(&mut request);
            let all = request.headers.get_all("x-request-id");
            assert_eq!(all.len(), 1, "{bad:?}");
            assert!(is_uuid_v7(std::str::from_utf8(&all[0]).unwrap()), "{bad:?}");
        }
        assert!(!is_valid_id(&[b'a'; 201]));
        assert!(is_valid_id(&[b'a'; 200]));
    }

    #[test]
    fn ids_are_time_ordered_and_unique() {
        let ids: Vec<String> = (0..100).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids);
    }

    #[test]
    fn a_custom_header_is_used_and_a_bad_one_refused() {
        let mut request = Request::new("GET", "/");
        plugin("X-Correlation-Id").on_request_headers(&mut request);
        assert!(request.headers.contains("x-correlation-id"));
        assert!(!request.headers.contains("x-request-id"));
        let refused = RequestId::new(Config {
            header: "bad header".to_owned(),
        })
        .unwrap_err();
        assert!(refused.contains("`header`"), "{refused}");
    }
}
