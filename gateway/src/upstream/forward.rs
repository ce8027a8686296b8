//! Sending a request to a cluster: pick an endpoint, give the request the `Host` it
//! should carry there, and send it over the worker's pooled connections.

use std::sync::Arc;

use http::uri::Authority;
use http::{HeaderValue, Request, Response, header};

use super::balancer::Avoid;
use super::inflight::InFlight;
use super::{Cluster, UpstreamBody, UpstreamFailure, UpstreamResponseBody};
use crate::config::Balancer;

/// The `Host` header a request carries upstream.
#[derive(Debug, Clone)]
pub enum UpstreamHost {
    /// This value (`None`: no `Host` header).
    Fixed(Option<HeaderValue>),
    /// The chosen endpoint's `host:port`.
    Endpoint,
}

/// A response head from an endpoint.
#[derive(Debug)]
pub struct Forwarded {
    /// The response; its body streams from the endpoint.
    pub response: Response<UpstreamResponseBody>,
    /// The endpoint that answered.
    pub endpoint: Authority,
}

/// Why a request got no response from the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The exchange with an endpoint failed.
    #[error("endpoint {endpoint}: {failure}")]
    Failed {
        /// The endpoint tried.
        endpoint: Authority,
        /// What went wrong.
        #[source]
        failure: UpstreamFailure,
    },
    /// The request was not sent.
    #[error("{0}")]
    Refused(Refusal),
}

/// Why the gateway did not send a request to any endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The cluster has no endpoints.
    #[error("the cluster has no endpoints")]
    NoEndpoints,
}

impl Cluster {
    /// Sends `req` (origin-form URI) from worker `worker` to an endpoint of this cluster
    /// and waits for the response head, within the cluster's timeouts. `key` is the
    /// request's hash for `consistent_hash`.
    pub async fn forward(
        self: &Arc<Self>,
        worker: usize,
        mut req: Request<UpstreamBody>,
        host: &UpstreamHost,
        key: Option<u64>,
    ) -> Result<Forwarded, ForwardError> {
        let index = self
            .pick(key, Avoid::default())
            .ok_or(ForwardError::Refused(Refusal::NoEndpoints))?;
        let endpoint = self.authority(index);
        let host = match host {
            UpstreamHost::Fixed(value) => value.clone(),
            UpstreamHost::Endpoint => HeaderValue::from_str(endpoint.as_str()).ok(),
        };
        match host {
            Some(h) => req.headers_mut().insert(header::HOST, h),
            None => req.headers_mut().remove(header::HOST),
        };
        let in_flight =
            (self.source.balancer == Balancer::LeastRequest).then(|| InFlight::begin(self, index));
        let sent = std::time::Instant::now();
        let sending = self
            .client(worker)
            .send(index, endpoint, req, self.timeouts.request)
            .await;
        let mut response = match sending {
            Ok(response) => response,
            Err(failure) => {
                self.record_outcome(index, true);
                return Err(ForwardError::Failed {
                    endpoint: endpoint.clone(),
                    failure,
                });
            }
        };
        self.exchange_duration.observe(sent.elapsed().as_secs_f64());
        self.record_outcome(index, response.status().is_server_error());
        if let Some(in_flight) = in_flight {
            response.body_mut().hold(in_flight);
        }
        Ok(Forwarded {
            response,
            endpoint: endpoint.clone(),
        })
    }
}
