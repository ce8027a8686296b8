//! Message heads: the request's written out, the response's parsed (RFC 9112).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;

use super::{Error, MAX_HEADERS};

/// How a message's body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// The chunked transfer coding.
    Chunked,
    /// Everything until the connection closes (responses only).
    Eof,
}

/// What the request's head says of its body, besides the body's own size.
#[derive(Clone, Copy)]
enum Declared {
    /// `Content-Length` (one value, or several that agree).
    Length(u64),
    /// `Transfer-Encoding`, ending in `chunked` or not.
    Coded { chunked: bool },
    /// Neither (an unreadable `Content-Length` counts as none: it is not written).
    Nothing,
}

/// Writes `req`'s head to `out` and says how its body goes: the head's own
/// `Content-Length` or `Transfer-Encoding` when it has one, else the body's size
/// (`content-length` added), else chunked (`transfer-encoding: chunked` added), except
/// for `GET`, `HEAD` and `CONNECT`, which go without a body of unknown size, as hyper's
/// client did. Always HTTP/1.1: the gateway sends nothing older upstream.
pub(super) fn encode_request<B: Body>(req: &Request<B>, out: &mut Vec<u8>) -> Framing {
    let headers = req.headers();
    let body = req.body();
    let size = (!body.is_end_stream()).then(|| body.size_hint().exact());
    let declared = declared(headers);
    let (framing, added) = match (size, declared) {
        // No body: whatever the head says is sent as it is, with nothing after it.
        (None, _) => (Framing::Empty, None),
        (Some(_), Declared::Coded { chunked }) => {
            (Framing::Chunked, (!chunked).then_some(Added::Chunked))
        }
        (Some(_), Declared::Length(n)) => (length(n), None),
        (Some(Some(n)), Declared::Nothing) => (length(n), Some(Added::Length(n))),
        (Some(None), Declared::Nothing) => match *req.method() {
            Method::GET | Method::HEAD | Method::CONNECT => (Framing::Empty, None),
            _ => (Framing::Chunked, Some(Added::Chunked)),
        },
    };
    out.reserve(256);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    target(req.uri(), out);
    out.extend_from_slice(b" HTTP/1.1\r\n");
    // With a transfer coding the length is the coding's; without a body there is none.
    let coded = matches!(declared, Declared::Coded { .. });
    for (name, value) in headers {
        if (coded && name == header::CONTENT_LENGTH)
            || (framing == Framing::Empty && name == header::TRANSFER_ENCODING)
            || (matches!(declared, Declared::Nothing) && name == header::CONTENT_LENGTH)
        {
            continue;
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    match added {
        Some(Added::Length(n)) => {
            field(
                out,
                b"content-length",
                itoa::Buffer::new().format(n).as_bytes(),
            );
        }
        Some(Added::Chunked) => field(out, b"transfer-encoding", b"chunked"),
        None => {}
    }
    out.extend_from_slice(b"\r\n");
    framing
}

/// A header the gateway adds to frame the body.
enum Added {
    Length(u64),
    Chunked,
}

fn length(n: u64) -> Framing {
    if n == 0 {
        Framing::Empty
    } else {
        Framing::Length(n)
    }
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The request target: origin form (what the gateway sends), or the URI as it is when
/// it has a scheme and authority.
fn target(uri: &Uri, out: &mut Vec<u8>) {
    if uri.scheme().is_some() || uri.authority().is_some() {
        out.extend_from_slice(uri.to_string().as_bytes());
        return;
    }
    match uri.path_and_query().map(|p| p.as_str()) {
        Some(path) if !path.is_empty() => out.extend_from_slice(path.as_bytes()),
        _ => out.push(b'/'),
    }
}

fn declared(headers: &HeaderMap) -> Declared {
    if let Some(last) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        return Declared::Coded {
            chunked: ends_chunked(last.as_bytes()),
        };
    }
    match content_length(headers) {
        Ok(Some(n)) => Declared::Length(n),
        _ => Declared::Nothing,
    }
}

/// Whether a `Transfer-Encoding` value's last coding is `chunked`.
fn ends_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// The message's `Content-Length`: every value (and every element of a list) must be
/// the same decimal number (RFC 9110 §8.6).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Error> {
    let mut found = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = decimal(part.trim_ascii()).ok_or(Error::Invalid("bad content-length"))?;
            if found.is_some_and(|f| f != n) {
                return Err(Error::Invalid("conflicting content-lengths"));
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Plain decimal digits, at most 19 of them (no sign, no space, no overflow).
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// A parsed response head.
pub(super) enum Parsed {
    /// An interim (1xx) response, skipped.
    Interim,
    /// The final response: its head, how its body is delimited, and whether the
    /// endpoint keeps the connection open after it.
    Final {
        response: Response<()>,
        framing: Framing,
        keep_alive: bool,
    },
}

/// Where a header's name and value are in the head: start and end of each.
type Indices = [u32; 4];

/// Parses the response head at the start of `buf` and takes it out: `None` until it is
/// all there. `head_request`: the request was a `HEAD` (its answer has no body).
pub(super) fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<Parsed>, Error> {
    let mut raw = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut at: [Indices; MAX_HEADERS] = [[0; 4]; MAX_HEADERS];
    let base = buf.as_ptr() as usize;
    let (len, code, version, count) = {
        let mut response = httparse::Response::new(&mut []);
        let parser = httparse::ParserConfig::default();
        let len = match parser.parse_response_with_uninit_headers(&mut response, buf, &mut raw) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Invalid("too many header fields"));
            }
            Err(_) => return Err(Error::Invalid("malformed response head")),
        };
        // Offsets within a head of at most `MAX_HEAD` bytes: they fit in a u32.
        let offset = |s: &[u8]| {
            let start = s.as_ptr() as usize - base;
            (start as u32, (start + s.len()) as u32)
        };
        for (slot, h) in at.iter_mut().zip(response.headers.iter()) {
            let (name, name_end) = offset(h.name.as_bytes());
            let (value, value_end) = offset(h.value);
            *slot = [name, name_end, value, value_end];
        }
        let code = response.code.ok_or(Error::Invalid("no status"))?;
        let version = response.version.ok_or(Error::Invalid("no version"))?;
        (len, code, version, response.headers.len())
    };
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("bad status code"))?;
    let head = buf.split_to(len).freeze();
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(Error::Invalid(
                "101 Switching Protocols to a request that asked for no upgrade",
            ));
        }
        return Ok(Some(Parsed::Interim));
    }
    let mut headers = HeaderMap::with_capacity(count);
    for &[name, name_end, value, value_end] in &at[..count] {
        let name = HeaderName::from_bytes(&head[name as usize..name_end as usize])
            .map_err(|_| Error::Invalid("bad header name"))?;
        let value = value_of(&head, (value as usize, value_end as usize))?;
        headers.append(name, value);
    }
    let version = if version == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let (framing, exact) = response_framing(head_request, status, version, &mut headers)?;
    let keep_alive = exact && keeps_alive(version, &headers);
    let mut response = Response::new(());
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    Ok(Some(Parsed::Final {
        response,
        framing,
        keep_alive,
    }))
}

