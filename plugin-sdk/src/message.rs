//! Requests, responses and local responses as a plugin sees them: header helpers that
//! handle bytes and case-insensitive names.
//!
//! Inside the gateway, [`Request`] and [`Response`] are handles on the gateway's own
//! message: reading a header asks the gateway for that one header, and an edit changes
//! the real message at once. Nothing is copied that the plugin does not read. In native
//! unit tests they hold the message themselves ([`Request::new`], [`Response::new`]) and
//! record the edits for assertions.

use std::cell::OnceCell;

use crate::bindings::weir::plugin::types as wit;

/// Where a message lives: in the gateway (a borrowed handle for one phase call), or
/// here (tests, local responses).
#[derive(Debug)]
enum Source<'a> {
    Local(Local),
    Request(&'a wit::Request),
    Response(&'a wit::Response),
}

/// A message held by the plugin itself, with the edits made to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Local {
    fields: Vec<(String, Vec<u8>)>,
    removed: Vec<String>,
    set: Vec<(String, Vec<u8>)>,
    appended: Vec<(String, Vec<u8>)>,
}

impl Local {
    /// Drops earlier set/append edits of `name`: a later set or remove overrides them.
    fn forget(&mut self, name: &str) {
        self.set.retain(|(n, _)| n != name);
        self.appended.retain(|(n, _)| n != name);
    }
}

/// The header fields of a request, response or local response: case-insensitive names,
/// byte values (`get_str` gives them as text when they are UTF-8).
///
/// An edit with an invalid name (not an RFC 9110 token) or value (CR, LF, NUL or another
/// control byte) is ignored, and the gateway logs it with the plugin's name. So is
/// setting or appending a hop-by-hop field (`connection`, `keep-alive`,
/// `transfer-encoding`, `upgrade`, `trailer`, `te`, `proxy-*`): those describe the
/// gateway's own connections, which it manages (removing one is allowed). A local
/// response's fields are sent as given.
#[derive(Debug)]
pub struct Headers<'a> {
    source: Source<'a>,
}

impl Headers<'static> {
    /// Headers from `(name, value)` pairs (names are lower-cased), e.g. for a
    /// [`LocalResponse`] or a test.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Headers<'static> {
        Headers {
            source: Source::Local(Local {
                fields: pairs
                    .into_iter()
                    .map(|(n, v)| (n.as_ref().to_ascii_lowercase(), v.as_ref().to_vec()))
                    .collect(),
                ..Local::default()
            }),
        }
    }

    /// Adds a field as if it had been received: not recorded as an edit (test builders).
    fn push_received(&mut self, name: &str, value: &[u8]) {
        if let Source::Local(local) = &mut self.source {
            local
                .fields
                .push((name.to_ascii_lowercase(), value.to_vec()));
        }
    }
}

impl Default for Headers<'static> {
    fn default() -> Self {
        Headers::from_pairs(std::iter::empty::<(&str, &[u8])>())
    }
}

impl Clone for Headers<'static> {
    fn clone(&self) -> Self {
        Headers::from_pairs(self.all())
    }
}

impl PartialEq for Headers<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.all() == other.all()
    }
}

impl Headers<'_> {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<Vec<u8>> {
        match &self.source {
            Source::Local(local) => local
                .fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone()),
            Source::Request(r) => r.header(name),
            Source::Response(r) => r.header(name),
        }
    }

    /// The first value of `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name).and_then(|v| String::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<Vec<u8>> {
        match &self.source {
            Source::Local(local) => local
                .fields
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .collect(),
            Source::Request(r) => r.header_all(name),
            Source::Response(r) => r.header_all(name),
        }
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All fields, in order, names lower-case. Inside the gateway this copies every
    /// header: prefer [`Headers::get`] for the ones you need.
    pub fn all(&self) -> Vec<(String, Vec<u8>)> {
        let fields = match &self.source {
            Source::Local(local) => return local.fields.clone(),
            Source::Request(r) => r.headers(),
            Source::Response(r) => r.headers(),
        };
        fields.into_iter().map(|h| (h.name, h.value)).collect()
    }

    /// Replaces every field of `name` with one field of `value`.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        let _ = match &mut self.source {
            Source::Local(local) => {
                if let Some(name) = checked(name, value) {
                    local.fields.retain(|(n, _)| *n != name);
                    local.fields.push((name.clone(), value.to_vec()));
                    local.forget(&name);
                    local.set.push((name, value.to_vec()));
                }
                Ok(())
            }
            Source::Request(r) => r.set_header(name, value),
            Source::Response(r) => r.set_header(name, value),
        };
    }

    /// Adds a field, keeping any others of the same name.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        let _ = match &mut self.source {
            Source::Local(local) => {
                if let Some(name) = checked(name, value) {
                    local.fields.push((name.clone(), value.to_vec()));
                    local.appended.push((name, value.to_vec()));
                }
                Ok(())
            }
            Source::Request(r) => r.append_header(name, value),
            Source::Response(r) => r.append_header(name, value),
        };
    }

    /// Removes every field of `name`.
    pub fn remove(&mut self, name: &str) {
        let _ = match &mut self.source {
            Source::Local(local) => {
                let name = name.to_ascii_lowercase();
                local.fields.retain(|(n, _)| *n != name);
                local.forget(&name);
                local.removed.push(name);
                Ok(())
            }
            Source::Request(r) => r.remove_header(name),
            Source::Response(r) => r.remove_header(name),
        };
    }

    fn local(&self) -> Option<&Local> {
        match &self.source {
            Source::Local(local) => Some(local),
            _ => None,
        }
    }

    fn into_wit_fields(self) -> Vec<wit::Header> {
        self.all()
            .into_iter()
            .map(|(name, value)| wit::Header { name, value })
            .collect()
    }
}

