//! HTTP/1.1 to an endpoint over a pooled connection: Weir's own client for the path
//! every proxied request takes, in place of hyper's.
//!
//! Why our own: on a keep-alive request for a small response, hyper's client spent about
//! 14,000 instructions per exchange (`bench/callgrind.sh`), a third of the gateway's
//! whole request: a channel and a oneshot between the request and the connection, a
//! state machine that serves every use of HTTP/1, and a response parse that prepares a
//! hundred header slots twice. Here an exchange writes the request head (and a small
//! body) in one write, parses the response head with `httparse` straight into a header
//! map whose values are slices of the one read buffer, and reads the body from that
//! buffer. Upgrades (`tunnel.rs`), health probes and HTTP/2 stay on hyper.
//!
//! What goes on the wire follows RFC 9112 as hyper's client did: the request's body
//! framed by its `Content-Length`, or by its size when known, or chunked; responses
//! framed by `Transfer-Encoding`, `Content-Length` or the connection's close, with
//! interim (1xx) responses skipped. A connection is reused only after a complete
//! exchange that both sides wanted kept alive and that left no stray byte behind.

mod body;
mod head;
mod writer;

#[cfg(test)]
mod tests;

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BytesMut;
use http::{Request, Response};
use tokio::io::AsyncWrite;

pub(crate) use body::Decoder;
pub(crate) use writer::Writer;

use super::client::UpstreamBody;
use super::connect::UpstreamStream;

/// The most bytes a response head may take, interim responses included (hyper's
/// default limit, kept so that what passed before passes now).
const MAX_HEAD: usize = 8192 + 4096 * 100;

/// The most header fields a response head, or a chunked body's trailer section, may
/// have (hyper's default).
const MAX_HEADERS: usize = 100;

/// The smallest and largest read: reads grow while they fill the space offered (a large
/// body) and shrink back when they do not.
const MIN_READ: usize = 8 * 1024;
const MAX_READ: usize = 256 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Reading or writing the connection failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The endpoint closed the connection before the response was complete.
    #[error("the connection closed before the response was complete")]
    Closed,
    /// The response is not valid HTTP/1.1.
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    /// The response head is larger than the gateway reads.
    #[error("the response head is larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The request's body failed while it was being sent (a client's body that broke
    /// off, was malformed or passed its limit): the client's fault, not the endpoint's.
    #[error("the request body failed: {0}")]
    RequestBody(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The request's body did not match its declared length.
    #[error("the request body {0} its content-length")]
    BodyLength(&'static str),
}

/// One HTTP/1.1 connection to an endpoint.
pub(crate) struct Conn {
    io: UpstreamStream,
    /// Bytes read and not yet taken: the start of a response, or of its body.
    read: BytesMut,
    /// How much room the next read offers.
    next_read: usize,
    /// The head being written, and how much of it went.
    out: Vec<u8>,
    written: usize,
    /// Whether the connection can carry another exchange once this one is over.
    reusable: bool,
    /// The head of the request last sent, kept for a retry to send again without a copy
    /// made before (see [`Conn::take_sent`]).
    sent: Option<http::request::Parts>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("buffered", &self.read.len())
            .field("reusable", &self.reusable)
            .finish_non_exhaustive()
    }
}

/// A request that did not start: the connection failed before any of it was written.
pub(crate) struct NotSent(pub(crate) Request<UpstreamBody>);

impl Conn {
    /// A connection over `io`, fresh from its handshake.
    pub(crate) fn new(io: UpstreamStream) -> Conn {
        Conn {
            io,
            read: BytesMut::new(),
            next_read: MIN_READ,
            out: Vec::new(),
            written: 0,
            reusable: true,
            sent: None,
        }
    }

    /// Whether the connection can carry another exchange: the last one completed, both
    /// sides wanted the connection kept, and nothing stray is left to read.
    pub(crate) fn is_reusable(&self) -> bool {
        self.reusable && self.read.is_empty()
    }

