//! Exports `weir:plugin/handler@0.1.9` (the WIT in `wit/` is the gateway's, one patch
//! version on): a 0.1.8 gateway loads it, since it calls nothing newer. Its request
//! phase tags the request with `x-minor: 0.1.9` and queues the same response header (a
//! 0.1.1 function); its `init` declares a response header for the gateway to set (a
//! 0.1.2 function). Then it makes a batch of edits in one call (0.1.7's
//! `edit-headers`), one of them invalid, and reports what the call said in
//! `x-batch-result`.

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use exports::weir::plugin::handler::Guest;
use std::time::{SystemTime, UNIX_EPOCH};
use weir::plugin::host;

use weir::plugin::types::{
    Action, BodyAction, EditError, Header, HeaderChange, HeaderEdit, Phase, Request, RequestGiven,
    RequestOutcome, Response,
};

struct Minor;

impl Guest for Minor {
    fn init() -> Result<(), String> {
        let declared = HeaderEdit::Set(Header {
            name: "x-minor-declared".into(),
            value: b"0.1.9".to_vec(),
        });
        host::declare_edits(&[], &[declared]).map_err(|e| format!("{e:?}"))
    }

    fn phases() -> Vec<Phase> {
        vec![Phase::RequestHeaders]
    }

    fn on_request_headers(request: &Request) -> Action {
        let _ = request.set_header("x-minor", b"0.1.9");
        let _ = request.set_response_header("x-minor", b"0.1.9");
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

    fn header_reads() -> Vec<String> {
        vec!["x-read".into(), "x-multi".into()]
    }

    /// The one-crossing request phase (0.1.8), which the gateway calls instead of
    /// `on-request-headers`: it does what that does through the handle, echoes what
    /// the gateway sent (`x-given`: each field as `position=value`; `x-given-time`:
    /// whether the time is within a minute of the guest's clock), and returns edits of
    /// the request (`x-returned`, two `x-returned-twice`) and of the response
    /// (`x-returned`). With `x-return-bad` in the request it also returns an edit the
    /// gateway must refuse; with `x-return-cut`, an edit cut short.
    fn on_request(request: &Request, given: RequestGiven) -> RequestOutcome {
        let action = Self::on_request_headers(request);
        // The fields, flat: a u32 LE position, a u32 LE length, the value; repeated.
        let mut fields = Vec::new();
        let sent = given.fields.unwrap_or_default();
        let mut rest = &sent[..];
        while rest.len() >= 8 {
            let at = u32::from_le_bytes(rest[..4].try_into().unwrap());
            let len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
            let value = &rest[8..8 + len];
            fields.push(format!("{at}={}", String::from_utf8_lossy(value)));
            rest = &rest[8 + len..];
        }
        let _ = request.set_header("x-given", fields.join(",").as_bytes());
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let recent = now.abs_diff(given.received_ns) < 60_000_000_000;
        let _ = request.set_header("x-given-time", if recent { b"recent" } else { b"off" });
        // The edits, flat: an op byte (16 added: for the response), then the name and
        // the value, each after its u32 LE length.
        let mut edits = Vec::new();
        let mut edit = |op: u8, name: &str, value: &[u8]| {
            edits.push(op);
            edits.extend_from_slice(&(name.len() as u32).to_le_bytes());
            edits.extend_from_slice(name.as_bytes());
            edits.extend_from_slice(&(value.len() as u32).to_le_bytes());
            edits.extend_from_slice(value);
        };
        edit(0, "x-returned", b"request");
        edit(16, "x-returned", b"response");
        edit(2, "x-returned-twice", b"1");
        edit(2, "x-returned-twice", b"2");
        if request.header("x-return-bad").is_some() {
            edit(2, "x-bad", b"a\r\nb");
        }
        if request.header("x-return-cut").is_some() {
            edit(2, "x-cut", b"whole");
            edits.truncate(edits.len() - 2);
        }
        RequestOutcome { action, edits }
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
