//! What a cluster knows about each of its endpoints, shared by every worker: atomics
//! only on the request path, so requests read and update it without locks.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use http::uri::Authority;
use prometheus::IntGauge;

/// One endpoint's address, weight and live state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// `host:port`.
    pub(crate) authority: Authority,
    /// Its weight relative to the others.
    pub(crate) weight: u32,
    /// Requests sent to it whose response has not ended (kept for `least_request`).
    in_flight: AtomicUsize,
    /// The active health checks' verdict (true while unchecked).
    healthy: AtomicBool,
    /// Why its last health check failed, for the admin API.
    check_error: Mutex<Option<String>>,
    /// Its `weir_upstream_endpoint_healthy` series.
    pub(crate) gauge: IntGauge,
}

impl EndpointState {
    pub(crate) fn new(authority: Authority, weight: u32, gauge: IntGauge) -> EndpointState {
        gauge.set(1);
        EndpointState {
            authority,
            weight,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            check_error: Mutex::new(None),
            gauge,
        }
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
