//! What a cluster knows about each of its endpoints, shared by every worker: atomics
//! only on the request path, so requests read and update it without locks.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use http::uri::Authority;
use prometheus::{IntCounter, IntGauge};

use super::dns::Resolved;

/// One endpoint's address, weight and live state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// `host:port`.
    pub(crate) authority: Authority,
    /// The addresses new connections go to (looked up again on an interval for a DNS
    /// name).
    pub(crate) resolved: Resolved,
    /// Its weight relative to the others.
    pub(crate) weight: u32,
    /// Requests sent to it whose response has not ended (kept for `least_request`).
    in_flight: AtomicUsize,
    /// The active health checks' verdict (true while unchecked).
    healthy: AtomicBool,
    /// Why its last health check failed, for the admin API.
    check_error: Mutex<Option<String>>,
    /// Failed exchanges in a row (outlier detection).
    pub(crate) failures: AtomicU32,
    /// Times it was ejected (each ejection lasts this many base ejections).
    pub(crate) ejections: AtomicU32,
    /// When its ejection ends, in milliseconds on the cluster's clock; 0: not ejected.
    pub(crate) ejected_until: AtomicU64,
    /// When its last ejection ended (cluster clock, ms); 0: never ejected.
    pub(crate) returned_at: AtomicU64,
    /// Its `weir_upstream_endpoint_healthy` series.
    gauge: IntGauge,
    /// Its `weir_upstream_ejections_total` series.
    pub(crate) ejected_total: IntCounter,
}

impl EndpointState {
    pub(crate) fn new(
        authority: Authority,
        resolved: Resolved,
        weight: u32,
        gauge: IntGauge,
        ejected_total: IntCounter,
    ) -> EndpointState {
        gauge.set(1);
        EndpointState {
            authority,
            resolved,
            weight,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            check_error: Mutex::new(None),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            returned_at: AtomicU64::new(0),
            gauge,
            ejected_total,
        }
    }

    /// Takes over what `before` (the same endpoint in the cluster this one replaces)
    /// learned: its health-check verdict and error, and its resolved addresses.
    /// Outlier ejections are not carried: they are short and start afresh.
    pub(crate) fn carry_over(&self, before: &EndpointState) {
        self.set_healthy(before.healthy());
        self.set_check_error(before.check_error());
        self.resolved.carry_over(&before.resolved);
        self.report();
    }

    /// Whether outlier detection has it out of rotation.
    pub(crate) fn ejected(&self) -> bool {
        self.ejected_until.load(Ordering::Relaxed) != 0
    }

    /// Whether it may be in rotation: healthy and not ejected.
    pub(crate) fn usable(&self) -> bool {
        self.healthy() && !self.ejected()
    }

    /// Sets `weir_upstream_endpoint_healthy` from its state.
    pub(crate) fn report(&self) {
        self.gauge.set(i64::from(self.usable()));
    }

    /// Requests in flight to it.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn begin_request(&self) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn end_request(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// Whether it passes its health checks (or has none).
    pub(crate) fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::Relaxed);
    }

    /// Why its last health check failed (`None`: it passed, or none ran).
    pub(crate) fn check_error(&self) -> Option<String> {
        self.check_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_check_error(&self, error: Option<String>) {
        *self
            .check_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
    }
}
