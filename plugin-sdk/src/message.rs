//! Requests, responses, bodies and local responses as a plugin sees them.
//!
//! Inside the gateway, [`Request`] and [`Response`] are handles on the gateway's own
//! message: reading a header asks the gateway for that one header, and an edit changes
//! the real message at once. Nothing is copied that the plugin does not read. In native
//! unit tests they hold the message themselves ([`Request::new`], [`Response::new`]) and
//! record the edits for assertions.

use std::cell::{OnceCell, RefCell};
use std::time::{Duration, SystemTime};

use crate::bindings::weir::plugin::types as wit;
use crate::error::EditError;
use crate::flat::Op;
use crate::headers::{Batch, EditKind, Headers, Local, Source, check_edit};

/// An edit queued for the response, in a native test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Queued {
    Set(String, Vec<u8>),
    SetIfAbsent(String, Vec<u8>),
    Append(String, Vec<u8>),
    Remove(String),
}

/// Header edits a request phase makes on the response this request will get (see
/// [`Request::response_headers`]). Write-only: the response does not exist yet.
#[derive(Debug)]
pub struct QueuedHeaders<'a> {
    /// The gateway's request, inside the gateway; `None` in native tests, where the
    /// edits are recorded instead.
    host: Option<&'a wit::Request>,
    pub(crate) recorded: Vec<Queued>,
    /// In a phase called in one crossing: the buffer its edits go to, flat, returned
    /// with its result (shared with the request's [`Headers`]).
    batch: Option<&'a RefCell<Vec<u8>>>,
}

impl QueuedHeaders<'_> {
    fn new(host: Option<&wit::Request>) -> QueuedHeaders<'_> {
        QueuedHeaders {
            host,
            recorded: Vec::new(),
            batch: None,
        }
    }

    fn batched(edits: &RefCell<Vec<u8>>) -> QueuedHeaders<'_> {
        QueuedHeaders {
            host: None,
            recorded: Vec::new(),
            batch: Some(edits),
        }
    }

    fn queue(
        &mut self,
        kind: EditKind,
        if_absent: bool,
        name: &str,
        value: &[u8],
    ) -> Result<(), EditError> {
        if let Some(r) = self.host {
            let done = match kind {
                EditKind::Set if if_absent => r.set_response_header_if_absent(name, value),
                EditKind::Set => r.set_response_header(name, value),
                EditKind::Append => r.append_response_header(name, value),
                EditKind::Remove => r.remove_response_header(name),
            };
            return done.map_err(EditError::from);
        }
        if let Some(edits) = self.batch {
            let op = match kind {
                EditKind::Set if if_absent => Op::SetIfAbsent,
                EditKind::Set => Op::Set,
                EditKind::Append => Op::Append,
                EditKind::Remove => Op::Remove,
            };
            return Batch::push(edits, kind, op, true, name, value);
        }
        let name = check_edit(kind, name, value)?;
        let value = value.to_vec();
        self.recorded.push(match kind {
            EditKind::Set if if_absent => Queued::SetIfAbsent(name, value),
            EditKind::Set => Queued::Set(name, value),
            EditKind::Append => Queued::Append(name, value),
            EditKind::Remove => Queued::Remove(name),
        });
        Ok(())
    }

    /// Sets `name` to `value` on the response, replacing every field of that name.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.queue(EditKind::Set, false, name, value.as_ref())
    }

    /// Sets `name` to `value` on the response only if it has no field of `name` by
    /// then: a default that the upstream's own header, or a local response from a later
    /// plugin, overrides.
    pub fn set_if_absent(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.queue(EditKind::Set, true, name, value.as_ref())
    }

    /// Adds a field to the response, keeping any others of the same name.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.queue(EditKind::Append, false, name, value.as_ref())
    }

    /// Removes every field of `name` from the response.
    pub fn remove(&mut self, name: &str) -> Result<(), EditError> {
        self.queue(EditKind::Remove, false, name, &[])
    }

    /// Applies the recorded edits to a test response, as the gateway does.
    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn apply_recorded(&self, headers: &mut Headers<'_>) {
        for edit in &self.recorded {
            // Checked when queued: the same rules cannot refuse them now.
            let _ = match edit {
                Queued::Set(name, value) => headers.set(name, value),
                Queued::SetIfAbsent(name, value) if !headers.contains(name) => {
                    headers.set(name, value)
                }
                Queued::SetIfAbsent(..) => Ok(()),
                Queued::Append(name, value) => headers.append(name, value),
                Queued::Remove(name) => headers.remove(name),
            };
        }
    }
}

