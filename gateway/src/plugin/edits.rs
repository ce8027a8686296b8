//! Header edits a plugin makes: checked once ([`HeaderEdit::parse`]: a valid name and
//! value, and no hop-by-hop field), then applied to a message now, queued for the
//! response ([`QueuedEdit`]), or declared in `init` for the gateway to make on every
//! request ([`DeclaredEdits`]).

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::reply::LocalReply;

use super::bindings::types::{self, EditError};

/// A response edit queued by a request phase (`set-response-header` and kin), applied
/// where the plugin's response phase would run.
#[derive(Debug)]
pub(crate) struct QueuedEdit {
    /// The chain position of the plugin that queued it.
    pub(crate) plugin: usize,
    pub(super) edit: HeaderEdit,
}

impl QueuedEdit {
    /// Applies the edit to the response's headers (a message already holding the most
    /// fields a header map can is left as it is).
    pub(crate) fn apply(self, headers: &mut HeaderMap) {
        let _ = self.edit.apply(headers);
    }
}

/// How a header edit goes.
pub(super) enum Edit {
    Set,
    SetIfAbsent,
    Append,
    Remove,
}

/// The most header fields (values, counting each of a repeated name) a message may hold
/// for a plugin to add another: far beyond any real message (servers refuse heads past
/// 8–64 KiB), and it keeps a plugin that adds fields in a loop (or hands over one huge
/// batch) from growing the gateway's memory without end. `HeaderMap` itself panics past
/// 32,768 names.
const MAX_FIELDS: usize = 10_000;

/// What a refusal says when a message holds [`MAX_FIELDS`].
const TOO_MANY_FIELDS: &str = "the message already holds 10000 header fields";

/// A checked header edit.
#[derive(Debug, Clone)]
pub(super) enum HeaderEdit {
    Set(HeaderName, HeaderValue),
    SetIfAbsent(HeaderName, HeaderValue),
    Append(HeaderName, HeaderValue),
    Remove(HeaderName),
}

impl HeaderEdit {
    /// Checks the name and value a guest gave: a hop-by-hop name is refused.
    pub(super) fn parse(edit: Edit, name: &str, value: Bytes) -> Result<HeaderEdit, EditError> {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| EditError::InvalidName(name.into()))?;
        HeaderEdit::checked(edit, name, value)
    }

    /// [`HeaderEdit::parse`] with a name already read (see [`HeaderNames`]).
    pub(super) fn checked(
        edit: Edit,
        name: HeaderName,
        value: Bytes,
    ) -> Result<HeaderEdit, EditError> {
        if gateway_owned(&name) {
            return Err(EditError::InvalidName(name.as_str().into()));
        }
        if let Edit::Remove = edit {
            return Ok(HeaderEdit::Remove(name));
        }
        // The gateway strips these once as a message arrives; a plugin adding one later
        // would reach the next hop.
        if crate::hop_by_hop::is_hop_by_hop(&name) {
            return Err(EditError::InvalidName(name.as_str().into()));
        }
        // The value the guest's call handed over is kept, not copied: checked here first
        // (http's rule: visible ASCII, spaces, tabs, and obs-text) so that a refusal can
        // still quote it.
        // Without the early exit the loop is vectorised: it costs a few instructions for
        // a typical value, not a few per byte (http's own check below has one per byte).
        let valid = value
            .iter()
            .fold(true, |ok, &b| ok & ((b >= 32) & (b != 127) | (b == b'\t')));
        if !valid {
            return Err(EditError::InvalidValue(
                String::from_utf8_lossy(&value).into_owned(),
            ));
        }
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| EditError::InvalidValue(String::new()))?;
        Ok(match edit {
            Edit::Set => HeaderEdit::Set(name, value),
            Edit::SetIfAbsent => HeaderEdit::SetIfAbsent(name, value),
            _ => HeaderEdit::Append(name, value),
        })
    }

    /// Applies a copy of the edit (names and values are shared bytes: no allocation).
    fn apply_copy(&self, headers: &mut HeaderMap) {
        let _ = self.clone().apply(headers);
    }

    /// Makes the edit. `Err` when it would add a field to a message that already holds
    /// [`MAX_FIELDS`]: a plugin adding fields in a loop gets a refusal (and the
    /// panicking `insert` and `append` of a full header map are never reached).
    pub(super) fn apply(self, headers: &mut HeaderMap) -> Result<(), EditError> {
        fn full<E>(_: E) -> EditError {
            EditError::InvalidValue(TOO_MANY_FIELDS.to_owned())
        }
        // The count first: the name's lookup is paid only by a message at the bound.
        if headers.len() >= MAX_FIELDS {
            let adds = match &self {
                HeaderEdit::Append(..) => true,
                HeaderEdit::Set(name, _) | HeaderEdit::SetIfAbsent(name, _) => {
                    !headers.contains_key(name)
                }
                HeaderEdit::Remove(_) => false,
            };
            if adds {
                return Err(full(()));
            }
        }
        match self {
            HeaderEdit::Set(name, value) => {
                headers.try_insert(name, value).map_err(full)?;
            }
            HeaderEdit::SetIfAbsent(name, value) => {
                // The name is valid: the entry can only fail for want of room.
                headers
                    .try_entry(name)
                    .map_err(full)?
                    .or_try_insert(value)
                    .map_err(full)?;
            }
            HeaderEdit::Append(name, value) => {
                headers.try_append(name, value).map_err(full)?;
            }
            HeaderEdit::Remove(name) => {
                headers.remove(name);
            }
        }
        Ok(())
    }
}

