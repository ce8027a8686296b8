//! Circuit breaking: a cluster refuses work past its limits instead of piling it onto a
//! struggling upstream (Envoy's circuit breakers, with its defaults of 1024 each).
//!
//! - `max_requests`: requests in flight to the cluster (checked as a request arrives);
//! - `max_connections`: connections open to its endpoints, every worker's together. A
//!   request that needs a new connection past it first closes an idle pooled
//!   connection of the cluster, if some worker has one (idle connections are spare
//!   capacity), and otherwise waits as pending for a connection to be returned or
//!   closed, at most the connect timeout;
//! - `max_pending`: requests waiting so.
//!
//! A refused request gets a local 503, is counted in `weir_upstream_overflow_total`,
//! and the breaker logs when it opens (the first refusal) and closes again (the next
//! request admitted), not once per request.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use std::time::Duration;

use prometheus::IntCounter;
use tokio::sync::Notify;

use super::pool::IdlePool;
use crate::config::Limits;
use crate::telemetry::metrics;

/// The limit a refused request ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    /// `max_connections`: no connection could be had within the connect timeout.
    #[error("limits.max_connections")]
    Connections,
    /// `max_pending`: too many requests already wait for a connection.
    #[error("limits.max_pending")]
    Pending,
    /// `max_requests`: too many requests in flight.
    #[error("limits.max_requests")]
    Requests,
}

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Limit::Connections => "connections",
            Limit::Pending => "pending",
            Limit::Requests => "requests",
        }
    }
}

/// A cluster's circuit breakers, shared by its workers.
#[derive(Debug)]
pub(crate) struct Breaker {
    name: Arc<str>,
    pub(crate) limits: Limits,
    /// Connections open now.
    connections: AtomicUsize,
    /// Requests waiting for a connection now.
    pending: AtomicUsize,
    /// Woken when a connection is returned to a pool or closed while requests wait.
    freed: Notify,
    /// Whether the breaker refused the last request it judged.
    open: AtomicBool,
    /// Every worker's idle pool of every endpoint, to find spare connections in
    /// (replaced when the cluster's endpoints change).
    pools: ArcSwap<Vec<Weak<IdlePool>>>,
    /// `weir_upstream_overflow_total{upstream, limit}` for connections, pending,
    /// requests.
    refused: [IntCounter; 3],
}

/// What a pending request got.
#[derive(Debug)]
pub(crate) enum Waited<T> {
    /// A connection it can use: an idle one returned to its pool (`http1`), or one
    /// with a free stream (`http2`).
    Ready(T),
    /// Room for a new connection.
    Slot(ConnectionSlot),
}

impl Breaker {
    pub(crate) fn new(name: Arc<str>, limits: Limits) -> Breaker {
        let refused = [Limit::Connections, Limit::Pending, Limit::Requests]
            .map(|l| metrics::upstream_overflows(&name, l.label()));
        Breaker {
            name,
            limits,
            connections: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            freed: Notify::new(),
            open: AtomicBool::new(false),
            pools: ArcSwap::default(),
            refused,
        }
    }

    /// Records the idle pools of a cluster just built. A cluster that replaces one
    /// sharing this breaker (its endpoints changed) adds its pools to those of the
    /// one replaced that are still in use, so that cluster's idle connections, while
    /// it drains, still count as spare.
    pub(crate) fn watch_pools(&self, pools: Vec<Weak<IdlePool>>) {
        let before = self.pools.load();
        let mut all: Vec<Weak<IdlePool>> = before
            .iter()
            .filter(|old| old.strong_count() > 0 && !pools.iter().any(|p| p.ptr_eq(old)))
            .cloned()
            .collect();
        all.extend(pools);
        self.pools.store(Arc::new(all));
    }

    /// Counts a refusal by `limit`; logs when the breaker opens.
    pub(crate) fn refuse(&self, limit: Limit) {
        self.refused[limit as usize].inc();
        if !self.open.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                upstream = %self.name,
                %limit,
                "circuit breaker open: refusing requests with 503"
            );
        }
    }

    /// Notes an admitted request; logs when that closes the breaker. One atomic load
    /// while it is closed.
    pub(crate) fn admit(&self) {
        if self.open.load(Ordering::Relaxed) && self.open.swap(false, Ordering::Relaxed) {
            tracing::info!(upstream = %self.name, "circuit breaker closed: admitting requests");
        }
    }

    /// Room for one more connection, if under `max_connections`.
    fn reserve(self: &Arc<Self>) -> Option<ConnectionSlot> {
        let max = self.limits.max_connections as usize;
        let mut open = self.connections.load(Ordering::SeqCst);
        loop {
            if open >= max {
                return None;
            }
            match self.connections.compare_exchange_weak(
                open,
                open + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => {
                    return Some(ConnectionSlot {
                        breaker: self.clone(),
                    });
                }
                Err(now) => open = now,
            }
        }
    }

    /// Room for one more connection, closing an idle one of the cluster to make it if
    /// needed.
    pub(crate) fn reserve_or_evict(self: &Arc<Self>) -> Option<ConnectionSlot> {
        if let Some(slot) = self.reserve() {
            return Some(slot);
        }
        let evicted = self
            .pools
            .load()
            .iter()
            .filter_map(Weak::upgrade)
            .any(|pool| pool.evict_oldest());
        if evicted { self.reserve() } else { None }
    }

    /// Waits, as a pending request, for a connection to an endpoint: one that `usable`
    /// finds (an idle one returned to the endpoint's pool, a connection with a free
    /// stream), or room for a new one. Refused when `max_pending` requests already
    /// wait, or after `limit`.
    pub(crate) async fn wait<T>(
        self: &Arc<Self>,
        limit: Duration,
        mut usable: impl FnMut() -> Option<T>,
    ) -> Result<Waited<T>, Limit> {
        if self.pending.fetch_add(1, Ordering::SeqCst) >= self.limits.max_pending as usize {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(Limit::Pending);
        }
        let _waiting = Pending(&self.pending);
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before looking, so a release in between is not missed.
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            if let Some(conn) = usable() {
                return Ok(Waited::Ready(conn));
            }
            if let Some(slot) = self.reserve_or_evict() {
                return Ok(Waited::Slot(slot));
            }
            if tokio::time::timeout_at(deadline, freed).await.is_err() {
                return Err(Limit::Connections);
            }
        }
    }

    /// Wakes pending requests, if any: a connection was returned or closed, or a
    /// stream ended.
    pub(crate) fn freed(&self) {
        if self.pending.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// A request counted as pending while it lives.
struct Pending<'a>(&'a AtomicUsize);

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// One open connection counted against `max_connections`; freed when dropped with the
/// connection.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    breaker: Arc<Breaker>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.breaker.connections.fetch_sub(1, Ordering::SeqCst);
        self.breaker.freed();
    }
}

/// A cluster's load against its limits, for the admin API.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests in flight.
    pub requests: usize,
    /// Connections open.
    pub connections: usize,
    /// Requests waiting for a connection.
    pub pending: usize,
    /// Retries being sent.
    pub retries: usize,
}

impl super::Cluster {
    /// Its load now.
    pub fn load(&self) -> Load {
        Load {
            requests: self.active.load(Ordering::Relaxed),
            connections: self.breaker.connections.load(Ordering::Relaxed),
            pending: self.breaker.pending.load(Ordering::Relaxed),
            retries: self.active_retries.load(Ordering::Relaxed),
        }
    }
}
