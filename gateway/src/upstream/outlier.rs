//! Passive outlier detection: every exchange reports whether it failed (a 5xx
//! response, or a connect failure, reset or timeout), and an endpoint that fails
//! `consecutive_failures` times in a row is ejected from rotation for
//! `base_ejection` × the number of times it was ejected, capped at `max_ejection`,
//! unless that would eject more than `max_ejected_percent` of the cluster. An endpoint
//! returns when its time is up: the first request after that moment puts it back (the
//! cluster keeps the earliest end, so a request only compares two numbers). An
//! endpoint that stays in rotation for `max_ejection` starts counting ejections afresh.
//! A cluster without an `outlier` table gets [`Outlier::connect_failures`]: only
//! refused connections count, so endpoints that are down leave rotation by default.

use std::sync::PoisonError;
use std::sync::atomic::Ordering;

use super::Cluster;
use super::retry::Outcome;
use crate::config::Outlier;

impl Cluster {
    /// Milliseconds since the cluster was built.
    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records the outcome of one exchange with endpoint `index`.
    pub(super) fn record_outcome(&self, index: usize, outcome: Outcome) {
        let outlier = &self.source.outlier;
        let failed = match outcome {
            Outcome::ConnectFailure => true,
            Outcome::Answered(status) => !outlier.connect_failures_only && status.is_server_error(),
            Outcome::Reset | Outcome::Timeout => !outlier.connect_failures_only,
            // The gateway's own limit, or the client's body: not the endpoint's fault.
            Outcome::Overloaded | Outcome::ClientBody => false,
        };
        let endpoint = &self.endpoints[index];
        if !failed {
            // Read first: a success must not write a cache line every worker reads.
            if endpoint.failures.load(Ordering::Relaxed) != 0 {
                endpoint.failures.store(0, Ordering::Relaxed);
            }
            return;
        }
        let failures = endpoint.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= outlier.consecutive_failures {
            self.eject(index, outlier);
        }
    }

    /// Ejects endpoint `index` unless it is ejected already or the cap is reached.
    fn eject(&self, index: usize, outlier: &Outlier) {
        let _one_at_a_time = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let endpoint = &self.endpoints[index];
        if endpoint.ejected() {
            return;
        }
        endpoint.failures.store(0, Ordering::Relaxed);
        let total = self.endpoints.len();
        let cap = match usize::from(outlier.max_ejected_percent) {
            0 => 0,
            percent => (total * percent / 100).max(1),
        };
        let ejected = self.ejected.load(Ordering::Relaxed);
        if ejected >= cap {
            tracing::warn!(
                upstream = %self.name,
                endpoint = %endpoint.authority,
                ejected,
                max_ejected_percent = outlier.max_ejected_percent,
                "endpoint keeps failing but is not ejected: the cluster's ejection cap is reached"
            );
            return;
        }
        let now = self.now_ms();
        let max_ms = millis(outlier.max_ejection);
        let returned = endpoint.returned_at.load(Ordering::Relaxed);
        if returned != 0 && now.saturating_sub(returned) >= max_ms {
            endpoint.ejections.store(0, Ordering::Relaxed);
        }
        let times = endpoint.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = millis(outlier.base_ejection)
            .saturating_mul(u64::from(times))
            .min(max_ms)
            .max(1);
        let until = now.saturating_add(length).max(1);
        endpoint.ejected_until.store(until, Ordering::Relaxed);
        self.ejected.fetch_add(1, Ordering::Relaxed);
        self.next_return.fetch_min(until, Ordering::Relaxed);
        endpoint.ejected_total.inc();
        endpoint.report();
        tracing::warn!(
            upstream = %self.name,
            endpoint = %endpoint.authority,
            consecutive_failures = outlier.consecutive_failures,
            ejection = times,
            for_ms = length,
            "endpoint ejected: too many failures in a row"
        );
        self.rebuild_picker();
    }

    /// Ends endpoint `index`'s ejection now, if it is ejected. Call with `rotation` held.
    pub(super) fn end_ejection(&self, index: usize) {
        let endpoint = &self.endpoints[index];
        if endpoint.ejected_until.swap(0, Ordering::Relaxed) != 0 {
            endpoint
                .returned_at
                .store(self.now_ms().max(1), Ordering::Relaxed);
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            tracing::info!(
                upstream = %self.name,
                endpoint = %endpoint.authority,
                "endpoint passed its health checks: ejection over"
            );
        }
    }

    /// Puts back the endpoints whose ejection is over. Costs one atomic load while no
    /// ejection is due.
    pub(super) fn return_due(&self) {
        let next = self.next_return.load(Ordering::Relaxed);
        if next == u64::MAX || self.now_ms() < next {
            return;
        }
        let _one_at_a_time = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.now_ms();
        let mut next = u64::MAX;
        let mut returned = false;
        for endpoint in self.endpoints.iter() {
            let until = endpoint.ejected_until.load(Ordering::Relaxed);
            if until == 0 {
                continue;
            }
            if until > now {
                next = next.min(until);
                continue;
            }
            endpoint.ejected_until.store(0, Ordering::Relaxed);
            endpoint.returned_at.store(now.max(1), Ordering::Relaxed);
            self.ejected.fetch_sub(1, Ordering::Relaxed);
            endpoint.report();
            returned = true;
            tracing::info!(
                upstream = %self.name,
                endpoint = %endpoint.authority,
                "ejection over: endpoint back in rotation"
            );
        }
        self.next_return.store(next, Ordering::Relaxed);
        if returned {
            self.rebuild_picker();
        }
    }
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