/// A header value: a slice of the head (`httparse` checked its bytes: visible ASCII,
/// spaces, tabs and obs-text, which is what `HeaderValue` holds).
fn value_of(head: &Bytes, (start, end): (usize, usize)) -> Result<HeaderValue, Error> {
    HeaderValue::from_maybe_shared(head.slice(start..end))
        .map_err(|_| Error::Invalid("bad header value"))
}

/// How a response's body is delimited (RFC 9112 §6.3), and whether that leaves the
/// connection usable after it. A response with both `Transfer-Encoding` and
/// `Content-Length` is read by its coding, its `Content-Length` removed, and its
/// connection closed after it.
fn response_framing(
    head_request: bool,
    status: StatusCode,
    version: Version,
    headers: &mut HeaderMap,
) -> Result<(Framing, bool), Error> {
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Empty, true));
    }
    if let Some(last) = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
    {
        let chunked = ends_chunked(last.as_bytes());
        let clean = headers.remove(header::CONTENT_LENGTH).is_none() && version == Version::HTTP_11;
        return Ok(if chunked {
            (Framing::Chunked, clean)
        } else {
            (Framing::Eof, false)
        });
    }
    Ok(match content_length(headers)? {
        Some(n) => (length(n), true),
        None => (Framing::Eof, false),
    })
}

/// Whether the endpoint keeps the connection open: HTTP/1.1 unless `Connection: close`,
/// HTTP/1.0 only with `Connection: keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let lists = crate::hop_by_hop::connection_lists;
    if version == Version::HTTP_11 {
        !lists(headers, b"close")
    } else {
        lists(headers, b"keep-alive")
    }
}
