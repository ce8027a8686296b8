//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>) on routed requests: the
//! gateway is one hop of the trace.
//!
//! A valid incoming `traceparent` keeps its trace id and flags and gets a fresh span id of
//! this hop as its parent id; `tracestate` then passes unchanged. A missing or invalid one
//! starts a new trace (random trace id and span id, flags `00`) and any `tracestate` is
//! dropped, since it described a trace this request no longer belongs to. The outgoing
//! header is always version `00`, the highest this gateway knows; higher incoming
//! versions are read by the specification's forward-compatibility rules.

use std::fmt;

use http::header::{HeaderMap, HeaderName, HeaderValue};

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `VV-` + 32 + `-` + 16 + `-` + 2.
const LEN: usize = 55;

/// Why an incoming `traceparent` cannot be continued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTraceparent {
    /// More than one `traceparent` header field.
    #[error("more than one traceparent header")]
    Repeated,
    /// The version is not two lowercase hex digits followed by `-`.
    #[error("version is not two lowercase hex digits followed by `-`")]
    BadVersion,
    /// Version `ff`, which the specification forbids.
    #[error("version ff is forbidden")]
    ForbiddenVersion,
    /// Version `00` that is not exactly 55 characters, or a later version shorter than that.
    #[error("wrong length for its version")]
    BadLength,
    /// The trace id is not 32 lowercase hex digits followed by `-`.
    #[error("trace-id is not 32 lowercase hex digits followed by `-`")]
    BadTraceId,
    /// The trace id is all zeros.
    #[error("trace-id is all zeros")]
    ZeroTraceId,
    /// The parent id is not 16 lowercase hex digits followed by `-`.
    #[error("parent-id is not 16 lowercase hex digits followed by `-`")]
    BadParentId,
    /// The parent id is all zeros.
    #[error("parent-id is all zeros")]
    ZeroParentId,
    /// The flags are not two lowercase hex digits at the end or followed by `-`.
    #[error("trace-flags are not two lowercase hex digits at the end or followed by `-`")]
    BadFlags,
}

/// A trace id as 32 lowercase hex digits; displays as such (the access log's `trace_id`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The hex digits.
    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits, by construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({})", self.as_str())
    }
}

/// What is kept of a valid incoming `traceparent`: trace id and flags, as hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inherited {
    /// The trace id.
    pub trace_id: TraceId,
    /// The trace flags, two hex digits.
    pub flags: [u8; 2],
}

/// Reads a `traceparent` value: version `00` exactly, later versions by their first four
/// fields (anything after the flags is theirs and ignored).
pub fn parse(value: &[u8]) -> Result<Inherited, InvalidTraceparent> {
    use InvalidTraceparent as E;
    if value.len() < 3 || !is_hex(&value[..2]) || value[2] != b'-' {
        return Err(E::BadVersion);
    }
    match &value[..2] {
        b"ff" => return Err(E::ForbiddenVersion),
        b"00" if value.len() != LEN => return Err(E::BadLength),
        _ if value.len() < LEN => return Err(E::BadLength),
        _ => {}
    }
    let (trace_id, parent_id, flags) = (&value[3..35], &value[36..52], &value[53..55]);
    if !is_hex(trace_id) || value[35] != b'-' {
        return Err(E::BadTraceId);
    }
    if is_zero(trace_id) {
        return Err(E::ZeroTraceId);
    }
    if !is_hex(parent_id) || value[52] != b'-' {
        return Err(E::BadParentId);
    }
    if is_zero(parent_id) {
        return Err(E::ZeroParentId);
    }
    if !is_hex(flags) || value.get(LEN).is_some_and(|&b| b != b'-') {
        return Err(E::BadFlags);
    }
    let mut id = [0; 32];
    id.copy_from_slice(trace_id);
    Ok(Inherited {
        trace_id: TraceId(id),
        flags: [flags[0], flags[1]],
    })
}

fn is_hex(digits: &[u8]) -> bool {
    digits
        .iter()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn is_zero(digits: &[u8]) -> bool {
    digits.iter().all(|&b| b == b'0')
}

/// The version-00 `traceparent` this hop sends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceParent([u8; LEN]);

impl TraceParent {
    /// Continues `incoming`'s trace with this hop's span id `span_id`.
    pub fn child(incoming: &Inherited, span_id: u64) -> TraceParent {
        TraceParent::build(&incoming.trace_id.0, span_id, incoming.flags)
    }

    /// Starts a trace: random trace id and span id, flags `00`.
    pub fn root() -> TraceParent {
        let mut trace_id = [0; 32];
        hex(&mut trace_id, &rand::random::<u128>().max(1).to_be_bytes());
        TraceParent::build(&trace_id, span_id(), *b"00")
    }

    fn build(trace_id: &[u8; 32], span_id: u64, flags: [u8; 2]) -> TraceParent {
        let mut text = [b'-'; LEN];
        text[..2].copy_from_slice(b"00");
        text[3..35].copy_from_slice(trace_id);
        hex(&mut text[36..52], &span_id.to_be_bytes());
        text[53..].copy_from_slice(&flags);
        TraceParent(text)
    }

    /// The trace id.
    pub fn trace_id(&self) -> TraceId {
        let mut id = [0; 32];
        id.copy_from_slice(&self.0[3..35]);
        TraceId(id)
    }

    /// The header value's text.
    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits and dashes, by construction.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Debug for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceParent({})", self.as_str())
    }
}

