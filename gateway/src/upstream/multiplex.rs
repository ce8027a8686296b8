//! HTTP/2 connections to one endpoint, owned by one worker (`protocol = "http2"`).
//!
//! As in Envoy, a worker keeps few connections per endpoint and runs many concurrent
//! streams on each: a request takes a free stream on the first connection that has
//! one (below the peer's `SETTINGS_MAX_CONCURRENT_STREAMS`), and only when none has is
//! another connection opened, within `max_connections` (or the request waits as
//! pending for a stream or a connection). One connection is established at a time per
//! endpoint and worker, so a burst of requests shares it rather than racing to open one
//! each.
//!
//! Each connection is driven by a task of its own on the worker's event loop (its
//! streams belong to many requests), which holds its `max_connections` slot until it
//! closes. A connection that went away (GOAWAY, reset, closed) or failed an exchange
//! takes no new streams: it is dropped from the pool, finishes the streams it has,
//! and is replaced by a new one when needed. One without streams for the cluster's
//! `idle` timeout is closed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::uri::Authority;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};

use super::client::{UpstreamBody, UpstreamFailure};
use super::connect::{Connector, UpstreamStream};
use super::endpoint::EndpointState;
use super::limits::{Breaker, ConnectionSlot, Waited};
use super::peer_settings::{PeerState, SettingsWatch};

/// Concurrent streams assumed on a new connection to an endpoint none of whose
/// connections has told its limit yet (RFC 9113 recommends allowing at least 100).
const ASSUMED_STREAMS: usize = 100;

/// The HTTP/2 connections of one endpoint for one worker.
#[derive(Debug)]
pub(crate) struct MultiplexPool {
    conns: Mutex<Vec<MuxConn>>,
    /// Held while a connection is being established.
    connecting: tokio::sync::Mutex<()>,
    idle_timeout: Duration,
    breaker: Arc<Breaker>,
    /// The endpoint's `SETTINGS_MAX_CONCURRENT_STREAMS` as last seen on any of its
    /// connections (0: none seen yet). A new connection assumes it until the peer's
    /// settings arrive, so a burst that fills one connection spreads over new ones
    /// rather than queueing on the first new one.
    peer_limit: Arc<AtomicUsize>,
}

/// One connection: a handle to send on, and its stream count.
#[derive(Debug)]
struct MuxConn {
    sender: http2::SendRequest<UpstreamBody>,
    state: Arc<ConnState>,
}

/// What a connection's streams share with the pool.
#[derive(Debug)]
struct ConnState {
    /// Streams open now (requests whose response has not ended).
    streams: AtomicUsize,
    /// What the peer said: its stream limit, whether it is going away (read off the
    /// connection; see [`super::peer_settings`]).
    peer: Arc<PeerState>,
    /// Set when an exchange failed on it: it takes no new streams.
    broken: AtomicBool,
    /// When it was opened: the origin of `idle_since`.
    opened: Instant,
    /// When its last stream ended, in ms since `opened`.
    idle_since: AtomicU64,
}

/// A stream taken on a connection: counts against the connection's concurrent streams
/// until dropped (when the response body ends or is dropped).
#[derive(Debug)]
pub(crate) struct StreamSlot {
    state: Arc<ConnState>,
    breaker: Arc<Breaker>,
}

/// A connection's handle with a stream reserved on it.
#[derive(Debug)]
pub(crate) struct Checkout {
    pub(crate) sender: http2::SendRequest<UpstreamBody>,
    pub(crate) stream: StreamSlot,
    /// Whether the connection was opened for this request.
    pub(crate) fresh: bool,
}

