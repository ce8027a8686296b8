//! Exports `weir:plugin/handler@0.1.0`, built from the WIT as it was in 0.1.0 (frozen in
//! `wit/`): later 0.1 gateways keep loading plugins built before them. Its request phase
//! tags the request with `x-older: 0.1.0`, its response phase the response.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::weir::plugin::handler::Guest;
use weir::plugin::types::{Action, BodyAction, Phase, Request, Response};

struct Older;

impl Guest for Older {
    fn init() -> Result<(), String> {
        Ok(())
    }

    fn phases() -> Vec<Phase> {
        vec![Phase::RequestHeaders, Phase::ResponseHeaders]
    }

    fn on_request_headers(request: &Request) -> Action {
        let _ = request.set_header("x-older", b"0.1.0");
        Action::Continue
    }

    fn on_request_body(_: &Request, _: Vec<u8>) -> BodyAction {
        BodyAction::Continue(None)
    }

    fn on_response_headers(_: &Request, response: &Response) -> Action {
        let _ = response.set_header("x-older", b"0.1.0");
        Action::Continue
    }

    fn on_response_body(_: &Request, _: &Response, _: Vec<u8>) -> BodyAction {
        BodyAction::Continue(None)
    }

    fn on_log(_: &Request, _: &Response) {}
}

export!(Older);
