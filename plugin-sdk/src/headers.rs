//! Header fields as a plugin sees them ([`Headers`]), and the rules every edit follows
//! inside the gateway and in native tests alike.

use std::cell::{OnceCell, RefCell};

use crate::bindings::weir::plugin::types as wit;
use crate::error::EditError;
use crate::flat::{self, Op};

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
    check(kind, name, value)?;
    Ok(name.to_ascii_lowercase())
}

/// [`check_edit`] without making the lower-case name: nothing is allocated unless the
/// edit is refused (the one-crossing phase writes the name straight into its buffer).
pub(crate) fn check(kind: EditKind, name: &str, value: &[u8]) -> Result<(), EditError> {
    if !is_header_name(name) {
        return Err(EditError::InvalidName(name.to_owned()));
    }
    let refused = || Err(EditError::InvalidName(name.to_ascii_lowercase()));
    if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("host") {
        return refused();
    }
    if kind == EditKind::Remove {
        return Ok(());
    }
    if is_hop_by_hop(name) {
        return refused();
    }
    check_value(value)
}

/// The gateway's rule for a value: see [`is_header_value`].
fn check_value(value: &[u8]) -> Result<(), EditError> {
    if is_header_value(value) {
        return Ok(());
    }
    Err(EditError::InvalidValue(
        String::from_utf8_lossy(value).into_owned(),
    ))
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

/// Whether a header name (any case, an ASCII token) describes one connection (RFC 9110
/// §7.6.1).
fn is_hop_by_hop(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "trailer",
        "te",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
        || name
            .as_bytes()
            .get(..6)
            .is_some_and(|p| p.eq_ignore_ascii_case(b"proxy-"))
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
static TOKEN: [bool; 256] = {
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
    fn allowed(b: &u8) -> bool {
        *b == b'\t' || (*b >= 0x20 && *b != 0x7f)
    }
    // Eight bytes at a time: Wasm has no vector instructions here, and a loop per byte
    // costs dozens of machine instructions per byte once compiled. A word with a byte
    // below 0x20 or a 0x7f (both tests are exact for "some byte is") is checked byte by
    // byte, for a tab.
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let (words, tail) = value.as_ref().as_chunks::<8>();
    for word in words {
        let x = u64::from_le_bytes(*word);
        let below_space = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        let del = x ^ (ONES * 0x7f);
        let has_del = del.wrapping_sub(ONES) & !del & HIGH;
        if below_space | has_del != 0 && !word.iter().all(allowed) {
            return false;
        }
    }
    tail.iter().all(allowed)
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
/// changes the real message. In [`Plugin::on_request_headers`](crate::Plugin::on_request_headers)
/// the headers the plugin listed in [`Plugin::header_reads`](crate::Plugin::header_reads)
/// came with the call, and edits go back with the phase's result (a read sees them
/// before then); in the other phases an edit is made at once. An edit the gateway's
/// rules refuse (see [`EditError`]) returns `Err` and changes nothing; in native tests
/// the same rules apply.
#[derive(Debug)]
pub struct Headers<'a> {
    pub(crate) source: Source<'a>,
    fetched: Fetched,
    /// A request phase called in one crossing: what the gateway sent, and the edits.
    pub(crate) batch: Option<Batch<'a>>,
}

/// A request's headers in a phase the gateway called in one crossing (`on-request`,
/// since WIT 0.1.8): the fields it sent of the headers the plugin reads, and the edits
/// made so far, which go back with the phase's result instead of a call each. Reads
/// see the edits.
#[derive(Debug)]
pub(crate) struct Batch<'a> {
    /// The names the plugin reads ([`Plugin::header_reads`](crate::Plugin::header_reads)),
    /// lower-case.
    reads: &'a [String],
    /// Their fields, flat (`request-given.fields`).
    fields: Vec<u8>,
    /// The phase's edits, flat as `request-outcome.edits` carries them: this request's
    /// and those queued for the response ([`QueuedHeaders`](crate::QueuedHeaders)
    /// writes to the same buffer), in order, checked, names lower-case.
    pub(crate) edits: &'a RefCell<Vec<u8>>,
}

impl<'a> Batch<'a> {
    pub(crate) fn new(
        reads: &'a [String],
        fields: Vec<u8>,
        edits: &'a RefCell<Vec<u8>>,
    ) -> Batch<'a> {
        Batch {
            reads,
            fields,
            edits,
        }
    }

    /// The position of `name` among the names sent, if it is one.
    fn sent(&self, name: &str) -> Option<u32> {
        let i = self.reads.iter().position(|r| {
            flat::same(r.as_bytes(), name.as_bytes()) || r.eq_ignore_ascii_case(name)
        })?;
        u32::try_from(i).ok()
    }

    /// The values sent of the name at position `at`.
    fn sent_values(&self, at: u32) -> impl Iterator<Item = &[u8]> {
        flat::fields(&self.fields)
            .filter(move |(i, _)| *i == at)
            .map(|(_, v)| v)
    }

    /// Whether this phase edited `name` on the request.
    fn edited(&self, name: &str) -> bool {
        let edits = self.edits.borrow();
        flat::edits(&edits).any(|e| !e.response && e.name.eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Every value of `name` as the gateway has it (`host` asks it for a name not
    /// sent), then with this phase's edits.
    fn values(&self, name: &str, host: impl FnOnce() -> Vec<Vec<u8>>) -> Vec<Vec<u8>> {
        let base = match self.sent(name) {
            Some(at) => self.sent_values(at).map(<[u8]>::to_vec).collect(),
            None => host(),
        };
        let mut fields = base.into_iter().map(|v| (name.to_owned(), v)).collect();
        self.apply(&mut fields);
        fields
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    /// Makes this phase's edits on `fields` (all of the request's, as the gateway has
    /// them).
    fn apply(&self, fields: &mut Vec<(String, Vec<u8>)>) {
        let edits = self.edits.borrow();
        for edit in flat::edits(&edits).filter(|e| !e.response) {
            let name = String::from_utf8_lossy(edit.name).into_owned();
            let present = fields.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name));
            match edit.op {
                Op::Set => {
                    fields.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
                    fields.push((name, edit.value.to_vec()));
                }
                Op::SetIfAbsent if present => {}
                Op::SetIfAbsent | Op::Append => fields.push((name, edit.value.to_vec())),
                Op::Remove => fields.retain(|(n, _)| !n.eq_ignore_ascii_case(&name)),
            }
        }
    }

    /// Checks an edit and adds it to the buffer.
    pub(crate) fn push(
        edits: &RefCell<Vec<u8>>,
        kind: EditKind,
        op: Op,
        response: bool,
        name: &str,
        value: &[u8],
    ) -> Result<(), EditError> {
        match check_named(kind, name, value) {
            Ok(lower) => {
                flat::push_edit(&mut edits.borrow_mut(), op, response, name, lower, value);
                Ok(())
            }
            Err(refused) => {
                // The gateway logs and counts it, as when it refuses an edit call.
                flat::push_refused(&mut edits.borrow_mut(), op, response, name, value);
                Err(refused)
            }
        }
    }
}

thread_local! {
    /// Names a set or append was checked with, as given: valid, settable and already
    /// lower-case. A plugin edits the same few names on every request, and checking a
    /// name byte by byte costs dozens of instructions a byte in Wasm; comparing it with
    /// a kept one costs a few.
    static SETTABLE: RefCell<Vec<Box<str>>> = const { RefCell::new(Vec::new()) };
}

/// How many names [`SETTABLE`] keeps.
const KEPT_NAMES: usize = 8;

/// [`check`], with names kept in [`SETTABLE`]: whether the name is lower-case already.
fn check_named(kind: EditKind, name: &str, value: &[u8]) -> Result<bool, EditError> {
    if kind == EditKind::Remove {
        check(kind, name, value)?;
        return Ok(false);
    }
    let kept = SETTABLE.with_borrow(|names| {
        names
            .iter()
            .any(|n| flat::same(n.as_bytes(), name.as_bytes()))
    });
    if kept {
        return check_value(value).map(|()| true);
    }
    check(kind, name, value)?;
    let lower = !name.bytes().any(|b| b.is_ascii_uppercase());
    if lower {
        SETTABLE.with_borrow_mut(|names| {
            if names.len() < KEPT_NAMES {
                names.push(name.into());
            }
        });
    }
    Ok(lower)
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
            batch: None,
        }
    }

    pub(crate) fn host(source: Source<'a>, batch: Option<Batch<'a>>) -> Headers<'a> {
        Headers {
            source,
            fetched: Fetched::default(),
            batch,
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
            Source::Request(r) => match &self.batch {
                None => self.fetched.get(name, || r.header(name)),
                Some(batch) if batch.edited(name) => self.fetched.get(name, || {
                    batch.values(name, || r.header_all(name)).into_iter().next()
                }),
                Some(batch) => match batch.sent(name) {
                    Some(at) => batch.sent_values(at).next(),
                    None => self.fetched.get(name, || r.header(name)),
                },
            },
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
            Source::Request(r) => match &self.batch {
                Some(batch) => batch.values(name, || r.header_all(name)),
                None => r.header_all(name),
            },
            Source::Response(r) => r.header_all(name),
        }
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// How many fields of `name` there are (0 when absent). With [`Headers::get`], what
    /// a plugin that wants exactly one field (a token, a key) uses instead of
    /// [`Headers::get_all`], which copies every value. Free in
    /// [`Plugin::on_request_headers`](crate::Plugin::on_request_headers) for a header
    /// listed in [`Plugin::header_reads`](crate::Plugin::header_reads); otherwise it asks
    /// the gateway, as `get_all` does.
    pub fn count(&self, name: &str) -> usize {
        if let (Source::Request(_), Some(batch)) = (&self.source, &self.batch)
            && let Some(at) = batch.sent(name)
            && !batch.edited(name)
        {
            return batch.sent_values(at).count();
        }
        match &self.source {
            Source::Local(local) => local
                .fields
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .count(),
            _ => self.get_all(name).len(),
        }
    }

    /// All fields, in order, names lower-case. Inside the gateway this copies every
    /// header: prefer [`Headers::get`] for the ones you need.
    pub fn all(&self) -> Vec<(String, Vec<u8>)> {
        let fields = match &self.source {
            Source::Local(local) => return local.fields.clone(),
            Source::Request(r) => r.headers(),
            Source::Response(r) => r.headers(),
        };
        let mut fields: Vec<(String, Vec<u8>)> =
            fields.into_iter().map(|h| (h.name, h.value)).collect();
        if let Some(batch) = &self.batch {
            batch.apply(&mut fields);
        }
        fields
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
            Source::Request(_) if self.batch.is_some() => {
                if let Some(batch) = &self.batch {
                    let op = match kind {
                        EditKind::Set => Op::Set,
                        EditKind::Append => Op::Append,
                        EditKind::Remove => Op::Remove,
                    };
                    Batch::push(batch.edits, kind, op, false, name, value)?;
                }
                Ok(())
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

    /// `request-given.fields` as the gateway writes them.
    fn sent(fields: &[(u32, &str)]) -> Vec<u8> {
        let mut buf = Vec::new();
        for (at, value) in fields {
            buf.extend_from_slice(&at.to_le_bytes());
            buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
            buf.extend_from_slice(value.as_bytes());
        }
        buf
    }

    #[test]
    fn a_batch_serves_the_headers_sent_and_sees_its_own_edits() {
        let reads = vec!["x-read".to_owned(), "x-multi".to_owned()];
        let edits = RefCell::new(Vec::new());
        let batch = Batch::new(&reads, sent(&[(0, "r"), (1, "a"), (1, "b")]), &edits);
        let not_asked = || unreachable!("a header sent with the call is not asked for");
        assert_eq!(batch.values("X-Read", not_asked), [b"r".to_vec()]);
        assert_eq!(
            batch.values("x-multi", not_asked),
            [b"a".to_vec(), b"b".to_vec()]
        );
        assert_eq!(batch.sent_values(1).next(), Some(&b"a"[..]));
        assert_eq!(
            batch.values("x-other", || vec![b"o".to_vec()]),
            [b"o".to_vec()]
        );
        assert!(!batch.edited("x-read"));

        let push = |kind, op, response, name: &str, value: &[u8]| {
            Batch::push(&edits, kind, op, response, name, value)
        };
        push(EditKind::Set, Op::Set, false, "X-Read", b"changed").unwrap();
        push(EditKind::Append, Op::Append, false, "x-multi", b"c").unwrap();
        push(EditKind::Remove, Op::Remove, false, "x-other", b"").unwrap();
        push(EditKind::Set, Op::Set, true, "x-read", b"for the response").unwrap();
        let refused = push(EditKind::Set, Op::Set, false, "x-read", b"a\nb");
        assert!(matches!(refused, Err(EditError::InvalidValue(_))));
        assert!(push(EditKind::Set, Op::Set, false, "connection", b"close").is_err());

        assert!(batch.edited("x-read") && !batch.edited("x-unrelated"));
        assert_eq!(batch.values("x-read", not_asked), [b"changed".to_vec()]);
        let all = batch.values("x-multi", not_asked);
        assert_eq!(all, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(batch.values("x-other", || vec![b"o".to_vec()]).is_empty());
        let mut fields = vec![("x-other".to_owned(), b"o".to_vec())];
        batch.apply(&mut fields);
        assert_eq!(
            fields,
            [
                ("x-read".to_owned(), b"changed".to_vec()),
                ("x-multi".to_owned(), b"c".to_vec())
            ]
        );
        // Four edits for the gateway to make, names lower-cased; the two refused are
        // in the buffer for it to log and count, and make nothing of.
        let made: Vec<_> = flat::edits(&edits.borrow())
            .map(|e| (e.op, e.response, e.name.to_vec()))
            .collect();
        assert_eq!(
            made,
            [
                (Op::Set, false, b"x-read".to_vec()),
                (Op::Append, false, b"x-multi".to_vec()),
                (Op::Remove, false, b"x-other".to_vec()),
                (Op::Set, true, b"x-read".to_vec()),
            ]
        );
        let (mut rest, mut refused) = (&edits.borrow()[..], 0);
        while let Some((&first, after)) = rest.split_first() {
            refused += usize::from(first & flat::REFUSED != 0);
            let name = u32::from_le_bytes(after[..4].try_into().unwrap()) as usize;
            let after = &after[4 + name..];
            let value = u32::from_le_bytes(after[..4].try_into().unwrap()) as usize;
            rest = &after[4 + value..];
        }
        assert_eq!(refused, 2);
    }

    #[test]
    fn count_counts_the_fields_of_a_name() {
        let headers = Headers::from_pairs([("X-Token", "a"), ("x-other", "b"), ("x-token", "c")]);
        assert_eq!(headers.count("x-token"), 2);
        assert_eq!(headers.count("X-OTHER"), 1);
        assert_eq!(headers.count("x-absent"), 0);
    }

    #[test]
    fn values_are_checked_a_word_at_a_time_as_byte_by_byte() {
        let slow = |v: &[u8]| v.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
        for len in 0..40 {
            for bad in [0u8, b'\t', b'\n', 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xff] {
                for at in 0..len {
                    let mut value = vec![b'a'; len];
                    value[at] = bad;
                    assert_eq!(is_header_value(&value), slow(&value), "{value:?}");
                }
            }
        }
        assert!(is_header_value([
            0x80, 0xff, 0x20, 0x7e, b'\t', 0xa0, 0x21, 0x5f, 0x60
        ]));
    }

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
