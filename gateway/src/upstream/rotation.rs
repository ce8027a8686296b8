//! Which endpoints are in rotation: those that pass their health checks (or have none)
//! and are not ejected by outlier detection.
//! When that set changes the cluster builds a new [`Picker`] over it; below the panic
//! threshold (Envoy's: by default fewer than half of the endpoints in rotation) the
//! picker spreads over every endpoint instead, since sending to all beats overloading
//! the few survivors or failing every request.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};

use super::Cluster;
use super::balancer::Picker;

/// One endpoint as the admin API shows it.
#[derive(Debug, Clone)]
pub struct EndpointStatus {
    /// `host:port`.
    pub address: String,
    /// Its weight.
    pub weight: u32,
    /// Whether it passes its health checks (true when it has none).
    pub healthy: bool,
    /// Whether the balancer may pick it now.
    pub in_rotation: bool,
    /// Requests in flight to it (counted for `least_request` only).
    pub in_flight: usize,
    /// Why its last health check failed.
    pub check_error: Option<String>,
    /// How much longer outlier detection keeps it out (`None`: not ejected).
    pub ejected_for: Option<std::time::Duration>,
    /// Times outlier detection ejected it.
    pub ejections: u32,
}

impl Cluster {
    /// Records endpoint `index`'s health-check verdict and, if it changed, rebuilds the
    /// picker; an endpoint back to healthy is no longer ejected either.
    pub(crate) fn set_healthy(&self, index: usize, healthy: bool) {
        let _one_at_a_time = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let endpoint = &self.endpoints[index];
        if endpoint.healthy() == healthy {
            return;
        }
        endpoint.set_healthy(healthy);
        // Passing its checks again also ends an ejection: the endpoint proved it serves.
        if healthy {
            self.end_ejection(index);
        }
        endpoint.report();
        self.rebuild_picker();
    }

    /// Builds the picker over the endpoints in rotation now. Call with `rotation` held.
    pub(super) fn rebuild_picker(&self) {
        let in_rotation: Vec<bool> = self.endpoints.iter().map(|e| e.usable()).collect();
        let available = in_rotation.iter().filter(|&&r| r).count();
        let total = self.endpoints.len();
        let threshold = usize::from(self.source.panic_threshold);
        let panic = available == 0 || available * 100 < threshold * total;
        if panic != self.panicking.swap(panic, Ordering::Relaxed) {
            if panic {
                tracing::warn!(
                    upstream = %self.name,
                    in_rotation = available,
                    endpoints = total,
                    panic_threshold = threshold,
                    "too few endpoints in rotation: panic mode, spreading over all of them"
                );
            } else {
                tracing::info!(upstream = %self.name, in_rotation = available, "panic mode over");
            }
        }
        let in_rotation = if panic {
            vec![true; total]
        } else {
            in_rotation
        };
        let weights: Vec<u32> = self.endpoints.iter().map(|e| e.weight).collect();
        self.picker.store(Arc::new(Picker::new(
            self.source.balancer,
            &weights,
            in_rotation,
            self.ring.clone(),
        )));
    }

    /// Whether the balancer ignores health now because too few endpoints are in rotation.
    pub fn panicking(&self) -> bool {
        self.panicking.load(Ordering::Relaxed)
    }

    /// Every endpoint's state, in config order.
    pub fn endpoint_status(&self) -> Vec<EndpointStatus> {
        self.return_due();
        let picker = self.picker.load();
        let now = self.now_ms();
        self.endpoints
            .iter()
            .enumerate()
            .map(|(i, e)| EndpointStatus {
                address: e.authority.to_string(),
                weight: e.weight,
                healthy: e.healthy(),
                in_rotation: picker.in_rotation(i),
                in_flight: e.in_flight(),
                check_error: e.check_error(),
                ejected_for: match e.ejected_until.load(Ordering::Relaxed) {
                    0 => None,
                    until => Some(std::time::Duration::from_millis(until.saturating_sub(now))),
                },
                ejections: e.ejections.load(Ordering::Relaxed),
            })
            .collect()
    }
}
