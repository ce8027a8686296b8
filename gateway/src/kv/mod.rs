//! The key-value store behind plugins: shared by every instance of every plugin in the
//! process, with TTLs and atomic increment and compare-and-swap (the basis of rate
//! limits). In memory, sharded by key hash so workers rarely contend.
//!
//! Each plugin writes in its own [`Namespace`], bounded in entries and bytes (`[kv]`
//! in the config): past a bound a write that needs room fails with [`KvFull`], which
//! the plugin sees, and nothing is evicted (evicting would let whoever fills the store
//! reset others' counters). Expired entries are reclaimed as they are read, and by a
//! sweep that looks at a few entries per write, never at a whole shard under its lock.
//!
//! With `[kv] backend = "redis"` the store is [`RedisStore`] instead (`redis_store`):
//! the same operations, awaited, shared by every replica that uses the same server.

pub mod redis_store;

pub use redis_store::{KvError, RedisNamespace, RedisSetupError, RedisStore};

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indexmap::IndexMap;

use crate::config::KvBounds;
use crate::telemetry::metrics::KvSeries;

const SHARDS: usize = 16;
/// Entries the sweep looks at on each write to a shard.
const SWEEP_STEP: usize = 4;
/// Entries per shard a write that found its namespace full looks at (room may be held
/// by entries that expired unseen) before it tries once more.
const SWEEP_WHEN_FULL: usize = 32;
/// What an entry costs beyond its key and value (the map slot, the expiry, the
/// namespace handle, allocator rounding), for the byte bound.
const ENTRY_OVERHEAD: u64 = 96;

/// A write refused: the plugin's namespace is at its `[kv]` bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the plugin's key-value store is full ({entries} entries, {bytes} bytes)")]
pub struct KvFull {
    /// Entries the namespace holds.
    pub entries: u64,
    /// Bytes it holds.
    pub bytes: u64,
}

/// One plugin's part of the store: its key prefix, bounds and usage.
#[derive(Debug)]
pub struct Namespace {
    prefix: String,
    max_entries: AtomicU64,
    max_bytes: AtomicU64,
    /// Entries held.
    entries: AtomicI64,
    /// Bytes held.
    bytes: AtomicI64,
    /// The same, exported as `weir_kv_entries` / `weir_kv_bytes` (summed over the
    /// process's stores, of which a gateway has one).
    series: KvSeries,
}

impl Namespace {
    /// `key` inside this namespace.
    fn key(&self, key: &str) -> String {
        let mut namespaced = String::with_capacity(self.prefix.len() + key.len());
        namespaced.push_str(&self.prefix);
        namespaced.push_str(key);
        namespaced
    }

    /// Entries held now.
    pub fn entries(&self) -> u64 {
        self.entries.load(Relaxed).max(0) as u64
    }

    /// Bytes held now (keys, values and a fixed overhead per entry).
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed).max(0) as u64
    }

    /// Takes room for `entries` more entries and `bytes` more bytes, or refuses.
    /// (Called under a shard's lock; two shards may both take the last room, so a
    /// namespace can pass its bound by a few entries, never by more.)
    fn charge(&self, entries: i64, bytes: i64) -> Result<(), KvFull> {
        let held_entries = self.entries.load(Relaxed) + entries;
        let held_bytes = self.bytes.load(Relaxed) + bytes;
        let over = (entries > 0 && held_entries as u64 > self.max_entries.load(Relaxed))
            || (bytes > 0 && held_bytes as u64 > self.max_bytes.load(Relaxed));
        if over {
            return Err(KvFull {
                entries: self.entries(),
                bytes: self.bytes(),
            });
        }
        self.held(entries, bytes);
        Ok(())
    }

    fn release(&self, entry_bytes: u64) {
        self.held(-1, -(entry_bytes as i64));
    }

    fn held(&self, entries: i64, bytes: i64) {
        self.entries.fetch_add(entries, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
        self.series.entries.add(entries);
        self.series.bytes.add(bytes);
    }
}

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
    namespace: Arc<Namespace>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

