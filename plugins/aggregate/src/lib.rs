//! `aggregate`: serves a route by calling several upstream paths in parallel and merging
//! their JSON answers into one object, keyed by part.
//!
//! Every part is a `GET` of its `url`, sent together with `http::call_all` (so the
//! answer takes as long as the slowest part, not the sum). A part succeeds when it
//! answers 2xx with a JSON body before its `timeout`. When every required part succeeds
//! the client gets 200 and `{"KEY": VALUE, ...}` in config order, a failed optional
//! part's value being `null` (and its key listed in `x-aggregate-missing`); when a
//! required part fails, 502 with the failed required parts named.
//!
//! ```toml
//! plugins = [{ name = "aggregate", allowed_hosts = ["users.internal", "orders.internal"], config = {
//!     parts = [
//!         { key = "user", url = "http://users.internal{path}", timeout = "200ms", required = true },
//!         { key = "orders", url = "http://orders.internal/orders?{query}", required = false },
//!     ],
//!     forward_headers = ["authorization"] } }]
//! ```

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;
use weir_plugin_sdk::host::http::{self, HttpError, OutboundRequest, OutboundResponse};
use weir_plugin_sdk::host::{self, Level};
use weir_plugin_sdk::{Action, LocalResponse, PhaseResult, Plugin, Request};

/// Most parts one route may name: each is an outbound call per request.
const MAX_PARTS: usize = 32;
/// Longest part timeout: the gateway caps every outbound call there anyway.
const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// A part's timeout when the config gives none.
const DEFAULT_TIMEOUT: &str = "1s";
/// The response header that lists the optional parts that failed (their value is null).
pub const MISSING_HEADER: &str = "x-aggregate-missing";

/// The plugin's configuration.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The upstream calls whose answers make up the response.
    parts: Vec<PartConfig>,
    /// Request headers copied from the client's request to every part (all their
    /// values), such as `authorization`.
    forward_headers: Vec<String>,
}

/// One part as configured.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartConfig {
    /// Its key in the merged object.
    key: String,
    /// An absolute `http://` URL; `{path}` and `{query}` stand for the client's path
    /// (without the query) and query string (without `?`, empty when none).
    url: String,
    /// How long to wait for it (default 1 s, at most 30 s).
    timeout: Option<String>,
    /// Whether the whole answer fails (502) without it (default); if not, it is `null`.
    #[serde(default = "yes")]
    required: bool,
}

fn yes() -> bool {
    true
}

/// One part, checked.
#[derive(Debug)]
struct Part {
    key: String,
    url: String,
    timeout: Duration,
    required: bool,
}

/// The plugin: the checked parts and the header names to forward.
#[derive(Debug)]
pub struct Aggregate {
    parts: Vec<Part>,
    forward_headers: Vec<String>,
}

fn check_part(i: usize, part: PartConfig, keys: &mut HashSet<String>) -> Result<Part, String> {
    let at = format!("`parts[{i}]`");
    if part.key.is_empty() {
        return Err(format!("{at}: `key` is empty"));
    }
    if !keys.insert(part.key.clone()) {
        return Err(format!(
            "{at}: key `{}` is used by an earlier part",
            part.key
        ));
    }
    if !part.url.starts_with("http://") {
        return Err(format!(
            "{at}: `url` {:?} is not an absolute http:// URL (outbound calls are plain HTTP)",
            part.url
        ));
    }
    let text = part.timeout.as_deref().unwrap_or(DEFAULT_TIMEOUT);
    let timeout = humantime::parse_duration(text)
        .map_err(|e| format!("{at}: `timeout` {text:?} is not a duration like \"200ms\": {e}"))?;
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(format!(
            "{at}: `timeout` {text:?} must be more than 0 and at most 30s"
        ));
    }
    Ok(Part {
        key: part.key,
        url: part.url,
        timeout,
        required: part.required,
    })
}

impl Part {
    /// The URL for this request: `{path}` and `{query}` filled in, in one pass (so a
    /// path that itself reads `{query}` stays as it is).
    fn url_for(&self, path: &str, query: &str) -> String {
        let mut url = String::with_capacity(self.url.len() + path.len() + query.len());
        let mut rest = self.url.as_str();
        while let Some(at) = rest.find('{') {
            url.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("{path}") {
                url.push_str(path);
                rest = after;
            } else if let Some(after) = rest.strip_prefix("{query}") {
                url.push_str(query);
                rest = after;
            } else {
                url.push('{');
                rest = &rest[1..];
            }
        }
        url.push_str(rest);
        url
    }
}

