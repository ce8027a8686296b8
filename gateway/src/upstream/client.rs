//! The pooled HTTP/1.1 client to upstream endpoints, and the classification of its
//! failures into what a client should be told (502 or 504).

use std::error::Error as _;
use std::io;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Timeouts;

/// The body type sent upstream: the client's body, streamed through untouched.
pub type UpstreamBody = Incoming;

/// A keep-alive connection pool to the endpoints of one cluster.
#[derive(Debug, Clone)]
pub struct UpstreamClient {
    inner: Client<HttpConnector, UpstreamBody>,
}

/// Why an upstream exchange failed, as far as the client's answer is concerned.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    /// The TCP connection could not be established (refused, unreachable, reset).
    #[error("connect failed: {0}")]
    Connect(#[source] hyper_util::client::legacy::Error),
    /// The TCP connection was not established within the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout(#[source] hyper_util::client::legacy::Error),
    /// The connection failed after it was established (reset, closed, bad response).
    #[error("request failed: {0}")]
    Exchange(#[source] hyper_util::client::legacy::Error),
}

impl UpstreamClient {
    /// A client with the cluster's connect timeout and a keep-alive pool.
    pub fn new(timeouts: &Timeouts) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(timeouts.connect));
        connector.enforce_http(true);
        let inner = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        UpstreamClient { inner }
    }

    /// Sends `req` (whose URI must be absolute) and waits for the response head.
    pub async fn send(
        &self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        self.inner.request(req).await.map_err(classify)
    }
}

fn classify(err: hyper_util::client::legacy::Error) -> UpstreamFailure {
    if !err.is_connect() {
        return UpstreamFailure::Exchange(err);
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>()
            && io.kind() == io::ErrorKind::TimedOut
        {
            return UpstreamFailure::ConnectTimeout(err);
        }
        source = e.source();
    }
    UpstreamFailure::Connect(err)
}
