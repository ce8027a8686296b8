//! Header fields as a plugin sees them ([`Headers`]), and the rules every edit follows
//! inside the gateway and in native tests alike.

use std::cell::OnceCell;

use crate::bindings::weir::plugin::types as wit;
use crate::error::EditError;

/// Where a message lives: in the gateway (a borrowed handle for one phase call), or
/// here (tests, local responses).
#[derive(Debug)]
pub(crate) enum Source<'a> {
    Local(Local),
    Request(&'a wit::Request),
    Response(&'a wit::Response),
}

/// A message held by the plugin itself, with the edits made to it (for assertions).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Local {
    pub(crate) fields: Vec<(String, Vec<u8>)>,
    pub(crate) removed: Vec<String>,
    pub(crate) set: Vec<(String, Vec<u8>)>,
    pub(crate) appended: Vec<(String, Vec<u8>)>,
}

impl Local {
    /// Drops earlier set/append edits of `name`: a later set or remove overrides them.
    pub(crate) fn forget(&mut self, name: &str) {
        self.set.retain(|(n, _)| n != name);
        self.appended.retain(|(n, _)| n != name);
    }
}

/// How an edit changes a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EditKind {
    Set,
    Append,
    Remove,
}

/// The gateway's rules for a plugin's header edit, applied here for native tests: a
/// valid name and value, never `content-length` or `host` (the gateway's own), and no
/// hop-by-hop field but to remove it. The lower-cased name when allowed.
/// `plugin-sdk/tests/header-semantics.json` is a table that both this and the gateway
/// pass.
pub(crate) fn check_edit(kind: EditKind, name: &str, value: &[u8]) -> Result<String, EditError> {
    if !is_header_name(name) {
        return Err(EditError::InvalidName(name.to_owned()));
    }
    let name = name.to_ascii_lowercase();
    if name == "content-length" || name == "host" {
        return Err(EditError::InvalidName(name));
    }
    if kind == EditKind::Remove {
        return Ok(name);
    }
    if is_hop_by_hop(&name) {
        return Err(EditError::InvalidName(name));
    }
    if !is_header_value(value) {
        return Err(EditError::InvalidValue(
            String::from_utf8_lossy(value).into_owned(),
        ));
    }
    Ok(name)
}

/// Whether a plugin may set or append header `name` (any case): a valid name that is
/// not hop-by-hop, `content-length` or `host`. Check names from a plugin's config with
/// it in [`Plugin::new`](crate::Plugin::new), so that a config naming one is refused at
/// load rather than every request failing.
pub fn is_settable_header_name(name: &str) -> bool {
    check_edit(EditKind::Set, name, b"").is_ok()
}

/// Whether a plugin may remove header `name` (any case): a valid name other than
/// `content-length` and `host` (hop-by-hop ones may be removed).
pub fn is_removable_header_name(name: &str) -> bool {
    check_edit(EditKind::Remove, name, b"").is_ok()
}

/// Whether a (lower-case) header name describes one connection (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection" | "keep-alive" | "transfer-encoding" | "upgrade" | "trailer" | "te"
    ) || name.starts_with("proxy-")
}

/// Whether `name` can be an HTTP header name (an RFC 9110 token: letters, digits and
/// ``!#$%&'*+-.^_`|~``). Use it to check header names in a plugin's config at load,
/// rather than finding out per request that an edit was refused.
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| TOKEN[usize::from(b)])
}

/// Which bytes an RFC 9110 token may hold: one lookup per byte (plugins are built for
/// size, where searching the punctuation list for each byte costs dozens of
/// instructions).
const TOKEN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    table
};

/// Whether `value` can be an HTTP header value: no control characters except tab (so
/// no CR, LF or NUL).
pub fn is_header_value(value: impl AsRef<[u8]>) -> bool {
    value
        .as_ref()
        .iter()
        .all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// Values fetched from the gateway during one phase call, so that reading a header
/// again costs no call and no copy, and [`Headers::get`] can lend a slice. An
/// append-only list: a reference handed out stays valid until the next edit (which
/// needs `&mut` and clears it).
#[derive(Debug, Default)]
struct Fetched {
    first: OnceCell<Box<Fetch>>,
}

#[derive(Debug)]
struct Fetch {
    name: String,
    value: Option<Vec<u8>>,
    next: OnceCell<Box<Fetch>>,
}

impl Fetched {
    fn get(&self, name: &str, fetch: impl FnOnce() -> Option<Vec<u8>>) -> Option<&[u8]> {
        let mut cell = &self.first;
        while let Some(node) = cell.get() {
            if node.name.eq_ignore_ascii_case(name) {
                return node.value.as_deref();
            }
            cell = &node.next;
        }
        let node = cell.get_or_init(|| {
            Box::new(Fetch {
                name: name.to_owned(),
                value: fetch(),
                next: OnceCell::new(),
            })
        });
        node.value.as_deref()
    }
}

/// The header fields of a request, response or local response: case-insensitive names,
/// byte values ([`Headers::get_str`] gives them as text when they are UTF-8).
///
/// Inside the gateway this is a handle on the gateway's own message: [`Headers::get`]
/// asks for one header (once per phase call: later reads of it are free), and an edit
/// changes the real message at once. An edit the gateway refuses (see [`EditError`])
/// returns `Err` and changes nothing; in native tests the same rules apply.
#[derive(Debug)]
pub struct Headers<'a> {
    pub(crate) source: Source<'a>,
    fetched: Fetched,
}

