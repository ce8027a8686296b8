//! `cors`: Cross-Origin Resource Sharing at the gateway.
//!
//! A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//! by the plugin with 204 and never reaches the upstream. An actual request from an
//! allowed origin gets `Access-Control-Allow-Origin` (and the credentials and expose
//! headers configured) on its response. A request from an origin that is not allowed
//! gets no `Access-Control-*` headers at all (the upstream's are removed too), so the
//! browser refuses it. Responses vary by `Origin`. The response headers are queued from
//! the request phase, so the plugin costs one call per request.
//!
//! ```toml
//! plugins = [{ name = "cors", config = { allow_origins = ["https://app.example"], allow_credentials = true } }]
//! ```

use serde::Deserialize;
use weir_plugin_sdk::{
    Action, EditError, LocalResponse, PhaseResult, Plugin, QueuedHeaders, Request, is_header_name,
};

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Origins allowed (`https://app.example`), or `"*"` for any.
    allow_origins: Vec<String>,
    /// Methods a preflight allows.
    allow_methods: Vec<String>,
    /// Request headers a preflight allows; empty: those the preflight asks for.
    allow_headers: Vec<String>,
    /// Response headers the browser may show to scripts.
    expose_headers: Vec<String>,
    /// How long (seconds) a browser may cache a preflight's answer.
    max_age: Option<u32>,
    /// Whether requests with credentials (cookies, HTTP auth) are allowed.
    allow_credentials: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            allow_origins: Vec::new(),
            allow_methods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
                .map(String::from)
                .to_vec(),
            allow_headers: Vec::new(),
            expose_headers: Vec::new(),
            max_age: None,
            allow_credentials: false,
        }
    }
}

/// The plugin: the configuration, validated and with its header values joined once.
#[derive(Debug)]
pub struct Cors {
    /// Allowed origins, lower-cased; empty when any origin is allowed.
    origins: Vec<String>,
    any_origin: bool,
    allow_methods: String,
    /// `None`: echo the preflight's `Access-Control-Request-Headers`.
    allow_headers: Option<String>,
    expose_headers: Option<String>,
    max_age: Option<String>,
    allow_credentials: bool,
}

/// Checks an origin as browsers send it: `scheme://host[:port]`, nothing after.
fn check_origin(origin: &str) -> Result<String, String> {
    let (scheme, rest) = origin
        .split_once("://")
        .ok_or_else(|| format!("{origin:?} is not an origin (`scheme://host[:port]`) or \"*\""))?;
    let valid_scheme = !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    let valid_host = !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
    if !valid_scheme || !valid_host {
        return Err(format!(
            "{origin:?} is not an origin (`scheme://host[:port]`, no path) or \"*\""
        ));
    }
    Ok(origin.to_ascii_lowercase())
}

/// Checks every entry of the list `key` with `valid` and joins them for a header.
fn joined(key: &str, items: &[String], valid: fn(&str) -> bool) -> Result<String, String> {
    if let Some((i, bad)) = items.iter().enumerate().find(|(_, item)| !valid(item)) {
        return Err(format!("`{key}[{i}]`: {bad:?} is not a valid name"));
    }
    Ok(items.join(", "))
}

/// The CORS response headers, so a disallowed origin can be stripped of the upstream's.
const CORS_RESPONSE_HEADERS: &[&str] = &[
    "access-control-allow-origin",
    "access-control-allow-credentials",
    "access-control-expose-headers",
    "access-control-allow-methods",
    "access-control-allow-headers",
    "access-control-max-age",
];

impl Cors {
    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if allowed.
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        if self.any_origin {
            // `*` cannot be combined with credentials: echo the origin instead.
            return Some(if self.allow_credentials {
                origin.to_owned()
            } else {
                "*".to_owned()
            });
        }
        let lower = origin.to_ascii_lowercase();
        self.origins.contains(&lower).then(|| origin.to_owned())
    }

    fn preflight(&self, request: &Request<'_>, origin: &str) -> LocalResponse {
        let mut response = LocalResponse::new(204).header(
            "vary",
            "origin, access-control-request-method, access-control-request-headers",
        );
        let Some(allow_origin) = self.allowed_origin(origin) else {
            return response;
        };
        response = response
            .header("access-control-allow-origin", allow_origin)
            .header("access-control-allow-methods", &self.allow_methods);
        let asked = request.headers.get("access-control-request-headers");
        match (&self.allow_headers, asked) {
            (Some(list), _) => {
                response = response.header("access-control-allow-headers", list);
            }
            (None, Some(asked)) => {
                response = response.header("access-control-allow-headers", asked);
            }
            _ => {}
        }
        if let Some(age) = &self.max_age {
            response = response.header("access-control-max-age", age);
        }
        if self.allow_credentials {
            response = response.header("access-control-allow-credentials", "true");
        }
        response
    }

    /// The edits for the response to an actual request from `origin`.
    fn tag(&self, origin: &str, response: &mut QueuedHeaders<'_>) -> Result<(), EditError> {
        response.append("vary", "origin")?;
        match self.allowed_origin(origin) {
            Some(allow_origin) => {
                response.set("access-control-allow-origin", allow_origin)?;
                if self.allow_credentials {
                    response.set("access-control-allow-credentials", "true")?;
                }
                if let Some(expose) = &self.expose_headers {
                    response.set("access-control-expose-headers", expose)?;
                }
            }
            None => {
                for name in CORS_RESPONSE_HEADERS {
                    response.remove(name)?;
                }
            }
        }
        Ok(())
    }
}