/// Whether `name` can be an HTTP header name (an RFC 9110 token: letters, digits and
/// ``!#$%&'*+-.^_`|~``). Use it to check header names in a plugin's config at load,
/// rather than finding out per request that an edit was refused.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` can be an HTTP header value: no control characters except tab (so
/// no CR, LF or NUL).
pub fn is_header_value(value: impl AsRef<[u8]>) -> bool {
    value
        .as_ref()
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The lower-cased name when `name` and `value` are valid HTTP; otherwise `None`, after
/// logging why (as the gateway does for a plugin inside it).
fn checked(name: &str, value: &[u8]) -> Option<String> {
    if is_header_name(name) && is_header_value(value) {
        return Some(name.to_ascii_lowercase());
    }
    crate::host::log(
        crate::host::Level::Warn,
        &format!("invalid header `{name}` ignored"),
    );
    None
}

/// Header edits a request phase queues for the response (see
/// [`Request::response_headers`]). Write-only: the response does not exist yet.
#[derive(Debug)]
pub struct QueuedHeaders<'a> {
    /// The gateway's request, inside the gateway; `None` in native tests, where the
    /// edits are recorded instead.
    host: Option<&'a wit::Request>,
    recorded: Local,
    recorded_if_absent: Vec<(String, Vec<u8>)>,
}

impl QueuedHeaders<'_> {
    fn new(host: Option<&wit::Request>) -> QueuedHeaders<'_> {
        QueuedHeaders {
            host,
            recorded: Local::default(),
            recorded_if_absent: Vec::new(),
        }
    }

    /// Queues replacing every field of `name` with one field of `value`.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        if let Some(r) = self.host {
            let _ = r.set_response_header(name, value);
        } else if let Some(name) = checked(name, value) {
            self.recorded.forget(&name);
            self.recorded.set.push((name, value.to_vec()));
        }
    }

    /// Queues setting `name` to `value` only if the response has no field of `name` by
    /// then: a default that the upstream's own header, or a local response from a later
    /// plugin, overrides.
    pub fn set_if_absent(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        if let Some(r) = self.host {
            let _ = r.set_response_header_if_absent(name, value);
        } else if let Some(name) = checked(name, value) {
            self.recorded_if_absent.push((name, value.to_vec()));
        }
    }

    /// Queues adding a field, keeping any others of the same name.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let value = value.as_ref();
        if let Some(r) = self.host {
            let _ = r.append_response_header(name, value);
        } else if let Some(name) = checked(name, value) {
            self.recorded.appended.push((name, value.to_vec()));
        }
    }

    /// Queues removing every field of `name`.
    pub fn remove(&mut self, name: &str) {
        if let Some(r) = self.host {
            let _ = r.remove_response_header(name);
        } else {
            let name = name.to_ascii_lowercase();
            self.recorded.forget(&name);
            self.recorded.removed.push(name);
        }
    }
}