/// What an entry costs against the byte bound.
fn cost(key: &str, value: &[u8]) -> u64 {
    key.len() as u64 + value.len() as u64 + ENTRY_OVERHEAD
}

#[derive(Debug, Default)]
struct Shard {
    map: IndexMap<String, Entry>,
    /// Where the sweep goes on from.
    cursor: usize,
}

impl Shard {
    /// Removes the entry at `index` and gives its room back.
    fn remove_at(&mut self, index: usize) {
        if let Some((key, entry)) = self.map.swap_remove_index(index) {
            entry.namespace.release(cost(&key, &entry.value));
        }
    }

    /// The live entry at `key` (an expired one is removed).
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        let index = self.map.get_index_of(key)?;
        if !self.map[index].live(now) {
            self.remove_at(index);
            return None;
        }
        Some(&mut self.map[index])
    }

    /// Looks at up to `step` entries from the cursor on, removing expired ones.
    fn sweep(&mut self, now: Instant, step: usize) {
        for _ in 0..step {
            if self.map.is_empty() {
                return;
            }
            if self.cursor >= self.map.len() {
                self.cursor = 0;
            }
            if self.map[self.cursor].live(now) {
                self.cursor += 1;
            } else {
                // The last entry moves into this slot: look at it next.
                self.remove_at(self.cursor);
            }
        }
    }

    /// Stores `value` at `key` (taking it; left in place when refused), charging the
    /// difference with any live entry there to `namespace`.
    fn store(
        &mut self,
        namespace: &Arc<Namespace>,
        key: &str,
        value: &mut Vec<u8>,
        expires: Option<Instant>,
        now: Instant,
    ) -> Result<(), KvFull> {
        let new_cost = cost(key, value) as i64;
        let old = self.live(key, now).map(|e| cost(key, &e.value) as i64);
        let (entries, bytes) = match old {
            Some(old_cost) => (0, new_cost - old_cost),
            None => (1, new_cost),
        };
        namespace.charge(entries, bytes)?;
        let entry = Entry {
            value: std::mem::take(value),
            expires,
            namespace: namespace.clone(),
        };
        match self.map.get_mut(key) {
            Some(slot) => *slot = entry,
            None => {
                self.map.insert(key.to_owned(), entry);
            }
        }
        Ok(())
    }
}

/// Where the store plugins share lives.
#[derive(Debug, Clone)]
pub enum Backend {
    /// In this process: each call is done at once.
    Memory(Arc<KvStore>),
    /// In Redis: each call is a round trip, awaited.
    Redis(Arc<RedisStore>),
}

/// The in-memory store.
#[derive(Debug)]
pub struct KvStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
    bounds: Mutex<KvBounds>,
    namespaces: Mutex<HashMap<String, Arc<Namespace>>>,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::new(KvBounds::default())
    }
}

fn deadline(ttl: Option<Duration>, now: Instant) -> Option<Instant> {
    ttl.map(|t| now + t)
}