/// Whether the gateway alone decides this header: `content-length` frames the body the
/// gateway relays (a plugin's value would desynchronise the next hop's reading of it),
/// and `host` is what the route sends upstream (`host_rewrite`), not a plugin.
pub(super) fn gateway_owned(name: &HeaderName) -> bool {
    name == http::header::CONTENT_LENGTH || name == http::header::HOST
}

/// The header names an instance's plugin edits, read once. A name the gateway does not
/// know (`x-request-id`, say) costs an allocation each time it is read; a plugin edits
/// the same few names on every request, so an instance keeps them. Bounded: a plugin
/// that edits many different names reads the rest each time.
#[derive(Debug, Default)]
pub(crate) struct HeaderNames {
    names: Vec<HeaderName>,
}

/// How many names an instance keeps.
const KEPT_NAMES: usize = 16;

impl HeaderNames {
    /// `name` as a header name, if it is one.
    pub(super) fn get(&mut self, name: &str) -> Option<HeaderName> {
        if let Some(kept) = self.names.iter().find(|n| n.as_str() == name) {
            return Some(kept.clone());
        }
        let parsed = HeaderName::from_bytes(name.as_bytes()).ok()?;
        // Only a name given as it is kept (lower case) is found again by the search.
        if self.names.len() < KEPT_NAMES && parsed.as_str() == name {
            self.names.push(parsed.clone());
        }
        Some(parsed)
    }

    /// A guest's header edit ([`HeaderEdit::parse`]), its name read through the kept
    /// names.
    pub(super) fn edit(
        &mut self,
        edit: Edit,
        name: &str,
        value: Bytes,
    ) -> Result<HeaderEdit, EditError> {
        let read = self.get(name);
        read.ok_or_else(|| EditError::InvalidName(name.into()))
            .and_then(|name| HeaderEdit::checked(edit, name, value))
    }
}

/// The header edits a route's config makes on every request and response, declared by
/// the plugin in `init` (`host.declare-edits`) and made by the gateway at the plugin's
/// place in the chain, without a call.
#[derive(Debug, Default)]
pub(crate) struct DeclaredEdits {
    request: Vec<HeaderEdit>,
    response: Vec<HeaderEdit>,
}

