//! `headers`: header and path transforms.
//!
//! On the way upstream: `request.remove`, then `request.set` (replacing), then
//! `request.add` (appending); the path goes through `strip_prefix`, then `rewrite` (a
//! regex and its replacement), then `add_prefix`, keeping the query string. On the way
//! back, `response.remove`, `response.set`, `response.add`. The regex is compiled once,
//! when the plugin is configured.
//!
//! The header edits are the same for every request, so the plugin declares them once
//! ([`Plugin::static_edits`]) and the gateway makes them itself at the plugin's place in
//! the chain: a config of header edits only is never called per request. Path
//! transforms run in the plugin's request phase.
//!
//! ```toml
//! plugins = [{ name = "headers", config = { strip_prefix = "/api", request = { set = { x-forwarded-prefix = "/api" } } } }]
//! ```

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use weir_plugin_sdk::{
    Action, EditError, HeaderEdit, Headers, Phase, PhaseResult, Plugin, Request, StaticEdits,
    is_header_name, is_header_value,
};

/// Header edits for one direction.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeaderEdits {
    /// Headers set, replacing any values they had.
    set: BTreeMap<String, String>,
    /// Headers appended, keeping any values they had.
    add: BTreeMap<String, String>,
    /// Headers removed.
    remove: Vec<String>,
}

/// A regex path rewrite.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// The regex, matched against the path without its query string.
    pattern: String,
    /// What the match becomes; `$1`, `${name}` refer to capture groups.
    replacement: String,
}

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Edits of the request's headers.
    request: HeaderEdits,
    /// Edits of the response's headers.
    response: HeaderEdits,
    /// A path prefix removed (at a segment boundary).
    strip_prefix: Option<String>,
    /// A path prefix added.
    add_prefix: Option<String>,
    /// A regex rewrite of the path.
    rewrite: Option<Rewrite>,
}

/// Validated edits, names lower-cased.
#[derive(Debug, Default)]
struct Edits {
    set: Vec<(String, String)>,
    add: Vec<(String, String)>,
    remove: Vec<String>,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// The edits in the order they are made: removals, then sets, then additions.
    fn declared(&self) -> Vec<HeaderEdit> {
        let removed = self
            .remove
            .iter()
            .map(|name| HeaderEdit::Remove(name.clone()));
        let set = (self.set.iter())
            .map(|(name, value)| HeaderEdit::Set(name.clone(), value.clone().into_bytes()));
        let added = (self.add.iter())
            .map(|(name, value)| HeaderEdit::Append(name.clone(), value.clone().into_bytes()));
        removed.chain(set).chain(added).collect()
    }
}

/// The plugin.
#[derive(Debug)]
pub struct HeadersPlugin {
    request: Edits,
    response: Edits,
    strip_prefix: Option<String>,
    add_prefix: Option<String>,
    rewrite: Option<(Regex, String)>,
}

/// Whether the gateway lets a plugin make `edit`: it keeps `host` and `content-length`
/// to itself, and hop-by-hop fields can only be removed. The SDK applies the gateway's
/// rules to a local message, so an edit the gateway would refuse when the plugin
/// declares it (refusing the whole config, with no key named) is refused here first.
fn gateway_allows(edit: &HeaderEdit) -> Result<(), EditError> {
    edit.apply(&mut Headers::default())
}

