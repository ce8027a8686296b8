//! A response body streamed from upstream: read on from its pooled HTTP/1.1 connection
//! (and the connection back to the pool when it ends cleanly), or from its stream of an
//! HTTP/2 connection.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::client::BoxError;
use super::h1;
use super::inflight::InFlight;
use super::multiplex::StreamSlot;
use super::pool::{IdlePool, PooledConn};

/// A response body streamed from upstream. While it streams it reads on from the
/// connection it arrives on; when it ends, the connection returns to the pool.
pub struct UpstreamResponseBody {
    pub(super) inner: Inner,
    pub(super) pool: Option<Arc<IdlePool>>,
    /// Counts the request as in flight until the body ends or is dropped.
    pub(super) in_flight: Option<InFlight>,
    /// Its stream on an HTTP/2 connection, held until the body ends or is dropped.
    pub(super) stream: Option<StreamSlot>,
}

/// Where a response body comes from.
pub(super) enum Inner {
    /// A pooled HTTP/1.1 connection (boxed: the body moves, the connection is large).
    H1(Box<H1Body>),
    /// A stream of an HTTP/2 connection.
    H2(Incoming),
}

/// A body read off a pooled HTTP/1.1 connection.
pub(super) struct H1Body {
    pub(super) decoder: h1::Decoder,
    /// The request's body, when the endpoint answered before it had all of it.
    pub(super) writer: Option<h1::Writer>,
    /// The connection, until the body ends (or fails).
    pub(super) conn: Option<Box<PooledConn>>,
}

impl std::fmt::Debug for UpstreamResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pooled = matches!(&self.inner, Inner::H1(b) if b.conn.is_some());
        f.debug_struct("UpstreamResponseBody")
            .field("pooled", &pooled)
            .finish_non_exhaustive()
    }
}

impl UpstreamResponseBody {
    /// Keeps `in_flight` until the body ends or is dropped.
    pub(crate) fn hold(&mut self, in_flight: InFlight) {
        self.in_flight = Some(in_flight);
    }

    /// The head of the request this answers, when it went over HTTP/1.1 (for a retry
    /// to send again).
    pub(crate) fn take_sent_head(&mut self) -> Option<Box<http::request::Parts>> {
        match &mut self.inner {
            Inner::H1(body) => body.conn.as_mut()?.h1.take_sent().map(Box::new),
            Inner::H2(_) => None,
        }
    }

    /// Done with: a connection whose exchange completed cleanly goes back to the pool,
    /// any other is closed.
    fn release(&mut self) {
        if let Inner::H1(body) = &mut self.inner
            && let Some(conn) = body.conn.take()
            && let Some(pool) = self.pool.take()
            && body.decoder.is_done()
            && body.writer.as_ref().is_none_or(h1::Writer::is_done)
            && conn.h1.is_reusable()
        {
            pool.put(conn);
        }
        self.in_flight = None;
        self.stream = None;
    }
}

impl H1Body {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h1::Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(writer) = &mut self.writer
            && let Poll::Ready(Err(e)) = writer.poll(&mut conn.h1, cx)
        {
            // The request's body failing midway breaks the exchange; the endpoint
            // stopping to read it only keeps the connection from being reused.
            if let h1::Error::RequestBody(_) = e {
                self.conn = None;
                return Poll::Ready(Some(Err(e)));
            }
        }
        let frame = self.decoder.poll_frame(&mut conn.h1, cx);
        if let Poll::Ready(Some(Err(_))) = &frame {
            self.conn = None;
        }
        frame
    }
}

impl Body for UpstreamResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match &mut this.inner {
            Inner::H1(body) => body.poll_frame(cx).map_err(BoxError::from),
            Inner::H2(body) => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
        };
        match &frame {
            Poll::Ready(None) => this.release(),
            Poll::Ready(Some(Err(_))) => {
                if let Inner::H1(body) = &mut this.inner {
                    body.conn = None;
                }
                this.in_flight = None;
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::H1(body) => body.decoder.is_done(),
            Inner::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::H1(body) => match body.decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
            Inner::H2(body) => body.size_hint(),
        }
    }
}

impl Drop for UpstreamResponseBody {
    fn drop(&mut self) {
        // A body read to its end frees the connection for reuse; a body abandoned midway
        // leaves the connection in an unknown state, so it is closed.
        if self.is_end_stream() {
            self.release();
        }
    }
}
