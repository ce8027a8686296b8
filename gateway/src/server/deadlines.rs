//! Client deadlines, per connection: a request head must arrive whole within
//! `header_read_timeout` of its first byte (or of the connection opening), and a
//! connection with no request in flight closes after `idle_timeout`. HTTP/2 connections,
//! once a request showed them to be, only have the idle deadline: their pings and window
//! updates are not slow headers.
//!
//! A connection whose client abandons more than [`MAX_CANCELS_PER_SECOND`] requests in
//! a second before their answer (HTTP/2 rapid reset) is closed too.
//!
//! The state is a few atomics the connection's reads, its requests and their response
//! bodies update; one timer per connection looks at it when a deadline may have passed,
//! and wakes at least every `header_read_timeout`, so no request pays for a wake-up.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use crate::config::ClientLimits;

/// What a connection is doing, as its deadlines need to know.
#[derive(Debug)]
pub(super) struct Activity {
    /// Requests whose response is not yet written.
    in_flight: AtomicU32,
    /// When the last request finished (milliseconds on [`now_ms`]'s clock).
    idle_since: AtomicU64,
    /// When the first byte of a request head arrived with no request in flight
    /// ([`NONE`] when none has).
    head_since: AtomicU64,
    /// Whether the connection turned out to speak HTTP/2.
    http2: AtomicBool,
    /// Whether bytes arrived since the last request began (the next head is under way).
    head_bytes: AtomicBool,
    /// Requests the client abandoned before their answer, in the window below.
    cancels: AtomicU32,
    /// When the current one-second window of cancellations began.
    cancel_window: AtomicU64,
    /// Woken when cancellations pass [`MAX_CANCELS_PER_SECOND`].
    reset_flood: Notify,
}

/// Requests a client may abandon before their answer within one second (HTTP/2
/// streams reset by the client, in the main): past it the connection is a rapid-reset
/// flood (CVE-2023-44487) and is closed. Each abandoned request cost the gateway its
/// routing and, often, an upstream request.
const MAX_CANCELS_PER_SECOND: u32 = 200;

/// No head under way.
const NONE: u64 = u64::MAX;

/// Milliseconds since the first call, on a monotonic clock.
fn now_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// A request head was not whole within `header_read_timeout`.
    HeaderRead,
    /// No request for `idle_timeout`.
    Idle,
    /// More than [`MAX_CANCELS_PER_SECOND`] requests abandoned in a second.
    ResetFlood,
}

impl Activity {
    /// A connection just accepted: its first head is under way from now.
    pub(super) fn new() -> Arc<Activity> {
        let now = now_ms();
        Arc::new(Activity {
            in_flight: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            head_since: AtomicU64::new(now),
            http2: AtomicBool::new(false),
            head_bytes: AtomicBool::new(false),
            cancels: AtomicU32::new(0),
            cancel_window: AtomicU64::new(now),
            reset_flood: Notify::new(),
        })
    }

    /// A request's head arrived whole; it is in flight until the returned slot drops
    /// (with its response body, once written or abandoned). One dropped before
    /// [`PendingRequest::answered`] is an abandoned request.
    pub(super) fn request_started(self: &Arc<Self>, http2: bool) -> PendingRequest {
        if http2 && !self.http2.load(Relaxed) {
            self.http2.store(true, Relaxed);
        }
        self.in_flight.fetch_add(1, Relaxed);
        self.head_since.store(NONE, Relaxed);
        self.head_bytes.store(false, Relaxed);
        PendingRequest(Some(self.clone()))
    }

    /// A request is over: the connection is idle from now unless others are in flight.
    fn request_finished(&self) {
        self.idle_since.store(now_ms(), Relaxed);
        self.in_flight.fetch_sub(1, Relaxed);
    }

    /// A request was abandoned before its answer.
    fn cancelled(&self) {
        let now = now_ms();
        if now.saturating_sub(self.cancel_window.load(Relaxed)) >= 1000 {
            self.cancel_window.store(now, Relaxed);
            self.cancels.store(1, Relaxed);
            return;
        }
        if self.cancels.fetch_add(1, Relaxed) + 1 == MAX_CANCELS_PER_SECOND {
            self.reset_flood.notify_one();
        }
    }

    /// Bytes arrived: with no request in flight they start the next head.
    fn bytes_arrived(&self) {
        if self.in_flight.load(Relaxed) == 0 {
            if !self.head_bytes.load(Relaxed) {
                self.head_bytes.store(true, Relaxed);
            }
            if self.head_since.load(Relaxed) == NONE {
                self.head_since.store(now_ms(), Relaxed);
            }
        }
    }

    /// Whether a draining gateway may close the connection now without cutting a
    /// request: an HTTP/2 one at once (its GOAWAY lets open streams finish and tells the
    /// client to send new ones elsewhere); an HTTP/1 one when no request is in flight,
    /// no byte of the next one arrived, and none has for `quiet`. A busy HTTP/1
    /// connection is not closed: its next response says `Connection: close`. Closing
    /// one the moment its client sends a request would fail that request, and a client
    /// that sends again within `quiet` of its last response is likely to.
    pub(super) fn drainable(&self, quiet: Duration) -> bool {
        if self.http2.load(Relaxed) {
            return true;
        }
        self.in_flight.load(Relaxed) == 0
            && !self.head_bytes.load(Relaxed)
            && now_ms().saturating_sub(self.idle_since.load(Relaxed)) >= millis(quiet)
    }