fn check_edits(key: &str, edits: HeaderEdits) -> Result<Edits, String> {
    let pairs = |op: &str, map: BTreeMap<String, String>| {
        map.into_iter()
            .map(|(name, value)| {
                if !is_header_name(&name) {
                    return Err(format!("`{key}.{op}`: {name:?} is not a valid header name"));
                }
                if !is_header_value(&value) {
                    return Err(format!(
                        "`{key}.{op}.{name}`: the value has control characters"
                    ));
                }
                let edit = match op {
                    "set" => HeaderEdit::Set(name.clone(), value.clone().into_bytes()),
                    _ => HeaderEdit::Append(name.clone(), value.clone().into_bytes()),
                };
                gateway_allows(&edit)
                    .map_err(|e| format!("`{key}.{op}`: {e}: a plugin may not {op} it"))?;
                Ok((name.to_ascii_lowercase(), value))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let set = pairs("set", edits.set)?;
    let add = pairs("add", edits.add)?;
    let remove = edits
        .remove
        .into_iter()
        .enumerate()
        .map(|(i, name)| {
            if !is_header_name(&name) {
                return Err(format!(
                    "`{key}.remove[{i}]`: {name:?} is not a valid header name"
                ));
            }
            gateway_allows(&HeaderEdit::Remove(name.clone()))
                .map_err(|e| format!("`{key}.remove[{i}]`: {e}: a plugin may not remove it"))?;
            Ok(name.to_ascii_lowercase())
        })
        .collect::<Result<_, String>>()?;
    Ok(Edits { set, add, remove })
}

/// A prefix as `/a/b`: leading slash, no trailing one, valid path characters.
fn check_prefix(key: &str, prefix: Option<String>) -> Result<Option<String>, String> {
    let Some(prefix) = prefix else {
        return Ok(None);
    };
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/')
        || trimmed.is_empty()
        || !trimmed
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"?#".contains(&b))
    {
        return Err(format!(
            "`{key}`: {prefix:?} must be a path like \"/api\" (leading `/`, no query)"
        ));
    }
    Ok(Some(trimmed.to_owned()))
}

impl HeadersPlugin {
    /// The path (without query) after strip, rewrite and add; `None` when unchanged.
    pub fn new_path(&self, path: &str) -> Option<String> {
        let mut current = path.to_owned();
        if let Some(prefix) = &self.strip_prefix
            && let Some(rest) = current.strip_prefix(prefix.as_str())
        {
            if rest.is_empty() {
                current = "/".to_owned();
            } else if rest.starts_with('/') {
                current = rest.to_owned();
            }
        }
        if let Some((regex, replacement)) = &self.rewrite {
            current = regex.replace(&current, replacement.as_str()).into_owned();
        }
        if let Some(prefix) = &self.add_prefix {
            current = if current == "/" {
                prefix.clone()
            } else {
                format!("{prefix}{current}")
            };
        }
        (current != path).then_some(current)
    }
}

#[weir_plugin_sdk::plugin]
impl Plugin for HeadersPlugin {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        let rewrite = match config.rewrite {
            None => None,
            Some(rewrite) => {
                let regex =
                    Regex::new(&rewrite.pattern).map_err(|e| format!("`rewrite.pattern`: {e}"))?;
                Some((regex, rewrite.replacement))
            }
        };
        let plugin = HeadersPlugin {
            request: check_edits("request", config.request)?,
            response: check_edits("response", config.response)?,
            strip_prefix: check_prefix("strip_prefix", config.strip_prefix)?,
            add_prefix: check_prefix("add_prefix", config.add_prefix)?,
            rewrite,
        };
        if plugin.request.is_empty()
            && plugin.response.is_empty()
            && plugin.strip_prefix.is_none()
            && plugin.add_prefix.is_none()
            && plugin.rewrite.is_none()
        {
            return Err("nothing to do: configure `request`, `response`, `strip_prefix`, `add_prefix` or `rewrite`".into());
        }
        Ok(plugin)
    }

    /// Only path transforms need a call: the header edits are declared
    /// ([`Plugin::static_edits`]) and the gateway makes them itself.
    fn phases(&self) -> &[Phase] {
        if self.strip_prefix.is_some() || self.add_prefix.is_some() || self.rewrite.is_some() {
            &[Phase::RequestHeaders]
        } else {
            &[]
        }
    }

    fn static_edits(&self) -> StaticEdits {
        StaticEdits {
            request: self.request.declared(),
            response: self.response.declared(),
        }
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _state: &mut ()) -> PhaseResult {
        let path = request.path_only();
        if let Some(new) = self.new_path(path) {
            let full = match request.query() {
                Some(query) => format!("{new}?{query}"),
                None => new,
            };
            // A rewrite can make a path that is not a valid request target (the
            // replacement is free text): the call fails, and the route's `on_error`
            // decides, rather than the request going upstream with the wrong path.
            request.set_path(full)?;
        }
        Ok(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::Response;
    use weir_plugin_sdk::testing::Harness;

    fn plugin(json: &str) -> Result<HeadersPlugin, String> {
        HeadersPlugin::new(weir_plugin_sdk::parse_config(json)?)
    }

    fn harness(json: &str) -> Harness<HeadersPlugin> {
        Harness::new(json.parse().expect("the test's config is JSON"))
    }

    #[test]
    fn header_edits_are_declared_and_only_path_transforms_are_called() {
        let request = plugin(r#"{"request": {"set": {"x-a": "1"}}}"#).unwrap();
        assert_eq!(request.phases(), []);
        assert_eq!(
            request.static_edits().request,
            [HeaderEdit::Set("x-a".into(), b"1".to_vec())]
        );
        assert!(request.static_edits().response.is_empty());
        let path = plugin(r#"{"strip_prefix": "/api"}"#).unwrap();
        assert_eq!(path.phases(), [Phase::RequestHeaders]);
        assert!(path.static_edits().is_empty());
        let response = plugin(r#"{"response": {"remove": ["Server"]}}"#).unwrap();
        assert_eq!(response.phases(), []);
        assert_eq!(
            response.static_edits().response,
            [HeaderEdit::Remove("server".into())]
        );
    }

    #[test]
    fn request_headers_are_removed_set_and_added_in_that_order() {
        let p = plugin(
            r#"{"request": {"remove": ["X-Drop"], "set": {"X-Env": "prod", "x-drop": "again"},
                "add": {"x-tag": "gw"}}}"#,
        )
        .unwrap();
        let mut request = Request::new("GET", "/")
            .with_header("x-drop", "1")
            .with_header("x-env", "dev")
            .with_header("x-tag", "client");
        for edit in p.static_edits().request {
            edit.apply(&mut request.headers).unwrap();
        }
        assert_eq!(request.headers.get_str("x-env"), Some("prod"));
        assert_eq!(request.headers.get_str("x-drop"), Some("again"));
        assert_eq!(
            request.headers.get_all("x-tag"),
            vec![b"client".to_vec(), b"gw".to_vec()]
        );
    }

    #[test]
    fn response_headers_are_edited() {
        let p =
            plugin(r#"{"response": {"remove": ["server"], "set": {"x-frame-options": "DENY"}}}"#)
                .unwrap();
        let mut response = Response::new(200).with_header("server", "secret/1.0");
        for edit in p.static_edits().response {
            edit.apply(&mut response.headers).unwrap();
        }
        assert!(!response.headers.contains("server"));
        assert_eq!(response.headers.get_str("x-frame-options"), Some("DENY"));
    }

    #[test]
    fn prefixes_are_stripped_at_segment_boundaries_and_added() {
        let p = plugin(r#"{"strip_prefix": "/api/", "add_prefix": "/v1"}"#).unwrap();
        assert_eq!(p.new_path("/api/users").as_deref(), Some("/v1/users"));
        assert_eq!(p.new_path("/api").as_deref(), Some("/v1"));
        assert_eq!(p.new_path("/apix/users").as_deref(), Some("/v1/apix/users"));
        let strip = plugin(r#"{"strip_prefix": "/api"}"#).unwrap();
        assert_eq!(strip.new_path("/other"), None);
    }

    #[test]
    fn the_regex_rewrite_uses_capture_groups_and_keeps_the_query() {
        let p = plugin(
            r#"{"rewrite": {"pattern": "^/users/(?P<id>[0-9]+)/profile$", "replacement": "/profiles/${id}"}}"#,
        )
        .unwrap();
        let mut request = Request::new("GET", "/users/42/profile?full=1");
        assert_eq!(
            p.on_request_headers(&mut request, &mut ()).unwrap(),
            Action::Continue
        );
        assert_eq!(request.edits().path.as_deref(), Some("/profiles/42?full=1"));
        let mut other = Request::new("GET", "/users/abc/profile");
        assert_eq!(
            p.on_request_headers(&mut other, &mut ()).unwrap(),
            Action::Continue
        );
        assert_eq!(other.edits().path, None);
    }

    #[test]
    fn bad_config_names_the_key() {
        for (json, key) in [
            (
                r#"{"rewrite": {"pattern": "(", "replacement": "/"}}"#,
                "`rewrite.pattern`",
            ),
            (
                r#"{"request": {"set": {"bad name": "x"}}}"#,
                "`request.set`",
            ),
            (
                r#"{"response": {"add": {"x-a": "line\nbreak"}}}"#,
                "`response.add.x-a`",
            ),
            (
                r#"{"request": {"remove": ["ok", "not ok"]}}"#,
                "`request.remove[1]`",
            ),
            (
                r#"{"request": {"set": {"Connection": "close"}}}"#,
                "`request.set`: header name `connection` refused",
            ),
            (
                r#"{"response": {"add": {"host": "evil"}}}"#,
                "`response.add`: header name `host` refused",
            ),
            (
                r#"{"request": {"remove": ["connection", "Content-Length"]}}"#,
                "`request.remove[1]`: header name `content-length` refused",
            ),
            (r#"{"strip_prefix": "api"}"#, "`strip_prefix`"),
            (r#"{"add_prefix": "/"}"#, "`add_prefix`"),
            (r#"{"request": {"sett": {}}}"#, "`request.sett`"),
            ("{}", "nothing to do"),
        ] {
            let message = plugin(json).unwrap_err();
            assert!(message.contains(key), "{json}: {message}");
        }
    }

    #[test]
    fn a_whole_request_gets_the_declared_edits_and_the_new_path() {
        let mut h = harness(
            r#"{"strip_prefix": "/api", "request": {"set": {"x-forwarded-prefix": "/api"},
                "remove": ["x-debug"]}, "response": {"remove": ["server"]}}"#,
        );
        h.upstream(Response::new(200).with_header("server", "secret/1.0"), "");
        let outcome = h.run(Request::new("GET", "/api/users?page=2").with_header("x-debug", "1"));
        let sent = outcome.upstream_request().unwrap();
        assert_eq!(sent.path, "/users?page=2");
        assert_eq!(sent.headers.get_str("x-forwarded-prefix"), Some("/api"));
        assert!(!sent.headers.contains("x-debug"));
        assert!(!outcome.headers().contains("server"));
        let headers_only = harness(r#"{"response": {"set": {"x-frame-options": "DENY"}}}"#);
        assert_eq!(headers_only.phases(), [], "never called per request");
    }

    #[test]
    fn a_rewrite_to_an_invalid_path_fails_the_call() {
        let mut h = harness(r#"{"rewrite": {"pattern": "^/old$", "replacement": "/new path"}}"#);
        let outcome = h.run(Request::new("GET", "/old"));
        assert_eq!(outcome.status(), 500, "under on_error = \"deny\"");
        assert!(outcome.upstream_request().is_none());
        let failure = outcome.failure().unwrap();
        assert!(failure.contains("/new path"), "{failure}");
        let untouched = h.run(Request::new("GET", "/other"));
        assert_eq!(untouched.upstream_request().unwrap().path, "/other");
    }
}
