//! Idle keep-alive connections to one endpoint, owned by one worker.
//!
//! A pooled connection is the pair hyper hands out at handshake: the request sender and
//! the connection state machine. Weir drives the state machine itself, inside the task
//! of the request using it (see `client.rs`), so no per-connection task exists and no
//! wake-up crosses tasks. While idle, nothing polls it; a connection the endpoint closed
//! meanwhile is found out (and dropped) when it is next taken.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::client::UpstreamBody;

/// How long a connection may sit idle before it is closed instead of reused.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint and worker; more are closed when released.
pub(crate) const MAX_IDLE: usize = 1024;

/// One HTTP/1.1 connection to an endpoint. Always boxed: hyper's connection state is
/// large, and a request moves it several times (pool, exchange, response body).
pub(crate) struct PooledConn {
    pub(crate) sender: http1::SendRequest<UpstreamBody>,
    pub(crate) conn: http1::Connection<TokioIo<TcpStream>, UpstreamBody>,
    pub(crate) idle_since: Instant,
}

impl std::fmt::Debug for PooledConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PooledConn")
            .field("idle_since", &self.idle_since)
            .finish_non_exhaustive()
    }
}

/// The idle connections of one endpoint for one worker: most recently used last.
#[derive(Debug, Default)]
pub(crate) struct IdlePool {
    idle: Mutex<VecDeque<Box<PooledConn>>>,
}

impl IdlePool {
    /// The most recently released connection that has not idled too long.
    pub(crate) fn take(&self) -> Option<Box<PooledConn>> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let conn = idle.pop_back()?;
        if conn.idle_since.elapsed() < IDLE_TIMEOUT {
            return Some(conn);
        }
        // The newest is too old, so all are: close them all.
        idle.clear();
        None
    }

    /// Returns a connection whose last exchange completed.
    pub(crate) fn put(&self, mut conn: Box<PooledConn>) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        conn.idle_since = now;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        while idle
            .front()
            .is_some_and(|c| now.duration_since(c.idle_since) >= IDLE_TIMEOUT)
            || idle.len() >= MAX_IDLE
        {
            idle.pop_front();
        }
        idle.push_back(conn);
    }
}