/// Why a part failed, in a word or two for the client (details go to the log).
fn reason(result: &Result<OutboundResponse, HttpError>) -> String {
    match result {
        Ok(response) => format!("status {}", response.status),
        Err(HttpError::Timeout) => "timeout".to_owned(),
        Err(HttpError::NotAllowed(_)) => "host not allowed".to_owned(),
        Err(HttpError::LimitExceeded) => "outbound call limit".to_owned(),
        Err(HttpError::InvalidRequest(_)) => "invalid request".to_owned(),
        Err(HttpError::Failed(_)) => "unreachable".to_owned(),
    }
}

/// A part's value: its body as JSON, if it answered 2xx with JSON; otherwise why not
/// (short, for the client) and the detail (for the log).
fn value_of(
    result: &Result<OutboundResponse, HttpError>,
) -> Result<serde_json::Value, (String, String)> {
    match result {
        Ok(response) if (200..300).contains(&response.status) => {
            serde_json::from_slice(&response.body)
                .map_err(|e| ("not json".to_owned(), format!("the body is not JSON: {e}")))
        }
        Ok(response) => Err((reason(result), format!("answered {}", response.status))),
        Err(e) => Err((reason(result), e.to_string())),
    }
}

impl Aggregate {
    /// The outbound requests for a client request with this path, query and headers
    /// (name, value; already those named in `forward_headers`).
    fn requests(
        &self,
        path: &str,
        query: &str,
        forwarded: &[(String, Vec<u8>)],
    ) -> Vec<OutboundRequest> {
        self.parts
            .iter()
            .map(|part| {
                let mut request = OutboundRequest::get(&part.url_for(path, query));
                request.timeout = part.timeout;
                request.headers = forwarded.to_vec();
                if !forwarded.iter().any(|(name, _)| name == "accept") {
                    request
                        .headers
                        .push(("accept".to_owned(), b"application/json".to_vec()));
                }
                request
            })
            .collect()
    }

    /// The answer from the parts' results (in part order).
    fn answer(&self, results: &[Result<OutboundResponse, HttpError>]) -> LocalResponse {
        let mut merged = String::from("{");
        let mut failed = Vec::new();
        let mut missing = Vec::new();
        for (part, result) in self.parts.iter().zip(results) {
            let value = match value_of(result) {
                Ok(value) => value,
                Err((why, detail)) => {
                    host::log(
                        Level::Warn,
                        &format!("part `{}` ({}) failed: {detail}", part.key, part.url),
                    );
                    if part.required {
                        failed.push(serde_json::json!({ "key": part.key, "reason": why }));
                    } else {
                        missing.push(part.key.as_str());
                    }
                    serde_json::Value::Null
                }
            };
            if merged.len() > 1 {
                merged.push(',');
            }
            // Strings and JSON values always serialise.
            merged.push_str(&serde_json::Value::from(part.key.as_str()).to_string());
            merged.push(':');
            merged.push_str(&value.to_string());
        }
        merged.push('}');
        if !failed.is_empty() {
            return LocalResponse::json(
                502,
                &serde_json::json!({ "error": "bad gateway", "failed": failed }),
            );
        }
        let mut response = LocalResponse::new(200)
            .header("content-type", "application/json")
            .body(merged);
        if !missing.is_empty() {
            response = response.header(MISSING_HEADER, missing.join(", "));
        }
        response
    }
}

