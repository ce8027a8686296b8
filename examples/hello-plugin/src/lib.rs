//! A first Weir plugin: greets on `GET /hello`, and tags every other response.
//!
//! ```toml
//! plugins = [{ name = "hello", config = { greeting = "Hello from Weir" } }]
//! ```

use serde::Deserialize;
use weir_plugin_sdk::host::{self, Level, metrics};
use weir_plugin_sdk::{Action, LocalResponse, Phase, Plugin, Request, Response};

/// The plugin's configuration (the route's `config` table).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// What `/hello` answers.
    greeting: String,
}

/// The plugin: its parsed configuration.
pub struct Hello {
    greeting: String,
}

impl Plugin for Hello {
    type Config = Config;
    const PHASES: &'static [Phase] = &[Phase::RequestHeaders, Phase::ResponseHeaders];

    fn new(config: Config) -> Result<Self, String> {
        if config.greeting.trim().is_empty() {
            return Err("`greeting` must not be empty".to_owned());
        }
        Ok(Hello {
            greeting: config.greeting,
        })
    }

    fn on_request_headers(&self, request: &mut Request) -> Action {
        if request.path_only() != "/hello" {
            return Action::Continue;
        }
        metrics::counter_add("greetings", 1);
        host::log(
            Level::Debug,
            &format!("greeting {}", request.client_address()),
        );
        let name = request.query_param("name").unwrap_or("world");
        Action::Respond(LocalResponse::json(
            200,
            &serde_json::json!({ "message": format!("{}, {name}!", self.greeting) }),
        ))
    }

    fn on_response_headers(&self, _request: &Request, response: &mut Response) -> Action {
        response
            .headers
            .set("x-hello", "passed through the hello plugin");
        Action::Continue
    }
}

weir_plugin_sdk::export_plugin!(Hello);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_plugin_sdk::testing;

    fn plugin() -> Hello {
        Hello::new(Config {
            greeting: "Hi".into(),
        })
        .unwrap()
    }

    #[test]
    fn greets_on_hello() {
        testing::reset();
        let mut request = Request::new("GET", "/hello?name=Ada");
        let Action::Respond(response) = plugin().on_request_headers(&mut request) else {
            panic!("expected a local response");
        };
        assert_eq!(response.status, 200);
        assert_eq!(
            String::from_utf8(response.body).unwrap(),
            r#"{"message":"Hi, Ada!"}"#
        );
        testing::with(|fake| assert_eq!(fake.counters["greetings"], 1));
    }

    #[test]
    fn passes_other_requests_and_tags_responses() {
        let mut request = Request::new("GET", "/other");
        assert_eq!(plugin().on_request_headers(&mut request), Action::Continue);
        let mut response = Response::new(200);
        plugin().on_response_headers(&request, &mut response);
        assert!(response.headers.contains("x-hello"));
    }

    #[test]
    fn refuses_an_empty_greeting() {
        assert!(
            Hello::new(Config {
                greeting: " ".into()
            })
            .is_err()
        );
    }
}
