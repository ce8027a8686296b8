//! gRPC-Web to gRPC, as the gRPC-Web spec (`doc/PROTOCOL-WEB.md` in grpc/grpc) lays it
//! out: on a route with `grpc_web = true`, a browser's `application/grpc-web` or
//! `application/grpc-web-text` call goes upstream as an HTTP/2 gRPC call, and the
//! answer comes back as gRPC-Web, the upstream's trailers turned into a trailer frame
//! (flag `0x80`, `name: value\r\n` lines) at the end of the body. A `-text` call's
//! bodies are base64 both ways. Both bodies stream: neither is ever held whole.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};

/// The header a gRPC-Web client marks its calls with; the gateway consumes it.
static X_GRPC_WEB: HeaderName = HeaderName::from_static("x-grpc-web");

/// A gRPC-Web call: how its bodies are encoded, and its message format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebCall {
    /// The request body is base64 (`application/grpc-web-text`).
    pub text_request: bool,
    /// The response body goes back as base64: a `-text` request, or one whose
    /// `Accept` asks for `application/grpc-web-text`.
    pub text_response: bool,
    /// The message format the client named (`+proto`, `+json`), or empty.
    format: String,
    /// Set when the text body turned out not to be base64 (see [`WebCall::text_failed`]).
    failed: TextFailed,
}

/// Whether a text body failed to decode, shared by the body's decoder and the call: the
/// upstream exchange that the failure aborts does not always say why (an HTTP/2
/// stream reset).
#[derive(Debug, Clone, Default)]
struct TextFailed(Arc<AtomicBool>);

impl PartialEq for TextFailed {
    fn eq(&self, other: &TextFailed) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for TextFailed {}

impl WebCall {
    /// The gRPC-Web call a request with these headers makes, if it is one: its
    /// `content-type` is `application/grpc-web` or `application/grpc-web-text`, alone
    /// or followed by `+format` or parameters.
    pub fn of(headers: &HeaderMap) -> Option<WebCall> {
        let (text_request, format) = parse(headers.get(header::CONTENT_TYPE)?.as_bytes())?;
        let text_response = text_request || accepts_text(headers);
        Some(WebCall {
            text_request,
            text_response,
            format: String::from_utf8_lossy(format).to_ascii_lowercase(),
            failed: TextFailed::default(),
        })
    }

    /// A decoder for this call's text body, which reports its failure to the call.
    pub fn text_decoder(&self) -> TextDecoder {
        TextDecoder {
            pending: Vec::new(),
            failed: self.failed.clone(),
        }
    }

    /// Whether the call's text body turned out not to be base64.
    pub fn text_failed(&self) -> bool {
        self.failed.0.load(Ordering::Relaxed)
    }

    /// Makes the request's head a gRPC one: `content-type: application/grpc[+format]`,
    /// `te: trailers` (gRPC servers require it), no `content-length` for a text body
    /// (decoding changes its length), and no `x-grpc-web` (a marker for proxies, which
    /// gRPC servers do not know). `x-user-agent`, which browsers send because they may
    /// not set `user-agent`, goes on as metadata.
    pub fn to_grpc_request(&self, headers: &mut HeaderMap) {
        headers.insert(
            header::CONTENT_TYPE,
            content_type("application/grpc", &self.format),
        );
        if self.text_request {
            headers.remove(header::CONTENT_LENGTH);
        }
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.remove(&X_GRPC_WEB);
    }

