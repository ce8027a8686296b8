//! `api-key`: authenticates requests by API key.
//!
//! The key is read from a header (default `x-api-key`) or, when `query` names one, a
//! query parameter. A missing or unknown key gets 401 with a JSON body. A known key
//! lets the request continue with `x-consumer: NAME` (any `x-consumer` the client sent
//! is replaced) and without the key: the header and the query parameter are removed
//! before the upstream sees the request.
//!
//! Keys come from `consumers = { alice = "KEY" }` in the config and/or `keys_env`, an
//! environment variable of the gateway holding `name=key` pairs (separated by commas,
//! whitespace or newlines), which the gateway reads at load. The lookup hashes the
//! presented key and compares it with every stored key's hash in constant time, so
//! timing reveals neither a key nor which consumer holds it.
//!
//! ```toml
//! plugins = [{ name = "api-key", config = { keys_env = "WEIR_API_KEYS", query = "apikey" } }]
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use weir_plugin_sdk::{
    Action, Headers, LocalResponse, PhaseResult, Plugin, Request, is_header_name,
};

/// The header naming the authenticated consumer on the upstream request.
pub const CONSUMER_HEADER: &str = "x-consumer";

/// An environment variable the gateway read for the plugin (`NAME_env` config keys).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvVar {
    /// The variable's name.
    name: String,
    /// Its value.
    value: String,
}

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The header that carries the key.
    header: String,
    /// A query parameter that may carry the key instead.
    query: Option<String>,
    /// Consumer name → key.
    consumers: BTreeMap<String, String>,
    /// More consumers, as `name=key` pairs in an environment variable.
    keys_env: Option<EnvVar>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            header: "x-api-key".to_owned(),
            query: None,
            consumers: BTreeMap::new(),
            keys_env: None,
        }
    }
}

/// The plugin: key hashes and their consumers.
#[derive(Debug)]
pub struct ApiKey {
    header: String,
    query: Option<String>,
    /// (SHA-256 of the key, consumer name).
    keys: Vec<([u8; 32], String)>,
}

fn digest(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// Parses `name=key` pairs separated by commas or whitespace.
fn parse_pairs(var: &EnvVar) -> Result<Vec<(String, String)>, String> {
    var.value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|item| !item.is_empty())
        .enumerate()
        .map(|(i, item)| match item.split_once('=') {
            Some((name, key)) if !name.is_empty() && !key.is_empty() => {
                Ok((name.to_owned(), key.to_owned()))
            }
            _ => Err(format!(
                "`keys_env`: entry {} of environment variable {} is not `name=key`",
                i + 1,
                var.name
            )),
        })
        .collect()
}

fn unauthorized(message: &str) -> Action {
    Action::Respond(
        LocalResponse::json(401, &serde_json::json!({ "error": message }))
            .header("www-authenticate", "ApiKey"),
    )
}

impl ApiKey {
    /// The consumer holding `presented`, if any; every stored key is compared.
    pub fn consumer(&self, presented: &[u8]) -> Option<&str> {
        let hash = digest(presented);
        let mut found = None;
        for (stored, name) in &self.keys {
            if bool::from(stored.ct_eq(&hash)) {
                found = Some(name.as_str());
            }
        }
        found
    }

    /// The path with query parameter `name` removed.
    fn without_param(path: &str, name: &str) -> Option<String> {
        let (path, query) = path.split_once('?')?;
        let kept: Vec<&str> = query
            .split('&')
            .filter(|pair| pair.split_once('=').map_or(*pair, |(k, _)| k) != name)
            .collect();
        Some(if kept.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", kept.join("&"))
        })
    }
}

