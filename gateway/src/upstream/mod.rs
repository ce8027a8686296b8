//! Upstream clusters: their endpoints, endpoint selection, and the pooled connections
//! that carry requests to them.
//!
//! A [`Cluster`] is shared by every worker (it lives in the snapshot) and kept across
//! reloads while its config is unchanged, so the state that must outlive a request —
//! which endpoints are in rotation, requests in flight — lives in it, as atomics. Each
//! worker has its own connections (and so its own keep-alive pool) per endpoint, so a
//! connection is only ever driven by the event loop that opened it.

mod balancer;
mod client;
mod connect;
mod dns;
mod endpoint;
mod forward;
mod h1;
mod hash;
mod health;
mod inflight;
mod limits;
mod multiplex;
mod outlier;
mod peer_settings;
mod pool;
mod probe;
mod response_body;
mod retry;
mod ring;
mod rotation;
mod tunnel;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::HeaderMap;
use http::uri::Authority;
use tokio_util::sync::CancellationToken;

pub use client::{SendFailure, UpstreamBody, UpstreamClient, UpstreamFailure};
pub use forward::{ForwardError, Forwarded, Refusal, UpstreamHost};
pub use health::HealthChecks;
pub use limits::{Limit, Load};
pub use response_body::UpstreamResponseBody;
pub use rotation::EndpointStatus;
pub use tunnel::{Tunnel, TunnelGuard, UnpooledBody};

use self::balancer::{Avoid, Picker};
use self::endpoint::EndpointState;
use self::limits::Breaker;
use self::ring::Ring;
use crate::config::{self, Balancer, Timeouts};
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
    endpoints: Box<[EndpointState]>,
    /// How requests pick among the endpoints in rotation; rebuilt when that set changes.
    picker: ArcSwap<Picker>,
    /// Serialises changes of rotation, so the last picker built reflects the latest state.
    rotation: Mutex<()>,
    /// Whether the balancer currently ignores health (too few endpoints in rotation).
    panicking: AtomicBool,
    /// The origin of the cluster's millisecond clock (ejection times).
    epoch: Instant,
    /// Endpoints ejected now.
    ejected: AtomicUsize,
    /// The earliest end of a current ejection (cluster clock, ms); `u64::MAX`: none.
    next_return: AtomicU64,
    ring: Option<Arc<Ring>>,
    /// The round-robin position, shared by every worker.
    rr: AtomicUsize,
    /// Requests admitted whose response has not ended.
    active: AtomicUsize,
    /// The circuit breakers.
    breaker: Arc<Breaker>,
    /// Retries in flight (the retry budget).
    active_retries: AtomicUsize,
    /// `weir_upstream_retries_total{upstream}`.
    retries_sent: prometheus::IntCounter,
    /// `weir_upstream_overflow_total{upstream, limit="retries"}`.
    retries_refused: prometheus::IntCounter,
    clients: Vec<UpstreamClient>,
    /// How connections to its endpoints are opened (TCP, TLS); health checks use it too.
    connector: Arc<connect::Connector>,
    /// Whether health checks were started for this cluster.
    health_started: AtomicBool,
    /// Whether re-resolution of its DNS endpoints was started.
    dns_started: AtomicBool,
    /// Cancelled when the cluster is dropped: its health checks stop.
    retired: CancellationToken,
}

impl Cluster {
    /// Builds a cluster with one set of pooled connections per worker. Every endpoint
    /// starts in rotation (and reported healthy in `weir_upstream_endpoint_healthy`)
    /// until its health checks say otherwise; checks start with [`HealthChecks::watch`].
    pub fn new(config: &config::Upstream, workers: usize) -> Cluster {
        Cluster::build(config, workers, None)
    }

    /// Whether a cluster for `next` can be built from this one with
    /// [`Cluster::succeed`]: the two differ in their endpoints only.
    pub fn can_succeed(&self, next: &config::Upstream) -> bool {
        let without_endpoints = |u: &config::Upstream| config::Upstream {
            endpoints: Vec::new(),
            ..u.clone()
        };
        self.source.name == next.name && without_endpoints(&self.source) == without_endpoints(next)
    }

    /// A cluster for `config`, whose endpoints differ from this one's (see
    /// [`Cluster::can_succeed`]): an endpoint that stayed keeps its pooled connections,
    /// its health-check verdict and its resolved addresses, and the circuit breakers
    /// (with the connections they count) are shared. Requests in flight finish on this
    /// cluster.
    pub fn succeed(&self, config: &config::Upstream, workers: usize) -> Cluster {
        Cluster::build(config, workers, Some(self))
    }