/// The request, as a phase sees it. Edits (headers, path) change the request that goes
/// upstream; in response phases the request is read-only.
#[derive(Debug)]
pub struct Request<'a> {
    /// The request headers.
    pub headers: Headers<'a>,
    /// Edits for the response this request will get, queued from a request phase and
    /// applied by the gateway where this plugin's response phase would run (in reverse
    /// chain order, just before [`Plugin::on_response_headers`](crate::Plugin) if the
    /// plugin has one). A plugin that only tags responses (an id, quota headers, CORS)
    /// uses this instead of a response phase, saving the gateway a second call per
    /// request; leave [`Phase::ResponseHeaders`](crate::Phase) out of its phases then.
    /// They apply exactly when the plugin's response phase would be called: edits
    /// queued in an `on_request_headers` that answers locally do not reach that local
    /// response (a refusal from `on_request_body` does get them). Needs a gateway
    /// speaking `weir:plugin` 0.1.1 or later.
    pub response_headers: QueuedHeaders<'a>,
    method: OnceCell<String>,
    scheme: OnceCell<String>,
    authority: OnceCell<String>,
    client_address: OnceCell<String>,
    route: OnceCell<String>,
    path: OnceCell<String>,
    new_path: Option<String>,
}

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
        }
    }

    /// Adds a header (builder style, for tests).
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
        Request {
            headers: Headers {
                source: Source::Request(handle),
            },
            response_headers: QueuedHeaders::new(Some(handle)),
            method: OnceCell::new(),
            scheme: OnceCell::new(),
            authority: OnceCell::new(),
            client_address: OnceCell::new(),
            route: OnceCell::new(),
            path: OnceCell::new(),
            new_path: None,
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
    /// with `/` and be a valid request target; otherwise it is ignored and logged.
    pub fn set_path(&mut self, path: impl Into<String>) {
        let path = path.into();
        let accepted = match &self.headers.source {
            Source::Request(handle) => handle.set_path(&path).is_ok(),
            _ => {
                let ok = path.starts_with('/')
                    && path.bytes().all(|b| b.is_ascii_graphic() && b != b'#');
                if !ok {
                    crate::host::log(
                        crate::host::Level::Warn,
                        &format!("invalid path `{path}` ignored"),
                    );
                }
                ok
            }
        };
        if accepted {
            self.new_path = Some(path);
        }
    }

    /// The changes made so far to a request built with [`Request::new`] (for tests;
    /// empty inside the gateway, where edits apply at once).
    pub fn edits(&self) -> RequestEdits {
        let local = self.headers.local().cloned().unwrap_or_default();
        let response = &self.response_headers;
        RequestEdits {
            removed: local.removed,
            set: local.set,
            appended: local.appended,
            path: self.new_path.clone(),
            response_removed: response.recorded.removed.clone(),
            response_set: response.recorded.set.clone(),
            response_set_if_absent: response.recorded_if_absent.clone(),
            response_appended: response.recorded.appended.clone(),
        }
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
}

/// The response, as a response phase sees it. Header and status edits change what the
/// client gets; in the response-body and log phases it is read-only.
#[derive(Debug)]
pub struct Response<'a> {
    /// The response headers.
    pub headers: Headers<'a>,
    status: OnceCell<u16>,
}

impl Response<'static> {
    /// A response for tests.
    pub fn new(status: u16) -> Response<'static> {
        Response {
            headers: Headers::default(),
            status: OnceCell::from(status),
        }
    }

    /// Adds a header (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Response<'static> {
        self.headers.push_received(name, value.as_ref());
        self
    }
}

impl<'a> Response<'a> {
    pub(crate) fn from_host(handle: &'a wit::Response) -> Response<'a> {
        Response {
            headers: Headers {
                source: Source::Response(handle),
            },
            status: OnceCell::new(),
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        *self.status.get_or_init(|| match &self.headers.source {
            Source::Response(handle) => handle.status(),
            _ => 0,
        })
    }

    /// Changes the status code sent to the client (100..=999; others are ignored and
    /// logged).
    pub fn set_status(&mut self, status: u16) {
        let accepted = match &self.headers.source {
            Source::Response(handle) => handle.set_status(status).is_ok(),
            _ => (100..=999).contains(&status),
        };
        if accepted {
            self.status = OnceCell::from(status);
        }
    }
}

/// A response the plugin writes itself, instead of the upstream's.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Headers<'static>,
    /// Body bytes.
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

    /// A JSON response: `content-type: application/json` and `value` serialised.
    pub fn json(status: u16, value: &serde_json::Value) -> LocalResponse {
        LocalResponse::new(status)
            .header("content-type", "application/json")
            .body(value.to_string())
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> LocalResponse {
        self.headers.append(name, value);
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
        r.headers.append("x-a", "2");
        r.headers.set("x-a", "3");
        r.headers.remove("x-b");
        r.headers.append("x-c", "4");
        assert_eq!(r.headers.get_str("X-A").as_deref(), Some("3"));
        assert!(!r.headers.contains("x-b"));
        let edits = r.edits();
        assert_eq!(edits.removed, ["x-b"]);
        assert_eq!(edits.set, [("x-a".to_owned(), b"3".to_vec())]);
        assert_eq!(edits.appended, [("x-c".to_owned(), b"4".to_vec())]);
    }

    #[test]
    fn queued_response_edits_are_recorded_apart_from_request_edits() {
        let mut r = Request::new("GET", "/");
        r.response_headers.append("x-a", "1");
        r.response_headers.set("X-A", "2");
        r.response_headers.remove("x-b");
        r.response_headers.append("vary", "origin");
        r.response_headers
            .set_if_absent("cache-control", "no-store");
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
    }

    #[test]
    fn header_name_and_value_checks() {
        assert!(is_header_name("x-request-id") && is_header_name("X_Odd!~"));
        assert!(!is_header_name("") && !is_header_name("bad name") && !is_header_name("a:b"));
        assert!(is_header_value("text\twith tab") && is_header_value(b"\x80bytes"));
        assert!(!is_header_value("line\nbreak") && !is_header_value(b"nul\0"));
    }

    #[test]
    fn invalid_edits_are_ignored_and_logged() {
        crate::testing::reset();
        let mut r = Request::new("GET", "/");
        r.headers.set("bad name", "v");
        r.headers.set("x-ok", "line\r\nbreak");
        r.set_path("no-slash");
        assert!(r.headers.all().is_empty());
        assert_eq!(r.path(), "/");
        crate::testing::with(|fake| assert_eq!(fake.logs.len(), 3));
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
