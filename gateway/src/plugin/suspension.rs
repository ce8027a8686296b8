//! Setting aside a route's plugin whose calls keep failing expensively ([`Suspension`]).
//!
//! A failed call's time is wasted: a guest that loops until its deadline, allocates to
//! its memory limit or builds an oversized answer takes that time from every other
//! request on its worker. When a route's plugin wastes more than [`WASTE_BUDGET`] in
//! one second, it is suspended: its calls are not made (its requests get what a failure
//! gets under its `on_error`: 503, or the plugin is skipped) for one second, doubling
//! with each suspension in a row up to [`MAX_PAUSE`]. The calls after a pause are a
//! trial: a success ends the run of suspensions, a failure starts a longer pause. Cheap failures (a trap in a few microseconds) add up to the budget only
//! at thousands a second.

use std::sync::LazyLock;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// Failed-call time a route's plugin may waste in one second (a fifth of a core)
/// before it is suspended: four timeouts at the default 50 ms deadline.
pub(crate) const WASTE_BUDGET: Duration = Duration::from_millis(200);
/// The first pause.
const FIRST_PAUSE_MS: u64 = 1_000;
/// The longest pause.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(30);
const WINDOW_MS: u64 = 1_000;

/// Milliseconds since the first call, on a monotonic clock (0 is never a pause's end).
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64 + 1
}

/// One route's plugin's failure budget, shared by the workers.
#[derive(Debug, Default)]
pub(crate) struct Suspension {
    /// Start of the current one-second window (ms).
    window: AtomicU64,
    /// Microseconds of failed calls in the window.
    wasted_us: AtomicU64,
    /// When the current pause ends (ms); 0 when there is none.
    until: AtomicU64,
    /// Suspensions in a row: the next pause is `FIRST_PAUSE_MS << strikes`.
    strikes: AtomicU32,
}

impl Suspension {
    /// Whether calls are paused now.
    pub(crate) fn paused(&self) -> bool {
        let until = self.until.load(Relaxed);
        until != 0 && now_ms() < until
    }

    /// A call succeeded: a run of suspensions is over.
    pub(crate) fn succeeded(&self) {
        if self.strikes.load(Relaxed) != 0 {
            self.strikes.store(0, Relaxed);
        }
    }

    /// A call failed after `spent`; returns the pause this started, if it did.
    pub(crate) fn failed(&self, spent: Duration) -> Option<Duration> {
        let now = now_ms();
        if now < self.until.load(Relaxed) {
            // A call that was under way when the pause began.
            return None;
        }
        let window = self.window.load(Relaxed);
        let spent_us = u64::try_from(spent.as_micros()).unwrap_or(u64::MAX);
        let wasted = if now.saturating_sub(window) >= WINDOW_MS {
            self.window.store(now, Relaxed);
            self.wasted_us.store(spent_us, Relaxed);
            spent_us
        } else {
            self.wasted_us
                .fetch_add(spent_us, Relaxed)
                .saturating_add(spent_us)
        };
        // A failed trial after a pause suspends again whatever it cost.
        if wasted <= WASTE_BUDGET.as_micros() as u64 && self.strikes.load(Relaxed) == 0 {
            return None;
        }
        let strikes = self.strikes.fetch_add(1, Relaxed);
        let pause = FIRST_PAUSE_MS
            .saturating_mul(1 << strikes.min(16))
            .min(MAX_PAUSE.as_millis() as u64);
        self.until.store(now + pause, Relaxed);
        // The trial after the pause starts a new window.
        self.window.store(now + pause, Relaxed);
        self.wasted_us.store(0, Relaxed);
        Some(Duration::from_millis(pause))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a new one-second window, as time passing would.
    fn fresh_window(s: &Suspension) {
        s.window.store(now_ms(), Relaxed);
        s.wasted_us.store(0, Relaxed);
    }

    #[test]
    fn cheap_failures_never_suspend_and_expensive_ones_do_with_growing_pauses() {
        let s = Suspension::default();
        for _ in 0..1_000 {
            assert_eq!(s.failed(Duration::from_micros(15)), None);
        }
        assert!(!s.paused());
        fresh_window(&s);
        for _ in 0..4 {
            assert_eq!(s.failed(Duration::from_millis(50)), None, "within budget");
        }
        assert_eq!(
            s.failed(Duration::from_millis(50)),
            Some(Duration::from_secs(1))
        );
        assert!(s.paused());
        // Calls under way when the pause began change nothing.
        assert_eq!(s.failed(Duration::from_millis(50)), None);
        // A failed trial, however cheap, pauses longer; a successful one ends the run.
        s.until.store(1, Relaxed);
        fresh_window(&s);
        assert!(!s.paused());
        assert_eq!(
            s.failed(Duration::from_micros(10)),
            Some(Duration::from_secs(2))
        );
        s.until.store(1, Relaxed);
        assert_eq!(
            s.failed(Duration::from_millis(1)),
            Some(Duration::from_secs(4))
        );
        s.until.store(1, Relaxed);
        s.succeeded();
        fresh_window(&s);
        assert_eq!(s.failed(Duration::from_millis(150)), None);
        assert_eq!(
            s.failed(Duration::from_millis(100)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn pauses_stop_growing_at_the_maximum() {
        let s = Suspension::default();
        for _ in 0..40 {
            s.until.store(1, Relaxed);
            s.failed(Duration::from_secs(1));
        }
        s.until.store(1, Relaxed);
        assert_eq!(s.failed(Duration::from_secs(1)), Some(MAX_PAUSE));
    }
}