impl MultiplexPool {
    pub(crate) fn new(idle_timeout: Duration, breaker: Arc<Breaker>) -> MultiplexPool {
        MultiplexPool {
            conns: Mutex::default(),
            connecting: tokio::sync::Mutex::new(()),
            idle_timeout,
            breaker,
            peer_limit: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A stream on a connection to endpoint `index` (`endpoint`): on an open
    /// connection with room, else on a new one.
    pub(crate) async fn checkout(
        &self,
        connector: &Connector,
        index: usize,
        endpoint: &EndpointState,
        connect_timeout: Duration,
    ) -> Result<Checkout, UpstreamFailure> {
        if let Some(taken) = self.try_checkout() {
            return Ok(taken);
        }
        let slot = match self.breaker.reserve_or_evict() {
            Some(slot) => slot,
            None => match self
                .breaker
                .wait(connect_timeout, || self.try_checkout())
                .await
            {
                Ok(Waited::Ready(taken)) => return Ok(taken),
                Ok(Waited::Slot(slot)) => slot,
                Err(limit) => {
                    self.breaker.refuse(limit);
                    return Err(UpstreamFailure::Overloaded(limit));
                }
            },
        };
        let _connecting = self.connecting.lock().await;
        // Another request may have opened one meanwhile (the slot is then given back).
        if let Some(taken) = self.try_checkout() {
            return Ok(taken);
        }
        let stream = connector.connect(index, endpoint).await?;
        // Until the peer's settings arrive, assume what its other connections said (or
        // h2's customary 100).
        let assumed = match self.peer_limit.load(Ordering::Relaxed) {
            0 => ASSUMED_STREAMS,
            known => known,
        };
        let state = Arc::new(ConnState {
            streams: AtomicUsize::new(1),
            peer: Arc::new(PeerState::new(assumed)),
            broken: AtomicBool::new(false),
            opened: Instant::now(),
            idle_since: AtomicU64::new(0),
        });
        let io = SettingsWatch::new(stream, state.peer.clone(), self.peer_limit.clone());
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .initial_max_send_streams(assumed)
            .handshake(TokioIo::new(io))
            .await
            .map_err(UpstreamFailure::exchange)?;
        tokio::spawn(drive(conn, slot, endpoint.authority.clone()));
        self.lock().push(MuxConn {
            sender: sender.clone(),
            state: state.clone(),
        });
        // Requests waiting as pending may fit on it too.
        self.breaker.freed();
        Ok(Checkout {
            sender,
            stream: StreamSlot {
                state,
                breaker: self.breaker.clone(),
            },
            fresh: true,
        })
    }

    /// A stream on an open connection with room, dropping connections that closed,
    /// failed or idled past the timeout.
    fn try_checkout(&self) -> Option<Checkout> {
        let mut conns = self.lock();
        let idle_timeout = self.idle_timeout;
        conns.retain(|c| {
            !c.sender.is_closed()
                && !c.state.broken.load(Ordering::Relaxed)
                && !c.state.peer.going_away.load(Ordering::Relaxed)
                && !c.state.idled_out(idle_timeout)
        });
        let conn = conns.iter().find(|c| {
            c.state.streams.load(Ordering::Relaxed)
                < c.state.peer.max_streams.load(Ordering::Relaxed)
        })?;
        conn.state.streams.fetch_add(1, Ordering::Relaxed);
        Some(Checkout {
            sender: conn.sender.clone(),
            stream: StreamSlot {
                state: conn.state.clone(),
                breaker: self.breaker.clone(),
            },
            fresh: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MuxConn>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Drives a connection until it closes; its `max_connections` slot is given back then.
async fn drive(
    conn: http2::Connection<TokioIo<SettingsWatch<UpstreamStream>>, UpstreamBody, TokioExecutor>,
    _slot: ConnectionSlot,
    endpoint: Authority,
) {
    if let Err(e) = conn.await {
        tracing::debug!(%endpoint, error = %e, "HTTP/2 upstream connection ended");
    }
}

impl ConnState {
    /// Whether it has had no streams for `timeout`.
    fn idled_out(&self, timeout: Duration) -> bool {
        if self.streams.load(Ordering::Relaxed) > 0 {
            return false;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Relaxed));
        self.opened.elapsed().saturating_sub(since) >= timeout
    }
}

impl StreamSlot {
    /// Takes the connection out of use for new streams: an exchange on it failed.
    pub(crate) fn mark_broken(&self) {
        self.state.broken.store(true, Ordering::Relaxed);
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        if self.state.streams.fetch_sub(1, Ordering::Relaxed) == 1 {
            let now = u64::try_from(self.state.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.state.idle_since.store(now, Ordering::Relaxed);
        }
        self.breaker.freed();
    }
}