    fn build(config: &config::Upstream, workers: usize, before: Option<&Cluster>) -> Cluster {
        // For each endpoint, its index in `before` if it was there.
        let stayed: Vec<Option<usize>> = match before {
            Some(before) => {
                let was: std::collections::HashMap<&Authority, usize> = before
                    .endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (&e.authority, i))
                    .collect();
                config
                    .endpoints
                    .iter()
                    .map(|e| was.get(&e.authority).copied())
                    .collect()
            }
            None => vec![None; config.endpoints.len()],
        };
        let endpoints: Box<[EndpointState]> = config
            .endpoints
            .iter()
            .zip(&stayed)
            .map(|(e, was)| {
                let address = e.authority.as_str();
                let state = EndpointState::new(
                    e.authority.clone(),
                    dns::Resolved::new(&e.authority),
                    e.weight,
                    metrics::endpoint_health(&config.name, address),
                    metrics::endpoint_ejections(&config.name, address),
                );
                if let (Some(before), Some(i)) = (before, was) {
                    state.carry_over(&before.endpoints[*i]);
                }
                state
            })
            .collect();
        let ring = (config.balancer == Balancer::ConsistentHash).then(|| {
            Arc::new(Ring::new(
                endpoints
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (i as u32, e.authority.as_str(), e.weight)),
            ))
        });
        let weights: Vec<u32> = endpoints.iter().map(|e| e.weight).collect();
        let picker = Picker::new(
            config.balancer,
            &weights,
            vec![true; endpoints.len()],
            ring.clone(),
        );
        let name: Arc<str> = Arc::from(config.name.as_str());
        let breaker = match before {
            Some(before) => before.breaker.clone(),
            None => Arc::new(Breaker::new(name.clone(), config.limits)),
        };
        let connector = Arc::new(connect::Connector::new(config));
        let clients: Vec<UpstreamClient> = (0..workers.max(1))
            .map(|worker| {
                UpstreamClient::new(
                    endpoints.len(),
                    before.map(|b| (b.client(worker), &stayed[..])),
                    config.protocol,
                    &config.timeouts,
                    connector.clone(),
                    breaker.clone(),
                )
            })
            .collect();
        breaker.watch_pools(
            clients
                .iter()
                .flat_map(UpstreamClient::pools)
                .map(Arc::downgrade)
                .collect(),
        );
        let cluster = Cluster {
            name,
            timeouts: config.timeouts,
            source: config.clone(),
            exchange_duration: metrics::upstream_exchange_duration(&config.name),
            clients,
            connector,
            breaker,
            endpoints,
            picker: ArcSwap::from_pointee(picker),
            rotation: Mutex::new(()),
            panicking: AtomicBool::new(false),
            epoch: Instant::now(),
            ejected: AtomicUsize::new(0),
            next_return: AtomicU64::new(u64::MAX),
            ring,
            rr: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            active_retries: AtomicUsize::new(0),
            retries_sent: metrics::upstream_retries(&config.name),
            retries_refused: metrics::upstream_overflows(&config.name, "retries"),
            health_started: AtomicBool::new(false),
            dns_started: AtomicBool::new(false),
            retired: CancellationToken::new(),
        };
        if before.is_some() {
            // Endpoints that stayed out of rotation (failing their checks) stay out.
            let _one_at_a_time = cluster
                .rotation
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            cluster.rebuild_picker();
        }
        cluster
    }

    /// The hash of the request's `hash_on` key (`consistent_hash` only).
    pub fn hash_key(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        let hash_on = self.source.hash_on.as_ref()?;
        hash::request_key(hash_on, headers, client)
    }

    /// An endpoint for a request with hash `key`, preferring one not in `avoid`; `None`
    /// only for a cluster without endpoints.
    fn pick(&self, key: Option<u64>, avoid: Avoid) -> Option<usize> {
        self.return_due();
        self.picker
            .load()
            .pick(&self.rr, key, avoid, |e| self.endpoints[e].in_flight())
    }

    /// Endpoint `index`'s address.
    fn authority(&self, index: usize) -> &Authority {
        &self.endpoints[index].authority
    }

    /// Endpoint `index`.
    fn endpoint(&self, index: usize) -> &EndpointState {
        &self.endpoints[index]
    }

    /// The connections that worker `worker` uses for this cluster.
    pub fn client(&self, worker: usize) -> &UpstreamClient {
        &self.clients[worker % self.clients.len()]
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.retired.cancel();
    }
}
