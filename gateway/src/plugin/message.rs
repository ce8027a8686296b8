//! The request and response a phase call works on, lent to the instance's store for
//! the call, and the host side of the `request` and `response` resources.
//!
//! The guest gets a borrowed handle, not a copy: it asks for the header it needs, and
//! its edits go straight to the gateway's `HeaderMap`. The chain runner moves the
//! message into the store before a call and takes it back after, so nothing is cloned
//! per plugin. Copying whole header lists in and edit lists out made every header cost
//! on every call; with handles a plugin pays only for the headers it reads
//! (`cargo bench -p weir-tests --bench plugin_call` compares; docs/performance.md).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, StatusCode};
use wasmtime::component::Resource;

use super::bindings::types::{self, EditError};
use super::edits::Edit;
use super::state::HostState;
use crate::cache::KeyParts;
use crate::telemetry::metrics::Refusal;

pub(crate) use super::edits::{DeclaredEdits, QueuedEdit};

/// What does not change during a request's pass through a chain.
#[derive(Debug)]
pub(crate) struct RequestInfo {
    pub(crate) method: Method,
    pub(crate) scheme: &'static str,
    /// Kept as received: made into strings only if a plugin asks.
    pub(crate) authority: Option<HeaderValue>,
    pub(crate) client: HeaderValue,
    pub(crate) route: Arc<str>,
}

/// The request as a phase sees it.
#[derive(Debug)]
pub(crate) struct RequestView {
    pub(crate) info: Arc<RequestInfo>,
    pub(crate) path: PathAndQuery,
    pub(crate) headers: HeaderMap,
    /// Whether edits are allowed (request phases), or refused as read-only.
    pub(crate) writable: bool,
    /// Response edits the request phases queued, in order.
    pub(crate) queued: Vec<QueuedEdit>,
    /// The chain position of the plugin being called, stamped on what it queues.
    pub(crate) caller: usize,
    /// What the request phases told the response cache.
    pub(crate) cache: CacheSteering,
}

/// What a request's plugins told the response cache (`request.cache-key-append`,
/// `request.set-uncacheable`); read only on routes with `cache`. Empty, with nothing
/// allocated, until a plugin calls.
#[derive(Debug, Default)]
pub struct CacheSteering {
    /// Parts the key is to hold beyond the URL.
    pub key_parts: KeyParts,
    /// Whether the cache stays out of this request.
    pub uncacheable: bool,
}

impl CacheSteering {
    /// A mark to [`CacheSteering::undo`] back to.
    pub(crate) fn mark(&self) -> CacheMark {
        CacheMark {
            key_parts: self.key_parts.mark(),
            uncacheable: self.uncacheable,
        }
    }

    /// Drops what was told since `mark` (by a call that failed).
    pub(crate) fn undo(&mut self, mark: CacheMark) {
        self.key_parts.undo(mark.key_parts);
        self.uncacheable = mark.uncacheable;
    }
}

/// Where a [`CacheSteering`] stood before a call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheMark {
    key_parts: (usize, usize),
    uncacheable: bool,
}

impl RequestView {
    /// A view for the request phases (`writable`) or a read-only one.
    pub(crate) fn new(
        info: Arc<RequestInfo>,
        path: PathAndQuery,
        headers: HeaderMap,
        writable: bool,
    ) -> RequestView {
        RequestView {
            info,
            path,
            headers,
            writable,
            queued: Vec::new(),
            caller: 0,
            cache: CacheSteering::default(),
        }
    }
}

/// The response as a phase sees it.
#[derive(Debug)]
pub(crate) struct ResponseView {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) writable: bool,
    /// Whether a plugin kept the response out of the cache (`response.set-uncacheable`).
    pub(crate) uncacheable: bool,
}

impl ResponseView {
    /// The response lent to the response-headers phases (`writable`), or a read-only one.
    pub(crate) fn new(status: StatusCode, headers: HeaderMap, writable: bool) -> ResponseView {
        ResponseView {
            status,
            headers,
            writable,
            uncacheable: false,
        }
    }
}

