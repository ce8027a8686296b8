//! The response cache routes opt into with `cache = { ... }`: one store for the process,
//! bounded by `[cache] memory`, holding upstream responses by the RFC 9111 rules for a
//! shared cache ([`policy`]), filled while a response streams to its clients
//! ([`Recording`]), with concurrent misses for one key coalesced into one upstream
//! request ([`Flight`]) whose response they all read as it streams ([`Broadcast`]),
//! and clients' own conditions and ranges answered from fresh entries
//! ([`conditional`]).
//!
//! The store is [`moka`]'s concurrent cache, weighed in bytes, rather than an LRU of
//! our own: its TinyLFU admission keeps a burst of one-off responses (a crawler, a scan)
//! from flushing the entries that are read again and again, which a plain LRU cannot;
//! it is lock-striped, so hits on every worker do not queue on one mutex; and it gives
//! per-entry expiry and an eviction listener (for `weir_cache_evictions_total`) that an
//! LRU of our own would have to grow. What it costs: a few more dependencies, and an
//! entry a full cache does not admit (its key seen less often than the one it would
//! evict) is simply not stored.
//!
//! Reloads: every entry records the settings of the route that stored it (a
//! fingerprint of its `cache` table); one stored under other settings is never served,
//! and is replaced or ages out. A reload that changes `[cache] memory` starts a new,
//! empty store.

mod broadcast;
pub mod conditional;
mod flight;
mod key;
pub mod policy;
mod recording;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_cache_semantics::CachePolicy;

use crate::config::RouteCache;
use crate::telemetry::metrics::CacheSeries;

pub use broadcast::{Broadcast, Reader, SharedBodyError, share};
pub use flight::{Flight, Joined};
pub use key::{CacheKey, KeyParts, KeyPartsFull, MAX_KEY_PARTS};
pub use recording::Recording;

/// Bytes an entry is weighed at beyond its key, headers and body (the entry, the
/// policy, the store's own bookkeeping).
const ENTRY_OVERHEAD: usize = 512;

/// A stale entry is kept, to be revalidated or served when the upstream fails, for as
/// long again as it was fresh, within these bounds.
const STALE_KEPT: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(86_400));

/// One stored response.
#[derive(Debug)]
pub struct Entry {
    /// The settings fingerprint of the route that stored it ([`RouteCaching::fingerprint`]).
    fingerprint: u64,
    /// The length of the key's URL part (before the `vary` headers' values), which
    /// purging by key matches.
    url_len: usize,
    /// The upstream's status and headers as they arrived.
    pub status: StatusCode,
    /// See `status`.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
    /// What RFC 9111 says about reusing it.
    pub(crate) policy: CachePolicy,
    /// How long the store keeps it (fresh, then stale).
    kept: Duration,
    /// The route's eviction counter.
    evictions: prometheus::IntCounter,
    /// Its weight in bytes.
    weight: u32,
}

impl Entry {
    /// The `Age` to send with it now, in seconds.
    pub fn age(&self, now: SystemTime) -> u64 {
        self.policy.age(now).as_secs()
    }
}

/// A route's caching, resolved when its snapshot is built.
#[derive(Debug)]
pub struct RouteCaching {
    /// The route's `cache` settings.
    pub settings: RouteCache,
    /// A digest of `settings`: entries stored under other settings are not served.
    pub fingerprint: u64,
    /// Its `weir_cache_*_total{route}` series.
    pub series: CacheSeries,
}

impl RouteCaching {
    /// The caching of route `route` with `settings`.
    pub fn new(route: &str, settings: &RouteCache) -> RouteCaching {
        let mut hasher = DefaultHasher::new();
        settings.hash(&mut hasher);
        RouteCaching {
            settings: settings.clone(),
            fingerprint: hasher.finish(),
            series: CacheSeries::new(route),
        }
    }
}

/// What the store has for a request.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh entry that answers it.
    Fresh(Arc<Entry>),
    /// An entry for the same variant that needs revalidating first (and may be served
    /// stale if the upstream fails).
    Stale(Arc<Entry>),
    /// Nothing usable.
    Miss,
}

/// The process's response cache.
pub struct ResponseCache {
    store: moka::sync::Cache<Arc<str>, Arc<Entry>>,
    /// Upstream requests in flight for a key, which other misses wait for.
    flights: Mutex<std::collections::HashMap<Arc<str>, Arc<Flight>>>,
    /// `[cache] memory`, the store's bound.
    memory: u64,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("memory", &self.memory)
            .field("entries", &self.store.entry_count())
            .finish_non_exhaustive()
    }
}

/// How long the store keeps each entry.
struct KeepFor;

impl moka::Expiry<Arc<str>, Arc<Entry>> for KeepFor {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        entry: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(entry.kept)
    }
}