    /// Makes an upstream's gRPC response a gRPC-Web one: its `content-type` becomes
    /// `application/grpc-web[-text]` with the upstream's format (else the client's), and
    /// its body a [`WebBody`]. A response that is not gRPC (an error page from something
    /// in between) is returned as it is: the client sees its HTTP status.
    pub fn to_web_response<B>(&self, response: http::Response<B>) -> http::Response<WebBody<B>> {
        let (mut head, body) = response.into_parts();
        let upstream_format = match head.headers.get(header::CONTENT_TYPE) {
            // A trailers-only answer may come without one.
            None => Some(b"".as_slice()),
            Some(value) => grpc_format(value.as_bytes()),
        };
        let Some(upstream_format) = upstream_format else {
            return http::Response::from_parts(head, WebBody::untouched(body));
        };
        let format = match upstream_format.is_empty() {
            true => self.format.clone(),
            false => String::from_utf8_lossy(upstream_format).to_ascii_lowercase(),
        };
        let base = match self.text_response {
            true => "application/grpc-web-text",
            false => "application/grpc-web",
        };
        head.headers
            .insert(header::CONTENT_TYPE, content_type(base, &format));
        // The body's length changes: the trailer frame, base64.
        head.headers.remove(header::CONTENT_LENGTH);
        let body = WebBody::new(body, self.text_response);
        http::Response::from_parts(head, body)
    }
}

const TEXT: &[u8] = b"application/grpc-web-text";

/// `application/grpc-web[-text][+format][;parameters]`: whether it is text, and the
/// `+format` (empty when none).
/// Whether a gRPC-Web call with this `content-type` gets its answer as base64 text
/// (`None`: it is not a gRPC-Web call). [`WebCall::of`] without building the call.
pub(crate) fn text_response(content_type: &[u8], headers: &HeaderMap) -> Option<bool> {
    let (text_request, _) = parse(content_type)?;
    Some(text_request || accepts_text(headers))
}

/// Whether the request's `Accept` asks for `application/grpc-web-text`.
fn accepts_text(headers: &HeaderMap) -> bool {
    headers.get_all(header::ACCEPT).iter().any(|accept| {
        accept
            .as_bytes()
            .windows(TEXT.len())
            .any(|w| w.eq_ignore_ascii_case(TEXT))
    })
}

fn parse(value: &[u8]) -> Option<(bool, &[u8])> {
    let rest = strip_prefix(value, b"application/grpc-web")?;
    let (text, rest) = match strip_prefix(rest, b"-text") {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let format = rest.split(|&b| b == b';').next().unwrap_or_default();
    let format = format.trim_ascii();
    (format.is_empty() || format.starts_with(b"+")).then_some((text, format))
}

/// The `+format` of an `application/grpc[+format][;parameters]` value (empty when
/// none), or `None` for any other content type.
fn grpc_format(value: &[u8]) -> Option<&[u8]> {
    let rest = strip_prefix(value, b"application/grpc")?;
    let format = rest.split(|&b| b == b';').next().unwrap_or_default();
    let format = format.trim_ascii();
    (format.is_empty() || format.starts_with(b"+")).then_some(format)
}

fn strip_prefix<'v>(value: &'v [u8], prefix: &[u8]) -> Option<&'v [u8]> {
    (value.len() >= prefix.len() && value[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &value[prefix.len()..])
}

fn content_type(base: &str, format: &str) -> HeaderValue {
    // The format was a header value's visible ASCII already.
    HeaderValue::try_from(format!("{base}{format}"))
        .unwrap_or_else(|_| HeaderValue::from_static("application/grpc"))
}

/// The trailer frame that carries `trailers` at the end of a gRPC-Web body: the flag
/// byte `0x80`, the block's length (4 bytes, big-endian), then one `name: value\r\n`
/// line per value (names are lower-case already).
pub fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let block: usize = trailers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let mut frame = BytesMut::with_capacity(5 + block);
    frame.put_u8(0x80);
    frame.put_u32(u32::try_from(block).unwrap_or(u32::MAX));
    for (name, value) in trailers {
        frame.put_slice(name.as_str().as_bytes());
        frame.put_slice(b": ");
        frame.put_slice(value.as_bytes());
        frame.put_slice(b"\r\n");
    }
    frame.freeze()
}

/// A `-text` request body that is not base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the gRPC-Web text body is not valid base64: {0}")]
pub struct BadText(String);

/// Decodes a base64 body as it streams. The chunks it gets need not hold whole 4-byte
/// groups: what is left over waits for the next. A padded group may end a run of
/// base64 in the middle of the body (clients encode each flush on its own).
#[derive(Debug, Default)]
pub struct TextDecoder {
    /// Less than one group, waiting for the rest of it.
    pending: Vec<u8>,
    /// Set on a failure.
    failed: TextFailed,
}

