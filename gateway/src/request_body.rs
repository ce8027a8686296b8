//! A client's request body on its way upstream, cut off past its route's size limit
//! (`max_request_body`): the upstream sees an aborted request and the client a 413,
//! whether or not the body declared its length.

use std::error::Error;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A client's request body, counted against an optional limit as it streams.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
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
        }
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if let Some(limit) = this.limit.filter(|&limit| this.seen > limit) {
                        return Poll::Ready(Some(Err(Box::new(TooLarge { limit }))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
