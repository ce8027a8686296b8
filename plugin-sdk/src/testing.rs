//! A fake gateway for native unit tests of plugins: the host calls of
//! [`host`](crate::host) land here when a plugin is built for the host target
//! (`cargo test`) instead of `wasm32-wasip2`.
//!
//! ```
//! use weir_plugin_sdk::testing;
//! use weir_plugin_sdk::host::kv;
//!
//! testing::reset();
//! assert_eq!(kv::increment("hits", 1, None), Ok(1));
//! assert_eq!(kv::increment("hits", 1, None), Ok(2));
//! testing::with(|fake| assert_eq!(fake.kv.len(), 1));
//! ```
//!
//! State is per thread, so tests running in parallel do not see each other's.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::host::Level;
use crate::host::http::{HttpError, OutboundRequest, OutboundResponse};
use crate::host::kv::KvFull;

/// The fake gateway's state: inspect it in assertions, or prepare it (config, canned
/// HTTP responses) before calling the plugin.
#[derive(Debug, Default)]
pub struct FakeHost {
    /// The JSON config [`host::config_json`](crate::host::config_json) returns.
    pub config: String,
    /// Lines logged, in order.
    pub logs: Vec<(Level, String)>,
    /// The key-value store: value and expiry.
    pub kv: HashMap<String, (Vec<u8>, Option<Instant>)>,
    /// Entries the store takes before writes of new keys fail with
    /// [`KvFull`](crate::host::kv::KvFull), as at the gateway's `[kv] max_entries`
    /// (`None`: no bound).
    pub kv_max_entries: Option<usize>,
    /// Counter totals by name.
    pub counters: HashMap<String, u64>,
    /// Histogram observations by name.
    pub histograms: HashMap<String, Vec<f64>>,
    /// Canned responses for outbound calls, by URL; an unknown URL is `NotAllowed`.
    pub http: HashMap<String, OutboundResponse>,
    /// Outbound requests made, in order.
    pub http_calls: Vec<OutboundRequest>,
}

thread_local! {
    static FAKE: RefCell<FakeHost> = RefCell::new(FakeHost {
        config: "{}".to_owned(),
        ..FakeHost::default()
    });
}

/// Runs `f` with this thread's fake host.
pub fn with<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

/// Clears this thread's fake host (config back to `{}`).
pub fn reset() {
    with(|fake| {
        *fake = FakeHost {
            config: "{}".to_owned(),
            ..FakeHost::default()
        }
    });
}

fn expiry(ttl_ms: Option<u64>) -> Option<Instant> {
    ttl_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}

impl FakeHost {
    /// Makes `url` answer outbound calls with `response`.
    pub fn respond_to(&mut self, url: &str, response: OutboundResponse) {
        self.http.insert(url.to_owned(), response);
    }

    pub(crate) fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        match self.kv.get(key) {
            Some((_, Some(at))) if *at <= Instant::now() => {
                self.kv.remove(key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    /// Whether a write of `key` needs room the store does not have.
    fn kv_full(&mut self, key: &str) -> Result<(), KvFull> {
        let full = self
            .kv_max_entries
            .is_some_and(|max| self.kv_get(key).is_none() && self.kv.len() >= max);
        if full { Err(KvFull) } else { Ok(()) }
    }

    pub(crate) fn kv_set(
        &mut self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvFull> {
        self.kv_full(key)?;
        self.kv.insert(key.to_owned(), (value, expiry(ttl_ms)));
        Ok(())
    }

    pub(crate) fn kv_increment(
        &mut self,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, KvFull> {
        self.kv_full(key)?;
        let current = self.kv_get(key);
        let expires = match current {
            Some(_) => self.kv.get(key).and_then(|(_, at)| *at),
            None => expiry(ttl_ms),
        };
        let old = current
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        let new = old.saturating_add(delta);
        self.kv
            .insert(key.to_owned(), (new.to_string().into_bytes(), expires));
        Ok(new)
    }

    pub(crate) fn kv_cas(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvFull> {
        if self.kv_get(key).as_deref() != expected {
            return Ok(false);
        }
        self.kv_set(key, new, ttl_ms)?;
        Ok(true)
    }

    pub(crate) fn http_call(
        &mut self,
        request: &OutboundRequest,
    ) -> Result<OutboundResponse, HttpError> {
        self.http_calls.push(request.clone());
        self.http
            .get(&request.url)
            .cloned()
            .ok_or_else(|| HttpError::NotAllowed(request.url.clone()))
    }
}
