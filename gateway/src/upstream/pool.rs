//! Idle keep-alive connections to one endpoint, owned by one worker.
//!
//! A pooled connection is driven by the task of the request using it (see `client.rs`
//! and `h1`), so no per-connection task exists and no wake-up crosses tasks. While idle, nothing polls it; a connection the endpoint closed
//! meanwhile is found out (and dropped) when it is next taken, and one idle longer than
//! the cluster's `idle` timeout is closed instead of reused when the pool is next used.
//! Each connection holds a slot of the cluster's `max_connections`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::h1;
use super::limits::{Breaker, ConnectionSlot};

/// Idle connections kept per endpoint and worker; more are closed when released.
pub(crate) const MAX_IDLE: usize = 1024;

/// One HTTP/1.1 connection to an endpoint. Always boxed: a request moves it several
/// times (pool, exchange, response body).
pub(crate) struct PooledConn {
    pub(crate) h1: h1::Conn,
    pub(crate) idle_since: Instant,
    /// The timer bounding each exchange's wait for the response head, kept with the
    /// connection and moved to each exchange's deadline: pushing a registered timer's
    /// deadline later is one atomic operation in tokio, where a timer per exchange is
    /// an insertion into the timer wheel and a removal.
    pub(crate) deadline: Pin<Box<tokio::time::Sleep>>,
    /// Its place under `max_connections`, given back when the connection is dropped.
    pub(crate) _slot: ConnectionSlot,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("idle_since", &self.idle_since)
            .finish_non_exhaustive()
    }
}

/// The idle connections of one endpoint for one worker: most recently used last.
#[derive(Debug)]
pub(crate) struct IdlePool {
    idle: Mutex<VecDeque<Box<PooledConn>>>,
    idle_timeout: Duration,
    /// Told when a connection comes back, for requests waiting for one.
    breaker: Arc<Breaker>,
}

impl IdlePool {
    pub(crate) fn new(idle_timeout: Duration, breaker: Arc<Breaker>) -> IdlePool {
        IdlePool {
            idle: Mutex::default(),
            idle_timeout,
            breaker,
        }
    }

    /// The most recently released connection that has not idled too long.
    pub(crate) fn take(&self) -> Option<Box<PooledConn>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = idle.pop_back()?;
        if conn.idle_since.elapsed() < self.idle_timeout {
            return Some(conn);
        }
        // The newest is too old, so all are: close them all.
        idle.clear();
        None
    }

    /// Returns a connection whose last exchange completed.
    pub(crate) fn put(&self, mut conn: Box<PooledConn>) {
        if !conn.h1.is_reusable() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.idle_since) >= self.idle_timeout)
            || idle.len() >= MAX_IDLE
        {
            idle.pop_front();
        }
        idle.push_back(conn);
        drop(idle);
        self.breaker.freed();
    }

    /// Closes the connection idle longest, if any, to make room under
    /// `max_connections`.
    pub(crate) fn evict_oldest(&self) -> bool {
        let oldest = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front();
        oldest.is_some()
    }
}
