//! One active health check: `GET path` to an endpoint over a fresh connection, within a
//! timeout, judged by the response status.

use std::future::Future;
use std::time::Duration;

use http::{Request, header};
use http_body_util::Empty;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::HealthCheck;

/// Why an endpoint failed a check.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeFailure {
    /// No answer within the check's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection could not be made.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
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

/// Checks endpoint `authority` once: `Ok` when it answers `check.path` with an expected
/// status within `check.timeout`.
pub(crate) async fn probe(authority: &str, check: &HealthCheck) -> Result<(), ProbeFailure> {
    match tokio::time::timeout(check.timeout, exchange(authority, check)).await {
        Err(_) => Err(ProbeFailure::Timeout(check.timeout)),
        Ok(Err(failure)) => Err(failure),
        Ok(Ok(status)) if check.expects(status) => Ok(()),
        Ok(Ok(status)) => Err(ProbeFailure::Status(status)),
    }
}

/// Sends the check request on a new connection and returns the response status.
async fn exchange(authority: &str, check: &HealthCheck) -> Result<u16, ProbeFailure> {
    let stream = TcpStream::connect(authority)
        .await
        .map_err(ProbeFailure::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = http1::handshake::<_, Empty<bytes::Bytes>>(TokioIo::new(stream))
        .await
        .map_err(ProbeFailure::Exchange)?;
    let req = Request::get(check.path.as_str())
        .header(header::HOST, authority)
        .header(header::USER_AGENT, "weir-health-check")
        .header(header::CONNECTION, "close")
        .body(Empty::new())
        .map_err(ProbeFailure::Request)?;
    let response = sender.send_request(req);
    // The connection is driven here, beside the response, and dropped with it.
    let mut conn = std::pin::pin!(conn);
    let mut response = std::pin::pin!(response);
    let mut conn_ended = false;
    let response = std::future::poll_fn(|cx| {
        if !conn_ended && conn.as_mut().poll(cx).is_ready() {
            conn_ended = true;
        }
        response.as_mut().poll(cx)
    })
    .await
    .map_err(ProbeFailure::Exchange)?;
    Ok(response.status().as_u16())
}
