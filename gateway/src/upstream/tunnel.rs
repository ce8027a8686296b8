//! Upgrade requests (WebSocket and other HTTP/1.1 `Upgrade`s) on a dedicated
//! connection: never pooled, since after `101 Switching Protocols` it carries another
//! protocol, and a refused upgrade's connection is closed after its answer.
//!
//! The connection counts against the cluster's limits (one connection under
//! `max_connections`, one request under `max_requests`) for as long as the
//! [`TunnelGuard`] lives: the whole life of the tunnel, or until a refusal's body ends.
//! Upgrades are not retried: an upgrade request is not idempotent in any useful sense.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::uri::Authority;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use super::balancer::Avoid;
use super::forward::set_host;
use super::inflight::InFlight;
use super::limits::{ConnectionSlot, Limit};
use super::retry::Outcome;
use super::{Cluster, ForwardError, Refusal, UpstreamBody, UpstreamFailure, UpstreamHost};

/// The answer to an upgrade request, on its own connection.
#[derive(Debug)]
pub struct Tunnel {
    /// The response head, and its body for an answer other than 101 (the connection
    /// is the protocol's after a 101: take it with `hyper::upgrade::on`).
    pub response: Response<Incoming>,
    /// The endpoint that answered.
    pub endpoint: Authority,
    /// Keeps the connection counted against the cluster's limits.
    pub guard: TunnelGuard,
}

/// Counts a dedicated connection and its request against the cluster's limits while it
/// lives.
#[derive(Debug)]
pub struct TunnelGuard {
    _in_flight: InFlight,
    _slot: ConnectionSlot,
}

impl Cluster {
    /// Sends the upgrade request `req` (origin form, `Upgrade` and `Connection: upgrade`
    /// set) to an endpoint over a new connection and waits, within the request timeout,
    /// for the response head.
    pub async fn open_tunnel(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
        host: &UpstreamHost,
        key: Option<u64>,
    ) -> Result<Tunnel, ForwardError> {
        let mut in_flight = InFlight::admit(self)
            .map_err(|limit| ForwardError::Refused(Refusal::Overloaded(limit)))?;
        let index = self
            .pick(key, Avoid::default())
            .ok_or(ForwardError::Refused(Refusal::NoEndpoints))?;
        let endpoint = self.authority(index).clone();
        set_host(&mut req, host, &endpoint);
        in_flight.count_against(index);
        let Some(slot) = self.breaker.reserve_or_evict() else {
            self.breaker.refuse(Limit::Connections);
            return Err(ForwardError::Refused(Refusal::Overloaded(
                Limit::Connections,
            )));
        };
        let failed = |failure| ForwardError::Failed {
            endpoint: endpoint.clone(),
            failure,
        };
        let sent = Instant::now();
        let outcome = self.exchange_on_new_connection(index, req).await;
        self.record_outcome(
            index,
            match &outcome {
                Ok(response) => Outcome::Answered(response.status()),
                Err(failure) => Outcome::of(failure),
            },
        );
        let response = outcome.map_err(failed)?;
        self.exchange_duration.observe(sent.elapsed().as_secs_f64());
        Ok(Tunnel {
            response,
            endpoint,
            guard: TunnelGuard {
                _in_flight: in_flight,
                _slot: slot,
            },
        })
    }

    async fn exchange_on_new_connection(
        &self,
        index: usize,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, UpstreamFailure> {
        // The cluster's own connector: its current addresses, and TLS when configured.
        let stream = self.connector.connect(index, self.endpoint(index)).await?;
        let (mut sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(UpstreamFailure::exchange)?;
        // Driven by a task of its own: after a 101 it hands the socket to the tunnel.
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upgrade connection ended with an error");
            }
        });
        let request = self.timeouts.request;
        tokio::time::timeout(request, sender.send_request(req))
            .await
            .map_err(|_| UpstreamFailure::Timeout(request))?
            .map_err(UpstreamFailure::exchange)
    }
}

/// The body of an answer to an upgrade request that was not a 101: it streams from the
/// dedicated connection, which closes when it ends.
#[derive(Debug)]
pub struct UnpooledBody {
    body: Incoming,
    guard: Option<TunnelGuard>,
}

impl UnpooledBody {
    /// `body`, keeping `guard` until it ends or is dropped.
    pub fn new(body: Incoming, guard: TunnelGuard) -> UnpooledBody {
        UnpooledBody {
            body,
            guard: Some(guard),
        }
    }
}

impl Body for UnpooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let frame = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