/// The request, as a phase sees it. Edits (headers, path) change the request that goes
/// upstream; in response phases the request is read-only.
#[derive(Debug)]
pub struct Request<'a> {
    /// The request headers.
    pub headers: Headers<'a>,
    /// The way to set a response header from a request phase: edits made here apply
    /// to the response this request gets (the upstream's, or the gateway's own error),
    /// where this plugin's [`on_response_headers`](crate::Plugin::on_response_headers)
    /// would run (in reverse chain order, just before it if the plugin has one). A
    /// plugin that only tags responses (an id, quota headers, CORS) needs no response
    /// phase then, and the gateway makes one call per request instead of two. They
    /// apply exactly when the plugin's response phase would be called: edits queued in
    /// an `on_request_headers` that answers locally do not reach that local response
    /// (put the header on the [`LocalResponse`] itself). For edits that are the same on
    /// every response, whatever the request, see [`Plugin::static_edits`](crate::Plugin::static_edits):
    /// the same edits, declared once and made with no call at all.
    pub response_headers: QueuedHeaders<'a>,
    method: OnceCell<String>,
    scheme: OnceCell<String>,
    authority: OnceCell<String>,
    client_address: OnceCell<String>,
    route: OnceCell<String>,
    path: OnceCell<String>,
    new_path: Option<String>,
    received: OnceCell<SystemTime>,
    /// What a test request was told for the cache (inside the gateway, the gateway
    /// keeps it).
    pub(crate) cache_key: Vec<String>,
    pub(crate) uncacheable: bool,
}

/// The most bytes of cache key parts one request may append (the gateway's bound).
const MAX_CACHE_KEY_PARTS: usize = 1024;

impl Request<'static> {
    /// A request for tests: `method` and `path`, no headers, client `127.0.0.1`, scheme
    /// `http`, authority `localhost`, route `test`.
    pub fn new(method: &str, path: &str) -> Request<'static> {
        Request {
            headers: Headers::default(),
            response_headers: QueuedHeaders::new(None),
            method: OnceCell::from(method.to_owned()),
            scheme: OnceCell::from("http".to_owned()),
            authority: OnceCell::from("localhost".to_owned()),
            client_address: OnceCell::from("127.0.0.1".to_owned()),
            route: OnceCell::from("test".to_owned()),
            path: OnceCell::from(path.to_owned()),
            new_path: None,
            received: OnceCell::new(),
            cache_key: Vec::new(),
            uncacheable: false,
        }
    }

    /// Adds a header, as received (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request<'static> {
        self.headers.push_received(name, value.as_ref());
        self
    }

    /// Sets the client address (builder style, for tests).
    pub fn with_client_address(self, address: &str) -> Request<'static> {
        Request {
            client_address: OnceCell::from(address.to_owned()),
            ..self
        }
    }

    /// Sets the authority (builder style, for tests).
    pub fn with_authority(self, authority: &str) -> Request<'static> {
        Request {
            authority: OnceCell::from(authority.to_owned()),
            ..self
        }
    }

    /// Sets when the request was received (builder style, for tests; otherwise
    /// [`Request::received_at`] is the time it is first asked).
    pub fn with_received_at(self, time: SystemTime) -> Request<'static> {
        Request {
            received: OnceCell::from(time),
            ..self
        }
    }

    /// Sets the route name (builder style, for tests).
    pub fn with_route(self, route: &str) -> Request<'static> {
        Request {
            route: OnceCell::from(route.to_owned()),
            ..self
        }
    }
}

