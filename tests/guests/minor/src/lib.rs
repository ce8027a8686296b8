//! Exports `weir:plugin/handler@0.1.8` (the WIT in `wit/` is the gateway's, one patch
//! version on): a 0.1.7 gateway loads it, since it calls nothing newer. Its request
//! phase tags the request with `x-minor: 0.1.8` and queues the same response header (a
//! 0.1.1 function); its `init` declares a response header for the gateway to set (a
//! 0.1.2 function). Then it makes a batch of edits in one call (0.1.7's
//! `edit-headers`), one of them invalid, and reports what the call said in
//! `x-batch-result`.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::weir::plugin::handler::Guest;
use weir::plugin::host;
use weir::plugin::types::{
    Action, BodyAction, EditError, Header, HeaderChange, HeaderEdit, Phase, Request, Response,
};

struct Minor;

impl Guest for Minor {
    fn init() -> Result<(), String> {
        let declared = HeaderEdit::Set(Header {
            name: "x-minor-declared".into(),
            value: b"0.1.8".to_vec(),
        });
        host::declare_edits(&[], &[declared]).map_err(|e| format!("{e:?}"))
    }

    fn phases() -> Vec<Phase> {
        vec![Phase::RequestHeaders]
    }

    fn on_request_headers(request: &Request) -> Action {
        let _ = request.set_header("x-minor", b"0.1.8");
        let _ = request.set_response_header("x-minor", b"0.1.8");
        let header = |name: &str, value: &str| Header {
            name: name.into(),
            value: value.as_bytes().to_vec(),
        };
        let result = request.edit_headers(
            &[
                HeaderChange::Set(header("x-batch", "1")),
                HeaderChange::Set(header("bad name", "v")),
                HeaderChange::Append(header("x-batch", "2")),
                HeaderChange::SetIfAbsent(header("x-minor", "not set: present")),
            ],
            &[
                // Queued after `set-response-header` above, so the field is there.
                HeaderChange::SetIfAbsent(header("x-minor", "not set: present")),
                HeaderChange::Append(header("x-batch-response", "r")),
                HeaderChange::Remove("content-length".into()),
            ],
        );
        let said = match result {
            Ok(()) => "ok".to_owned(),
            Err((at, EditError::InvalidName(name))) => format!("{at} invalid-name {name}"),
            Err((at, other)) => format!("{at} {other:?}"),
        };
        let _ = request.set_header("x-batch-result", said.as_bytes());
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
