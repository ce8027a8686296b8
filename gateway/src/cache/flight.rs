//! Request coalescing: the first miss for a key leads one upstream request; the misses
//! for the same key that arrive meanwhile wait for it to land, then look in the store
//! again. A leader whose response is not stored (uncacheable, too large, failed, its
//! client gone) lands at once, and its waiters go to the upstream themselves: the
//! response they would share was one they may not have been given.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ResponseCache;

/// How long a coalesced miss waits for its leader before going upstream itself (a
/// leader's body is stored at the pace its own client reads it).
pub(super) const WAIT_FOR_LEADER: Duration = Duration::from_secs(10);

/// An upstream request in flight for one key.
#[derive(Debug)]
pub struct Flight {
    /// Never sent on: dropping it (when the flight lands) wakes the waiters.
    landed: watch::Sender<()>,
}

impl Flight {
    pub(super) fn new() -> Flight {
        Flight {
            landed: watch::Sender::new(()),
        }
    }

    pub(super) fn waiter(&self) -> Waiter {
        Waiter(self.landed.subscribe())
    }
}

/// What a miss does: lead the upstream request, or wait for the one in flight.
#[derive(Debug)]
pub enum Joined {
    /// Lead it; dropping the [`Lead`] lands the flight.
    Lead(Lead),
    /// Wait for it.
    Wait(Waiter),
}

/// The leader's hold on its flight.
pub struct Lead {
    cache: Arc<ResponseCache>,
    key: Arc<str>,
    flight: Arc<Flight>,
}

impl std::fmt::Debug for Lead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lead").field("key", &self.key).finish()
    }
}

impl Lead {
    pub(super) fn new(cache: Arc<ResponseCache>, key: Arc<str>, flight: Arc<Flight>) -> Lead {
        Lead { cache, key, flight }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.cache.land(&self.key, &self.flight);
    }
}

/// A miss waiting for the leader of its key.
#[derive(Debug)]
pub struct Waiter(watch::Receiver<()>);

impl Waiter {
    /// Waits until the flight lands, or [`WAIT_FOR_LEADER`] has passed.
    pub async fn landed(mut self) {
        // `changed` fails once the sender is gone: the flight landed.
        let _ = tokio::time::timeout(WAIT_FOR_LEADER, self.0.changed()).await;
    }
}
