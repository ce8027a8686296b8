//! The handle the rest of the gateway holds on reloads: the live snapshot, the reload
//! status for the admin API, and the queue that asks for a reload.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use super::ReloadReport;
use super::records::Status;
use crate::snapshot::{SharedSnapshot, Snapshot};

/// A request for a reload, with where to send its report.
#[derive(Debug)]
pub(crate) struct Trigger {
    pub(super) cause: &'static str,
    pub(super) reply: Option<oneshot::Sender<ReloadReport>>,
}

/// The receiving end of reload requests, handed to the reload thread.
#[derive(Debug)]
pub(crate) struct ReloadQueue(pub(super) mpsc::UnboundedReceiver<Trigger>);

/// The live snapshot, the reload status for the admin API, and a way to ask for a
/// reload.
#[derive(Debug)]
pub struct Control {
    pub(super) snapshot: SharedSnapshot,
    pub(super) status: Mutex<Status>,
    pub(super) triggers: mpsc::UnboundedSender<Trigger>,
    draining: AtomicBool,
}

impl Control {
    /// A handle serving `snapshot` with `status`, and the queue its reload requests
    /// arrive on.
    pub(super) fn new(snapshot: Snapshot, status: Status) -> (Arc<Control>, ReloadQueue) {
        let (triggers, queue) = mpsc::unbounded_channel();
        let control = Arc::new(Control {
            snapshot: Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
            status: Mutex::new(status),
            triggers,
            draining: AtomicBool::new(false),
        });
        (control, ReloadQueue(queue))
    }

    /// The snapshot requests currently read.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub(crate) fn shared_snapshot(&self) -> SharedSnapshot {
        self.snapshot.clone()
    }

    /// The config and plugin status (what loaded, when, and the last errors).
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Serves `next` (if there is one) and shows `status`, as one step for anyone who
    /// reads the status: the status lock is held across both, so a client that saw
    /// the new snapshot answer a request and then asks the admin API sees the status
    /// that goes with it, and one that saw the new status finds the snapshot serving.
    pub(super) fn publish(&self, next: Option<Snapshot>, status: Status) {
        let mut shown = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let replaced = next.map(|next| self.snapshot.swap(Arc::new(next)));
        *shown = status;
        drop(shown);
        // The old snapshot is dropped outside the lock.
        drop(replaced);
    }

    /// Asks for a reload without waiting for it.
    pub fn request_reload(&self, cause: &'static str) {
        let _ = self.triggers.send(Trigger { cause, reply: None });
    }

    /// Reloads and returns the report; `None` if the gateway is shutting down.
    pub async fn reload(&self, cause: &'static str) -> Option<ReloadReport> {
        let (reply, report) = oneshot::channel();
        self.triggers
            .send(Trigger {
                cause,
                reply: Some(reply),
            })
            .ok()?;
        report.await.ok()
    }

    /// Marks the gateway as shutting down (`/readyz` answers 503 from then on).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the gateway is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}