impl<'a> Request<'a> {
    pub(crate) fn from_host(handle: &'a wit::Request) -> Request<'a> {
        Request::with_headers(
            Headers::host(Source::Request(handle), None),
            QueuedHeaders::new(Some(handle)),
            OnceCell::new(),
        )
    }

    /// The request of a phase the gateway called in one crossing (`on-request`): the
    /// headers the plugin reads (`reads`, lower-case) are in `given`, and edits, of the
    /// request and queued for the response, go to `edits` (flat, returned with the
    /// phase's result) rather than a call each.
    pub(crate) fn from_call(
        handle: &'a wit::Request,
        reads: &'a [String],
        given: wit::RequestGiven,
        edits: &'a RefCell<Vec<u8>>,
    ) -> Request<'a> {
        let received = SystemTime::UNIX_EPOCH + Duration::from_nanos(given.received_ns);
        Request::with_headers(
            Headers::host(
                Source::Request(handle),
                Some(Batch::new(reads, given.fields.unwrap_or_default(), edits)),
            ),
            QueuedHeaders::batched(edits),
            OnceCell::from(received),
        )
    }

    fn with_headers(
        headers: Headers<'a>,
        response_headers: QueuedHeaders<'a>,
        received: OnceCell<SystemTime>,
    ) -> Request<'a> {
        Request {
            headers,
            response_headers,
            received,
            method: OnceCell::new(),
            scheme: OnceCell::new(),
            authority: OnceCell::new(),
            client_address: OnceCell::new(),
            route: OnceCell::new(),
            path: OnceCell::new(),
            new_path: None,
            cache_key: Vec::new(),
            uncacheable: false,
        }
    }

    /// Asks the gateway for a field once; later reads are free.
    fn cached<'s>(
        &'s self,
        cell: &'s OnceCell<String>,
        fetch: fn(&wit::Request) -> String,
    ) -> &'s str {
        cell.get_or_init(|| match &self.headers.source {
            Source::Request(handle) => fetch(handle),
            _ => String::new(),
        })
    }

    /// When the gateway started handling the request (its plugin chain), by its wall
    /// clock: the same for every plugin of the chain. In
    /// [`on_request_headers`](crate::Plugin::on_request_headers) the gateway sends it
    /// with the call, so it costs nothing, where reading the clock
    /// (`SystemTime::now`) is a call into the gateway. In other phases, and with
    /// gateways before WIT 0.1.8, it is the clock when first asked.
    pub fn received_at(&self) -> SystemTime {
        *self.received.get_or_init(SystemTime::now)
    }

    /// The method, e.g. `GET`.
    pub fn method(&self) -> &str {
        self.cached(&self.method, wit::Request::method)
    }

    /// `http` or `https`.
    pub fn scheme(&self) -> &str {
        self.cached(&self.scheme, wit::Request::scheme)
    }

    /// The host (and port) the request is for.
    pub fn authority(&self) -> &str {
        self.cached(&self.authority, wit::Request::authority)
    }

    /// The client's IP address.
    pub fn client_address(&self) -> &str {
        self.cached(&self.client_address, wit::Request::client_address)
    }

    /// The name of the matched route.
    pub fn route(&self) -> &str {
        self.cached(&self.route, wit::Request::route)
    }

    /// The path with query, e.g. `/users/7?expand=1`.
    pub fn path(&self) -> &str {
        match &self.new_path {
            Some(path) => path,
            None => self.cached(&self.path, wit::Request::path),
        }
    }

    /// The path without the query.
    pub fn path_only(&self) -> &str {
        let p = self.path();
        p.split_once('?').map_or(p, |(path, _)| path)
    }

    /// The query string (without `?`), if any.
    pub fn query(&self) -> Option<&str> {
        self.path().split_once('?').map(|(_, q)| q)
    }

    /// The value of query parameter `name` (not percent-decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query()?
            .split('&')
            .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }

    /// Sends the request upstream with this path (and query) instead. It must start
    /// with `/` and be a valid request target.
    pub fn set_path(&mut self, path: impl Into<String>) -> Result<(), EditError> {
        let path = path.into();
        match &self.headers.source {
            Source::Request(handle) => handle.set_path(&path)?,
            _ => {
                let ok = path.starts_with('/')
                    && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
                if !ok {
                    return Err(EditError::InvalidPath(path));
                }
            }
        }
        self.new_path = Some(path);
        Ok(())
    }

    /// Adds `part` to the key the gateway's response cache files this request under, so
    /// that requests differing only in what the plugin knows (a tenant or plan from a
    /// token, a feature flag) are cached apart: a request finds only an entry stored with
    /// the same parts in the same order (the chain's order, then the calls'). Call it in
    /// a request phase, from values the plugin checked (a verified claim, not a raw
    /// client header the route's `vary` could name instead).
    ///
    /// On a route without `cache` it changes nothing (and is not an error). Up to 1024
    /// bytes of parts per request: past that the part is refused with
    /// [`EditError::InvalidValue`]. If the phase then fails, its parts are dropped.
    /// Since `weir:plugin` 0.1.6: a plugin that calls it needs a gateway from 0.1.6 on.
    ///
    /// ```
    /// use weir_plugin_sdk::Request;
    ///
    /// let mut request = Request::new("GET", "/reports").with_header("x-tenant", "acme");
    /// let tenant = request.headers.get_str("x-tenant").unwrap_or("none").to_owned();
    /// request.cache_key_append(&tenant).unwrap();
    /// assert_eq!(request.edits().cache_key, ["acme"]);
    /// ```
    pub fn cache_key_append(&mut self, part: &str) -> Result<(), EditError> {
        if let Source::Request(handle) = &self.headers.source {
            return handle.cache_key_append(part).map_err(EditError::from);
        }
        let total: usize = self.cache_key.iter().map(String::len).sum::<usize>() + part.len();
        if total > MAX_CACHE_KEY_PARTS {
            return Err(EditError::InvalidValue(part.to_owned()));
        }
        self.cache_key.push(part.to_owned());
        Ok(())
    }

    /// Keeps the gateway's response cache out of this request: it is neither answered
    /// from the cache nor stored, and goes to the upstream (`x-cache: MISS`); an entry
    /// stored for its key stays for other requests. For answers that depend on who
    /// asks. To keep only the response out of the cache once you have seen it, use
    /// [`Response::set_uncacheable`] instead.
    ///
    /// On a route without `cache` it changes nothing. If the phase then fails, it is
    /// undone. Since `weir:plugin` 0.1.6: a plugin that calls it needs a gateway from
    /// 0.1.6 on.
    pub fn set_uncacheable(&mut self) -> Result<(), EditError> {
        if let Source::Request(handle) = &self.headers.source {
            return handle.set_uncacheable().map_err(EditError::from);
        }
        self.uncacheable = true;
        Ok(())
    }

    /// The changes made so far to a request built with [`Request::new`] (for tests;
    /// empty inside the gateway, where edits apply at once).
    pub fn edits(&self) -> RequestEdits {
        let local = self.headers.local_fields().cloned().unwrap_or_default();
        let mut edits = RequestEdits {
            removed: local.removed,
            set: local.set,
            appended: local.appended,
            path: self.new_path.clone(),
            cache_key: self.cache_key.clone(),
            uncacheable: self.uncacheable,
            ..RequestEdits::default()
        };
        let mut response = Local::default();
        for edit in &self.response_headers.recorded {
            match edit.clone() {
                Queued::Set(name, value) => {
                    response.forget(&name);
                    response.set.push((name, value));
                }
                Queued::SetIfAbsent(name, value) => {
                    edits.response_set_if_absent.push((name, value));
                }
                Queued::Append(name, value) => response.appended.push((name, value)),
                Queued::Remove(name) => {
                    response.forget(&name);
                    response.removed.push(name);
                }
            }
        }
        edits.response_removed = response.removed;
        edits.response_set = response.set;
        edits.response_appended = response.appended;
        edits
    }
}

