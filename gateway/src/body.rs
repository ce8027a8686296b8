//! The body of every response the gateway writes: an upstream's, streamed, or one the
//! gateway (or a plugin) made. It can carry a signal that fires when the body is
//! dropped — after hyper wrote it, or gave up on the client — which is when the log
//! phase runs.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Full};
use tokio::sync::oneshot;

use crate::upstream::UpstreamResponseBody;

/// A response body.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Either<UpstreamResponseBody, Full<Bytes>>,
    written: Option<oneshot::Sender<()>>,
}

impl ResponseBody {
    /// An upstream's body, streamed.
    pub fn upstream(body: UpstreamResponseBody) -> ResponseBody {
        ResponseBody {
            inner: Either::Left(body),
            written: None,
        }
    }

    /// A body held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody {
            inner: Either::Right(Full::new(bytes.into())),
            written: None,
        }
    }

    /// A receiver that completes once this body has been written (or abandoned).
    pub fn on_written(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.written = Some(tx);
        rx
    }

    /// The upstream body inside, if this is one (to buffer it for a body phase).
    pub fn into_upstream(self) -> Result<UpstreamResponseBody, ResponseBody> {
        let mut this = self;
        let written = this.written.take();
        match std::mem::replace(&mut this.inner, Either::Right(Full::new(Bytes::new()))) {
            Either::Left(body) => Ok(body),
            inner => Err(ResponseBody { inner, written }),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(tx) = self.written.take() {
            let _ = tx.send(());
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
