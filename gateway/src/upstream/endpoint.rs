//! What a cluster knows about each of its endpoints, shared by every worker: atomics
//! only, so requests read and update it without locks.

use std::sync::atomic::{AtomicUsize, Ordering};

use http::uri::Authority;

/// One endpoint's address, weight and live state.
#[derive(Debug)]
pub(crate) struct EndpointState {
    /// `host:port`.
    pub(crate) authority: Authority,
    /// Its weight relative to the others.
    pub(crate) weight: u32,
    /// Requests sent to it whose response has not ended (kept for `least_request`).
    in_flight: AtomicUsize,
}

impl EndpointState {
    pub(crate) fn new(authority: Authority, weight: u32) -> EndpointState {
        EndpointState {
            authority,
            weight,
            in_flight: AtomicUsize::new(0),
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
}