/// The edits a phase made to a test request, for assertions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestEdits {
    /// Header names removed.
    pub removed: Vec<String>,
    /// Headers set (replacing).
    pub set: Vec<(String, Vec<u8>)>,
    /// Headers appended.
    pub appended: Vec<(String, Vec<u8>)>,
    /// The new path, if changed.
    pub path: Option<String>,
    /// Header names queued for removal from the response.
    pub response_removed: Vec<String>,
    /// Headers queued to be set on the response.
    pub response_set: Vec<(String, Vec<u8>)>,
    /// Headers queued to be set on the response unless it has them.
    pub response_set_if_absent: Vec<(String, Vec<u8>)>,
    /// Headers queued to be appended to the response.
    pub response_appended: Vec<(String, Vec<u8>)>,
    /// Parts appended to the cache key ([`Request::cache_key_append`]), in order.
    pub cache_key: Vec<String>,
    /// Whether [`Request::set_uncacheable`] was called.
    pub uncacheable: bool,
}

/// The response, as a response phase sees it. Header and status edits change what the
/// client gets; in the response-body and log phases it is read-only.
#[derive(Debug)]
pub struct Response<'a> {
    /// The response headers.
    pub headers: Headers<'a>,
    status: OnceCell<u16>,
    uncacheable: bool,
}