impl ResponseCache {
    /// An empty cache of `memory` bytes.
    pub fn new(memory: u64) -> ResponseCache {
        let store = moka::sync::Cache::builder()
            .max_capacity(memory)
            .weigher(|_key: &Arc<str>, entry: &Arc<Entry>| entry.weight)
            .expire_after(KeepFor)
            .eviction_listener(|_key, entry: Arc<Entry>, cause| {
                crate::telemetry::metrics::cache_bytes().sub(i64::from(entry.weight));
                if cause == moka::notification::RemovalCause::Size {
                    entry.evictions.inc();
                }
            })
            .build();
        ResponseCache {
            store,
            flights: Mutex::default(),
            memory,
        }
    }

    /// Its bound, `[cache] memory`.
    pub fn memory(&self) -> u64 {
        self.memory
    }

    /// What the store holds for `key` that `asked` may use: never an entry stored
    /// under other settings than `caching`'s.
    pub fn lookup(
        &self,
        key: &CacheKey,
        caching: &RouteCaching,
        asked: &policy::Asked<'_>,
        now: SystemTime,
    ) -> Lookup {
        let Some(entry) = self.store.get(key.as_str()) else {
            return Lookup::Miss;
        };
        if entry.fingerprint != caching.fingerprint {
            self.store.invalidate(key.as_str());
            return Lookup::Miss;
        }
        // A HEAD is answered from the GET's entry.
        let get = http::Method::GET;
        let asked = policy::Asked {
            method: &get,
            ..*asked
        };
        // The common hit, a request without cache directives for an entry without
        // `Vary`, needs only the freshness; the full check builds a response head.
        let plain = !asked.headers.contains_key(http::header::CACHE_CONTROL)
            && !asked.headers.contains_key(http::header::PRAGMA)
            && !entry.headers.contains_key(http::header::VARY);
        if plain && !entry.policy.is_stale(now) {
            return Lookup::Fresh(entry);
        }
        if policy::fresh_for(&entry.policy, &asked, now) {
            Lookup::Fresh(entry)
        } else if policy::same_variant(&entry.policy, &asked, now) {
            Lookup::Stale(entry)
        } else {
            Lookup::Miss
        }
    }

    /// Stores a response under `key` and returns its entry (which the store may not
    /// admit, see the module's notes).
    #[allow(clippy::too_many_arguments, reason = "an entry's parts, named")]
    pub fn store(
        &self,
        key: &CacheKey,
        caching: &RouteCaching,
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
        policy: CachePolicy,
        now: SystemTime,
    ) -> Arc<Entry> {
        let headers_len: usize = headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let weight = key.as_str().len() + headers_len + body.len() + ENTRY_OVERHEAD;
        // Bodies are at most 1 GiB (`max_entry_size`); an entry past `u32` weighs it all.
        let weight = u32::try_from(weight).unwrap_or(u32::MAX);
        let fresh = policy.time_to_live(now);
        let kept = fresh + fresh.clamp(STALE_KEPT.0, STALE_KEPT.1);
        let entry = Arc::new(Entry {
            fingerprint: caching.fingerprint,
            url_len: key.url_len(),
            status,
            headers,
            body,
            policy,
            kept,
            evictions: caching.series.evictions.clone(),
            weight,
        });
        crate::telemetry::metrics::cache_bytes().add(i64::from(weight));
        self.store.insert(key.shared(), entry.clone());
        entry
    }

    /// Removes the entry for exactly `key` (a successful unsafe request's URL).
    pub fn purge_exact(&self, key: &CacheKey) {
        self.store.invalidate(key.as_str());
    }

    /// Joins the upstream request in flight for `key`, or leads a new one.
    pub fn join(self: &Arc<Self>, key: &CacheKey) -> Joined {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = flights.get(key.as_str()) {
            return Joined::Wait(flight.waiter());
        }
        let flight = Arc::new(Flight::new());
        flights.insert(key.shared(), flight.clone());
        Joined::Lead(flight::Lead::new(self.clone(), key.shared(), flight))
    }

    /// Ends the flight for `key` (later misses lead a new one; waiters still waiting
    /// for a response head look in the store again).
    fn land(&self, key: &str, flight: &Arc<Flight>) {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }

    /// Removes the entries whose key is `key` (every variant of it) or, with `prefix`,
    /// starts with it; returns how many.
    pub fn purge(&self, key: &str, prefix: bool) -> usize {
        let doomed: Vec<Arc<str>> = self
            .store
            .iter()
            .filter(|(k, entry)| match prefix {
                true => k.starts_with(key),
                false => k.get(..entry.url_len) == Some(key),
            })
            .map(|(k, _)| Arc::clone(&*k))
            .collect();
        for k in &doomed {
            self.store.invalidate(&**k);
        }
        doomed.len()
    }

    /// Every key held, for `/admin/cache` (at most `limit`).
    pub fn keys(&self, limit: usize) -> Vec<String> {
        let mut keys: Vec<String> = self
            .store
            .iter()
            .take(limit)
            .map(|(k, _)| k.to_string())
            .collect();
        keys.sort();
        keys
    }

    /// Entries held now (after pending evictions are applied).
    pub fn entry_count(&self) -> u64 {
        self.store.run_pending_tasks();
        self.store.entry_count()
    }

    /// Bytes held now.
    pub fn weighted_size(&self) -> u64 {
        self.store.run_pending_tasks();
        self.store.weighted_size()
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