    /// The deadline in force and what passing it means; `None` while requests are in
    /// flight.
    fn deadline(&self, limits: &ClientLimits) -> Option<(u64, Expiry)> {
        if self.in_flight.load(Relaxed) > 0 {
            return None;
        }
        let head = self.head_since.load(Relaxed);
        if head != NONE && !self.http2.load(Relaxed) {
            return Some((
                head + millis(limits.header_read_timeout),
                Expiry::HeaderRead,
            ));
        }
        let idle = self.idle_since.load(Relaxed);
        Some((idle + millis(limits.idle_timeout), Expiry::Idle))
    }

    /// Resolves when the connection passed one of its deadlines.
    pub(super) async fn expired(&self, limits: ClientLimits) -> Expiry {
        let check_every = limits.header_read_timeout.min(limits.idle_timeout);
        loop {
            let now = now_ms();
            let wait = match self.deadline(&limits) {
                Some((at, why)) if at <= now => return why,
                Some((at, _)) => Duration::from_millis(at - now).min(check_every),
                None => check_every,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.reset_flood.notified() => return Expiry::ResetFlood,
            }
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// A request in flight that has no answer yet; dropped as it is, the client abandoned
/// it.
#[derive(Debug)]
pub(crate) struct PendingRequest(Option<Arc<Activity>>);

impl PendingRequest {
    /// The request has its answer; it stays in flight until the returned slot drops
    /// (with the response body).
    pub(crate) fn answered(mut self) -> RequestSlot {
        RequestSlot(self.0.take().expect("a pending request is answered once"))
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        if let Some(activity) = self.0.take() {
            activity.cancelled();
            activity.request_finished();
        }
    }
}

/// An answered request in flight on its connection; dropping it finishes the request.
#[derive(Debug)]
pub(crate) struct RequestSlot(Arc<Activity>);

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// A connection's transport, telling its [`Activity`] when bytes arrive.
#[derive(Debug)]
pub(super) struct Watched<IO> {
    io: IO,
    activity: Arc<Activity>,
}

impl<IO> Watched<IO> {
    pub(super) fn new(io: IO, activity: Arc<Activity>) -> Watched<IO> {
        Watched { io, activity }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bytes_arrived();
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(header_read_ms: u64, idle_ms: u64) -> ClientLimits {
        ClientLimits {
            header_read_timeout: Duration::from_millis(header_read_ms),
            idle_timeout: Duration::from_millis(idle_ms),
            ..ClientLimits::default()
        }
    }

    #[test]
    fn a_request_in_flight_has_no_deadline_and_its_end_starts_the_idle_one() {
        let activity = Activity::new();
        let l = limits(10_000, 60_000);
        assert_eq!(activity.deadline(&l).map(|d| d.1), Some(Expiry::HeaderRead));
        let slot = activity.request_started(false);
        assert_eq!(activity.deadline(&l), None);
        activity.bytes_arrived();
        assert_eq!(activity.deadline(&l), None, "body bytes start no head");
        drop(slot);
        assert_eq!(activity.deadline(&l).map(|d| d.1), Some(Expiry::Idle));
        activity.bytes_arrived();
        assert_eq!(activity.deadline(&l).map(|d| d.1), Some(Expiry::HeaderRead));
    }

    #[test]
    fn draining_closes_quiet_http1_connections_and_http2_ones_at_once() {
        let activity = Activity::new();
        assert!(activity.drainable(Duration::ZERO), "nothing sent yet");
        assert!(
            !activity.drainable(Duration::from_secs(60)),
            "not quiet long enough"
        );
        activity.bytes_arrived();
        assert!(!activity.drainable(Duration::ZERO), "a head is under way");
        let slot = activity.request_started(false);
        assert!(
            !activity.drainable(Duration::ZERO),
            "a request is in flight"
        );
        drop(slot);
        assert!(activity.drainable(Duration::ZERO));
        activity.bytes_arrived();
        drop(activity.request_started(true));
        activity.bytes_arrived();
        assert!(
            activity.drainable(Duration::from_secs(60)),
            "HTTP/2: GOAWAY"
        );
    }

    #[test]
    fn http2_connections_only_go_idle() {
        let activity = Activity::new();
        drop(activity.request_started(true));
        activity.bytes_arrived();
        let l = limits(10_000, 60_000);
        assert_eq!(activity.deadline(&l).map(|d| d.1), Some(Expiry::Idle));
    }

    #[tokio::test]
    async fn abandoning_requests_fast_is_a_flood() {
        let activity = Activity::new();
        for _ in 0..MAX_CANCELS_PER_SECOND {
            drop(activity.request_started(true));
        }
        // Answered requests never count.
        drop(activity.request_started(true).answered());
        let why = tokio::time::timeout(
            Duration::from_secs(5),
            activity.expired(limits(60_000, 60_000)),
        )
        .await
        .expect("the flood is noticed at once");
        assert_eq!(why, Expiry::ResetFlood);
    }

    #[tokio::test]
    async fn a_passed_deadline_resolves() {
        let activity = Activity::new();
        let why =
            tokio::time::timeout(Duration::from_secs(5), activity.expired(limits(20, 60_000)))
                .await
                .expect("the header deadline passes within 5 s");
        assert_eq!(why, Expiry::HeaderRead);
    }
}
