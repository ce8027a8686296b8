//! The host side of the `kv` import: a plugin's namespace in the store ([`PluginKv`]),
//! and the import's functions twice over. In memory they are synchronous, so a plugin
//! that only uses the store is called without a fiber (the rate-limit path). In Redis
//! they are `async` (linked over the others): each call awaits its round trip on the
//! worker's event loop, the plugin's call suspended on its fiber meanwhile, under the
//! `[kv] timeout` deadline; that wait does not count against the plugin's CPU deadline.
//!
//! A call Redis could not serve (no answer in time, no connection, an error) fails the
//! plugin's phase call, as a `host.fail` would: the plugin's `on_error` policy applies
//! (deny the request, or skip the plugin), and `weir_kv_errors_total` counts it. A
//! refusal for want of room is not a failure: the plugin sees it, as in memory.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::bindings::{kv, remote_kv};
use super::state::HostState;
use crate::kv::{KvError, KvFull, KvStore, Namespace, RedisNamespace, RedisStore};
use crate::telemetry::metrics::Refusal;

/// A plugin's handle on the store: the backend and the plugin's namespace in it.
#[derive(Debug)]
pub(crate) enum PluginKv {
    /// In this process.
    Memory {
        store: Arc<KvStore>,
        ns: Arc<Namespace>,
    },
    /// In Redis.
    Redis {
        store: Arc<RedisStore>,
        ns: Arc<RedisNamespace>,
    },
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// The error that fails a call whose store is in Redis but was linked synchronously
/// (never: the host links the `async` functions over them for Redis).
fn linked_synchronously() -> wasmtime::Error {
    wasmtime::Error::msg("the Redis key-value store cannot be called synchronously")
}

impl HostState {
    /// Counts a refused write (the plugin hears of it through the `try-` functions).
    fn full<T>(&self, result: Result<T, KvFull>) -> Result<T, kv::KvError> {
        result.map_err(|_| {
            self.ctx.series.refused(Refusal::KvFull);
            kv::KvError::Full
        })
    }

    /// What a Redis call gives the plugin: its value, a refusal it sees, or (a store
    /// failure) an error that fails the phase call.
    fn remote<T>(
        &mut self,
        started: Instant,
        result: Result<T, KvError>,
    ) -> wasmtime::Result<Result<T, remote_kv::KvError>> {
        self.waited += started.elapsed();
        match result {
            Ok(value) => Ok(Ok(value)),
            Err(KvError::Full(_)) => {
                self.ctx.series.refused(Refusal::KvFull);
                Ok(Err(remote_kv::KvError::Full))
            }
            Err(e) => Err(wasmtime::Error::msg(format!("key-value store: {e}"))),
        }
    }
}

/// The functions as linked for the in-memory store: done at once.
impl kv::Host for HostState {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        match &self.ctx.kv {
            PluginKv::Memory { store, ns } => Ok(store.get(ns, &key)),
            PluginKv::Redis { .. } => Err(linked_synchronously()),
        }
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> wasmtime::Result<()> {
        let _ = kv::Host::try_set(self, key, value, ttl_ms)?;
        Ok(())
    }

    fn increment(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> wasmtime::Result<i64> {
        Ok(kv::Host::try_increment(self, key, delta, ttl_ms)?.unwrap_or(i64::MAX))
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<bool> {
        Ok(kv::Host::try_compare_and_swap(self, key, expected, new, ttl_ms)?.unwrap_or(false))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        match &self.ctx.kv {
            PluginKv::Memory { store, ns } => {
                store.delete(ns, &key);
                Ok(())
            }
            PluginKv::Redis { .. } => Err(linked_synchronously()),
        }
    }

    fn try_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), kv::KvError>> {
        let stored = match &self.ctx.kv {
            PluginKv::Memory { store, ns } => store.set(ns, &key, value, ttl(ttl_ms)),
            PluginKv::Redis { .. } => return Err(linked_synchronously()),
        };
        Ok(self.full(stored))
    }

    fn try_increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, kv::KvError>> {
        let counted = match &self.ctx.kv {
            PluginKv::Memory { store, ns } => store.increment(ns, &key, delta, ttl(ttl_ms)),
            PluginKv::Redis { .. } => return Err(linked_synchronously()),
        };
        Ok(self.full(counted))
    }

    fn try_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<bool, kv::KvError>> {
        let swapped = match &self.ctx.kv {
            PluginKv::Memory { store, ns } => {
                store.compare_and_swap(ns, &key, expected.as_deref(), new, ttl(ttl_ms))
            }
            PluginKv::Redis { .. } => return Err(linked_synchronously()),
        };
        Ok(self.full(swapped))
    }
}

/// The in-memory answer in the `async` functions' types (a host linked for Redis with
/// an in-memory context: never in practice, but total).
fn from_memory<T>(result: wasmtime::Result<Result<T, kv::KvError>>) -> RemoteResult<T> {
    result.map(|r| r.map_err(|kv::KvError::Full| remote_kv::KvError::Full))
}

type RemoteResult<T> = wasmtime::Result<Result<T, remote_kv::KvError>>;

/// The functions as linked for the store in Redis: each awaits its round trip.
impl remote_kv::Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        let PluginKv::Redis { store, ns } = &self.ctx.kv else {
            return kv::Host::get(self, key);
        };
        let (store, ns) = (store.clone(), ns.clone());
        let started = Instant::now();
        let found = store.get(&ns, &key).await;
        Ok(self.remote(started, found)?.unwrap_or(None))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<()> {
        let _ = remote_kv::Host::try_set(self, key, value, ttl_ms).await?;
        Ok(())
    }

    async fn increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<i64> {
        Ok(remote_kv::Host::try_increment(self, key, delta, ttl_ms)
            .await?
            .unwrap_or(i64::MAX))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<bool> {
        Ok(
            remote_kv::Host::try_compare_and_swap(self, key, expected, new, ttl_ms)
                .await?
                .unwrap_or(false),
        )
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        let PluginKv::Redis { store, ns } = &self.ctx.kv else {
            return kv::Host::delete(self, key);
        };
        let (store, ns) = (store.clone(), ns.clone());
        let started = Instant::now();
        let deleted = store.delete(&ns, &key).await;
        self.remote(started, deleted)?.ok();
        Ok(())
    }

    async fn try_set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> RemoteResult<()> {
        let PluginKv::Redis { store, ns } = &self.ctx.kv else {
            return from_memory(kv::Host::try_set(self, key, value, ttl_ms));
        };
        let (store, ns) = (store.clone(), ns.clone());
        let started = Instant::now();
        let stored = store.set(&ns, &key, &value, ttl(ttl_ms)).await;
        self.remote(started, stored)
    }

    async fn try_increment(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> RemoteResult<i64> {
        let PluginKv::Redis { store, ns } = &self.ctx.kv else {
            return from_memory(kv::Host::try_increment(self, key, delta, ttl_ms));
        };
        let (store, ns) = (store.clone(), ns.clone());
        let started = Instant::now();
        let counted = store.increment(&ns, &key, delta, ttl(ttl_ms)).await;
        self.remote(started, counted)
    }

    async fn try_compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> RemoteResult<bool> {
        let PluginKv::Redis { store, ns } = &self.ctx.kv else {
            return from_memory(kv::Host::try_compare_and_swap(
                self, key, expected, new, ttl_ms,
            ));
        };
        let (store, ns) = (store.clone(), ns.clone());
        let started = Instant::now();
        let swapped = store
            .compare_and_swap(&ns, &key, expected.as_deref(), &new, ttl(ttl_ms))
            .await;
        self.remote(started, swapped)
    }
}
