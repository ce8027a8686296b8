//! A test plugin for the body and log phases:
//!
//! - request body: a JSON object gets `"seen_by": "bodies"` added (anything else is
//!   answered with 400), the request gets `x-body-bytes` with the original length, and
//!   the response (a queued edit) `x-request-body-bytes` with the same;
//! - response body: upper-cased;
//! - log: reports the final status, the path and the request body's length (kept in
//!   the request's state since the request-body phase) to `config.log_url` with
//!   `http-call`.

use serde::Deserialize;
use weir_plugin_sdk::host::http::{OutboundRequest, call};
use weir_plugin_sdk::{
    Action, Body, LocalResponse, PhaseResult, Plugin, Request, Response, plugin,
};

#[derive(Deserialize)]
pub struct Config {
    log_url: String,
}

pub struct Bodies {
    log_url: String,
}

/// What the log phase learns from the request-body phase of the same request.
#[derive(Default)]
pub struct Seen {
    request_bytes: Option<usize>,
}

#[plugin]
impl Plugin for Bodies {
    type Config = Config;
    type State = Seen;

    fn new(config: Config) -> Result<Self, String> {
        Ok(Bodies {
            log_url: config.log_url,
        })
    }

    fn on_request_body(
        &self,
        request: &mut Request,
        body: &mut Body,
        seen: &mut Seen,
    ) -> PhaseResult {
        seen.request_bytes = Some(body.len());
        request
            .headers
            .set("x-body-bytes", body.len().to_string())?;
        request
            .response_headers
            .set("x-request-body-bytes", body.len().to_string())?;
        let Ok(serde_json::Value::Object(mut object)) = serde_json::from_slice(body) else {
            return Ok(Action::Respond(LocalResponse::json(
                400,
                &serde_json::json!({ "error": "a JSON object is required" }),
            )));
        };
        object.insert("seen_by".into(), "bodies".into());
        body.set(serde_json::Value::Object(object).to_string());
        Ok(Action::Continue)
    }

    fn on_response_body(
        &self,
        _request: &Request,
        _response: &Response,
        body: &mut Body,
        _: &mut Seen,
    ) -> PhaseResult {
        body.to_mut().make_ascii_uppercase();
        Ok(Action::Continue)
    }

    fn on_log(&self, request: &Request, response: &Response, seen: Seen) {
        let bytes = seen
            .request_bytes
            .map_or("none".to_owned(), |n| n.to_string());
        let url = format!(
            "{}?status={}&path={}&request_bytes={bytes}",
            self.log_url,
            response.status(),
            request.path_only()
        );
        // Nothing can be done about a failed report in the log phase.
        let _ = call(&OutboundRequest::get(&url));
    }
}
