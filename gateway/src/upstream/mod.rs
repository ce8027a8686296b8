//! Upstream clusters: their endpoints, endpoint selection, and the pooled connections
//! that carry requests to them.
//!
//! Each worker thread has its own connections (and so its own keep-alive pool) per
//! endpoint, so a connection is only ever driven by the event loop that opened it.

mod client;
mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

pub use client::{UpstreamBody, UpstreamClient, UpstreamFailure, UpstreamResponseBody};

use crate::config::{self, Timeouts};
use crate::telemetry::metrics;

/// A cluster of interchangeable endpoints.
#[derive(Debug)]
pub struct Cluster {
    /// The cluster's name, for logs and metrics.
    pub name: Arc<str>,
    /// Its timeouts.
    pub timeouts: Timeouts,
    /// The config it was built from (a reload keeps a cluster, and its pooled
    /// connections, when this did not change).
    pub source: config::Upstream,
    /// Its `weir_upstream_request_duration_seconds` series, resolved once.
    pub exchange_duration: prometheus::Histogram,
    endpoints: Vec<Authority>,
    next: AtomicUsize,
    clients: Vec<UpstreamClient>,
}

impl Cluster {
    /// Builds a cluster with one set of pooled connections per worker, and reports each
    /// endpoint healthy in `weir_upstream_endpoint_healthy` (every endpoint takes traffic
    /// until health checks exist).
    pub fn new(config: &config::Upstream, workers: usize) -> Cluster {
        let endpoints: Vec<Authority> = config
            .endpoints
            .iter()
            .map(|e| e.authority.clone())
            .collect();
        for endpoint in &endpoints {
            metrics::set_endpoint_healthy(&config.name, endpoint.as_str(), true);
        }
        Cluster {
            name: Arc::from(config.name.as_str()),
            timeouts: config.timeouts,
            source: config.clone(),
            exchange_duration: metrics::upstream_exchange_duration(&config.name),
            clients: (0..workers.max(1))
                .map(|_| UpstreamClient::new(endpoints.len(), config.timeouts.connect))
                .collect(),
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint, round robin: its index and address.
    pub fn pick(&self) -> (usize, &Authority) {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        (index, &self.endpoints[index])
    }

    /// The connections that worker `worker` uses for this cluster.
    pub fn client(&self, worker: usize) -> &UpstreamClient {
        &self.clients[worker % self.clients.len()]
    }
}
