//! Request path normalisation, applied before routing so that a path cannot dodge a
//! route through `..`, `.`, `//` or percent-encoded dots.
//!
//! The steps follow RFC 3986 §6.2.2: percent-encoded unreserved characters are decoded
//! (`%2e` → `.`, `%41` → `A`), other escapes get upper-case hex, runs of `/` merge, and
//! dot segments are removed (`..` never climbs above the root). Escaped slashes (`%2F`,
//! `%5C`) are kept, rejected or decoded as the operator chooses.
//!
//! A backend may read a path more leniently than the gateway routes it: decode `%2F`,
//! treat `\` as `/`, drop `;` parameters. [`lenient_reading`] gives that reading, so
//! the router can refuse a path that would reach a route's upstream while dodging its
//! plugins (`/public/..%2Fadmin`, `/admin;x/secret`).

use std::borrow::Cow;

/// What to do with `%2F` and `%5C` in a path: `[server] escaped_slashes` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlashPolicy {
    /// Leave them encoded; they are then ordinary characters of a segment (Envoy's
    /// default).
    Keep,
    /// Refuse the path (400).
    Reject,
    /// Decode them to `/` and `\` before the other steps, so they act as separators
    /// and cannot hide `..` segments.
    Decode,
}

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/`.
    #[error("the request path must start with `/`")]
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    #[error("the request path has a malformed percent-escape")]
    BadEscape,
    /// An escaped slash under [`SlashPolicy::Reject`].
    #[error("the request path contains an escaped slash (%2F or %5C)")]
    EscapedSlash,
    /// A `.` or `..` segment hidden behind an escaped slash, a backslash or a `;`
    /// parameter, which a lenient backend would resolve (see [`lenient_reading`]).
    #[error("the request path hides a dot segment behind %2F, %5C, `\\` or `;`")]
    HiddenDotSegment,
    /// The path routes one way as sent and another way as a lenient backend reads it.
    #[error("the request path routes differently when %2F, %5C and `\\` are read as `/`")]
    Ambiguous,
}

/// What to do with a path that a lenient backend would read differently from the
/// gateway: `[server] ambiguous_paths` in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AmbiguousPaths {
    /// Refuse (400) a path whose [`lenient_reading`] hides a dot segment or matches
    /// another route than the path as sent (the default).
    Reject,
    /// Route on the path as sent and forward it; only safe when every backend reads
    /// `%2F`, `%5C`, `\` and `;` strictly.
    Forward,
}

/// How a lenient backend reads a normalised path: `%2F`, `%5C` and `\` act as `/`, and
/// a segment's `;` parameters are dropped (as servlet containers do), before dot
/// segments resolve. `None` when the path has none of those, so every backend reads it
/// as the gateway does; `Err` when the reading holds a `.` or `..` segment, which the
/// normalised path cannot (so one was hidden).
pub fn lenient_reading(normalised: &str) -> Option<Result<String, PathError>> {
    let bytes = normalised.as_bytes();
    let escaped_slash = |i: usize| {
        bytes[i] == b'%'
            && bytes.get(i + 1) == Some(&b'2')
            && matches!(bytes.get(i + 2), Some(b'F' | b'f'))
            || bytes[i] == b'%'
                && bytes.get(i + 1) == Some(&b'5')
                && matches!(bytes.get(i + 2), Some(b'C' | b'c'))
    };
    if !(0..bytes.len()).any(|i| matches!(bytes[i], b'\\' | b';') || escaped_slash(i)) {
        return None;
    }
    // Separators are ASCII, so the runs between them are whole characters.
    let mut read = String::with_capacity(normalised.len());
    let (mut i, mut run) = (0, 0);
    while i < bytes.len() {
        let width = if escaped_slash(i) {
            3
        } else if bytes[i] == b'\\' {
            1
        } else {
            i += 1;
            continue;
        };
        read.push_str(&normalised[run..i]);
        read.push('/');
        i += width;
        run = i;
    }
    read.push_str(&normalised[run..]);
    let mut out = String::with_capacity(read.len());
    for segment in read.split('/').skip(1) {
        let segment = segment.split(';').next().unwrap_or_default();
        if segment == "." || segment == ".." {
            return Some(Err(PathError::HiddenDotSegment));
        }
        out.push('/');
        out.push_str(segment);
    }
    Some(Ok(remove_dot_segments(&out)))
}

/// Normalises `path` (the path of a request target, without the query). Borrows when the
/// path is already normal, which is the common case, so it costs no allocation.
pub fn normalize(path: &str, slashes: SlashPolicy) -> Result<Cow<'_, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(path) {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path, slashes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

/// True when no step would change the path: no escapes, no `//`, no `.`/`..` segments.
fn is_normal(path: &str) -> bool {
    if path.as_bytes().contains(&b'%') {
        return false;
    }
    let mut segments = path[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        // An empty segment is only normal as the last one (a trailing slash).
        if seg == "." || seg == ".." || (seg.is_empty() && segments.peek().is_some()) {
            return false;
        }
    }
    true
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn decode_unreserved(path: &str, slashes: SlashPolicy) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // Copy up to the next escape whole: a path may hold non-ASCII characters
            // (found by fuzzing: copying byte by byte re-encoded them), and `%` is ASCII,
            // so the slice ends on a character boundary.
            let end = bytes[i..]
                .iter()
                .position(|&b| b == b'%')
                .map_or(bytes.len(), |n| i + n);
            out.push_str(&path[i..end]);
            i = end;
            continue;
        }
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(PathError::BadEscape);
        };
        let value = hi << 4 | lo;
        match value {
            b'/' | b'\\' => match slashes {
                SlashPolicy::Reject => return Err(PathError::EscapedSlash),
                SlashPolicy::Decode => out.push(value as char),
                SlashPolicy::Keep => push_escape(&mut out, value),
            },
            v if is_unreserved(v) => out.push(v as char),
            v => push_escape(&mut out, v),
        }
        i += 3;
    }
    Ok(out)
}