#[weir_plugin_sdk::plugin]
impl Plugin for Aggregate {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if config.parts.is_empty() {
            return Err("`parts` is empty: name at least one part to call".into());
        }
        if config.parts.len() > MAX_PARTS {
            return Err(format!(
                "`parts` has {} entries; at most {MAX_PARTS}",
                config.parts.len()
            ));
        }
        let mut keys = HashSet::new();
        let parts = config
            .parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| check_part(i, part, &mut keys))
            .collect::<Result<Vec<_>, _>>()?;
        let forward_headers = config
            .forward_headers
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                if weir_plugin_sdk::is_settable_header_name(&name) {
                    Ok(name.to_ascii_lowercase())
                } else {
                    Err(format!(
                        "`forward_headers[{i}]`: {name:?} is not a header name that can be \
                         sent (hop-by-hop, `host` and `content-length` cannot)"
                    ))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Aggregate {
            parts,
            forward_headers,
        })
    }

    fn header_reads(&self) -> Vec<&str> {
        self.forward_headers.iter().map(String::as_str).collect()
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _state: &mut ()) -> PhaseResult {
        let mut forwarded = Vec::new();
        for name in &self.forward_headers {
            for value in request.headers.get_all(name) {
                forwarded.push((name.clone(), value));
            }
        }
        let path = request.path_only().to_owned();
        let query = request.query().unwrap_or("").to_owned();
        let results = http::call_all(&self.requests(&path, &query, &forwarded));
        Ok(Action::Respond(self.answer(&results)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use weir_plugin_sdk::testing::{self, Harness};

    fn ok(body: &str) -> OutboundResponse {
        OutboundResponse {
            status: 200,
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
        }
    }

    fn harness() -> Harness<Aggregate> {
        Harness::new(json!({
            "parts": [
                { "key": "user", "url": "http://users/u{path}?{query}", "timeout": "200ms" },
                { "key": "orders", "url": "http://orders/o", "required": false },
            ],
            "forward_headers": ["authorization"],
        }))
    }

    #[test]
    fn parts_are_merged_in_config_order_with_path_and_query_filled_in() {
        let mut h = harness();
        testing::with(|fake| {
            fake.respond_to("http://users/u/7?x=1", ok(r#"{"name":"ada"}"#));
            fake.respond_to("http://orders/o", ok("[1,2]"));
        });
        let outcome = h.run(
            weir_plugin_sdk::Request::new("GET", "/7?x=1")
                .with_header("authorization", "Bearer t")
                .with_header("cookie", "secret"),
        );
        assert_eq!(outcome.status(), 200);
        assert_eq!(
            outcome.body_str(),
            r#"{"user":{"name":"ada"},"orders":[1,2]}"#
        );
        assert_eq!(outcome.header("content-type"), Some("application/json"));
        assert_eq!(outcome.header(MISSING_HEADER), None);
        testing::with(|fake| {
            let call = &fake.http_calls[0];
            assert_eq!(call.timeout, Duration::from_millis(200));
            assert_eq!(fake.http_calls[1].timeout, Duration::from_secs(1));
            assert!(
                call.headers
                    .contains(&("authorization".into(), b"Bearer t".to_vec()))
            );
            assert!(!call.headers.iter().any(|(name, _)| name == "cookie"));
        });
    }

    #[test]
    fn placeholders_are_filled_in_once() {
        let part = Part {
            key: "a".into(),
            url: "http://x{path}?{query}&{other}".into(),
            timeout: Duration::from_secs(1),
            required: true,
        };
        assert_eq!(
            part.url_for("/{query}", "q=1"),
            "http://x/{query}?q=1&{other}"
        );
    }

    #[test]
    fn a_failed_optional_part_is_null_and_listed() {
        let mut h = harness();
        testing::with(|fake| {
            fake.respond_to("http://users/u/7?", ok("{}"));
            fake.fail_to("http://orders/o", HttpError::Timeout);
        });
        let outcome = h.run(weir_plugin_sdk::Request::new("GET", "/7"));
        assert_eq!(outcome.status(), 200);
        assert_eq!(outcome.body_json(), json!({ "user": {}, "orders": null }));
        assert_eq!(outcome.header(MISSING_HEADER), Some("orders"));
    }

    #[test]
    fn a_failed_required_part_is_a_502_naming_it() {
        for (result, reason) in [
            (Err(HttpError::Timeout), "timeout"),
            (Err(HttpError::Failed("refused".into())), "unreachable"),
            (Ok(ok("<html>")), "not json"),
            (
                Ok(OutboundResponse {
                    status: 500,
                    ..ok("{}")
                }),
                "status 500",
            ),
        ] {
            let mut h = harness();
            testing::with(|fake| {
                match result {
                    Ok(response) => fake.respond_to("http://users/u/7?", response),
                    Err(e) => fake.fail_to("http://users/u/7?", e),
                }
                fake.respond_to("http://orders/o", ok("[]"));
            });
            let outcome = h.run(weir_plugin_sdk::Request::new("GET", "/7"));
            assert_eq!(outcome.status(), 502, "{reason}");
            assert_eq!(
                outcome.body_json(),
                json!({ "error": "bad gateway", "failed": [{ "key": "user", "reason": reason }] })
            );
            testing::reset();
        }
    }

    #[test]
    fn bad_configs_are_refused_naming_the_key() {
        for (config, expected) in [
            (json!({}), "`parts` is empty"),
            (
                json!({ "parts": [{ "key": "a", "url": "https://x/" }] }),
                "`parts[0]`: `url`",
            ),
            (
                json!({ "parts": [{ "key": "a", "url": "http://x/" }, { "key": "a", "url": "http://y/" }] }),
                "`parts[1]`: key `a` is used",
            ),
            (
                json!({ "parts": [{ "key": "a", "url": "http://x/", "timeout": "soon" }] }),
                "`parts[0]`: `timeout`",
            ),
            (
                json!({ "parts": [{ "key": "a", "url": "http://x/", "timeout": "1m" }] }),
                "at most 30s",
            ),
            (
                json!({ "parts": [{ "key": "a", "url": "http://x/" }], "forward_headers": ["connection"] }),
                "`forward_headers[0]`",
            ),
            (
                json!({ "parts": [{ "key": "a", "url": "http://x/", "requird": true }] }),
                "requird",
            ),
        ] {
            let h = Harness::<Aggregate>::new(config.clone());
            let error = h
                .build_error()
                .unwrap_or_else(|| panic!("{config} was accepted"));
            assert!(error.contains(expected), "{config}: {error}");
        }
    }
}
