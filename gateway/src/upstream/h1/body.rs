//! A response body read off the connection: by its length, in chunks (RFC 9112 §7.1),
//! or until the connection closes.

use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};
use http_body::Frame;

use super::head::Framing;
use super::{Conn, Error, MAX_HEADERS};

/// The longest chunk-size line (the size, and extensions the gateway skips).
const MAX_CHUNK_LINE: usize = 4096;

/// The largest trailer section.
const MAX_TRAILERS: usize = 16 * 1024;

/// Where a response body's reading is.
#[derive(Debug)]
pub(crate) enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    /// Chunked: where in the coding.
    Chunked(Chunk),
    /// Until the connection closes.
    Eof,
    /// All of it read.
    Done,
}

/// Where a chunked body's reading is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk, with this many bytes of it still to come.
    Data(u64),
    /// At the line break after a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
    /// Past the trailer section, which was passed on.
    Ended,
}

impl Decoder {
    pub(super) fn new(framing: Framing) -> Decoder {
        match framing {
            Framing::Empty => Decoder::Done,
            Framing::Length(n) => Decoder::Length(n),
            Framing::Chunked => Decoder::Chunked(Chunk::Size),
            Framing::Eof => Decoder::Eof,
        }
    }

    /// Whether the body has been read to its end.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// The bytes still to come, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            _ => None,
        }
    }

    /// The body's next frame from `conn`: data as it arrives, trailers, or `None` at its
    /// end. A body cut short is an error, and leaves the connection unusable.
    pub(crate) fn poll_frame(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let polled = self.poll_inner(conn, cx);
        match &polled {
            Poll::Ready(Some(Err(_))) => {
                conn.reusable = false;
                *self = Decoder::Done;
            }
            Poll::Ready(None) => conn.settle(),
            _ => {}
        }
        polled
    }

    fn poll_inner(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match self {
                Decoder::Done => return Poll::Ready(None),
                Decoder::Length(left) => {
                    if !conn.read.is_empty() {
                        let n = conn
                            .read
                            .len()
                            .min(usize::try_from(*left).unwrap_or(usize::MAX));
                        *left -= n as u64;
                        let data = conn.read.split_to(n).freeze();
                        if *left == 0 {
                            *self = Decoder::Done;
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ready!(conn.poll_fill(cx))? == 0 {
                        return Poll::Ready(Some(Err(Error::Closed)));
                    }
                }
                Decoder::Eof => {
                    if !conn.read.is_empty() {
                        let data = conn.read.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    if ready!(conn.poll_fill(cx))? == 0 {
                        // The close ends the body; the connection goes with it.
                        conn.reusable = false;
                        *self = Decoder::Done;
                        return Poll::Ready(None);
                    }
                }
                Decoder::Chunked(chunk) => match step(chunk, conn) {
                    Step::Frame(frame) => return Poll::Ready(Some(Ok(frame))),
                    Step::Again => {}
                    Step::End => *self = Decoder::Done,
                    Step::Invalid(why) => return Poll::Ready(Some(Err(Error::Invalid(why)))),
                    Step::More => {
                        if ready!(conn.poll_fill(cx))? == 0 {
                            return Poll::Ready(Some(Err(Error::Closed)));
                        }
                    }
                },
            }
        }
    }
}

/// What one step through a chunked body gave.
enum Step {
    /// A frame to pass on.
    Frame(Frame<Bytes>),
    /// The state moved: step again.
    Again,
    /// The body ended (no trailers).
    End,
    /// More bytes are needed.
    More,
    /// The coding is broken.
    Invalid(&'static str),
}

/// One step through a chunked body, from what is in `conn`'s read buffer.
fn step(chunk: &mut Chunk, conn: &mut Conn) -> Step {
    let buf = &mut conn.read;
    match *chunk {
        Chunk::Size => {
            let Some(end) = buf.iter().position(|&b| b == b'\n') else {
                return if buf.len() > MAX_CHUNK_LINE {
                    Step::Invalid("chunk-size line too long")
                } else {
                    Step::More
                };
            };
            if end > MAX_CHUNK_LINE {
                return Step::Invalid("chunk-size line too long");
            }
            let Some(size) = chunk_size(&buf[..end]) else {
                return Step::Invalid("bad chunk-size line");
            };
            buf.advance(end + 1);
            *chunk = if size == 0 {
                Chunk::Trailers
            } else {
                Chunk::Data(size)
            };
            Step::Again
        }
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Step::More;
            }
            let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
            let data = buf.split_to(n).freeze();
            let left = left - n as u64;
            *chunk = if left == 0 {
                Chunk::DataEnd
            } else {
                Chunk::Data(left)
            };
            Step::Frame(Frame::data(data))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Step::More;
            }
            if &buf[..2] != b"\r\n" {
                return Step::Invalid("no line break after a chunk");
            }
            buf.advance(2);
            *chunk = Chunk::Size;
            Step::Again
        }
        Chunk::Trailers => {
            if buf.starts_with(b"\r\n") {
                buf.advance(2);
                return Step::End;
            }
            let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
            match httparse::parse_headers(buf, &mut raw) {
                Ok(httparse::Status::Complete((len, fields))) => {
                    let Some(trailers) = trailer_map(fields) else {
                        return Step::Invalid("bad trailer field");
                    };
                    buf.advance(len);
                    *chunk = Chunk::Ended;
                    Step::Frame(Frame::trailers(trailers))
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_TRAILERS => {
                    Step::Invalid("trailer section too large")
                }
                Ok(httparse::Status::Partial) => Step::More,
                Err(_) => Step::Invalid("malformed trailer section"),
            }
        }
        Chunk::Ended => Step::End,
    }
}

/// The size on a chunk-size line (without its `\n`): hex digits, optional spaces or
/// tabs, optional extensions (skipped), and the line's `\r`.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let line = line.strip_suffix(b"\r")?;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return None;
    }
    let size = line[..digits].iter().fold(0u64, |n, &d| {
        let v = char::from(d).to_digit(16).unwrap_or(0);
        (n << 4) | u64::from(v)
    });
    let rest = &line[digits..];
    let rest = &rest[rest
        .iter()
        .take_while(|&&b| b == b' ' || b == b'\t')
        .count()..];
    // Extensions: skipped, but no control character (other than a tab) in them.
    let clean = rest.iter().all(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    (rest.is_empty() || (rest[0] == b';' && clean)).then_some(size)
}

/// A trailer section as a header map (`None`: a name or value the map cannot hold).
fn trailer_map(fields: &[httparse::Header<'_>]) -> Option<HeaderMap> {
    let mut map = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(field.name.as_bytes()).ok()?;
        let value = HeaderValue::from_bytes(field.value).ok()?;
        map.append(name, value);
    }
    Some(map)
}
