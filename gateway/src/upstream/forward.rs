//! Sending a request to a cluster: pick an endpoint, give the request the `Host` it
//! should carry there, send it over the worker's pooled connections, and try again
//! elsewhere when the retry policy says so (see [`super::retry`]). Every try reports
//! its outcome to outlier detection; the request counts as in flight until its
//! response body ends.

use std::sync::Arc;

use http::uri::Authority;
use http::{HeaderValue, Request, Response, header};

use std::time::Instant;

use super::balancer::Avoid;
use super::inflight::InFlight;
use super::limits::Limit;
use super::retry::{self, Outcome, Replay};
use super::{Cluster, SendFailure, UpstreamBody, UpstreamFailure, UpstreamResponseBody};
use crate::config::Retries;

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
    /// A circuit breaker refused the request.
    #[error("overloaded: {0} reached")]
    Overloaded(Limit),
}

impl Cluster {
    /// Sends `req` (origin-form URI) from worker `worker` to an endpoint of this cluster
    /// and waits for the response head, within the cluster's timeouts, retrying as its
    /// policy allows on other endpoints when it can. `key` is the request's hash for
    /// `consistent_hash`.
    pub async fn forward(
        self: &Arc<Self>,
        worker: usize,
        req: Request<UpstreamBody>,
        host: &UpstreamHost,
        key: Option<u64>,
    ) -> Result<Forwarded, ForwardError> {
        let in_flight = InFlight::admit(self)
            .map_err(|limit| ForwardError::Refused(Refusal::Overloaded(limit)))?;
        let policy = &self.source.retries;
        // Boxed: the retry loop keeps its state across awaits.
        Box::pin(self.try_until_done(worker, req, host, key, in_flight, policy)).await
    }

    /// Tries until an answer the policy accepts, or until it allows no more retries.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps its arguments twice in its future"
    )]
    fn try_until_done(
        &self,
        worker: usize,
        mut req: Request<UpstreamBody>,
        host: &UpstreamHost,
        key: Option<u64>,
        mut in_flight: InFlight,
        policy: &Retries,
    ) -> impl Future<Output = Result<Forwarded, ForwardError>> {
        async move {
            let replay = Replay::capture(&req, policy, !self.client(worker).returns_sent_heads());
            let mut deadline = None;
            let mut tried = Avoid::default();
            let mut retries = 0;
            let mut slot = None;
            let mut failover = None;
            loop {
                let index = match failover.take() {
                    Some(index) => index,
                    None => self
                        .pick(key, tried)
                        .ok_or(ForwardError::Refused(Refusal::NoEndpoints))?,
                };
                tried.add(index);
                let endpoint = self.authority(index);
                set_host(&mut req, host, endpoint);
                in_flight.count_against(index);
                // The request timeout bounds every try together, from the first one's start.
                let sent = Instant::now();
                let deadline = *deadline.get_or_insert(sent + self.timeouts.request);
                let left = deadline.saturating_duration_since(sent);
                let timeout = policy.per_try_timeout.map_or(left, |t| t.min(left));
                let result = self
                    .client(worker)
                    .send(index, self.endpoint(index), req, timeout)
                    .await;
                drop(slot.take()); // this retry is over: free its place in the budget
                let (mut result, unsent, sent_head) = match result {
                    Ok(response) => {
                        self.exchange_duration.observe(sent.elapsed().as_secs_f64());
                        (Ok(response), None, None)
                    }
                    Err(SendFailure {
                        failure,
                        unsent,
                        sent_head,
                    }) => (Err(failure), unsent, sent_head),
                };
                let outcome = match &result {
                    Ok(response) => Outcome::Answered(response.status()),
                    Err(failure) => Outcome::of(failure),
                };
                self.record_outcome(index, outcome);

                // A request that never left goes to another endpoint whatever the policy:
                // no endpoint saw it. It takes no retry, budget or backoff.
                let unsent = match (outcome, unsent) {
                    (Outcome::ConnectFailure, Some(back)) => {
                        let next = self.pick(key, tried).filter(|&next| !tried.has(next));
                        match next.filter(|_| Instant::now() < deadline) {
                            Some(next) => {
                                tracing::debug!(
                                    upstream = %self.name,
                                    endpoint = %endpoint,
                                    next = %self.authority(next),
                                    "connect failed: sending to another endpoint"
                                );
                                self.retries_sent.inc();
                                req = *back;
                                failover = Some(next);
                                continue;
                            }
                            None => Some(back),
                        }
                    }
                    (_, unsent) => unsent,
                };
                if retries < policy.attempts && retry::wanted(policy, outcome) {
                    // A request that never left comes back whole; others go again from
                    // their copy, with the head the exchange sent (handed back by a
                    // failed exchange, kept by an answered one's body) or copied.
                    let sent_head = sent_head.or_else(|| {
                        let response = result.as_mut().ok()?;
                        response.body_mut().take_sent_head()
                    });
                    let again = unsent
                        .map(|back| *back)
                        .or_else(|| replay.as_deref()?.request(sent_head));
                    if let Some((again, taken)) = self
                        .prepare_retry(policy, again, retries + 1, deadline)
                        .await
                    {
                        retries += 1;
                        tracing::debug!(
                            upstream = %self.name,
                            endpoint = %endpoint,
                            ?outcome,
                            retry = retries,
                            "retrying on another endpoint"
                        );
                        req = again;
                        slot = Some(taken);
                        continue;
                    }
                }
                return match result {
                    Ok(mut response) => {
                        response.body_mut().hold(in_flight);
                        Ok(Forwarded {
                            response,
                            endpoint: endpoint.clone(),
                        })
                    }
                    Err(failure) => Err(ForwardError::Failed {
                        endpoint: endpoint.clone(),
                        failure,
                    }),
                };
            }
        }
    }
}

/// Gives `req` the `Host` header it should carry to `endpoint`. A request that came
/// without one (HTTP/1.0 allows it) gets the endpoint's, as nginx's `$proxy_host` does:
/// HTTP/1.1, which the gateway speaks upstream, requires a `Host` on every request, and
/// origins answer 400 without one.
pub(super) fn set_host(req: &mut Request<UpstreamBody>, host: &UpstreamHost, endpoint: &Authority) {
    let value = match host {
        UpstreamHost::Fixed(Some(value)) => Some(value.clone()),
        UpstreamHost::Fixed(None) | UpstreamHost::Endpoint => {
            HeaderValue::from_str(endpoint.as_str()).ok()
        }
    };
    match value {
        Some(h) => req.headers_mut().insert(header::HOST, h),
        None => req.headers_mut().remove(header::HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::tests::size_of_return;

    /// The retry loop's future is moved into its box on every request: see
    /// `pipeline::tests::a_requests_future_stays_small`.
    #[test]
    #[allow(unreachable_code, unused_variables, clippy::diverging_sub_expression)]
    fn the_retry_loops_future_stays_small() {
        let size = size_of_return(|| {
            let cluster: &Cluster = unimplemented!();
            cluster.try_until_done(
                0,
                unimplemented!(),
                unimplemented!(),
                None,
                unimplemented!(),
                unimplemented!(),
            )
        });
        assert!(
            size <= 2048,
            "Cluster::try_until_done's future is {size} bytes"
        );
    }
}
