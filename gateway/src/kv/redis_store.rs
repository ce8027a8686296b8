//! The key-value store in Redis ([`RedisStore`]), for limits that must hold across
//! replicas: the same operations and semantics as the in-memory [`KvStore`](super::KvStore),
//! each one round trip to Redis, awaited (never blocking a worker) under a deadline.
//!
//! Every write that can need room runs one Lua script (`redis_store.lua`, by EVALSHA)
//! that does the write and the plugin's accounting atomically: a sorted set of the
//! plugin's keys by expiry, their costs and the plugin's byte total, so the per-plugin
//! bounds hold for the whole fleet, and a value that expired gives its room back as
//! writes sweep a few expired entries each (more when a write finds the plugin full),
//! as in memory. Reads are a plain `GET`. A plugin's keys share one hash tag,
//! `weir:{PLUGIN}:…`, so that its script's keys stay together on a Redis Cluster slot.
//!
//! One multiplexed connection carries every worker's calls, pipelined; the client
//! reconnects by itself. After a failed connection, calls fail at once for
//! [`RETRY_AFTER`] instead of each waiting out its deadline, then try again: when Redis
//! comes back, the store does too.

use std::future::Future;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Value};

use super::{ENTRY_OVERHEAD, KvFull};
use crate::config::{KvBounds, RedisSettings, redact_url};
use crate::telemetry::metrics::KvErrorSeries;

/// How long calls fail at once after Redis could not be reached, before one tries
/// again.
pub const RETRY_AFTER: Duration = Duration::from_millis(100);
/// Longest a TTL may be (a century): the script adds it to the server's clock.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 86_400);
/// How long connecting may take, whatever the call deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The write script, hashed once per process.
static SCRIPT: LazyLock<redis::Script> =
    LazyLock::new(|| redis::Script::new(include_str!("redis_store.lua")));

/// Why a key-value call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The plugin's namespace is at its bounds.
    #[error(transparent)]
    Full(#[from] KvFull),
    /// Redis did not answer in time.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis could not be reached.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error.
    #[error("Redis refused the call: {0}")]
    Failed(String),
}

/// Why Redis settings could not make a client.
#[derive(Debug, thiserror::Error)]
#[error("cannot use Redis at `{url}`: {reason}")]
pub struct RedisSetupError {
    /// The URL, its password hidden.
    pub url: String,
    /// What was wrong.
    pub reason: String,
}

/// One plugin's part of the store in Redis: its key names and error counters.
#[derive(Debug)]
pub struct RedisNamespace {
    /// `weir:{PLUGIN}:v:`, before each of the plugin's keys.
    value_prefix: String,
    /// The sorted set of the plugin's keys by expiry.
    index: String,
    /// The hash of what each key costs.
    sizes: String,
    /// The bytes the plugin holds.
    total: String,
    /// `weir_kv_errors_total{plugin,kind}`.
    errors: KvErrorSeries,
}

impl RedisNamespace {
    /// The namespace of plugin `plugin`.
    pub fn new(plugin: &str) -> RedisNamespace {
        let base = format!("weir:{{{plugin}}}:");
        RedisNamespace {
            value_prefix: format!("{base}v:"),
            index: format!("{base}i"),
            sizes: format!("{base}s"),
            total: format!("{base}b"),
            errors: KvErrorSeries::new(plugin),
        }
    }

    fn value_key(&self, key: &str) -> String {
        let mut full = String::with_capacity(self.value_prefix.len() + key.len());
        full.push_str(&self.value_prefix);
        full.push_str(key);
        full
    }
}

/// The store in Redis.
pub struct RedisStore {
    manager: ConnectionManager,
    /// The runtime the connection was made on (its tasks may live there).
    runtime: Option<tokio::runtime::Runtime>,
    /// Where Redis is, its password hidden, for messages.
    shown_url: String,
    max_entries: AtomicU64,
    max_bytes: AtomicU64,
    /// The deadline of each call, in microseconds.
    timeout_us: AtomicU64,
    /// Until when (ms after `epoch`) calls fail at once: Redis was just unreachable.
    down_until_ms: AtomicU64,
    epoch: Instant,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.shown_url)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            // Dropping a runtime may block; this may run inside another runtime.
            runtime.shutdown_background();
        }
    }
}