/// The handles passed to the guest. Only one request and one response are ever lent
/// to an instance at a time, so the handle needs no table entry.
pub(crate) fn request_handle() -> Resource<types::Request> {
    Resource::new_borrow(0)
}

pub(crate) fn response_handle() -> Resource<types::Response> {
    Resource::new_borrow(0)
}

/// The message lent to the current call (`what` names it). A guest that calls a method
/// on a message it was not lent (it kept a handle past its call, which the component
/// model forbids for borrows) traps. A function of the field rather than of
/// `HostState`, so that an edit can hold the message beside the instance's kept header
/// names.
fn lent<'a, T>(view: &'a mut Option<T>, what: &str) -> wasmtime::Result<&'a mut T> {
    view.as_mut().ok_or_else(|| {
        wasmtime::format_err!("the {what} is not available outside the phase call it was passed to")
    })
}

impl HostState {
    fn request(&mut self) -> wasmtime::Result<&mut RequestView> {
        lent(&mut self.request, "request")
    }

    fn response(&mut self) -> wasmtime::Result<&mut ResponseView> {
        lent(&mut self.response, "response")
    }

    /// Logs a refused edit under the plugin's log budget, and hands the error back.
    pub(super) fn refused(&self, error: EditError) -> Result<(), EditError> {
        self.ctx.series.refused(Refusal::Edit);
        if self.ctx.may_log() {
            tracing::warn!(target: "weir::plugin", plugin = %self.ctx.name, version = self.ctx.short_version(), "edit refused: {error:?}");
        }
        Err(error)
    }
}

/// A header value as text (empty when absent or not visible ASCII).
fn text(value: Option<&HeaderValue>) -> String {
    value
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    headers.get(name).map(|v| v.as_bytes().to_vec())
}

fn header_values(headers: &HeaderMap, name: &str) -> Vec<Vec<u8>> {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.as_bytes().to_vec())
        .collect()
}

