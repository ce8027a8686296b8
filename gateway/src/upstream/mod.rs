//! Upstream clusters: their endpoints, endpoint selection, and the pooled HTTP clients
//! that carry requests to them.
//!
//! Each worker thread has its own client (and so its own keep-alive pool) per cluster, so
//! a connection is only ever driven by the event loop that opened it.

mod client;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

pub use client::{UpstreamBody, UpstreamClient, UpstreamFailure};

use crate::config::{self, Timeouts};

/// A cluster of interchangeable endpoints.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's name, for logs and metrics.
    pub name: Arc<str>,
    /// Its timeouts.
    pub timeouts: Timeouts,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
    clients: Vec<UpstreamClient>,
}

impl Cluster {
    /// Builds a cluster with one pooled client per worker.
    pub fn new(config: &config::Upstream, workers: usize) -> Cluster {
        Cluster {
            name: Arc::from(config.name.as_str()),
            timeouts: config.timeouts,
            endpoints: config
                .endpoints
                .iter()
                .map(|e| e.authority.clone())
                .collect(),
            next: AtomicUsize::new(0),
            clients: (0..workers.max(1))
                .map(|_| UpstreamClient::new(&config.timeouts))
                .collect(),
        }
    }

    /// The next endpoint, round robin.
    pub fn pick(&self) -> &Authority {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[n % self.endpoints.len()]
    }

    /// The endpoints, in config order.
    pub fn endpoints(&self) -> &[Authority] {
        &self.endpoints
    }

    /// The pooled client that worker `worker` uses for this cluster.
    pub fn client(&self, worker: usize) -> &UpstreamClient {
        &self.clients[worker % self.clients.len()]
    }
}
