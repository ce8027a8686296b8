//! Exports `weir:plugin/handler@0.1.7` (the WIT in `wit/` is the gateway's, one patch
//! version on): a 0.1.6 gateway loads it, since it calls nothing newer. Its request
//! phase tags the request with `x-minor: 0.1.7` and queues the same response header (a
//! 0.1.1 function); its `init` declares a response header for the gateway to set (a
//! 0.1.2 function).

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::weir::plugin::handler::Guest;
use weir::plugin::host;
use weir::plugin::types::{Action, BodyAction, Header, HeaderEdit, Phase, Request, Response};

struct Minor;

impl Guest for Minor {
    fn init() -> Result<(), String> {
        let declared = HeaderEdit::Set(Header {
            name: "x-minor-declared".into(),
            value: b"0.1.7".to_vec(),
        });
        host::declare_edits(&[], &[declared]).map_err(|e| format!("{e:?}"))
    }

    fn phases() -> Vec<Phase> {
        vec![Phase::RequestHeaders]
    }

    fn on_request_headers(request: &Request) -> Action {
        let _ = request.set_header("x-minor", b"0.1.7");
        let _ = request.set_response_header("x-minor", b"0.1.7");
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

export!(Minor);
