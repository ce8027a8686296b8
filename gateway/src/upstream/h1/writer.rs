//! The request's body on its way out: after the head, by its length or in chunks, as
//! its frames come.

use std::collections::VecDeque;
use std::io::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http_body::Body;
use tokio::io::AsyncWrite;

use super::head::Framing;
use super::{Conn, Error};
use crate::upstream::client::UpstreamBody;

/// The largest body held in memory that goes out in the head's write.
const INLINE_BODY: u64 = 16 * 1024;

/// Data frames up to this size are copied next to their chunk framing (one write);
/// larger ones are written as they are.
const COPY_DATA: usize = 4 * 1024;

/// The body of a request in memory (`Full`), when small enough to go out with its head:
/// its bytes, taken from a copy of it so that the request stays whole. `framing` must be
/// the length it has.
pub(super) fn small_full_body(body: &UpstreamBody, framing: Framing) -> Option<Bytes> {
    let (http_body_util::Either::Right(full), Framing::Length(n)) = (body, framing) else {
        return None;
    };
    if n > INLINE_BODY {
        return None;
    }
    let mut copy = full.clone();
    // `Full` is ready at once: it never keeps a waker.
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match Pin::new(&mut copy).poll_frame(&mut cx) {
        Poll::Ready(Some(Ok(frame))) => frame.into_data().ok().filter(|d| d.len() as u64 == n),
        _ => None,
    }
}

/// What is left of a request to send after the first write of its head.
pub(crate) struct Writer {
    body: Option<UpstreamBody>,
    framing: Framing,
    /// Bytes still to write after the head, in order.
    queue: VecDeque<Bytes>,
    done: bool,
}

impl Writer {
    pub(super) fn new(body: Option<UpstreamBody>, framing: Framing) -> Writer {
        Writer {
            body,
            framing,
            queue: VecDeque::new(),
            done: false,
        }
    }

    /// Whether all of the request has been written.
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Writes the rest of the head, then the body as its frames come: `Ready(Ok)` once
    /// all of it is written and flushed.
    pub(crate) fn poll(
        &mut self,
        conn: &mut Conn,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        if self.done {
            return Poll::Ready(Ok(()));
        }
        let polled = self.poll_inner(conn, cx);
        if let Poll::Ready(result) = &polled {
            self.done = true;
            self.body = None;
            self.queue.clear();
            if result.is_err() {
                conn.reusable = false;
            }
        }
        polled
    }

    fn poll_inner(&mut self, conn: &mut Conn, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        loop {
            ready!(conn.poll_write_head(cx))?;
            while let Some(front) = self.queue.front_mut() {
                let n = ready!(Pin::new(&mut conn.io).poll_write(cx, front))?;
                if n == 0 {
                    return Poll::Ready(Err(
                        std::io::Error::from(std::io::ErrorKind::WriteZero).into()
                    ));
                }
                front.advance(n);
                if front.is_empty() {
                    self.queue.pop_front();
                }
            }
            let Some(body) = self.body.as_mut() else {
                ready!(Pin::new(&mut conn.io).poll_flush(cx))?;
                return Poll::Ready(Ok(()));
            };
            match ready!(Pin::new(body).poll_frame(cx)) {
                None => {
                    self.body = None;
                    self.end(conn)?;
                }
                Some(Err(e)) => return Poll::Ready(Err(Error::RequestBody(e))),
                Some(Ok(frame)) => {
                    // Trailers are not sent: the gateway removes `Trailer` from what it
                    // forwards, and a request's trailers go only where it announced them.
                    if let Ok(data) = frame.into_data() {
                        self.data(conn, data)?;
                    }
                }
            }
        }
    }

    /// Queues a data frame, framed.
    fn data(&mut self, conn: &mut Conn, data: Bytes) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        conn.out.clear();
        conn.written = 0;
        match &mut self.framing {
            Framing::Length(left) => {
                let len = data.len() as u64;
                if len > *left {
                    return Err(Error::BodyLength("is longer than"));
                }
                *left -= len;
                self.queue.push_back(data);
            }
            Framing::Chunked => {
                // Written in place: no string per chunk.
                let _ = write!(conn.out, "{:x}\r\n", data.len());
                if data.len() <= COPY_DATA {
                    conn.out.extend_from_slice(&data);
                    conn.out.extend_from_slice(b"\r\n");
                } else {
                    self.queue.push_back(data);
                    self.queue.push_back(Bytes::from_static(b"\r\n"));
                }
            }
            // No body goes out: its frames are dropped (see `encode_request`).
            Framing::Empty | Framing::Eof => {}
        }
        Ok(())
    }

    /// Ends the body: the last chunk, or a check that the length was met.
    fn end(&mut self, conn: &mut Conn) -> Result<(), Error> {
        match self.framing {
            Framing::Length(left) if left > 0 => Err(Error::BodyLength("is shorter than")),
            Framing::Chunked => {
                conn.out.clear();
                conn.written = 0;
                conn.out.extend_from_slice(b"0\r\n\r\n");
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
