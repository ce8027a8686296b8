//! A first Weir plugin: greets on `GET /hello`, and tags every other response.
//!
//! ```toml
//! plugins = [{ name = "hello", config = { greeting = "Hello from Weir" } }]
//! ```

use serde::{Deserialize, Serialize};
use weir_plugin_sdk::host::{self, Level, metrics};
use weir_plugin_sdk::{Action, LocalResponse, PhaseResult, Plugin, Request, plugin};

/// The plugin's configuration (the route's `config` table).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// What `/hello` answers.
    greeting: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            greeting: "Hello".to_owned(),
        }
    }
}

/// The plugin: its parsed configuration.
pub struct Hello {
    greeting: String,
}

/// The body of a greeting.
#[derive(Serialize)]
struct Greeting {
    message: String,
}

#[plugin]
impl Plugin for Hello {
    type Config = Config;
    type State = ();

    fn new(config: Config) -> Result<Self, String> {
        if config.greeting.trim().is_empty() {
            return Err("`greeting` must not be empty".to_owned());
        }
        Ok(Hello {
            greeting: config.greeting,
        })
    }

    fn on_request_headers(&self, request: &mut Request, _: &mut ()) -> PhaseResult {
        if request.path_only() != "/hello" {
            // Tag the response this request will get: no response phase needed.
            request
                .response_headers
                .set("x-hello", "passed through the hello plugin")?;
            return Ok(Action::Continue);
        }
        metrics::counter_add("greetings", 1);
        host::log(
            Level::Debug,
            &format!("greeting {}", request.client_address()),
        );
        let name = request.query_param("name").unwrap_or("world");
        let message = format!("{}, {name}!", self.greeting);
        Ok(Action::Respond(LocalResponse::json(
            200,
            &Greeting { message },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing::{self, Harness};
    use weir_plugin_sdk::{Phase, Response};

    #[test]
    fn greets_on_hello() {
        let mut hello = Harness::<Hello>::new(serde_json::json!({ "greeting": "Hi" }));
        let outcome = hello.run(Request::new("GET", "/hello?name=Ada"));
        assert_eq!(outcome.status(), 200);
        assert_eq!(outcome.body_str(), r#"{"message":"Hi, Ada!"}"#);
        assert!(outcome.upstream_request().is_none());
        testing::with(|fake| assert_eq!(fake.counters["greetings"], 1));
    }

    #[test]
    fn passes_other_requests_and_tags_responses() {
        let mut hello = Harness::<Hello>::new(serde_json::json!(null));
        hello.upstream(Response::new(404), "nope");
        let outcome = hello.run(Request::new("GET", "/other"));
        assert_eq!(outcome.status(), 404);
        assert_eq!(outcome.body_str(), "nope");
        assert_eq!(
            outcome.header("x-hello"),
            Some("passed through the hello plugin")
        );
        assert_eq!(outcome.upstream_request().unwrap().path, "/other");
        assert_eq!(hello.phases(), [Phase::RequestHeaders]);
    }

    #[test]
    fn refuses_an_empty_greeting() {
        let hello = Harness::<Hello>::new(serde_json::json!({ "greeting": " " }));
        assert_eq!(hello.build_error(), Some("`greeting` must not be empty"));
    }
}
