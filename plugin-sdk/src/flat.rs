//! The flat byte lists of the one-crossing request phase (WIT 0.1.8, `on-request`):
//! the fields the gateway sends (`request-given.fields`) and the edits the phase
//! returns (`request-outcome.edits`). One buffer each, however many fields or edits:
//! a list of records would cost an allocation per name and per value on both sides.

/// What an edit does: the low bits of its first byte (as in the WIT's `header-change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Set = 0,
    SetIfAbsent = 1,
    Append = 2,
    Remove = 3,
}

/// The flag of an edit queued for the response.
const RESPONSE: u8 = 16;

/// The flag of an edit the plugin refused (the gateway logs and counts it).
pub(crate) const REFUSED: u8 = 32;

/// One edit read back from a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlatEdit<'a> {
    pub(crate) op: Op,
    pub(crate) response: bool,
    pub(crate) name: &'a [u8],
    pub(crate) value: &'a [u8],
}

/// Appends an edit, the name lower-cased unless it is already (`lower`; it was checked
/// to be an ASCII token).
pub(crate) fn push_edit(
    buf: &mut Vec<u8>,
    op: Op,
    response: bool,
    name: &str,
    lower: bool,
    value: &[u8],
) {
    push_flagged(
        buf,
        op as u8 | if response { RESPONSE } else { 0 },
        name,
        lower,
        value,
    );
}

/// Appends an edit the plugin refused, for the gateway to log and count.
pub(crate) fn push_refused(buf: &mut Vec<u8>, op: Op, response: bool, name: &str, value: &[u8]) {
    let first = op as u8 | REFUSED | if response { RESPONSE } else { 0 };
    push_flagged(buf, first, name, true, value);
}

fn push_flagged(buf: &mut Vec<u8>, first: u8, name: &str, lower: bool, value: &[u8]) {
    buf.reserve(9 + name.len() + value.len());
    let [a, b, c, d] = len_bytes(name.len());
    buf.extend_from_slice(&[first, a, b, c, d]);
    let at = buf.len();
    buf.extend_from_slice(name.as_bytes());
    if !lower {
        buf[at..].make_ascii_lowercase();
    }
    buf.extend_from_slice(&len_bytes(value.len()));
    buf.extend_from_slice(value);
}

fn len_bytes(len: usize) -> [u8; 4] {
    u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes()
}

/// The edits in `buf`, in order, leaving out those the plugin refused (the SDK wrote
/// them: a malformed tail is not read).
pub(crate) fn edits(buf: &[u8]) -> impl Iterator<Item = FlatEdit<'_>> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        loop {
            let (&first, after) = rest.split_first()?;
            let (name, after) = sized(after)?;
            let (value, after) = sized(after)?;
            rest = after;
            if first & REFUSED != 0 {
                continue;
            }
            let op = match first & !RESPONSE {
                0 => Op::Set,
                1 => Op::SetIfAbsent,
                2 => Op::Append,
                3 => Op::Remove,
                _ => return None,
            };
            return Some(FlatEdit {
                op,
                response: first & RESPONSE != 0,
                name,
                value,
            });
        }
    })
}

/// The fields in `request-given.fields`: each name's position and a value.
pub(crate) fn fields(buf: &[u8]) -> impl Iterator<Item = (u32, &[u8])> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        let (at, after) = rest.split_first_chunk::<4>()?;
        let (value, after) = sized(after)?;
        rest = after;
        Some((u32::from_le_bytes(*at), value))
    })
}

/// Whether two byte strings are equal, compared eight bytes at a time: `==` on slices
/// calls wasi-libc's `memcmp`, which compares a byte at a time (dozens of machine
/// instructions a byte once compiled from Wasm).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a_words, a_tail) = a.as_chunks::<8>();
    let (b_words, b_tail) = b.as_chunks::<8>();
    a_words
        .iter()
        .zip(b_words)
        .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_tail.iter().zip(b_tail).all(|(x, y)| x == y)
}

/// A little-endian u32 length and that many bytes.
fn sized(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    (rest.len() >= len).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_read_back_as_written() {
        let mut buf = Vec::new();
        push_edit(&mut buf, Op::Set, false, "X-Id", false, b"1");
        push_edit(&mut buf, Op::Remove, true, "x-gone", true, b"");
        push_edit(&mut buf, Op::Append, true, "x-more", true, &[0x80, b'a']);
        let read: Vec<FlatEdit<'_>> = edits(&buf).collect();
        assert_eq!(
            read,
            [
                FlatEdit {
                    op: Op::Set,
                    response: false,
                    name: b"x-id",
                    value: b"1"
                },
                FlatEdit {
                    op: Op::Remove,
                    response: true,
                    name: b"x-gone",
                    value: b""
                },
                FlatEdit {
                    op: Op::Append,
                    response: true,
                    name: b"x-more",
                    value: &[0x80, b'a']
                },
            ]
        );
        // The layout the WIT describes: op, then u32 LE lengths.
        assert_eq!(&buf[..13], b"\x00\x04\x00\x00\x00x-id\x01\x00\x00\x00");
        assert_eq!(
            edits(&buf[..buf.len() - 1]).count(),
            2,
            "a cut edit is not read"
        );
        push_refused(&mut buf, Op::Set, false, "Bad Name", b"v");
        assert_eq!(edits(&buf).count(), 3, "a refused edit is not an edit");
        assert_eq!(
            buf[buf.len() - 18],
            REFUSED,
            "but it is there for the gateway"
        );
    }

    #[test]
    fn same_compares_every_byte() {
        for len in 0..20 {
            let a: Vec<u8> = (0..len).map(|i| i as u8).collect();
            assert!(same(&a, &a.clone()));
            for at in 0..len {
                let mut b = a.clone();
                b[at] ^= 1;
                assert!(!same(&a, &b), "{len} {at}");
            }
            assert!(!same(&a, &a[..len.saturating_sub(1)]) || len == 0);
        }
    }

    #[test]
    fn fields_read_as_the_gateway_writes_them() {
        let buf = b"\x00\x00\x00\x00\x01\x00\x00\x00r\x01\x00\x00\x00\x00\x00\x00\x00";
        assert_eq!(
            fields(buf).collect::<Vec<_>>(),
            [(0, &b"r"[..]), (1, &b""[..])]
        );
        assert_eq!(fields(&buf[..7]).count(), 0);
    }
}