fn push_escape(out: &mut String, value: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(HEX[usize::from(value >> 4)] as char);
    out.push(HEX[usize::from(value & 0xf)] as char);
}

/// Merges `//` and resolves `.` and `..` (RFC 3986 §5.2.4, with empty segments dropped).
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in path.split('/').skip(1) {
        trailing_slash = false;
        match seg {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(p: &str) -> String {
        normalize(p, SlashPolicy::Keep).unwrap().into_owned()
    }

    #[test]
    fn non_ascii_characters_survive_decoding_and_a_second_pass() {
        // The input `cargo fuzz run path_normalize` found (fuzz/README.md).
        let found = "/,$//$%FF$//$/P\u{470}/\u{1}\0$";
        let once = keep(found);
        assert_eq!(once, "/,$/$%FF$/$/P\u{470}/\u{1}\0$");
        assert_eq!(keep(&once), once, "idempotent");
        assert_eq!(keep("/caf\u{e9}/%7E/x//y"), "/caf\u{e9}/~/x/y");
        assert_eq!(
            lenient_reading("/caf\u{e9}\\x%2Fy;p")
                .map(Result::unwrap)
                .as_deref(),
            Some("/caf\u{e9}/x/y")
        );
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in ["/", "/a", "/a/b", "/a/b/", "/a.b/c..d/.e"] {
            assert!(
                matches!(normalize(p, SlashPolicy::Keep), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
    }

    #[test]
    fn normalises_dots_slashes_and_escapes() {
        let cases = [
            ("/public/../admin", "/admin"),
            ("/public/./admin", "/public/admin"),
            ("//admin", "/admin"),
            ("/a//b///c", "/a/b/c"),
            ("/../../admin", "/admin"),
            ("/public/%2e%2e/admin", "/admin"),
            ("/public/%2E%2E/admin", "/admin"),
            ("/public/.%2e/admin", "/admin"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/..", "/"),
            ("/%61dmin", "/admin"),
            ("/a%20b", "/a%20b"),
            ("/a%3fb", "/a%3Fb"),
            ("/a/%2f../b", "/a/%2F../b"),
        ];
        for (input, want) in cases {
            assert_eq!(keep(input), want, "{input}");
        }
    }

    #[test]
    fn escaped_slash_policies() {
        assert_eq!(
            normalize("/a/..%2fadmin", SlashPolicy::Reject),
            Err(PathError::EscapedSlash)
        );
        assert_eq!(
            normalize("/public/..%2Fadmin", SlashPolicy::Decode).unwrap(),
            "/admin"
        );
        assert_eq!(keep("/public/..%2Fadmin"), "/public/..%2Fadmin");
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            normalize("a/b", SlashPolicy::Keep),
            Err(PathError::NotAbsolute)
        );
        assert_eq!(
            normalize("/a%zz", SlashPolicy::Keep),
            Err(PathError::BadEscape)
        );
        assert_eq!(
            normalize("/a%2", SlashPolicy::Keep),
            Err(PathError::BadEscape)
        );
    }
}
