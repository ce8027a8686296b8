//! Requests in flight: a guard that counts a request against its endpoint from the
//! moment it is sent until its response body ends or is dropped, which is what
//! `least_request` compares.

use std::sync::Arc;

use super::Cluster;

/// Counts one request against endpoint `endpoint` of `cluster` while it lives.
#[derive(Debug)]
pub(crate) struct InFlight {
    cluster: Arc<Cluster>,
    endpoint: usize,
}

impl InFlight {
    /// Starts counting a request to `endpoint`.
    pub(crate) fn begin(cluster: &Arc<Cluster>, endpoint: usize) -> InFlight {
        cluster.endpoints[endpoint].begin_request();
        InFlight {
            cluster: cluster.clone(),
            endpoint,
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.cluster.endpoints[self.endpoint].end_request();
    }
}