#[weir_plugin_sdk::plugin]
impl Plugin for ApiKey {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if !is_header_name(&config.header) {
            return Err(format!(
                "`header`: {:?} is not a valid HTTP header name",
                config.header
            ));
        }
        // The key header is removed from every authenticated request: refuse a name the
        // gateway would not let the plugin remove (`host`, `content-length`) now, rather
        // than fail each request. The SDK applies the gateway's rules to a local message.
        if let Err(e) = Headers::default().remove(&config.header) {
            return Err(format!(
                "`header`: {:?} cannot carry the key: the plugin could not remove it ({e})",
                config.header
            ));
        }
        if config.query.as_deref().is_some_and(str::is_empty) {
            return Err("`query`: the parameter name is empty".into());
        }
        let mut pairs: Vec<(String, String, &str)> = config
            .consumers
            .into_iter()
            .map(|(name, key)| (name, key, "consumers"))
            .collect();
        if let Some(var) = &config.keys_env {
            pairs.extend(
                parse_pairs(var)?
                    .into_iter()
                    .map(|(name, key)| (name, key, "keys_env")),
            );
        }
        if pairs.is_empty() {
            return Err("no keys: configure `consumers` or `keys_env`".into());
        }
        let mut keys: Vec<([u8; 32], String)> = Vec::with_capacity(pairs.len());
        for (name, key, source) in pairs {
            if key.is_empty() {
                return Err(format!("`{source}`: consumer {name:?} has an empty key"));
            }
            if name.bytes().any(|b| !(b.is_ascii_graphic() || b == b' ')) {
                return Err(format!(
                    "`{source}`: consumer name {name:?} cannot be a header value"
                ));
            }
            let hash = digest(key.as_bytes());
            if let Some((_, other)) = keys.iter().find(|(h, _)| *h == hash) {
                return Err(format!(
                    "`{source}`: consumers {other:?} and {name:?} have the same key"
                ));
            }
            keys.push((hash, name));
        }
        Ok(ApiKey {
            header: config.header.to_ascii_lowercase(),
            query: config.query,
            keys,
        })
    }

    fn header_reads(&self) -> Vec<&str> {
        vec![&self.header]
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _state: &mut ()) -> PhaseResult {
        let mut from_header = request.headers.get_all(&self.header);
        let in_header = !from_header.is_empty();
        let presented: Option<Vec<u8>> = match from_header.len() {
            1 => from_header.pop(),
            0 => self
                .query
                .as_deref()
                .and_then(|q| request.query_param(q))
                .map(|v| v.as_bytes().to_vec()),
            _ => return Ok(unauthorized("more than one API key")),
        };
        let Some(presented) = presented else {
            return Ok(unauthorized("missing API key"));
        };
        let Some(consumer) = self.consumer(&presented) else {
            return Ok(unauthorized("invalid API key"));
        };
        // The header names and consumer names were checked in `new`; should the gateway
        // still refuse an edit, the request fails rather than reach the upstream with a
        // spoofed consumer or with the key.
        request.headers.set(CONSUMER_HEADER, consumer)?;
        if in_header {
            request.headers.remove(&self.header)?;
        }
        if let Some(param) = &self.query
            && request.query_param(param).is_some()
            && let Some(path) = ApiKey::without_param(request.path(), param)
        {
            request.set_path(path)?;
        }
        Ok(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::Harness;

    fn plugin(json: &str) -> Result<ApiKey, String> {
        ApiKey::new(weir_plugin_sdk::parse_config(json)?)
    }

    /// The request phase's answer, which is never a failure here.
    fn call(plugin: &ApiKey, request: &mut Request<'_>) -> Action {
        plugin.on_request_headers(request, &mut ()).unwrap()
    }

    fn status(action: &Action) -> Option<(u16, String)> {
        match action {
            Action::Respond(r) => Some((r.status, String::from_utf8_lossy(&r.body).into_owned())),
            Action::Continue => None,
        }
    }

    #[test]
    fn a_known_key_names_the_consumer_and_is_removed() {
        let p = plugin(r#"{"consumers": {"alice": "k-alice", "bob": "k-bob"}}"#).unwrap();
        let mut request = Request::new("GET", "/")
            .with_header("X-Api-Key", "k-bob")
            .with_header("x-consumer", "spoofed");
        assert_eq!(call(&p, &mut request), Action::Continue);
        assert_eq!(request.headers.get_str("x-consumer"), Some("bob"));
        assert!(!request.headers.contains("x-api-key"));
    }

    #[test]
    fn missing_unknown_and_repeated_keys_get_401_json() {
        let p = plugin(r#"{"consumers": {"alice": "k-alice"}}"#).unwrap();
        let missing = call(&p, &mut Request::new("GET", "/"));
        assert_eq!(
            status(&missing),
            Some((401, r#"{"error":"missing API key"}"#.to_owned()))
        );
        let unknown = call(
            &p,
            &mut Request::new("GET", "/").with_header("x-api-key", "nope"),
        );
        assert_eq!(
            status(&unknown),
            Some((401, r#"{"error":"invalid API key"}"#.to_owned()))
        );
        let twice = call(
            &p,
            &mut Request::new("GET", "/")
                .with_header("x-api-key", "k-alice")
                .with_header("x-api-key", "k-alice"),
        );
        assert_eq!(status(&twice).map(|s| s.0), Some(401));
    }

    #[test]
    fn the_query_parameter_is_read_and_stripped() {
        let p = plugin(r#"{"consumers": {"alice": "k-alice"}, "query": "apikey"}"#).unwrap();
        let mut request = Request::new("GET", "/items?apikey=k-alice&page=2");
        assert_eq!(call(&p, &mut request), Action::Continue);
        assert_eq!(request.headers.get_str("x-consumer"), Some("alice"));
        assert_eq!(request.edits().path.as_deref(), Some("/items?page=2"));
        let mut only = Request::new("GET", "/items?apikey=k-alice");
        assert_eq!(call(&p, &mut only), Action::Continue);
        assert_eq!(only.edits().path.as_deref(), Some("/items"));
    }

    #[test]
    fn keys_from_the_environment_are_parsed() {
        let p = plugin(
            r#"{"keys_env": {"name": "KEYS", "value": "alice=k1, bob=k2\ncarol=k3=with-equals"}}"#,
        )
        .unwrap();
        assert_eq!(p.consumer(b"k2"), Some("bob"));
        assert_eq!(p.consumer(b"k3=with-equals"), Some("carol"));
        assert_eq!(p.consumer(b"k4"), None);
        let bad =
            plugin(r#"{"keys_env": {"name": "KEYS", "value": "alice=k1,oops"}}"#).unwrap_err();
        assert!(bad.contains("`keys_env`") && bad.contains("KEYS"), "{bad}");
    }

    #[test]
    fn bad_config_names_the_key() {
        for (json, key) in [
            ("{}", "`consumers` or `keys_env`"),
            (r#"{"consumers": {"a": ""}}"#, "`consumers`"),
            (r#"{"consumers": {"a": "same", "b": "same"}}"#, "same key"),
            (
                r#"{"consumers": {"a": "k"}, "header": "bad header"}"#,
                "`header`",
            ),
            (r#"{"consumers": {"a": "k"}, "query": ""}"#, "`query`"),
            (r#"{"consumers": {"a": "k"}, "header": "Host"}"#, "`header`"),
            (r#"{"consumer": {"a": "k"}}"#, "`consumer`"),
        ] {
            let message = plugin(json).unwrap_err();
            assert!(message.contains(key), "{json}: {message}");
        }
    }

    #[test]
    fn the_upstream_sees_the_consumer_and_never_the_key() {
        let mut harness = Harness::<ApiKey>::new(serde_json::json!({
            "consumers": { "alice": "k-alice" },
            "query": "apikey",
        }));
        let outcome = harness.run(
            Request::new("GET", "/items?apikey=k-alice&page=2")
                .with_header("x-api-key", "k-alice")
                .with_header("x-consumer", "spoofed"),
        );
        assert_eq!(outcome.status(), 200);
        let sent = outcome.upstream_request().unwrap();
        assert_eq!(sent.headers.get_str("x-consumer"), Some("alice"));
        assert!(!sent.headers.contains("x-api-key"));
        assert_eq!(sent.path, "/items?page=2");
        let refused = harness.run(Request::new("GET", "/").with_header("x-api-key", "nope"));
        assert_eq!(refused.status(), 401);
        assert_eq!(refused.header("www-authenticate"), Some("ApiKey"));
        assert_eq!(refused.header("content-type"), Some("application/json"));
        assert_eq!(refused.body_json()["error"], "invalid API key");
        assert!(refused.upstream_request().is_none());
    }
}