impl DeclaredEdits {
    /// Checks what a guest declared.
    pub(crate) fn parse(
        request: Vec<types::HeaderEdit>,
        response: Vec<types::HeaderEdit>,
    ) -> Result<DeclaredEdits, EditError> {
        let check = |edits: Vec<types::HeaderEdit>| {
            edits
                .into_iter()
                .map(|edit| match edit {
                    types::HeaderEdit::Set(h) => {
                        HeaderEdit::parse(Edit::Set, &h.name, Bytes::from(h.value))
                    }
                    types::HeaderEdit::Append(h) => {
                        HeaderEdit::parse(Edit::Append, &h.name, Bytes::from(h.value))
                    }
                    types::HeaderEdit::Remove(name) => {
                        HeaderEdit::parse(Edit::Remove, &name, Bytes::new())
                    }
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(DeclaredEdits {
            request: check(request)?,
            response: check(response)?,
        })
    }

    /// Makes the request edits.
    pub(crate) fn apply_to_request(&self, headers: &mut HeaderMap) {
        for edit in &self.request {
            edit.apply_copy(headers);
        }
    }

    /// Makes the response edits.
    pub(crate) fn apply_to_response(&self, headers: &mut HeaderMap) {
        for edit in &self.response {
            edit.apply_copy(headers);
        }
    }

    /// Whether there are response edits.
    pub(crate) fn edits_responses(&self) -> bool {
        !self.response.is_empty()
    }
}

/// A plugin's local answer as the gateway will send it: an invalid status becomes 500;
/// headers an edit could not set (invalid, hop-by-hop, `content-length`, `host`) are
/// dropped, each reported to `refused`; the body is framed by the gateway.
pub(crate) fn local_head(
    status: u16,
    headers: Vec<types::Header>,
    body: Vec<u8>,
    mut refused: impl FnMut(String),
) -> LocalReply {
    let status = StatusCode::from_u16(status).unwrap_or_else(|_| {
        refused(format!("invalid status {status}; sending 500"));
        StatusCode::INTERNAL_SERVER_ERROR
    });
    let mut map = HeaderMap::with_capacity(headers.len());
    for types::Header { name, value } in headers {
        let made = HeaderEdit::parse(Edit::Append, &name, Bytes::from(value))
            .and_then(|edit| edit.apply(&mut map));
        if let Err(e) = made {
            refused(format!("header dropped: {e:?}"));
        }
    }
    LocalReply {
        status,
        headers: map,
        body: Bytes::from(body),
    }
}

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// [`local_head`] over raw parts; the refusals are counted.
    pub fn local_head(
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: Vec<u8>,
    ) -> (LocalReply, usize) {
        let mut refusals = 0;
        let headers = headers
            .into_iter()
            .map(|(name, value)| types::Header { name, value })
            .collect();
        let reply = super::local_head(status, headers, body, |_| refusals += 1);
        (reply, refusals)
    }

    /// Parses a header edit as a plugin's `set-header` would and applies it to
    /// `headers`; whether it was accepted.
    pub fn set_header(headers: &mut HeaderMap, name: &str, value: &[u8]) -> bool {
        HeaderEdit::parse(Edit::Set, name, Bytes::copy_from_slice(value))
            .and_then(|edit| edit.apply(headers))
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn edit_headers(
        headers: &mut HeaderMap,
        edit: Edit,
        name: &str,
        value: Bytes,
    ) -> Result<(), EditError> {
        HeaderEdit::parse(edit, name, value).and_then(|edit| edit.apply(headers))
    }

    /// A plugin adding fields without end is refused at the header map's bound, where
    /// `HeaderMap::append` would panic.
    #[test]
    fn edits_past_the_header_maps_bound_are_refused_not_a_panic() {
        let one = || Bytes::from_static(b"1");
        for distinct in [false, true] {
            let mut headers = HeaderMap::new();
            let mut made = 0;
            let refusal = loop {
                let name = if distinct {
                    format!("x-many-{made}")
                } else {
                    "x-many".into()
                };
                match edit_headers(&mut headers, Edit::Append, &name, one()) {
                    Ok(()) => made += 1,
                    Err(e) => break e,
                }
                assert!(made <= 40_000, "no bound");
            };
            assert_eq!(made, MAX_FIELDS);
            assert!(matches!(&refusal, EditError::InvalidValue(why) if why.contains("10000")));
            for edit in [Edit::Set, Edit::SetIfAbsent] {
                let result = edit_headers(&mut headers, edit, "x-other", one());
                assert!(result.is_err(), "a new name has no room either");
            }
            // Setting a name already there adds nothing; removing makes room.
            let there = if distinct { "x-many-1" } else { "x-many" };
            edit_headers(&mut headers, Edit::Set, there, one()).unwrap();
            edit_headers(&mut headers, Edit::Remove, "x-many-0", Bytes::new()).unwrap();
            edit_headers(&mut headers, Edit::Set, "x-other", one()).unwrap();
        }
    }

    #[derive(serde::Deserialize)]
    struct Table {
        cases: Vec<Case>,
    }

    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        start: Vec<(String, String)>,
        edits: Vec<(String, String, String, String)>,
        end: Vec<(String, String)>,
    }

    fn by_name(headers: &HeaderMap) -> BTreeMap<String, Vec<Vec<u8>>> {
        let mut map: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
        for (name, value) in headers {
            map.entry(name.as_str().to_owned())
                .or_default()
                .push(value.as_bytes().to_vec());
        }
        map
    }

    #[test]
    fn kept_names_are_bounded_and_read_as_the_gateway_reads_them() {
        let mut names = HeaderNames::default();
        for i in 0..40 {
            let name = format!("x-name-{i}");
            assert_eq!(names.get(&name).unwrap().as_str(), name);
        }
        assert_eq!(names.names.len(), KEPT_NAMES);
        // A name given in another case is read (lower-cased) but not kept: the search
        // compares as given.
        let mut names = HeaderNames::default();
        assert_eq!(names.get("X-Tenant").unwrap().as_str(), "x-tenant");
        assert!(names.names.is_empty());
        assert!(names.get("bad name").is_none());
        assert_eq!(names.get("x-tenant").unwrap().as_str(), "x-tenant");
        assert_eq!(names.get("x-tenant").unwrap().as_str(), "x-tenant");
        assert_eq!(names.names.len(), 1);
    }

    /// The table the SDK's native fake passes too: a plugin's native tests see the
    /// gateway's rules.
    #[test]
    fn plugin_edits_pass_the_shared_table() {
        let table: Table = serde_json::from_str(include_str!(
            "../../../plugin-sdk/tests/header-semantics.json"
        ))
        .unwrap();
        assert!(table.cases.len() >= 9);
        for case in table.cases {
            let mut headers = HeaderMap::new();
            for (name, value) in &case.start {
                headers.append(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                );
            }
            for (op, name, value, expected) in &case.edits {
                let edit = || match op.as_str() {
                    "set" => Edit::Set,
                    "append" => Edit::Append,
                    "remove" => Edit::Remove,
                    other => panic!("unknown op {other}"),
                };
                let outcome = |result: Result<(), EditError>| match result {
                    Ok(()) => "ok",
                    Err(EditError::InvalidName(_)) => "invalid-name",
                    Err(EditError::InvalidValue(_)) => "invalid-value",
                    Err(_) => "other",
                };
                let value = || Bytes::copy_from_slice(value.as_bytes());
                let result = edit_headers(&mut headers, edit(), name, value());
                assert_eq!(outcome(result), expected, "{}: {op} {name:?}", case.name);
                // What a request phase queues for the response is checked the same way.
                let queued = HeaderEdit::parse(edit(), name, value()).map(drop);
                // And so is an edit whose name an instance kept from an earlier call.
                let mut names = HeaderNames::default();
                for _ in 0..2 {
                    let kept = names.edit(edit(), name, value()).map(drop);
                    assert_eq!(outcome(kept), expected, "{} (kept name): {op}", case.name);
                }
                assert_eq!(outcome(queued), expected, "{} (queued): {op}", case.name);
            }
            let mut end: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
            for (name, value) in case.end {
                end.entry(name).or_default().push(value.into_bytes());
            }
            assert_eq!(by_name(&headers), end, "{}", case.name);
        }
    }
}
