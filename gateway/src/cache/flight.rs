//! Request coalescing: the first miss for a key leads one upstream request; the misses
//! for the same key that arrive meanwhile wait for its response. When the leader's
//! response is being recorded, they read it as it streams ([`Broadcast`]) from the
//! head on; when it is not (uncacheable, too large, failed), the flight lands at once
//! and they look in the store again, then go to the upstream themselves: the response
//! they would share was one they may not have been given.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::ResponseCache;
use super::broadcast::{Broadcast, Reader};

/// How long a coalesced miss waits for its leader's response head before going
/// upstream itself.
pub(super) const WAIT_FOR_LEADER: Duration = Duration::from_secs(10);

/// An upstream request in flight for one key.
#[derive(Debug)]
pub struct Flight {
    /// The leader's response once it streams; dropped when the flight lands, which
    /// wakes the waiters still waiting for it.
    response: watch::Sender<Option<Arc<Broadcast>>>,
}

impl Flight {
    pub(super) fn new() -> Flight {
        Flight {
            response: watch::Sender::new(None),
        }
    }

    pub(super) fn waiter(&self) -> Waiter {
        Waiter(self.response.subscribe())
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

    /// Hands the waiters the leader's response as it streams.
    pub(super) fn publish(&self, broadcast: &Arc<Broadcast>) {
        self.flight.response.send_replace(Some(broadcast.clone()));
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.cache.land(&self.key, &self.flight);
    }
}

/// A miss waiting for the leader of its key.
#[derive(Debug)]
pub struct Waiter(watch::Receiver<Option<Arc<Broadcast>>>);

impl Waiter {
    /// Waits for the leader's response and joins it; `None` when the flight landed
    /// without one to share (or with one no longer joinable, or after
    /// [`WAIT_FOR_LEADER`]): the miss then looks in the store again.
    pub async fn joined(mut self) -> Option<Reader> {
        let published = tokio::time::timeout(WAIT_FOR_LEADER, self.0.wait_for(Option::is_some));
        // `wait_for` fails once the sender is gone: the flight landed.
        let broadcast = published.await.ok()?.ok()?.clone()?;
        broadcast.reader()
    }
}