impl Response<'static> {
    /// A response for tests.
    pub fn new(status: u16) -> Response<'static> {
        Response {
            headers: Headers::default(),
            status: OnceCell::from(status),
            uncacheable: false,
        }
    }

    /// Adds a header, as received (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Response<'static> {
        self.headers.push_received(name, value.as_ref());
        self
    }
}

impl<'a> Response<'a> {
    pub(crate) fn from_host(handle: &'a wit::Response) -> Response<'a> {
        Response {
            headers: Headers::host(Source::Response(handle), None),
            status: OnceCell::new(),
            uncacheable: false,
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        *self.status.get_or_init(|| match &self.headers.source {
            Source::Response(handle) => handle.status(),
            _ => 0,
        })
    }

    /// Changes the status code sent to the client (100..=999).
    pub fn set_status(&mut self, status: u16) -> Result<(), EditError> {
        match &self.headers.source {
            Source::Response(handle) => handle.set_status(status)?,
            _ if (100..=999).contains(&status) => {}
            _ => return Err(EditError::InvalidStatus(status)),
        }
        self.status = OnceCell::from(status);
        Ok(())
    }

    /// Keeps this response out of the gateway's response cache: the client still gets
    /// it, but a response the cache would have stored (a miss on a route with `cache`)
    /// is not, whatever its `Cache-Control` says, and the requests that waited for it
    /// go to the upstream themselves. For what only the response shows: an error
    /// dressed as a `200`, a header the upstream marks personal answers with. An entry
    /// a hit was served from stays stored; on a route without `cache` it changes
    /// nothing. Only in [`on_response_headers`](crate::Plugin::on_response_headers)
    /// (the body and log phases come after the cache has decided); if the phase then
    /// fails, it is undone. Since `weir:plugin` 0.1.6: a plugin that calls it needs a
    /// gateway from 0.1.6 on.
    ///
    /// ```
    /// use weir_plugin_sdk::Response;
    ///
    /// let mut response = Response::new(200).with_header("x-personal", "1");
    /// if response.headers.contains("x-personal") {
    ///     response.set_uncacheable().unwrap();
    /// }
    /// assert!(response.is_uncacheable());
    /// ```
    pub fn set_uncacheable(&mut self) -> Result<(), EditError> {
        if let Source::Response(handle) = &self.headers.source {
            handle.set_uncacheable()?;
        }
        self.uncacheable = true;
        Ok(())
    }

    /// Whether [`Response::set_uncacheable`] was called on this response (in this
    /// phase call, inside the gateway).
    pub fn is_uncacheable(&self) -> bool {
        self.uncacheable
    }
}

/// A whole request or response body, as a body phase gets it. Read it through
/// [`std::ops::Deref`] (it is a `[u8]`); change it with [`Body::set`] or
/// [`Body::to_mut`]. Only a body that was changed is sent back to the gateway.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    bytes: Vec<u8>,
    changed: bool,
}

impl Body {
    /// A body, as received (for tests).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Body {
        Body {
            bytes: bytes.into(),
            changed: false,
        }
    }