impl Headers<'static> {
    /// Headers from `(name, value)` pairs (names are lower-cased), e.g. for a test.
    /// They are taken as received: not checked, not recorded as edits.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Headers<'static> {
        Headers::local(Local {
            fields: pairs
                .into_iter()
                .map(|(n, v)| (n.as_ref().to_ascii_lowercase(), v.as_ref().to_vec()))
                .collect(),
            ..Local::default()
        })
    }

    /// Adds a field as if it had been received: not checked, not recorded as an edit
    /// (test builders and local responses).
    pub(crate) fn push_received(&mut self, name: &str, value: &[u8]) {
        if let Source::Local(local) = &mut self.source {
            local
                .fields
                .push((name.to_ascii_lowercase(), value.to_vec()));
        }
    }
}

impl Default for Headers<'static> {
    fn default() -> Self {
        Headers::local(Local::default())
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

impl<'a> Headers<'a> {
    pub(crate) fn local(local: Local) -> Headers<'a> {
        Headers {
            source: Source::Local(local),
            fetched: Fetched::default(),
        }
    }

    pub(crate) fn host(source: Source<'a>) -> Headers<'a> {
        Headers {
            source,
            fetched: Fetched::default(),
        }
    }

    /// The first value of `name`, lent: comparing it allocates nothing.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        match &self.source {
            Source::Local(local) => local
                .fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_slice()),
            Source::Request(r) => self.fetched.get(name, || r.header(name)),
            Source::Response(r) => self.fetched.get(name, || r.header(name)),
        }
    }

    /// The first value of `name`, if it is UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name).and_then(|v| std::str::from_utf8(v).ok())
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
    pub fn set(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.edit(EditKind::Set, name, value.as_ref())
    }

    /// Adds a field, keeping any others of the same name.
    pub fn append(&mut self, name: &str, value: impl AsRef<[u8]>) -> Result<(), EditError> {
        self.edit(EditKind::Append, name, value.as_ref())
    }

    /// Removes every field of `name` (a hop-by-hop one too).
    pub fn remove(&mut self, name: &str) -> Result<(), EditError> {
        self.edit(EditKind::Remove, name, &[])
    }

    fn edit(&mut self, kind: EditKind, name: &str, value: &[u8]) -> Result<(), EditError> {
        let done = match &mut self.source {
            Source::Local(local) => {
                let name = check_edit(kind, name, value)?;
                match kind {
                    EditKind::Set => {
                        local.fields.retain(|(n, _)| *n != name);
                        local.fields.push((name.clone(), value.to_vec()));
                        local.forget(&name);
                        local.set.push((name, value.to_vec()));
                    }
                    EditKind::Append => {
                        local.fields.push((name.clone(), value.to_vec()));
                        local.appended.push((name, value.to_vec()));
                    }
                    EditKind::Remove => {
                        local.fields.retain(|(n, _)| *n != name);
                        local.forget(&name);
                        local.removed.push(name);
                    }
                }
                return Ok(());
            }
            Source::Request(r) => match kind {
                EditKind::Set => r.set_header(name, value),
                EditKind::Append => r.append_header(name, value),
                EditKind::Remove => r.remove_header(name),
            },
            Source::Response(r) => match kind {
                EditKind::Set => r.set_header(name, value),
                EditKind::Append => r.append_header(name, value),
                EditKind::Remove => r.remove_header(name),
            },
        };
        // What was read before may have changed.
        self.fetched = Fetched::default();
        done.map_err(EditError::from)
    }

    pub(crate) fn local_fields(&self) -> Option<&Local> {
        match &self.source {
            Source::Local(local) => Some(local),
            _ => None,
        }
    }

    pub(crate) fn into_wit_fields(self) -> Vec<wit::Header> {
        self.all()
            .into_iter()
            .map(|(name, value)| wit::Header { name, value })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_name_and_value_checks() {
        assert!(is_settable_header_name("X-Request-Id") && is_removable_header_name("x-a"));
        assert!(!is_settable_header_name("Connection") && is_removable_header_name("connection"));
        assert!(!is_settable_header_name("host") && !is_removable_header_name("Content-Length"));
        assert!(!is_settable_header_name("bad name") && !is_removable_header_name(""));
        assert!(is_header_name("x-request-id") && is_header_name("X_Odd!~"));
        assert!(!is_header_name("") && !is_header_name("bad name") && !is_header_name("a:b"));
        assert!(is_header_value("text\twith tab") && is_header_value(b"\x80bytes"));
        assert!(!is_header_value("line\nbreak") && !is_header_value(b"nul\0"));
    }

    #[test]
    fn fetched_values_are_fetched_once_per_name() {
        let fetched = Fetched::default();
        let mut calls = 0;
        assert_eq!(
            fetched.get("X-A", || {
                calls += 1;
                Some(b"1".to_vec())
            }),
            Some(&b"1"[..])
        );
        assert_eq!(fetched.get("x-b", || None), None);
        assert_eq!(
            fetched.get("x-a", || unreachable!("cached")),
            Some(&b"1"[..])
        );
        assert_eq!(fetched.get("x-b", || unreachable!("cached")), None);
        assert_eq!(calls, 1);
    }
}
