//! Setting aside a route's plugin whose calls keep failing expensively ([`Suspension`]).
//!
//! A failed call's time is wasted: a guest that loops until its deadline, allocates to
//! its memory limit or builds an oversized answer takes that time from every other
//! request on its worker. Two budgets bound the waste. A route's plugin that wastes
//! more than [`WASTE_BUDGET`] in one second is suspended on its own; and when the failed
//! calls of all plugins on one worker waste more than [`WORKER_WASTE_BUDGET`] of its
//! second, every route's plugin that wasted at least [`WORKER_WASTE_SHARE`] of it is
//! suspended at its next failure, so several hostile routes cannot each stay just under
//! their own budget. A suspended plugin's calls are not made (its requests get what a
//! failure gets under its `on_error`: 503, or the plugin is skipped) for one second,
//! doubling with each suspension in a row up to [`MAX_PAUSE`]. The calls after a pause
//! are a trial: a success ends the run of suspensions, a failure starts a longer pause.
//! Cheap failures (a trap in a few microseconds) add up to a budget only at thousands a
//! second.

use std::cell::Cell;
use std::sync::LazyLock;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

/// Failed-call time a route's plugin may waste in one second (a fifth of a core)
/// before it is suspended: four timeouts at the default 50 ms deadline.
pub(crate) const WASTE_BUDGET: Duration = Duration::from_millis(200);
/// Failed-call time all plugins together may waste in one second of one worker (a
/// tenth of it) before the ones that wasted [`WORKER_WASTE_SHARE`] are suspended.
pub(crate) const WORKER_WASTE_BUDGET: Duration = Duration::from_millis(100);
/// What a route's plugin must have wasted in its second to be suspended for the
/// worker's budget: a plugin that fails now and then, cheaply, is left alone.
pub(crate) const WORKER_WASTE_SHARE: Duration = Duration::from_millis(10);
/// The first pause.
const FIRST_PAUSE_MS: u64 = 1_000;
/// The longest pause.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(30);
const WINDOW_MS: u64 = 1_000;

thread_local! {
    /// This worker's failed-call time: (start of its one-second window in ms,
    /// microseconds wasted in it). Plugin calls run on the worker's own thread.
    static WORKER_WASTE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
}

/// Adds `spent_us` to this thread's window at `now`; the microseconds wasted in it.
fn worker_wasted(now: u64, spent_us: u64) -> u64 {
    WORKER_WASTE.with(|waste| {
        let (window, wasted) = waste.get();
        let (window, wasted) = if now.saturating_sub(window) >= WINDOW_MS {
            (now, spent_us)
        } else {
            (window, wasted.saturating_add(spent_us))
        };
        waste.set((window, wasted));
        wasted
    })
}

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
        let on_worker = worker_wasted(now, spent_us);
        let over = wasted > WASTE_BUDGET.as_micros() as u64
            || (on_worker > WORKER_WASTE_BUDGET.as_micros() as u64
                && wasted >= WORKER_WASTE_SHARE.as_micros() as u64);
        // A failed trial after a pause suspends again whatever it cost.
        if !over && self.strikes.load(Relaxed) == 0 {
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
        WORKER_WASTE.with(|w| w.set((now_ms(), 0)));
    }

    #[test]
    fn cheap_failures_never_suspend_and_expensive_ones_do_with_growing_pauses() {
        let s = Suspension::default();
        for _ in 0..1_000 {
            assert_eq!(s.failed(Duration::from_micros(15)), None);
        }
        assert!(!s.paused());
        fresh_window(&s);
        for _ in 0..2 {
            assert_eq!(s.failed(Duration::from_millis(50)), None, "within budget");
        }
        assert_eq!(
            s.failed(Duration::from_millis(50)),
            Some(Duration::from_secs(1)),
            "over the worker's budget"
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
        assert_eq!(s.failed(Duration::from_millis(60)), None);
        assert_eq!(
            s.failed(Duration::from_millis(60)),
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn a_route_failing_on_many_workers_is_held_to_its_own_budget() {
        let s = Suspension::default();
        fresh_window(&s);
        // Each 90 ms failure on a worker of its own: no worker is over its budget.
        for _ in 0..2 {
            assert_eq!(s.failed(Duration::from_millis(90)), None);
            WORKER_WASTE.with(|w| w.set((now_ms(), 0)));
        }
        assert_eq!(
            s.failed(Duration::from_millis(90)),
            Some(Duration::from_secs(1)),
            "270 ms in a second is over the route's own 200 ms"
        );
    }

    #[test]
    fn routes_each_under_their_budget_are_suspended_for_the_workers() {
        let routes: Vec<Suspension> = (0..6).map(|_| Suspension::default()).collect();
        fresh_window(&routes[0]);
        for r in &routes {
            r.window.store(now_ms(), Relaxed);
        }
        // Six routes at 20 ms each: none near 200 ms, the worker past 100 ms.
        let suspended: Vec<bool> = routes
            .iter()
            .map(|r| r.failed(Duration::from_millis(20)).is_some())
            .collect();
        assert_eq!(suspended, [false, false, false, false, false, true]);
        // A route whose failures are cheap is left alone, even on a worker over budget.
        let cheap = Suspension::default();
        for _ in 0..100 {
            assert_eq!(cheap.failed(Duration::from_micros(50)), None);
        }
        // The other five are suspended at their next failure.
        for r in &routes[..5] {
            assert_eq!(
                r.failed(Duration::from_millis(1)),
                Some(Duration::from_secs(1))
            );
        }
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