/// `ttl` in whole milliseconds as the script reads it (`""`: none).
fn ttl_arg(ttl: Option<Duration>) -> String {
    ttl.map(|t| t.min(MAX_TTL).as_millis().to_string())
        .unwrap_or_default()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// A store on the Redis server `settings` names, with these bounds and per-call
    /// deadline. It connects in the background: a server that is not up yet makes
    /// calls fail until it is, never this.
    pub fn new(
        settings: &RedisSettings,
        bounds: KvBounds,
        timeout: Duration,
    ) -> Result<RedisStore, RedisSetupError> {
        let shown_url = redact_url(&settings.url);
        let failed = |reason: String| RedisSetupError {
            url: shown_url.clone(),
            reason,
        };
        let mut info = settings
            .url
            .as_str()
            .into_connection_info()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(password) = &settings.password {
            let redis = info.redis_settings().clone().set_password(password);
            info = info.set_redis_settings(redis);
        }
        let keepalive = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(10))
            .with_interval(Duration::from_secs(5));
        info = info.set_tcp_settings(
            redis::io::tcp::TcpSettings::default()
                .set_nodelay(true)
                .set_keepalive(keepalive),
        );
        let client = match &settings.ca_pem {
            Some(pem) => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => redis::Client::open(info),
        }
        .map_err(|e| failed(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Each call has its own deadline; a late answer is dropped, not a reason to
            // reconnect.
            .set_response_timeout(None)
            .set_number_of_retries(3)
            .set_min_delay(Duration::from_millis(20))
            .set_max_delay(Duration::from_millis(500));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("weir-kv-redis")
            .enable_all()
            .build()
            .map_err(|e| failed(format!("cannot start its runtime: {e}")))?;
        let manager = {
            let _entered = runtime.enter();
            ConnectionManager::new_lazy_with_config(client, config)
                .map_err(|e| failed(e.to_string()))?
        };
        // Connect now, so the first calls find a connection (and its tasks run here).
        let mut first = manager.clone();
        let url = shown_url.clone();
        runtime.spawn(async move {
            match redis::cmd("PING").query_async::<()>(&mut first).await {
                Ok(()) => tracing::info!(url, "connected to Redis (key-value store)"),
                Err(e) => tracing::warn!(
                    url,
                    error = %e,
                    "Redis (key-value store) is unreachable: key-value calls fail until it is"
                ),
            }
        });
        Ok(RedisStore {
            manager,
            runtime: Some(runtime),
            shown_url,
            max_entries: AtomicU64::new(bounds.max_entries),
            max_bytes: AtomicU64::new(bounds.max_bytes),
            timeout_us: AtomicU64::new(micros(timeout)),
            down_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    /// Applies new bounds and a new per-call deadline (a reload), from the next call.
    pub fn set_limits(&self, bounds: KvBounds, timeout: Duration) {
        self.max_entries.store(bounds.max_entries, Relaxed);
        self.max_bytes.store(bounds.max_bytes, Relaxed);
        self.timeout_us.store(micros(timeout), Relaxed);
    }

    /// The deadline of each call.
    pub fn timeout(&self) -> Duration {
        Duration::from_micros(self.timeout_us.load(Relaxed))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sends what `call` sends under the deadline; failures are classified, counted
    /// against `ns`, and a failure to reach Redis makes the next calls fail at once for
    /// a while.
    async fn run<F, Fut>(&self, ns: &RedisNamespace, call: F) -> Result<Value, KvError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<Value>>,
    {
        let result = self.send(call).await;
        if let Err(e) = &result {
            let kind = match e {
                KvError::Timeout(_) => 0,
                KvError::Unavailable(_) => 1,
                KvError::Full(_) | KvError::Failed(_) => 2,
            };
            ns.errors.0[kind].inc();
        }
        result
    }

    async fn send<F, Fut>(&self, call: F) -> Result<Value, KvError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = redis::RedisResult<Value>>,
    {
        let down_until = self.down_until_ms.load(Relaxed);
        if down_until != 0 && self.now_ms() < down_until {
            return Err(KvError::Unavailable(format!(
                "{} was unreachable moments ago",
                self.shown_url
            )));
        }
        let timeout = self.timeout();
        match tokio::time::timeout(timeout, call(self.manager.clone())).await {
            Err(_) => Err(KvError::Timeout(timeout)),
            Ok(Ok(value)) => {
                if down_until != 0 {
                    self.down_until_ms.store(0, Relaxed);
                }
                Ok(value)
            }
            Ok(Err(e)) if e.is_io_error() || e.is_unrecoverable_error() => {
                let until = self.now_ms() + micros(RETRY_AFTER) / 1000;
                self.down_until_ms.store(until.max(1), Relaxed);
                Err(KvError::Unavailable(e.to_string()))
            }
            Ok(Err(e)) => Err(KvError::Failed(e.to_string())),
        }
    }

    /// One command.
    async fn command(&self, ns: &RedisNamespace, cmd: redis::Cmd) -> Result<Value, KvError> {
        self.run(ns, |mut connection| async move {
            cmd.query_async::<Value>(&mut connection).await
        })
        .await
    }

    /// Runs the write script (EVALSHA, loading it first on a server that lacks it)
    /// for `op` on `key` with `extra` arguments.
    async fn script(
        &self,
        ns: &RedisNamespace,
        op: &str,
        key: &str,
        extra: &[&[u8]],
    ) -> Result<Value, KvError> {
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(ns.value_key(key))
            .key(&ns.index)
            .key(&ns.sizes)
            .key(&ns.total)
            .arg(op)
            .arg(key)
            .arg(self.max_entries.load(Relaxed))
            .arg(self.max_bytes.load(Relaxed))
            .arg(ENTRY_OVERHEAD);
        for arg in extra {
            invocation.arg(*arg);
        }
        self.run(ns, |mut connection| async move {
            invocation.invoke_async::<Value>(&mut connection).await
        })
        .await
    }

    /// The live value of `key`.
    pub async fn get(&self, ns: &RedisNamespace, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(ns.value_key(key));
        match self.command(ns, cmd).await? {
            Value::Nil => Ok(None),
            Value::BulkString(bytes) => Ok(Some(bytes)),
            other => Err(unexpected(ns, "GET", &other)),
        }
    }

    /// Sets `key`, replacing any value.
    pub async fn set(
        &self,
        ns: &RedisNamespace,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let ttl = ttl_arg(ttl);
        match self
            .script(ns, "set", key, &[value, ttl.as_bytes()])
            .await?
        {
            Value::Int(1) => Ok(()),
            Value::Int(-1) => Err(self.full().into()),
            other => Err(unexpected(ns, "set", &other)),
        }
    }

    /// Adds `delta` to the integer stored (as decimal text) at `key`; absent or
    /// non-numeric counts as 0, and the sum saturates. `ttl` applies when the key is
    /// created.
    pub async fn increment(
        &self,
        ns: &RedisNamespace,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let mut digits = itoa::Buffer::new();
        let delta = digits.format(delta);
        let ttl = ttl_arg(ttl);
        let answer = self
            .script(ns, "incr", key, &[delta.as_bytes(), ttl.as_bytes()])
            .await?;
        if let Value::Array(items) = &answer {
            match items.as_slice() {
                [Value::Int(1), Value::BulkString(text)] => {
                    if let Some(n) = std::str::from_utf8(text).ok().and_then(|t| t.parse().ok()) {
                        return Ok(n);
                    }
                }
                [Value::Int(0)] => return Err(self.full().into()),
                _ => {}
            }
        }
        Err(unexpected(ns, "incr", &answer))
    }

    /// Sets `key` to `new` if it currently holds `expected` (`None`: absent).
    pub async fn compare_and_swap(
        &self,
        ns: &RedisNamespace,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvError> {
        let ttl = ttl_arg(ttl);
        let (expecting, expected): (&[u8], &[u8]) = match expected {
            Some(value) => (b"1", value),
            None => (b"0", b""),
        };
        match self
            .script(ns, "cas", key, &[new, ttl.as_bytes(), expecting, expected])
            .await?
        {
            Value::Int(1) => Ok(true),
            Value::Int(0) => Ok(false),
            Value::Int(-1) => Err(self.full().into()),
            other => Err(unexpected(ns, "cas", &other)),
        }
    }

    /// Removes `key`.
    pub async fn delete(&self, ns: &RedisNamespace, key: &str) -> Result<(), KvError> {
        self.script(ns, "del", key, &[]).await.map(|_| ())
    }

    /// The refusal a full namespace gets. What it holds is the fleet's, in Redis: the
    /// figures are the bounds it reached.
    fn full(&self) -> KvFull {
        KvFull {
            entries: self.max_entries.load(Relaxed),
            bytes: self.max_bytes.load(Relaxed),
        }
    }
}

/// An answer the script never gives (another program wrote the plugin's keys, say).
fn unexpected(ns: &RedisNamespace, what: &str, answer: &Value) -> KvError {
    ns.errors.0[2].inc();
    KvError::Failed(format!("unexpected answer to {what}: {answer:?}"))
}
