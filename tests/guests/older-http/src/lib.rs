//! Exports `weir:plugin/handler@0.1.4`, built from the WIT as it was in 0.1.4 (frozen in
//! `wit/`): a plugin that imports `http-client@0.1.4`, which has `call` only, keeps
//! loading and calling into gateways whose `http-client` has grown. Its request phase
//! calls the `url` in its config and tags the request
//! with `x-older-http: STATUS BODY` and its `request-serial` (a 0.1.4 function).

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::weir::plugin::handler::Guest;
use weir::plugin::host;
use weir::plugin::http_client::{OutboundRequest, call};
use weir::plugin::types::{Action, BodyAction, Phase, Request, Response};

struct OlderHttp;

impl Guest for OlderHttp {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn phases() -> Vec<Phase> {
        vec![Phase::RequestHeaders]
    }

    fn on_request_headers(request: &Request) -> Action {
        // The route's config is `{"url":"..."}` (no JSON parser in this guest).
        let config = host::config();
        let url = config
            .split("\"url\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_default()
            .to_owned();
        let tag = match call(&OutboundRequest {
            method: "GET".into(),
            url,
            headers: Vec::new(),
            body: Vec::new(),
            timeout_ms: 5000,
        }) {
            Ok(response) => format!(
                "{} {}",
                response.status,
                String::from_utf8_lossy(&response.body)
            ),
            Err(e) => format!("error {e:?}"),
        };
        let _ = request.set_header("x-older-http", tag.as_bytes());
        let serial = host::request_serial().to_string();
        let _ = request.set_header("x-older-serial", serial.as_bytes());
        Action::Continue
    }

    fn on_request_body(_: &Request, _: Vec<u8>) -> BodyAction {
        BodyAction::Continue(None)
    }

    fn on_response_headers(_: &Request, _: &Response) -> Action {
        Action::Continue
    }

    fn on_response_body(_: &Request, _: &Response, _: Vec<u8>) -> BodyAction {
        BodyAction::Continue(None)
    }

    fn on_log(_: &Request, _: &Response) {}
}

export!(OlderHttp);
