//! A client's request body on its way upstream, cut off past its route's size limit
//! (`max_request_body`): the upstream sees an aborted request and the client a 413,
//! whether or not the body declared its length.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::grpc_web::TextDecoder;

/// A client's request body, counted against an optional limit as it streams.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    /// Decodes a gRPC-Web text body to the binary frames the upstream gets.
    text: Option<Box<TextDecoder>>,
}

/// The error a [`RequestBody`] ends with once it passes its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the request body is larger than the route's limit of {limit} bytes")]
pub struct TooLarge {
    /// The limit, in bytes.
    pub limit: u64,
}

impl RequestBody {
    /// `inner`, limited to `limit` bytes if given.
    pub fn new(inner: Incoming, limit: Option<u64>) -> RequestBody {
        RequestBody {
            inner,
            limit,
            seen: 0,
            text: None,
        }
    }

    /// The same body, base64-decoded as it streams (a gRPC-Web text call's). The limit
    /// still counts the bytes the client sends.
    pub fn decoding_text(mut self, decoder: TextDecoder) -> RequestBody {
        self.text = Some(Box::new(decoder));
        self
    }

    /// The limit, if any.
    pub fn limit(&self) -> Option<u64> {
        self.limit
    }

    /// The [`TooLarge`] somewhere in `error`'s chain of sources, if the failure was this
    /// body passing its limit.
    pub fn too_large(error: &(dyn Error + 'static)) -> Option<TooLarge> {
        let mut current = Some(error);
        while let Some(e) = current {
            if let Some(too_large) = e.downcast_ref::<TooLarge>() {
                return Some(*too_large);
            }
            current = e.source();
        }
        None
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        loop {
            let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(Box::new(e)))),
                None => {
                    let cut_off = this.text.as_ref().map(|text| text.finish());
                    return match cut_off {
                        Some(Err(e)) => Poll::Ready(Some(Err(Box::new(e)))),
                        _ => Poll::Ready(None),
                    };
                }
            };
            let Some(data) = frame.data_ref() else {
                return Poll::Ready(Some(Ok(frame)));
            };
            this.seen += data.len() as u64;
            if let Some(limit) = this.limit.filter(|&limit| this.seen > limit) {
                return Poll::Ready(Some(Err(Box::new(TooLarge { limit }))));
            }
            let Some(text) = &mut this.text else {
                return Poll::Ready(Some(Ok(frame)));
            };
            match text.decode(data) {
                Err(e) => return Poll::Ready(Some(Err(Box::new(e)))),
                // Less than a 4-character group so far: read on.
                Ok(decoded) if decoded.is_empty() => continue,
                Ok(decoded) => return Poll::Ready(Some(Ok(Frame::data(decoded)))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // A cut-off text body still has its error to report.
        self.inner.is_end_stream() && self.text.as_ref().is_none_or(|t| t.is_clear())
    }

    fn size_hint(&self) -> SizeHint {
        match self.text {
            // Decoding changes the length.
            Some(_) => SizeHint::default(),
            None => self.inner.size_hint(),
        }
    }
}
