//! One active health check: `GET path` to an endpoint over a fresh connection, within a
//! timeout, judged by the response status. The connection is made as the cluster's
//! requests make theirs (TLS included) and speaks the cluster's protocol, so an
//! endpoint that passes its checks can serve.

use std::future::Future;
use std::time::Duration;

use http::{Request, Response, header};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::client::UpstreamFailure;
use super::connect::Connector;
use super::endpoint::EndpointState;
use crate::config::{HealthCheck, Protocol};

/// Why an endpoint failed a check.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeFailure {
    /// No answer within the check's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made (TCP or TLS).
    #[error("{0}")]
    Connect(#[source] UpstreamFailure),
    /// The exchange failed after connecting.
    #[error("exchange failed: {0}")]
    Exchange(#[source] hyper::Error),
    /// The check URL could not be formed (never for a validated config).
    #[error("invalid check request: {0}")]
    Request(#[source] http::Error),
    /// The endpoint answered with a status outside `expected_statuses`.
    #[error("answered {0}")]
    Status(u16),
}

/// How to reach one endpoint for its checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    pub(crate) connector: &'a Connector,
    pub(crate) protocol: Protocol,
    pub(crate) index: usize,
    pub(crate) endpoint: &'a EndpointState,
}

/// Checks endpoint `target` once: `Ok` when it answers `check.path` with an expected
/// status within `check.timeout`.
pub(crate) async fn probe(target: Target<'_>, check: &HealthCheck) -> Result<(), ProbeFailure> {
    match tokio::time::timeout(check.timeout, exchange(target, check)).await {
        Err(_) => Err(ProbeFailure::Timeout(check.timeout)),
        Ok(Err(failure)) => Err(failure),
        Ok(Ok(status)) if check.expects(status) => Ok(()),
        Ok(Ok(status)) => Err(ProbeFailure::Status(status)),
    }
}

/// Sends the check request on a new connection and returns the response status.
async fn exchange(target: Target<'_>, check: &HealthCheck) -> Result<u16, ProbeFailure> {
    let stream = target
        .connector
        .connect(target.index, target.endpoint)
        .await
        .map_err(ProbeFailure::Connect)?;
    let io = TokioIo::new(stream);
    let response = match target.protocol {
        Protocol::Http1 => {
            let (mut sender, conn) = http1::handshake::<_, Empty<bytes::Bytes>>(io)
                .await
                .map_err(ProbeFailure::Exchange)?;
            let req = Request::get(check.path.as_str())
                .header(header::HOST, target.endpoint.authority.as_str())
                .header(header::USER_AGENT, "weir-health-check")
                .header(header::CONNECTION, "close")
                .body(Empty::new())
                .map_err(ProbeFailure::Request)?;
            alongside(conn, sender.send_request(req)).await
        }
        Protocol::Http2 => {
            let (mut sender, conn) =
                http2::handshake::<_, _, Empty<bytes::Bytes>>(TokioExecutor::new(), io)
                    .await
                    .map_err(ProbeFailure::Exchange)?;
            let uri = format!(
                "{}://{}{}",
                target.connector.scheme(),
                target.endpoint.authority,
                check.path
            );
            let req = Request::get(uri)
                .header(header::USER_AGENT, "weir-health-check")
                .body(Empty::new())
                .map_err(ProbeFailure::Request)?;
            alongside(conn, sender.send_request(req)).await
        }
    };
    Ok(response.map_err(ProbeFailure::Exchange)?.status().as_u16())
}

/// Awaits `response` while driving its connection `conn`, which is dropped with it.
async fn alongside<C, R>(conn: C, response: R) -> Result<Response<Incoming>, hyper::Error>
where
    C: Future,
    R: Future<Output = Result<Response<Incoming>, hyper::Error>>,
{
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(response);
    let mut conn_ended = false;
    std::future::poll_fn(|cx| {
        if !conn_ended && conn.as_mut().poll(cx).is_ready() {
            conn_ended = true;
        }
        response.as_mut().poll(cx)
    })
    .await
}
