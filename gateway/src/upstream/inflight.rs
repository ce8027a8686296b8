//! Requests in flight: a guard that counts a request against its cluster (the retry
//! budget and circuit breaking read that count) and, for `least_request`, against the
//! endpoint it went to, from the moment it is admitted until its response body ends or
//! is dropped.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::Cluster;
use super::limits::Limit;
use crate::config::Balancer;

/// Counts one request while it lives.
#[derive(Debug)]
pub(crate) struct InFlight {
    cluster: Arc<Cluster>,
    /// The endpoint counted (`least_request` only).
    endpoint: Option<usize>,
}

impl InFlight {
    /// Starts counting a request to `cluster`, unless `max_requests` are in flight.
    pub(crate) fn admit(cluster: &Arc<Cluster>) -> Result<InFlight, Limit> {
        let before = cluster.active.fetch_add(1, Ordering::Relaxed);
        if before >= cluster.breaker.limits.max_requests as usize {
            cluster.active.fetch_sub(1, Ordering::Relaxed);
            cluster.breaker.refuse(Limit::Requests);
            return Err(Limit::Requests);
        }
        cluster.breaker.admit();
        Ok(InFlight {
            cluster: cluster.clone(),
            endpoint: None,
        })
    }

    /// Counts the request against endpoint `index` instead of the one tried before.
    pub(crate) fn count_against(&mut self, index: usize) {
        if self.cluster.source.balancer != Balancer::LeastRequest {
            return;
        }
        if let Some(before) = self.endpoint.replace(index) {
            self.cluster.endpoints[before].end_request();
        }
        self.cluster.endpoints[index].begin_request();
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(index) = self.endpoint {
            self.cluster.endpoints[index].end_request();
        }
    }
}
