//! The key-value store behind plugins: shared by every instance of every plugin in the
//! process, with TTLs and atomic increment and compare-and-swap (the basis of rate
//! limits). In memory, sharded by key hash so workers rarely contend; Redis joins as a
//! backend for limits that must hold across replicas.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

const SHARDS: usize = 16;
/// Expired entries are swept from a shard every this many writes to it.
const SWEEP_EVERY: u32 = 1024;

#[derive(Debug)]
struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|at| at > now)
    }
}

#[derive(Debug, Default)]
struct Shard {
    map: HashMap<String, Entry>,
    writes: u32,
}

impl Shard {
    fn live(&mut self, key: &str, now: Instant) -> Option<&mut Entry> {
        if self.map.get(key).is_some_and(|e| !e.live(now)) {
            self.map.remove(key);
        }
        self.map.get_mut(key)
    }

    fn wrote(&mut self, now: Instant) {
        self.writes = self.writes.wrapping_add(1);
        if self.writes.is_multiple_of(SWEEP_EVERY) {
            self.map.retain(|_, e| e.live(now));
        }
    }
}

/// The store. Keys given to it are already namespaced by the caller (one namespace per
/// plugin).
#[derive(Debug)]
pub struct KvStore {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }
}

fn deadline(ttl: Option<Duration>, now: Instant) -> Option<Instant> {
    ttl.map(|t| now + t)
}

impl KvStore {
    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The live value of `key`.
    pub fn get(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.shard(key).live(key, now).map(|e| e.value.clone())
    }

    /// Sets `key`, replacing any value.
    pub fn set(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) {
        let now = Instant::now();
        let mut shard = self.shard(key);
        shard.map.insert(
            key.to_owned(),
            Entry {
                value,
                expires: deadline(ttl, now),
            },
        );
        shard.wrote(now);
    }

    /// Adds `delta` to the integer stored (as decimal text) at `key`; absent or
    /// non-numeric counts as 0. `ttl` applies when the key is created.
    pub fn increment(&self, key: &str, delta: i64, ttl: Option<Duration>) -> i64 {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let mut digits = itoa::Buffer::new();
        // One lookup for a live counter (the rate-limit path: every request), the value
        // rewritten in place.
        if let Some(entry) = shard.map.get_mut(key).filter(|e| e.live(now)) {
            let old = std::str::from_utf8(&entry.value)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .unwrap_or(0);
            let new = old.saturating_add(delta);
            entry.value.clear();
            entry.value.extend_from_slice(digits.format(new).as_bytes());
            shard.wrote(now);
            return new;
        }
        // Absent, or expired: start again from `delta`.
        shard.map.insert(
            key.to_owned(),
            Entry {
                value: digits.format(delta).as_bytes().to_vec(),
                expires: deadline(ttl, now),
            },
        );
        shard.wrote(now);
        delta
    }

    /// Sets `key` to `new` if it currently holds `expected` (`None`: absent).
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl: Option<Duration>,
    ) -> bool {
        let now = Instant::now();
        let mut shard = self.shard(key);
        let current = shard.live(key, now).map(|e| e.value.as_slice());
        if current != expected {
            return false;
        }
        shard.map.insert(
            key.to_owned(),
            Entry {
                value: new,
                expires: deadline(ttl, now),
            },
        );
        shard.wrote(now);
        true
    }

    /// Removes `key`.
    pub fn delete(&self, key: &str) {
        self.shard(key).map.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_are_atomic_across_threads() {
        let kv = std::sync::Arc::new(KvStore::default());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let kv = kv.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        kv.increment("n", 1, None);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(kv.get("n").unwrap(), b"4000");
    }

    #[test]
    fn ttl_expires_and_cas_checks() {
        let kv = KvStore::default();
        kv.set("a", b"1".to_vec(), Some(Duration::from_millis(20)));
        assert_eq!(kv.get("a").as_deref(), Some(&b"1"[..]));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(kv.get("a"), None);
        assert!(kv.compare_and_swap("b", None, b"x".to_vec(), None));
        assert!(!kv.compare_and_swap("b", None, b"y".to_vec(), None));
        assert!(kv.compare_and_swap("b", Some(b"x"), b"y".to_vec(), None));
        assert_eq!(kv.increment("c", 5, None), 5);
        assert_eq!(kv.increment("c", -2, None), 3);
    }

    #[test]
    fn an_expired_counter_starts_again_and_text_counts_as_zero() {
        let kv = KvStore::default();
        let ttl = Some(Duration::from_millis(20));
        assert_eq!(kv.increment("w", 1, ttl), 1);
        assert_eq!(kv.increment("w", 1, ttl), 2);
        assert_eq!(kv.get("w").as_deref(), Some(&b"2"[..]));
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(kv.increment("w", 1, ttl), 1, "a new window");
        assert_eq!(kv.increment("w", i64::MAX, None), i64::MAX, "saturates");
        kv.set("t", b"not a number".to_vec(), None);
        assert_eq!(kv.increment("t", 7, None), 7);
        assert_eq!(kv.get("t").as_deref(), Some(&b"7"[..]));
    }
}