#[weir_plugin_sdk::plugin]
impl Plugin for Cors {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if config.allow_origins.is_empty() {
            return Err("`allow_origins`: list at least one origin, or \"*\"".into());
        }
        let any_origin = config.allow_origins.iter().any(|o| o == "*");
        let mut origins = Vec::new();
        if !any_origin {
            for (i, origin) in config.allow_origins.iter().enumerate() {
                origins
                    .push(check_origin(origin).map_err(|e| format!("`allow_origins[{i}]`: {e}"))?);
            }
        }
        if config.allow_methods.is_empty() {
            return Err("`allow_methods`: list at least one method".into());
        }
        let allow_headers = if config.allow_headers.is_empty() {
            None
        } else {
            Some(joined("allow_headers", &config.allow_headers, |h| {
                h == "*" || is_header_name(h)
            })?)
        };
        let expose_headers = if config.expose_headers.is_empty() {
            None
        } else {
            Some(joined("expose_headers", &config.expose_headers, |h| {
                h == "*" || is_header_name(h)
            })?)
        };
        Ok(Cors {
            origins,
            any_origin,
            allow_methods: joined("allow_methods", &config.allow_methods, is_header_name)?,
            allow_headers,
            expose_headers,
            max_age: config.max_age.map(|age| age.to_string()),
            allow_credentials: config.allow_credentials,
        })
    }

    fn header_reads(&self) -> Vec<&str> {
        vec![
            "origin",
            "access-control-request-method",
            "access-control-request-headers",
        ]
    }

    fn on_request_headers(&self, request: &mut Request<'_>, _state: &mut ()) -> PhaseResult {
        let Some(origin) = request.headers.get_str("origin") else {
            return Ok(Action::Continue);
        };
        let is_preflight = request.method() == "OPTIONS"
            && request.headers.contains("access-control-request-method");
        if is_preflight {
            return Ok(Action::Respond(self.preflight(request, origin)));
        }
        // Constant names, values checked in `new` or echoed from the request's own
        // `Origin`: a refusal would be a gateway bug, and a response without the CORS
        // headers it should have (or with the upstream's) must not pass for a success.
        self.tag(origin, &mut request.response_headers)?;
        Ok(Action::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::Response;
    use weir_plugin_sdk::testing::Harness;

    fn cors(config: Config) -> Cors {
        Cors::new(config).unwrap()
    }

    fn origins(list: &[&str]) -> Config {
        Config {
            allow_origins: list.iter().map(|s| s.to_string()).collect(),
            ..Config::default()
        }
    }

    fn preflight(origin: &str) -> Request<'static> {
        Request::new("OPTIONS", "/api")
            .with_header("origin", origin)
            .with_header("access-control-request-method", "PUT")
            .with_header("access-control-request-headers", "x-token, content-type")
    }

    fn answer(plugin: &Cors, request: &mut Request<'_>) -> LocalResponse {
        match plugin.on_request_headers(request, &mut ()).unwrap() {
            Action::Respond(r) => r,
            Action::Continue => panic!("the preflight was not answered"),
        }
    }

    #[test]
    fn preflight_from_an_allowed_origin_is_answered_204() {
        let plugin = cors(Config {
            max_age: Some(600),
            allow_credentials: true,
            ..origins(&["https://app.example"])
        });
        let r = answer(&plugin, &mut preflight("https://app.example"));
        assert_eq!(r.status, 204);
        assert_eq!(
            r.headers.get_str("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(
            r.headers.get_str("access-control-allow-methods"),
            Some("GET, HEAD, POST, PUT, PATCH, DELETE")
        );
        assert_eq!(
            r.headers.get_str("access-control-allow-headers"),
            Some("x-token, content-type"),
            "with no allow_headers configured, the asked ones are echoed"
        );
        assert_eq!(r.headers.get_str("access-control-max-age"), Some("600"));
        assert_eq!(
            r.headers.get_str("access-control-allow-credentials"),
            Some("true")
        );
    }

    #[test]
    fn preflight_from_another_origin_gets_no_cors_headers() {
        let plugin = cors(origins(&["https://app.example"]));
        let r = answer(&plugin, &mut preflight("https://evil.example"));
        assert_eq!(r.status, 204);
        for name in CORS_RESPONSE_HEADERS {
            assert!(!r.headers.contains(name), "{name}");
        }
    }

    #[test]
    fn a_plain_options_request_goes_upstream() {
        let plugin = cors(origins(&["*"]));
        let mut request = Request::new("OPTIONS", "/").with_header("origin", "https://a.example");
        assert_eq!(
            plugin.on_request_headers(&mut request, &mut ()).unwrap(),
            Action::Continue
        );
    }

    #[test]
    fn actual_responses_get_origin_expose_and_vary() {
        let plugin = cors(Config {
            expose_headers: vec!["x-total".into()],
            ..origins(&["https://App.Example"])
        });
        let mut request = Request::new("GET", "/").with_header("origin", "https://app.example");
        assert_eq!(
            plugin.on_request_headers(&mut request, &mut ()).unwrap(),
            Action::Continue
        );
        let edits = request.edits();
        assert_eq!(
            edits.response_set,
            [
                (
                    "access-control-allow-origin".to_owned(),
                    b"https://app.example".to_vec()
                ),
                (
                    "access-control-expose-headers".to_owned(),
                    b"x-total".to_vec()
                ),
            ],
            "no allow-credentials without allow_credentials"
        );
        assert_eq!(
            edits.response_appended,
            [("vary".to_owned(), b"origin".to_vec())]
        );
        assert!(edits.set.is_empty(), "the request itself is untouched");
    }

    #[test]
    fn a_disallowed_origin_loses_the_upstreams_cors_headers() {
        let plugin = cors(origins(&["https://app.example"]));
        let mut request = Request::new("GET", "/").with_header("origin", "https://evil.example");
        assert_eq!(
            plugin.on_request_headers(&mut request, &mut ()).unwrap(),
            Action::Continue
        );
        let edits = request.edits();
        assert_eq!(edits.response_removed, CORS_RESPONSE_HEADERS);
        assert!(edits.response_set.is_empty());

        let mut harness = Harness::<Cors>::new(serde_json::json!({
            "allow_origins": ["https://app.example"],
        }));
        harness.upstream(
            Response::new(200)
                .with_header("access-control-allow-origin", "*")
                .with_header("access-control-allow-credentials", "true"),
            "",
        );
        let outcome =
            harness.run(Request::new("GET", "/").with_header("origin", "https://evil.example"));
        for name in CORS_RESPONSE_HEADERS {
            assert!(!outcome.headers().contains(name), "{name}");
        }
        assert_eq!(outcome.header("vary"), Some("origin"));
    }

    #[test]
    fn wildcard_with_credentials_echoes_the_origin() {
        let any = cors(origins(&["*"]));
        assert_eq!(
            any.allowed_origin("https://x.example").as_deref(),
            Some("*")
        );
        let with_credentials = cors(Config {
            allow_credentials: true,
            ..origins(&["*"])
        });
        assert_eq!(
            with_credentials
                .allowed_origin("https://x.example")
                .as_deref(),
            Some("https://x.example")
        );
    }

    #[test]
    fn requests_without_origin_are_untouched() {
        let plugin = cors(origins(&["*"]));
        let mut request = Request::new("GET", "/");
        assert_eq!(
            plugin.on_request_headers(&mut request, &mut ()).unwrap(),
            Action::Continue
        );
        assert_eq!(request.edits(), Default::default());
    }

    #[test]
    fn bad_config_names_the_key() {
        for (config, key) in [
            (origins(&[]), "`allow_origins`"),
            (origins(&["app.example"]), "`allow_origins[0]`"),
            (origins(&["https://a.example/path"]), "`allow_origins[0]`"),
            (
                Config {
                    allow_methods: vec!["GET".into(), "BAD METHOD".into()],
                    ..origins(&["*"])
                },
                "`allow_methods[1]`",
            ),
            (
                Config {
                    allow_headers: vec!["x ok".into()],
                    ..origins(&["*"])
                },
                "`allow_headers[0]`",
            ),
        ] {
            let message = Cors::new(config).unwrap_err();
            assert!(message.contains(key), "{message} lacks {key}");
        }
    }

    #[test]
    fn whole_requests_preflight_locally_and_tag_actual_responses() {
        let mut harness = Harness::<Cors>::new(serde_json::json!({
            "allow_origins": ["https://app.example"],
            "allow_credentials": true,
        }));
        let answered = harness.run(preflight("https://app.example"));
        assert_eq!(answered.status(), 204);
        assert!(
            answered.upstream_request().is_none(),
            "a preflight stays here"
        );
        assert_eq!(
            answered.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        harness.upstream(
            Response::new(200).with_header("vary", "accept-encoding"),
            "{}",
        );
        let actual =
            harness.run(Request::new("GET", "/").with_header("origin", "https://app.example"));
        assert_eq!(actual.status(), 200);
        assert_eq!(
            actual.header("access-control-allow-origin"),
            Some("https://app.example")
        );
        assert_eq!(
            actual.header("access-control-allow-credentials"),
            Some("true")
        );
        assert_eq!(
            actual.headers().get_all("vary"),
            [b"accept-encoding".to_vec(), b"origin".to_vec()],
            "the upstream's vary is kept"
        );
        assert_eq!(actual.body_str(), "{}");
    }
}