impl TextDecoder {
    /// The bytes `chunk` completes (empty while it completes no group).
    pub fn decode(&mut self, chunk: &[u8]) -> Result<Bytes, BadText> {
        let decoded = self.decode_groups(chunk);
        if decoded.is_err() {
            self.failed.0.store(true, Ordering::Relaxed);
        }
        decoded
    }

    fn decode_groups(&mut self, chunk: &[u8]) -> Result<Bytes, BadText> {
        let joined;
        let input = match self.pending.is_empty() {
            true => chunk,
            false => {
                let mut both = std::mem::take(&mut self.pending);
                both.extend_from_slice(chunk);
                joined = both;
                &joined
            }
        };
        let whole = input.len() / 4 * 4;
        let mut out = Vec::with_capacity(whole / 4 * 3);
        let mut start = 0;
        for group in (0..whole).step_by(4) {
            if input[group + 3] == b'=' {
                decode_into(&input[start..group + 4], &mut out)?;
                start = group + 4;
            }
        }
        decode_into(&input[start..whole], &mut out)?;
        self.pending = input[whole..].to_vec();
        Ok(Bytes::from(out))
    }

    /// Whether the body may end here: no group is cut off.
    pub fn finish(&self) -> Result<(), BadText> {
        match self.pending.is_empty() {
            true => Ok(()),
            false => Err(self.fail(format!(
                "it ends with {} characters of an incomplete 4-character group",
                self.pending.len()
            ))),
        }
    }

    fn fail(&self, why: String) -> BadText {
        self.failed.0.store(true, Ordering::Relaxed);
        BadText(why)
    }

    /// Whether nothing waits for more input.
    pub fn is_clear(&self) -> bool {
        self.pending.is_empty()
    }
}

fn decode_into(input: &[u8], out: &mut Vec<u8>) -> Result<(), BadText> {
    if input.is_empty() {
        return Ok(());
    }
    STANDARD
        .decode_vec(input, out)
        .map_err(|e| BadText(e.to_string()))
}

/// A whole base64 body, decoded (a request body a plugin's body phase produced).
pub fn decode_text(body: &[u8]) -> Result<Bytes, BadText> {
    let mut decoder = TextDecoder::default();
    let decoded = decoder.decode(body)?;
    decoder.finish()?;
    Ok(decoded)
}

/// An upstream's gRPC response body as a gRPC-Web one: its data as it comes (base64,
/// each chunk padded on its own, for `-text`), then its trailers as a trailer frame.
#[derive(Debug)]
pub struct WebBody<B> {
    inner: B,
    /// Whether the data is base64-encoded (`-text`).
    text: bool,
    /// Left as it is (not a gRPC answer).
    passthrough: bool,
    /// The trailer frame went out (or the body ended): nothing more comes.
    done: bool,
}

impl<B> WebBody<B> {
    fn new(inner: B, text: bool) -> WebBody<B> {
        WebBody {
            inner,
            text,
            passthrough: false,
            done: false,
        }
    }

    fn untouched(inner: B) -> WebBody<B> {
        WebBody {
            inner,
            text: false,
            passthrough: true,
            done: false,
        }
    }
}

impl<B> Body for WebBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if this.passthrough {
            return Pin::new(&mut this.inner).poll_frame(cx);
        }
        if this.done {
            return Poll::Ready(None);
        }
        let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            None => {
                this.done = true;
                return Poll::Ready(None);
            }
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            Some(Ok(frame)) => frame,
        };
        let data = match frame.into_data() {
            Ok(data) => data,
            Err(frame) => match frame.into_trailers() {
                Ok(trailers) => {
                    this.done = true;
                    trailer_frame(&trailers)
                }
                // No other kind of frame exists.
                Err(_) => Bytes::new(),
            },
        };
        let data = match this.text {
            true => Bytes::from(STANDARD.encode(&data)),
            false => data,
        };
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        match self.passthrough {
            true => self.inner.is_end_stream(),
            false => self.done || self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self.passthrough {
            true => self.inner.size_hint(),
            false => SizeHint::default(),
        }
    }
}

#[cfg(test)]
#[path = "grpc_web_tests.rs"]
mod tests;
