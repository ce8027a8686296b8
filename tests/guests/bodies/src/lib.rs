//! A test plugin for the body and log phases:
//!
//! - request body: a JSON object gets `"seen_by": "bodies"` added (anything else is
//!   answered with 400), the request gets `x-body-bytes` with the original length, and
//!   the response (a queued edit) `x-request-body-bytes` with the same;
//! - response body: upper-cased;
//! - log: reports the final status to `config.log_url` with `http-call`.

use serde::Deserialize;
use weir_plugin_sdk::host::http::{OutboundRequest, call};
use weir_plugin_sdk::{Action, LocalResponse, Phase, Plugin, Request, Response};

#[derive(Deserialize)]
pub struct Config {
    log_url: String,
}

pub struct Bodies {
    log_url: String,
}

impl Plugin for Bodies {
    type Config = Config;
    const PHASES: &'static [Phase] = &[Phase::RequestBody, Phase::ResponseBody, Phase::Log];

    fn new(config: Config) -> Result<Self, String> {
        Ok(Bodies {
            log_url: config.log_url,
        })
    }

    fn on_request_body(&self, request: &mut Request, body: &mut Vec<u8>) -> Action {
        request.headers.set("x-body-bytes", body.len().to_string());
        request
            .response_headers
            .set("x-request-body-bytes", body.len().to_string());
        let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body) else {
            return Action::Respond(LocalResponse::json(
                400,
                &serde_json::json!({ "error": "a JSON object is required" }),
            ));
        };
        object.insert("seen_by".into(), "bodies".into());
        *body = serde_json::Value::Object(object).to_string().into_bytes();
        Action::Continue
    }

    fn on_response_body(
        &self,
        _request: &Request,
        _response: &Response,
        body: &mut Vec<u8>,
    ) -> Action {
        body.make_ascii_uppercase();
        Action::Continue
    }

    fn on_log(&self, request: &Request, response: &Response) {
        let url = format!(
            "{}?status={}&path={}",
            self.log_url,
            response.status(),
            request.path_only()
        );
        let _ = call(&OutboundRequest::get(&url));
    }
}

weir_plugin_sdk::export_plugin!(Bodies);
