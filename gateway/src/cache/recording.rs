//! A response stored while it streams to its clients ([`super::broadcast`]): each chunk
//! read from the upstream is kept (a reference, not a copy), and the entry is stored
//! when the body ends whole. A body that grows past the route's `max_entry_size`, ends
//! in an error or trailers, or whose clients all go away first, is not stored; no
//! client waits for the cache.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_cache_semantics::CachePolicy;

use super::broadcast::Broadcast;
use super::flight::Lead;
use super::{CacheKey, ResponseCache, RouteCaching};

/// What is kept of a response while it streams.
pub struct Recording {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    caching: Arc<RouteCaching>,
    status: StatusCode,
    headers: HeaderMap,
    policy: CachePolicy,
    chunks: Vec<Bytes>,
    size: u64,
    /// The flight this response ends (landed when the recording is done with).
    lead: Option<Lead>,
}

impl std::fmt::Debug for Recording {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recording")
            .field("key", &self.key)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl Recording {
    /// Starts recording the response `status`/`headers` for `key`.
    #[allow(clippy::too_many_arguments, reason = "the entry's parts, named")]
    pub fn new(
        cache: Arc<ResponseCache>,
        key: CacheKey,
        caching: Arc<RouteCaching>,
        status: StatusCode,
        headers: HeaderMap,
        policy: CachePolicy,
        lead: Option<Lead>,
    ) -> Recording {
        Recording {
            cache,
            key,
            caching,
            status,
            headers,
            policy,
            chunks: Vec::new(),
            size: 0,
            lead,
        }
    }

    /// What a [`Broadcast`] of the response shares: its head, its policy, and the
    /// route's `max_entry_size`.
    pub(super) fn head(&self) -> (StatusCode, HeaderMap, CachePolicy, u64) {
        (
            self.status,
            self.headers.clone(),
            self.policy.clone(),
            self.caching.settings.max_entry_size,
        )
    }

    /// Gives the waiters of this response's flight `broadcast` to read.
    pub(super) fn publish(&self, broadcast: &Arc<Broadcast>) {
        if let Some(lead) = &self.lead {
            lead.publish(broadcast);
        }
    }

    /// Keeps a chunk; `false` once the body has grown past the route's
    /// `max_entry_size` (the recording should then be dropped).
    pub fn keep(&mut self, chunk: &Bytes) -> bool {
        self.size += chunk.len() as u64;
        if self.size > self.caching.settings.max_entry_size {
            return false;
        }
        if !chunk.is_empty() {
            self.chunks.push(chunk.clone());
        }
        true
    }

    /// The body ended whole: stores the entry.
    pub fn finish(mut self) {
        let body = match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks.pop().unwrap_or_default(),
            _ => {
                let mut whole = BytesMut::with_capacity(self.size as usize);
                for chunk in &self.chunks {
                    whole.extend_from_slice(chunk);
                }
                whole.freeze()
            }
        };
        let headers = std::mem::take(&mut self.headers);
        let _ = self.cache.store(
            &self.key,
            &self.caching,
            self.status,
            headers,
            body,
            self.policy.clone(),
            SystemTime::now(),
        );
        // Stored before the flight lands, so its waiters find the entry.
        self.lead.take();
    }
}
