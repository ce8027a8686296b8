//! The body of every response the gateway writes: an upstream's, streamed, or one the
//! gateway (or a plugin) made. It can carry a signal that fires when the body is
//! dropped — after hyper wrote it, or gave up on the client — which is when the log
//! phase runs.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use tokio::sync::oneshot;

use crate::cache::{Reader, Recording};
use crate::grpc_web::WebBody;
use crate::server::RequestSlot;
use crate::upstream::{UnpooledBody, UpstreamResponseBody};

/// A response body.
#[derive(Debug)]
pub struct ResponseBody {
    inner: Inner,
    written: Option<oneshot::Sender<()>>,
    /// The request's place on its connection, given up when the body is done with.
    slot: Option<RequestSlot>,
}

/// Where the bytes come from.
#[derive(Debug)]
enum Inner {
    /// An upstream's body over a pooled connection.
    Upstream(UpstreamResponseBody),
    /// Bytes in memory.
    Full(Full<Bytes>),
    /// An upstream's body over a dedicated connection (a refused upgrade).
    Unpooled(UnpooledBody),
    /// A response the cache records and shares with its flight's waiters, read at this
    /// client's pace (boxed: only cached routes' misses carry it).
    Shared(Box<Reader>),
    /// An upstream's gRPC body relayed as gRPC-Web (boxed: only gRPC-Web calls carry
    /// it).
    GrpcWeb(Box<WebBody<ResponseBody>>),
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl ResponseBody {
    /// An upstream's body, streamed.
    pub fn upstream(body: UpstreamResponseBody) -> ResponseBody {
        ResponseBody {
            inner: Inner::Upstream(body),
            written: None,
            slot: None,
        }
    }

    /// A body held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        ResponseBody {
            inner: Inner::Full(Full::new(bytes.into())),
            written: None,
            slot: None,
        }
    }

    /// An upstream's body from a dedicated connection, streamed.
    pub fn unpooled(body: UnpooledBody) -> ResponseBody {
        ResponseBody {
            inner: Inner::Unpooled(body),
            written: None,
            slot: None,
        }
    }

    /// `body` (an upstream's) streamed, and kept by `recording` for the cache as it goes:
    /// a task reads it at the upstream's pace and shares it with the waiters of
    /// `recording`'s flight; this is the leader's reader.
    pub fn recorded(body: ResponseBody, recording: Recording) -> ResponseBody {
        ResponseBody::shared(crate::cache::share(body, recording))
    }

    /// A client's reader of a response the cache shares.
    pub fn shared(reader: Reader) -> ResponseBody {
        ResponseBody {
            inner: Inner::Shared(Box::new(reader)),
            written: None,
            slot: None,
        }
    }

    /// `body` (an upstream's gRPC response) as [`crate::grpc_web`] relays it.
    pub fn grpc_web(body: WebBody<ResponseBody>) -> ResponseBody {
        ResponseBody {
            inner: Inner::GrpcWeb(Box::new(body)),
            written: None,
            slot: None,
        }
    }

    /// A receiver that completes once this body has been written (or abandoned).
    pub fn on_written(&mut self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        self.written = Some(tx);
        rx
    }

    /// Keeps the request in flight on its connection until this body is written or
    /// abandoned (see the server's client deadlines).
    pub(crate) fn hold(&mut self, slot: RequestSlot) {
        self.slot = Some(slot);
    }

    /// The body's bytes as they stream, for a body phase to buffer (`Err`: a body in
    /// memory, returned as it was).
    pub fn into_streamed(self) -> Result<Streamed, ResponseBody> {
        let mut this = self;
        let written = this.written.take();
        match std::mem::replace(&mut this.inner, Inner::Full(Full::new(Bytes::new()))) {
            Inner::Upstream(body) => Ok(http_body_util::Either::Left(body)),
            Inner::Unpooled(body) => Ok(http_body_util::Either::Right(body)),
            inner => Err(ResponseBody {
                inner,
                written,
                slot: this.slot.take(),
            }),
        }
    }
}

/// An upstream body as it streams, pooled connection or not.
pub type Streamed = http_body_util::Either<UpstreamResponseBody, UnpooledBody>;

impl Drop for ResponseBody {
    fn drop(&mut self) {
        if let Some(tx) = self.written.take() {
            let _ = tx.send(());
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut self.get_mut().inner {
            Inner::Upstream(body) => Pin::new(body).poll_frame(cx),
            Inner::Full(body) => Pin::new(body).poll_frame(cx).map_err(|e| match e {}),
            Inner::Unpooled(body) => Pin::new(body).poll_frame(cx).map_err(|e| e.into()),
            Inner::Shared(reader) => Pin::new(&mut **reader).poll_frame(cx).map_err(|e| e.into()),
            Inner::GrpcWeb(body) => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Upstream(body) => body.is_end_stream(),
            Inner::Full(body) => body.is_end_stream(),
            Inner::Unpooled(body) => body.is_end_stream(),
            Inner::Shared(reader) => reader.is_end_stream(),
            Inner::GrpcWeb(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Upstream(body) => body.size_hint(),
            Inner::Full(body) => body.size_hint(),
            Inner::Unpooled(body) => body.size_hint(),
            Inner::Shared(reader) => reader.size_hint(),
            Inner::GrpcWeb(body) => body.size_hint(),
        }
    }
}