    /// The body as text, if it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.bytes).ok()
    }

    /// Replaces the body.
    pub fn set(&mut self, bytes: impl Into<Vec<u8>>) {
        self.bytes = bytes.into();
        self.changed = true;
    }

    /// The bytes, to change in place (the body counts as changed).
    pub fn to_mut(&mut self) -> &mut Vec<u8> {
        self.changed = true;
        &mut self.bytes
    }

    /// Whether [`Body::set`] or [`Body::to_mut`] was called.
    pub fn is_changed(&self) -> bool {
        self.changed
    }

    /// The bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// A response the plugin writes itself, instead of the upstream's.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResponse {
    /// Status code.
    pub status: u16,
    /// Headers. The gateway drops (and counts) any an edit could not set: invalid
    /// ones, hop-by-hop ones, `content-length` and `host` (it frames the body itself).
    pub headers: Headers<'static>,
    /// Body bytes (at most the plugin's `max_body_bytes`, else the call fails).
    pub body: Vec<u8>,
}

impl LocalResponse {
    /// An empty response with `status`.
    pub fn new(status: u16) -> LocalResponse {
        LocalResponse {
            status,
            headers: Headers::default(),
            body: Vec::new(),
        }
    }

    /// A JSON response: `content-type: application/json` and `value` serialised with
    /// serde. A value serde cannot write as JSON (a map with non-string keys) gives a
    /// 500 with an empty body, and a log line.
    pub fn json<T: serde::Serialize + ?Sized>(status: u16, value: &T) -> LocalResponse {
        match serde_json::to_vec(value) {
            Ok(body) => LocalResponse::new(status)
                .header("content-type", "application/json")
                .body(body),
            Err(e) => {
                crate::host::log(
                    crate::host::Level::Error,
                    &format!("LocalResponse::json: {e}"),
                );
                LocalResponse::new(500)
            }
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> LocalResponse {
        self.headers.push_received(name, value.as_ref());
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> LocalResponse {
        self.body = body.into();
        self
    }

    pub(crate) fn into_wit(self) -> wit::LocalResponse {
        wit::LocalResponse {
            status: self.status,
            headers: self.headers.into_wit_fields(),
            body: self.body,
        }
    }
}

/// What a phase decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Go on (with whatever edits the phase made).
    Continue,
    /// Stop and answer the client with this response.
    Respond(LocalResponse),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_follow_the_last_operation_per_name() {
        let mut r = Request::new("GET", "/")
            .with_header("X-A", "1")
            .with_header("x-b", "2");
        r.headers.append("x-a", "2").unwrap();
        r.headers.set("x-a", "3").unwrap();
        r.headers.remove("x-b").unwrap();
        r.headers.append("x-c", "4").unwrap();
        assert_eq!(r.headers.get_str("X-A"), Some("3"));
        assert!(!r.headers.contains("x-b"));
        let edits = r.edits();
        assert_eq!(edits.removed, ["x-b"]);
        assert_eq!(edits.set, [("x-a".to_owned(), b"3".to_vec())]);
        assert_eq!(edits.appended, [("x-c".to_owned(), b"4".to_vec())]);
    }

    #[test]
    fn queued_response_edits_are_recorded_apart_from_request_edits() {
        let mut r = Request::new("GET", "/");
        r.response_headers.append("x-a", "1").unwrap();
        r.response_headers.set("X-A", "2").unwrap();
        r.response_headers.remove("x-b").unwrap();
        r.response_headers.append("vary", "origin").unwrap();
        r.response_headers
            .set_if_absent("cache-control", "no-store")
            .unwrap();
        let edits = r.edits();
        assert_eq!(
            edits.response_set_if_absent,
            [("cache-control".to_owned(), b"no-store".to_vec())]
        );
        assert!(edits.set.is_empty() && edits.appended.is_empty() && edits.removed.is_empty());
        assert_eq!(edits.response_set, [("x-a".to_owned(), b"2".to_vec())]);
        assert_eq!(edits.response_removed, ["x-b"]);
        assert_eq!(
            edits.response_appended,
            [("vary".to_owned(), b"origin".to_vec())]
        );
        assert!(r.headers.all().is_empty());
        let mut response = Response::new(200).with_header("cache-control", "max-age=1");
        r.response_headers.apply_recorded(&mut response.headers);
        assert_eq!(response.headers.get_str("x-a"), Some("2"));
        assert_eq!(response.headers.get_str("cache-control"), Some("max-age=1"));
    }

    #[test]
    fn refused_edits_are_errors_and_change_nothing() {
        let mut r = Request::new("GET", "/");
        assert_eq!(
            r.headers.set("bad name", "v"),
            Err(EditError::InvalidName("bad name".into()))
        );
        assert_eq!(
            r.headers.set("x-ok", "line\r\nbreak"),
            Err(EditError::InvalidValue("line\r\nbreak".into()))
        );
        assert_eq!(
            r.headers.append("Transfer-Encoding", "chunked"),
            Err(EditError::InvalidName("transfer-encoding".into()))
        );
        assert_eq!(
            r.response_headers.set("content-length", "1"),
            Err(EditError::InvalidName("content-length".into()))
        );
        assert_eq!(
            r.set_path("no-slash"),
            Err(EditError::InvalidPath("no-slash".into()))
        );
        let mut response = Response::new(200);
        assert_eq!(response.set_status(42), Err(EditError::InvalidStatus(42)));
        assert_eq!(response.status(), 200);
        assert!(r.headers.all().is_empty());
        assert_eq!(r.path(), "/");
        assert_eq!(r.edits(), RequestEdits::default());
    }

    #[test]
    fn cache_steering_is_recorded_and_bounded() {
        let mut r = Request::new("GET", "/");
        r.cache_key_append("tenant-a").unwrap();
        r.cache_key_append("plan pro").unwrap();
        r.set_uncacheable().unwrap();
        let long = "x".repeat(1024);
        assert_eq!(
            r.cache_key_append(&long),
            Err(EditError::InvalidValue(long.clone()))
        );
        let edits = r.edits();
        assert_eq!(edits.cache_key, ["tenant-a", "plan pro"]);
        assert!(edits.uncacheable);
        // Exactly the bound is allowed.
        let mut r = Request::new("GET", "/");
        r.cache_key_append(&long).unwrap();
        assert_eq!(
            r.cache_key_append("y"),
            Err(EditError::InvalidValue("y".into()))
        );
        assert_eq!(r.edits().cache_key, [long]);
        assert!(!r.edits().uncacheable);
        let mut response = Response::new(200);
        assert!(!response.is_uncacheable());
        response.set_uncacheable().unwrap();
        assert!(response.is_uncacheable());
    }

    #[test]
    fn a_body_is_changed_only_when_written() {
        let mut body = Body::new("abc");
        assert_eq!(&*body, b"abc");
        assert!(!body.is_changed());
        body.to_mut().push(b'd');
        assert!(body.is_changed());
        assert_eq!(body.as_str(), Some("abcd"));
    }

    #[test]
    fn json_responses_take_any_serialize() {
        #[derive(serde::Serialize)]
        struct Denied<'a> {
            error: &'a str,
        }
        let r = LocalResponse::json(403, &Denied { error: "no" });
        assert_eq!(r.body, br#"{"error":"no"}"#);
        assert_eq!(r.headers.get_str("content-type"), Some("application/json"));
        let map: std::collections::BTreeMap<(u8, u8), u8> = [((1, 2), 3)].into();
        assert_eq!(LocalResponse::json(200, &map).status, 500);
    }

    #[test]
    fn query_helpers() {
        let r = Request::new("GET", "/a/b?x=1&key=abc&flag");
        assert_eq!(r.path_only(), "/a/b");
        assert_eq!(r.query_param("key"), Some("abc"));
        assert_eq!(r.query_param("flag"), Some(""));
        assert_eq!(r.query_param("nope"), None);
    }
}