impl KvStore {
    /// An empty store whose namespaces have `bounds`.
    pub fn new(bounds: KvBounds) -> KvStore {
        KvStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            bounds: Mutex::new(bounds),
            namespaces: Mutex::default(),
        }
    }

    /// Applies new bounds to every namespace (a reload); what is held stays, and
    /// writes needing room fail until enough is freed.
    pub fn set_bounds(&self, bounds: KvBounds) {
        *self.bounds.lock().unwrap_or_else(PoisonError::into_inner) = bounds;
        for ns in self
            .namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
        {
            ns.max_entries.store(bounds.max_entries, Relaxed);
            ns.max_bytes.store(bounds.max_bytes, Relaxed);
        }
    }

    /// Plugin `plugin`'s namespace (one per plugin name, shared by its routes).
    pub fn namespace(&self, plugin: &str) -> Arc<Namespace> {
        let bounds = *self.bounds.lock().unwrap_or_else(PoisonError::into_inner);
        self.namespaces
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(plugin.to_owned())
            .or_insert_with(|| {
                Arc::new(Namespace {
                    prefix: format!("{plugin}\u{0}"),
                    max_entries: AtomicU64::new(bounds.max_entries),
                    max_bytes: AtomicU64::new(bounds.max_bytes),
                    entries: AtomicI64::new(0),
                    bytes: AtomicI64::new(0),
                    series: KvSeries::new(plugin),
                })
            })
            .clone()
    }

    /// Runs `write` on `key`'s shard; when it found the namespace full, sweeps every
    /// shard a little (one lock at a time) and runs it once more.
    fn with_room<T>(
        &self,
        key: &str,
        mut write: impl FnMut(&mut Shard, Instant) -> Result<T, KvFull>,
    ) -> Result<T, KvFull> {
        let now = Instant::now();
        let first = write(&mut self.shard(key), now);
        if first.is_ok() {
            return first;
        }
        for shard in &self.shards {
            shard
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .sweep(now, SWEEP_WHEN_FULL);
        }
        write(&mut self.shard(key), now)
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value of `key`.
    pub fn get(&self, ns: &Namespace, key: &str) -> Option<Vec<u8>> {
        let key = ns.key(key);
        let now = Instant::now();
        self.shard(&key).live(&key, now).map(|e| e.value.clone())
    }

    /// Sets `key`, replacing any value.
    pub fn set(
        &self,
        ns: &Arc<Namespace>,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvFull> {
        let key = ns.key(key);
        let mut value = value;
        self.with_room(&key, |shard, now| {
            shard.sweep(now, SWEEP_STEP);
            shard.store(ns, &key, &mut value, deadline(ttl, now), now)
        })
    }

    /// Adds `delta` to the integer stored (as decimal text) at `key`; absent or
    /// non-numeric counts as 0. `ttl` applies when the key is created.
    pub fn increment(
        &self,
        ns: &Arc<Namespace>,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvFull> {
        let key = ns.key(key);
        let mut digits = itoa::Buffer::new();
        self.with_room(&key, |shard, now| {
            // One lookup for a live counter (the rate-limit path: every request), the
            // value rewritten in place when its length stays.
            let counted = shard.live(&key, now).map(|entry| {
                let old = std::str::from_utf8(&entry.value)
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .unwrap_or(0);
                let new = old.saturating_add(delta);
                let text = digits.format(new).as_bytes();
                if text.len() == entry.value.len() {
                    entry.value.copy_from_slice(text);
                    (new, None)
                } else {
                    (new, Some(entry.expires))
                }
            });
            match counted {
                Some((new, None)) => Ok(new),
                Some((new, Some(expires))) => {
                    let mut text = digits.format(new).as_bytes().to_vec();
                    shard.store(ns, &key, &mut text, expires, now)?;
                    Ok(new)
                }
                // Absent, or expired: start again from `delta`.
                None => {
                    shard.sweep(now, SWEEP_STEP);
                    let mut text = digits.format(delta).as_bytes().to_vec();
                    shard.store(ns, &key, &mut text, deadline(ttl, now), now)?;
                    Ok(delta)
                }
            }
        })
    }

    /// Sets `key` to `new` if it currently holds `expected` (`None`: absent).
    pub fn compare_and_swap(
        &self,
        ns: &Arc<Namespace>,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<bool, KvFull> {
        let key = ns.key(key);
        let mut new = new;
        self.with_room(&key, |shard, now| {
            let current = shard.live(&key, now).map(|e| e.value.as_slice());
            if current != expected {
                return Ok(false);
            }
            shard.sweep(now, SWEEP_STEP);
            shard.store(ns, &key, &mut new, deadline(ttl, now), now)?;
            Ok(true)
        })
    }

    /// Removes `key`.
    pub fn delete(&self, ns: &Namespace, key: &str) {
        let key = ns.key(key);
        let mut shard = self.shard(&key);
        if let Some(index) = shard.map.get_index_of(&key) {
            shard.remove_at(index);
        }
    }
}

#[cfg(test)]
#[path = "kv_tests.rs"]
mod tests;
