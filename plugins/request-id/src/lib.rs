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
use weir_plugin_sdk::{Action, Headers, PhaseResult, Plugin, Request, is_header_name};

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

#[weir_plugin_sdk::plugin]
impl Plugin for RequestId {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if !is_header_name(&config.header) {
            return Err(format!(
                "`header`: {:?} is not a valid HTTP header name",
                config.header
            ));
        }
        // The id is set on every request and response: refuse a name the gateway would
        // not let the plugin set (`host`, `content-length`, a hop-by-hop header) now,
        // rather than fail each request. The SDK applies the gateway's rules to a local
        // message.
        if let Err(e) = Headers::default().set(&config.header, "id") {
            return Err(format!(
                "`header`: {:?} cannot carry the id: the plugin could not set it ({e})",
                config.header
            ));
        }
        Ok(RequestId {
            header: config.header.to_ascii_lowercase(),
        })
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _state: &mut ()) -> PhaseResult {
        // The header name was checked in `new` and the id is either a valid incoming
        // value or a UUID: the gateway has no reason to refuse these edits, and if it
        // ever did, the request must not go on without its id.
        let incoming = request.headers.get_all(&self.header);
        let id = match incoming.as_slice() {
            [one] if is_valid_id(one) => one.clone(),
            _ => {
                let id = new_id().into_bytes();
                request.headers.set(&self.header, &id)?;
                id
            }
        };
        request.response_headers.set(&self.header, id)?;
        Ok(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::Response;
    use weir_plugin_sdk::testing::Harness;

    fn plugin(header: &str) -> RequestId {
        RequestId::new(Config {
            header: header.to_owned(),
        })
        .unwrap()
    }

    /// Runs the request phase, which always lets the request go on.
    fn tag(plugin: &RequestId, request: &mut Request<'_>) {
        let action = plugin.on_request_headers(request, &mut ()).unwrap();
        assert_eq!(action, Action::Continue);
    }

    fn is_uuid_v7(id: &str) -> bool {
        uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)
    }

    #[test]
    fn generates_a_uuid_v7_when_absent() {
        let mut request = Request::new("GET", "/");
        tag(&plugin("x-request-id"), &mut request);
        let id = request.headers.get_str("x-request-id").unwrap().to_owned();
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
        tag(&plugin("x-request-id"), &mut request);
        assert_eq!(
            request.headers.get_str("x-request-id"),
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
            tag(&plugin("x-request-id"), &mut request);
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
        tag(&plugin("X-Correlation-Id"), &mut request);
        assert!(request.headers.contains("x-correlation-id"));
        assert!(!request.headers.contains("x-request-id"));
        let refused = RequestId::new(Config {
            header: "bad header".to_owned(),
        })
        .unwrap_err();
        assert!(refused.contains("`header`"), "{refused}");
        for name in ["Host", "content-length", "connection", "proxy-id"] {
            let refused = RequestId::new(Config {
                header: name.to_owned(),
            })
            .unwrap_err();
            assert!(refused.contains("`header`"), "{refused}");
        }
    }

    #[test]
    fn the_upstream_and_the_client_see_the_same_id() {
        // The crate has no serde_json of its own: the config is parsed from its text.
        let mut harness = Harness::<RequestId>::new("{}".parse().unwrap());
        harness.upstream(
            Response::new(200).with_header("x-request-id", "from-upstream"),
            "",
        );
        let outcome = harness.run(Request::new("GET", "/"));
        let sent = outcome.upstream_request().unwrap();
        let id = sent.headers.get_str("x-request-id").unwrap();
        assert!(is_uuid_v7(id), "{id}");
        assert_eq!(
            outcome.header("x-request-id"),
            Some(id),
            "the queued id replaces the upstream's"
        );
        let kept = harness.run(Request::new("GET", "/").with_header("x-request-id", "abc"));
        let sent = kept.upstream_request().unwrap();
        assert_eq!(sent.headers.get_str("x-request-id"), Some("abc"));
        assert_eq!(kept.header("x-request-id"), Some("abc"));
    }
}