/// A random span id of this hop (never zero, which the specification forbids).
pub fn span_id() -> u64 {
    rand::random::<u64>().max(1)
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn hex(out: &mut [u8], bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
}

/// Sets the `traceparent` a routed request is forwarded with, continuing the incoming
/// trace when its `traceparent` is valid and starting one (and dropping `tracestate`)
/// otherwise. Returns the trace id, for the access log.
pub fn propagate(headers: &mut HeaderMap) -> TraceId {
    let incoming = {
        let mut values = headers.get_all(&TRACEPARENT).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => parse(value.as_bytes()).ok(),
            _ => None,
        }
    };
    let outgoing = match &incoming {
        Some(incoming) => TraceParent::child(incoming, span_id()),
        None => TraceParent::root(),
    };
    // Hex digits and dashes are always a valid header value.
    if let Ok(value) = HeaderValue::from_bytes(&outgoing.0) {
        headers.insert(&TRACEPARENT, value);
    }
    if incoming.is_none() {
        headers.remove(&TRACESTATE);
    }
    outgoing.trace_id()
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvalidTraceparent as E;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_version_00_header_is_read() {
        let incoming = parse(VALID.as_bytes()).unwrap();
        assert_eq!(
            incoming.trace_id.as_str(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(&incoming.flags, b"01");
    }

    #[test]
    fn each_malformed_header_is_refused_for_its_reason() {
        let cases: &[(&str, InvalidTraceparent)] = &[
            ("", E::BadVersion),
            ("0", E::BadVersion),
            (
                "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                E::BadVersion,
            ),
            (
                "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                E::BadVersion,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                E::BadVersion,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                E::ForbiddenVersion,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                E::BadLength,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
                E::BadLength,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-ab",
                E::BadLength,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                E::BadLength,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                E::BadTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01",
                E::BadTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
                E::BadTraceId,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                E::ZeroTraceId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
                E::BadParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
                E::BadParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                E::ZeroParentId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                E::BadFlags,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0F",
                E::BadFlags,
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(parse(value.as_bytes()), Err(*reason), "{value:?}");
        }
    }

    #[test]
    fn later_versions_are_read_by_their_first_four_fields() {
        // Exactly the version-00 fields, and with more fields after the flags.
        for value in [
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09-what-comes-next",
        ] {
            let incoming = parse(value.as_bytes()).unwrap();
            assert_eq!(
                incoming.trace_id.as_str(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_eq!(&incoming.flags, b"09");
        }
        // Shorter than version 00, or the flags not followed by a dash.
        for (value, reason) in [
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                E::BadLength,
            ),
            (
                "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09x",
                E::BadFlags,
            ),
            (
                "cc-00000000000000000000000000000000-00f067aa0ba902b7-09",
                E::ZeroTraceId,
            ),
        ] {
            assert_eq!(parse(value.as_bytes()), Err(reason), "{value:?}");
        }
    }

    #[test]
    fn a_child_keeps_trace_id_and_flags_and_sends_version_00() {
        let incoming =
            parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03-extra".as_bytes())
                .unwrap();
        let child = TraceParent::child(&incoming, 0x0123_4567_89ab_cdef);
        assert_eq!(
            child.as_str(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0123456789abcdef-03"
        );
        assert_eq!(child.trace_id(), incoming.trace_id);
    }

    #[test]
    fn a_root_is_valid_unsampled_and_random() {
        let (a, b) = (TraceParent::root(), TraceParent::root());
        for root in [a, b] {
            let read = parse(root.as_str().as_bytes()).unwrap();
            assert_eq!(&read.flags, b"00");
            assert_eq!(read.trace_id, root.trace_id());
        }
        assert_ne!(a.trace_id(), b.trace_id());
        assert_ne!(a.as_str()[36..52], b.as_str()[36..52]);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn propagation_continues_a_valid_trace_and_keeps_tracestate() {
        let mut h = headers(&[("traceparent", VALID), ("tracestate", "congo=t61rcWkgMzE")]);
        let trace_id = propagate(&mut h);
        assert_eq!(trace_id.as_str(), &VALID[3..35]);
        let sent = h["traceparent"].to_str().unwrap();
        assert_eq!(&sent[..36], &VALID[..36]);
        assert_ne!(&sent[36..52], &VALID[36..52]);
        assert_eq!(&sent[52..], "-01");
        assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    }

    #[test]
    fn propagation_restarts_a_missing_invalid_or_repeated_trace_and_drops_tracestate() {
        let cases = [
            headers(&[("tracestate", "congo=t61rcWkgMzE")]),
            headers(&[
                (
                    "traceparent",
                    "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                ),
                ("tracestate", "congo=t61rcWkgMzE"),
            ]),
            headers(&[
                ("traceparent", VALID),
                ("traceparent", VALID),
                ("tracestate", "congo=t61rcWkgMzE"),
            ]),
        ];
        for mut h in cases {
            let trace_id = propagate(&mut h);
            assert_ne!(trace_id.as_str(), &VALID[3..35]);
            assert_eq!(h.get_all("traceparent").iter().count(), 1, "{h:?}");
            let sent = parse(h["traceparent"].as_bytes()).unwrap();
            assert_eq!(sent.trace_id, trace_id);
            assert_eq!(&sent.flags, b"00");
            assert!(!h.contains_key("tracestate"), "{h:?}");
        }
    }
}