fn all_headers(headers: &HeaderMap) -> Vec<types::Header> {
    headers
        .iter()
        .map(|(name, value)| types::Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

impl HostState {
    fn edit_request(
        &mut self,
        edit: Edit,
        name: &str,
        value: Bytes,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let request = lent(&mut self.request, "request")?;
        let result = if request.writable {
            self.names
                .edit(edit, name, value)
                .and_then(|edit| edit.apply(&mut request.headers))
        } else {
            Err(EditError::ReadOnly)
        };
        Ok(result.or_else(|e| self.refused(e)))
    }

    /// Queues a response edit from a request phase.
    fn queue_response_edit(
        &mut self,
        edit: Edit,
        name: &str,
        value: Bytes,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let request = lent(&mut self.request, "request")?;
        let result = if request.writable {
            self.names.edit(edit, name, value).map(|edit| {
                let plugin = request.caller;
                request.queued.push(QueuedEdit { plugin, edit });
            })
        } else {
            Err(EditError::ReadOnly)
        };
        Ok(result.or_else(|e| self.refused(e)))
    }

    fn edit_response(
        &mut self,
        edit: Edit,
        name: &str,
        value: Bytes,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let response = lent(&mut self.response, "response")?;
        let result = if response.writable {
            self.names
                .edit(edit, name, value)
                .and_then(|edit| edit.apply(&mut response.headers))
        } else {
            Err(EditError::ReadOnly)
        };
        Ok(result.or_else(|e| self.refused(e)))
    }
}

/// A batched edit (`edit-headers`) as the single-edit calls take it.
fn change(change: types::HeaderChange) -> (Edit, String, Bytes) {
    match change {
        types::HeaderChange::Set(h) => (Edit::Set, h.name, Bytes::from(h.value)),
        types::HeaderChange::SetIfAbsent(h) => (Edit::SetIfAbsent, h.name, Bytes::from(h.value)),
        types::HeaderChange::Append(h) => (Edit::Append, h.name, Bytes::from(h.value)),
        types::HeaderChange::Remove(name) => (Edit::Remove, name, Bytes::new()),
    }
}

/// Makes each edit of a batch with `make` (which logs and counts a refusal), and
/// returns the first refused with its position, counted from `offset`.
fn each_change(
    changes: Vec<types::HeaderChange>,
    offset: usize,
    first: &mut Option<(u32, EditError)>,
    mut make: impl FnMut(Edit, &str, Bytes) -> wasmtime::Result<Result<(), EditError>>,
) -> wasmtime::Result<()> {
    for (i, c) in changes.into_iter().enumerate() {
        let (edit, name, value) = change(c);
        if let Err(e) = make(edit, &name, value)? {
            let at = u32::try_from(offset + i).unwrap_or(u32::MAX);
            first.get_or_insert((at, e));
        }
    }
    Ok(())
}

impl types::HostRequest for HostState {
    fn method(&mut self, _: Resource<types::Request>) -> wasmtime::Result<String> {
        Ok(self.request()?.info.method.as_str().to_owned())
    }

    fn scheme(&mut self, _: Resource<types::Request>) -> wasmtime::Result<String> {
        Ok(self.request()?.info.scheme.to_owned())
    }

    fn authority(&mut self, _: Resource<types::Request>) -> wasmtime::Result<String> {
        let info = &self.request()?.info;
        Ok(text(info.authority.as_ref()))
    }

    fn path(&mut self, _: Resource<types::Request>) -> wasmtime::Result<String> {
        Ok(self.request()?.path.as_str().to_owned())
    }

    fn client_address(&mut self, _: Resource<types::Request>) -> wasmtime::Result<String> {
        Ok(text(Some(&self.request()?.info.client)))
    }

    fn route(&mut self, _: Resource<types::Request>) -> wasmtime::Result<String> {
        Ok(self.request()?.info.route.to_string())
    }

    fn header(
        &mut self,
        _: Resource<types::Request>,
        name: String,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(header_value(&self.request()?.headers, &name))
    }

    fn header_all(
        &mut self,
        _: Resource<types::Request>,
        name: String,
    ) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(header_values(&self.request()?.headers, &name))
    }

    fn headers(&mut self, _: Resource<types::Request>) -> wasmtime::Result<Vec<types::Header>> {
        Ok(all_headers(&self.request()?.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<types::Request>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.edit_request(Edit::Set, &name, Bytes::from(value))
    }

    fn append_header(
        &mut self,
        _: Resource<types::Request>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.edit_request(Edit::Append, &name, Bytes::from(value))
    }

    fn remove_header(
        &mut self,
        _: Resource<types::Request>,
        name: String,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.edit_request(Edit::Remove, &name, Bytes::new())
    }

    fn set_path(
        &mut self,
        _: Resource<types::Request>,
        path: String,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let request = self.request()?;
        let result = if !request.writable {
            Err(EditError::ReadOnly)
        } else {
            match PathAndQuery::try_from(path.as_str()) {
                Ok(pq) if path.starts_with('/') => {
                    request.path = pq;
                    Ok(())
                }
                _ => Err(EditError::InvalidPath(path)),
            }
        };
        Ok(result.or_else(|e| self.refused(e)))
    }

    fn set_response_header(
        &mut self,
        _: Resource<types::Request>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.queue_response_edit(Edit::Set, &name, Bytes::from(value))
    }

    fn set_response_header_if_absent(
        &mut self,
        _: Resource<types::Request>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.queue_response_edit(Edit::SetIfAbsent, &name, Bytes::from(value))
    }

    fn append_response_header(
        &mut self,
        _: Resource<types::Request>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.queue_response_edit(Edit::Append, &name, Bytes::from(value))
    }

    fn remove_response_header(
        &mut self,
        _: Resource<types::Request>,
        name: String,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.queue_response_edit(Edit::Remove, &name, Bytes::new())
    }

    fn cache_key_append(
        &mut self,
        _: Resource<types::Request>,
        part: String,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let request = self.request()?;
        let result = match request.writable {
            false => Err(EditError::ReadOnly),
            true => request
                .cache
                .key_parts
                .push(&part)
                .map_err(|_| EditError::InvalidValue(part)),
        };
        Ok(result.or_else(|e| self.refused(e)))
    }

    fn set_uncacheable(
        &mut self,
        _: Resource<types::Request>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let request = self.request()?;
        let result = match request.writable {
            false => Err(EditError::ReadOnly),
            true => {
                request.cache.uncacheable = true;
                Ok(())
            }
        };
        Ok(result.or_else(|e| self.refused(e)))
    }

    fn edit_headers(
        &mut self,
        _: Resource<types::Request>,
        edits: Vec<types::HeaderChange>,
        response_edits: Vec<types::HeaderChange>,
    ) -> wasmtime::Result<Result<(), (u32, EditError)>> {
        let mut first = None;
        let count = edits.len();
        each_change(edits, 0, &mut first, |edit, name, value| {
            self.edit_request(edit, name, value)
        })?;
        each_change(response_edits, count, &mut first, |edit, name, value| {
            self.queue_response_edit(edit, name, value)
        })?;
        Ok(first.map_or(Ok(()), Err))
    }

    fn drop(&mut self, _: Resource<types::Request>) -> wasmtime::Result<()> {
        Ok(())
    }
}

impl types::HostResponse for HostState {
    fn status(&mut self, _: Resource<types::Response>) -> wasmtime::Result<u16> {
        Ok(self.response()?.status.as_u16())
    }

    fn set_status(
        &mut self,
        _: Resource<types::Response>,
        status: u16,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let response = self.response()?;
        let result = if !response.writable {
            Err(EditError::ReadOnly)
        } else {
            match StatusCode::from_u16(status) {
                Ok(code) => {
                    response.status = code;
                    Ok(())
                }
                Err(_) => Err(EditError::InvalidStatus(status)),
            }
        };
        Ok(result.or_else(|e| self.refused(e)))
    }

    fn header(
        &mut self,
        _: Resource<types::Response>,
        name: String,
    ) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(header_value(&self.response()?.headers, &name))
    }

    fn header_all(
        &mut self,
        _: Resource<types::Response>,
        name: String,
    ) -> wasmtime::Result<Vec<Vec<u8>>> {
        Ok(header_values(&self.response()?.headers, &name))
    }

    fn headers(&mut self, _: Resource<types::Response>) -> wasmtime::Result<Vec<types::Header>> {
        Ok(all_headers(&self.response()?.headers))
    }

    fn set_header(
        &mut self,
        _: Resource<types::Response>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.edit_response(Edit::Set, &name, Bytes::from(value))
    }

    fn append_header(
        &mut self,
        _: Resource<types::Response>,
        name: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.edit_response(Edit::Append, &name, Bytes::from(value))
    }

    fn remove_header(
        &mut self,
        _: Resource<types::Response>,
        name: String,
    ) -> wasmtime::Result<Result<(), EditError>> {
        self.edit_response(Edit::Remove, &name, Bytes::new())
    }

    fn set_uncacheable(
        &mut self,
        _: Resource<types::Response>,
    ) -> wasmtime::Result<Result<(), EditError>> {
        let response = self.response()?;
        let result = match response.writable {
            false => Err(EditError::ReadOnly),
            true => {
                response.uncacheable = true;
                Ok(())
            }
        };
        Ok(result.or_else(|e| self.refused(e)))
    }

    fn edit_headers(
        &mut self,
        _: Resource<types::Response>,
        edits: Vec<types::HeaderChange>,
    ) -> wasmtime::Result<Result<(), (u32, EditError)>> {
        let mut first = None;
        each_change(edits, 0, &mut first, |edit, name, value| {
            self.edit_response(edit, name, value)
        })?;
        Ok(first.map_or(Ok(()), Err))
    }

    fn drop(&mut self, _: Resource<types::Response>) -> wasmtime::Result<()> {
        Ok(())
    }
}