    /// Whether an idle connection can take a request now. Anything that arrived while
    /// it idled (its close, a reset, or an answer nobody asked for) rules it out.
    pub(crate) fn poll_idle(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.is_reusable() {
            return false;
        }
        // No room is made for the read: whatever arrives rules the connection out.
        match tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.read) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.reusable = false;
                false
            }
        }
    }

    /// Writes `req`'s head (with its body, when that is in memory and small) and
    /// returns what is left to send; or, when the connection fails before the first byte
    /// is written, the request untouched.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps its arguments twice in its future"
    )]
    pub(crate) fn start(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> impl Future<Output = Result<Writer, NotSent>> {
        async move {
            let (framing, inlined) = self.encode(&req);
            match poll_fn(|cx| self.poll_first_write(cx)).await {
                Ok(()) => {
                    let (mut sent, body) = req.into_parts();
                    // Kept for a retry to send again (see `take_sent`): the head only.
                    // The request's extensions go now, as they would have: what they
                    // hold (the client connection's state) must not wait on this one.
                    sent.extensions = http::Extensions::new();
                    self.sent = Some(sent);
                    let body = (!inlined && framing != head::Framing::Empty).then_some(body);
                    Ok(Writer::new(body, framing))
                }
                Err(_) => {
                    self.reusable = false;
                    Err(NotSent(req))
                }
            }
        }
    }

    /// The head of the request last sent, if not taken yet: what a retry sends again.
    pub(crate) fn take_sent(&mut self) -> Option<http::request::Parts> {
        self.sent.take()
    }

    /// Writes `req`'s head into the output buffer, with its body when that is in memory
    /// and small: how the body goes, and whether it went with the head.
    fn encode(&mut self, req: &Request<UpstreamBody>) -> (head::Framing, bool) {
        self.out.clear();
        self.written = 0;
        self.next_read = MIN_READ;
        let framing = head::encode_request(req, &mut self.out);
        // A copy of the body is polled, so that the request stays whole until something
        // of it is written; a body in memory never waits.
        match writer::small_full_body(req.body(), framing) {
            Some(bytes) => {
                self.out.extend_from_slice(&bytes);
                (framing, true)
            }
            None => (framing, false),
        }
    }

    /// The first write of a request: done once any of it is written.
    fn poll_first_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out))?;
        if n == 0 {
            return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
        }
        self.written = n;
        Poll::Ready(Ok(()))
    }

    /// Polls for the response head, skipping interim (1xx) responses: the response with
    /// how its body is read (`head_request`: the request was a `HEAD`). A `101` is an error: only upgrade requests, which go over
    /// their own connections, may switch protocols.
    pub(crate) fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<(Response<()>, Decoder), Error>> {
        let polled = self.poll_head_inner(cx, head_request);
        if let Poll::Ready(Err(_)) = &polled {
            self.reusable = false;
        }
        polled
    }

    fn poll_head_inner(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
    ) -> Poll<Result<(Response<()>, Decoder), Error>> {
        loop {
            if !self.read.is_empty()
                && let Some(head) = head::parse_response(&mut self.read, head_request)?
            {
                match head {
                    head::Parsed::Interim => continue,
                    head::Parsed::Final {
                        response,
                        framing,
                        keep_alive,
                    } => {
                        self.reusable &= keep_alive;
                        return Poll::Ready(Ok((response, Decoder::new(framing))));
                    }
                }
            }
            if self.read.len() >= MAX_HEAD {
                return Poll::Ready(Err(Error::HeadTooLarge));
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(Error::Closed));
            }
        }
    }

    /// After a response's body: its request's head and a read buffer grown for a large
    /// body are let go, so that an idle connection holds no more than a small one.
    fn settle(&mut self) {
        // The exchange is over: no retry will want its head.
        self.sent = None;
        if self.read.is_empty() && self.read.capacity() > 2 * MIN_READ {
            self.read = BytesMut::new();
        }
    }

    /// Reads what the connection has into the read buffer: the number of bytes, 0 at
    /// its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        self.read.reserve(self.next_read);
        let offered = self.read.capacity() - self.read.len();
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut self.io),
            cx,
            &mut self.read
        ))?;
        // Adapt the next read to the flow: a read that filled what it was offered asks
        // for twice as much, one that used less than half settles back.
        if n >= offered {
            self.next_read = (self.next_read * 2).min(MAX_READ);
        } else if n < offered / 2 {
            self.next_read = (self.next_read / 2).max(MIN_READ);
        }
        Poll::Ready(Ok(n))
    }

    /// Writes the rest of the head, if any is left.
    fn poll_write_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        Poll::Ready(Ok(()))
    }
}
