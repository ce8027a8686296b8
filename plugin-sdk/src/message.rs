//! Requests, responses and local responses as a plugin sees them: header helpers that
//! handle bytes and case-insensitive names, and the edits they add up to.

use crate::bindings::weir::plugin::types as wit;

/// An ordered list of header fields with case-insensitive lookup. Values are bytes;
/// `get_str` gives them as text when they are UTF-8.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    fields: Vec<(String, Vec<u8>)>,
    edits: Edits,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Edits {
    remove: Vec<String>,
    set: Vec<(String, Vec<u8>)>,
    append: Vec<(String, Vec<u8>)>,
}

impl Headers {
    /// Headers from `(name, value)` pairs (names are lower-cased).
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Headers {
        Headers {
            fields: pairs
                .into_iter()
                .map(|(n, v)| (n.as_ref().to_ascii_lowercase(), v.as_ref().to_vec()))
                .collect(),
            edits: Edits::default(),
        }
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// The first value of `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Every value of `name`, in order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.fields
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// All fields, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Replaces every field of `name` with one field of `value`.
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let name = name.to_ascii_lowercase();
        let value = value.as_ref().to_vec();
        self.fields.retain(|(n, _)| *n != name);
        self.fields.push((name.clone(), value.clone()));
        self.edits.forget(&name);
        self.edits.set.push((name, value));
    }

    /// Adds a field, keeping any others of the same name.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) {
        let name = name.to_ascii_lowercase();
        let value = value.as_ref().to_vec();
        self.fields.push((name.clone(), value.clone()));
        self.edits.append.push((name, value));
    }

    /// Removes every field of `name`.
    pub fn remove(&mut self, name: &str) {
        let name = name.to_ascii_lowercase();
        self.fields.retain(|(n, _)| *n != name);
        self.edits.forget(&name);
        self.edits.remove.push(name);
    }

    fn from_wit(fields: Vec<wit::Header>) -> Headers {
        Headers {
            fields: fields.into_iter().map(|h| (h.name, h.value)).collect(),
            edits: Edits::default(),
        }
    }

    fn into_wit_edits(self) -> wit::HeaderEdits {
        let pairs = |list: Vec<(String, Vec<u8>)>| {
            list.into_iter()
                .map(|(name, value)| wit::Header { name, value })
                .collect()
        };
        wit::HeaderEdits {
            remove: self.edits.remove,
            set: pairs(self.edits.set),
            append: pairs(self.edits.append),
        }
    }

    fn into_wit_fields(self) -> Vec<wit::Header> {
        self.fields
            .into_iter()
            .map(|(name, value)| wit::Header { name, value })
            .collect()
    }
}

impl Edits {
    /// Drops earlier set/append edits of `name`: a later set or remove overrides them.
    fn forget(&mut self, name: &str) {
        self.set.retain(|(n, _)| n != name);
        self.append.retain(|(n, _)| n != name);
    }
}

/// The request, as a phase sees it. Changes made through it (headers, path) are sent
/// back to the gateway when the phase returns [`Action::Continue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, e.g. `GET`.
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The host (and port) the request is for.
    pub authority: String,
    /// The client's IP address.
    pub client_address: String,
    /// The name of the matched route.
    pub route: String,
    /// The request headers.
    pub headers: Headers,
    path: String,
    new_path: Option<String>,
}

impl Request {
    /// A request for tests: `method` and `path`, no headers, client `127.0.0.1`.
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: method.to_owned(),
            scheme: "http".to_owned(),
            authority: "localhost".to_owned(),
            client_address: "127.0.0.1".to_owned(),
            route: "test".to_owned(),
            headers: Headers::default(),
            path: path.to_owned(),
            new_path: None,
        }
    }

    /// Adds a header (builder style, for tests).
    pub fn with_header(mut self, name: &str, value: impl AsRef<[u8]>) -> Request {
        self.headers
            .fields
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
        self
    }

    /// The path with query, e.g. `/users/7?expand=1`.
    pub fn path(&self) -> &str {
        self.new_path.as_deref().unwrap_or(&self.path)
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

    /// Sends the request upstream with this path (and query) instead; it must start
    /// with `/`.
    pub fn set_path(&mut self, path: impl Into<String>) {
        self.new_path = Some(path.into());
    }

    /// The changes made so far, as the gateway receives them (for tests).
    pub fn edits(&self) -> RequestEdits {
        RequestEdits {
            removed: self.headers.edits.remove.clone(),
            set: self.headers.edits.set.clone(),
            appended: self.headers.edits.append.clone(),
            path: self.new_path.clone(),
        }
    }

    pub(crate) fn from_wit(head: wit::RequestHead) -> Request {
        Request {
            method: head.method,
            scheme: head.scheme,
            authority: head.authority,
            client_address: head.client_address,
            route: head.route,
            headers: Headers::from_wit(head.headers),
            path: head.path,
            new_path: None,
        }
    }

    pub(crate) fn into_wit_edits(self) -> wit::RequestEdits {
        wit::RequestEdits {
            headers: self.headers.into_wit_edits(),
            path: self.new_path,
        }
    }
}

/// The edits a phase made to a request, for assertions in tests.
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
}

/// The response, as a response phase sees it. Header and status changes are sent back
/// when the phase returns [`Action::Continue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response headers.
    pub headers: Headers,
    status: u16,
    new_status: Option<u16>,
}

impl Response {
    /// A response for tests.
    pub fn new(status: u16) -> Response {
        Response {
            headers: Headers::default(),
            status,
            new_status: None,
        }
    }

    /// The status code.
    pub fn status(&self) -> u16 {
        self.new_status.unwrap_or(self.status)
    }

    /// Changes the status code sent to the client.
    pub fn set_status(&mut self, status: u16) {
        self.new_status = Some(status);
    }

    pub(crate) fn from_wit(head: wit::ResponseHead) -> Response {
        Response {
            headers: Headers::from_wit(head.headers),
            status: head.status,
            new_status: None,
        }
    }

    pub(crate) fn into_wit_edits(self) -> wit::ResponseEdits {
        wit::ResponseEdits {
            headers: self.headers.into_wit_edits(),
            status: self.new_status,
        }
    }
}

/// A response the plugin writes itself, instead of the upstream's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: Headers,
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
        self.headers
            .fields
            .push((name.to_ascii_lowercase(), value.as_ref().to_vec()));
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
#[derive(Debug, Clone, PartialEq, Eq)]
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
        let mut h = Headers::from_pairs([("X-A", "1"), ("x-b", "2")]);
        h.append("x-a", "2");
        h.set("x-a", "3");
        h.remove("x-b");
        h.append("x-c", "4");
        assert_eq!(h.get_str("X-A"), Some("3"));
        assert!(!h.contains("x-b"));
        let edits = h.into_wit_edits();
        assert_eq!(edits.remove, ["x-b"]);
        assert_eq!(edits.set.len(), 1);
        assert_eq!(edits.append.len(), 1);
        assert_eq!(edits.append[0].name, "x-c");
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
