//! Calls into the gateway: logging, the shared key-value store, metrics and outbound
//! HTTP. In a native build (`cargo test` of a plugin) they go to the in-memory fake in
//! [`testing`](crate::testing) instead, so plugin logic can be unit-tested.

use std::time::Duration;

#[cfg(target_family = "wasm")]
use crate::bindings::weir::plugin as wit;

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Detailed.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// Writes a line to the gateway's log, tagged with this plugin's name and version.
pub fn log(level: Level, message: &str) {
    #[cfg(target_family = "wasm")]
    {
        use wit::host::Level as L;
        let level = match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        wit::host::log(level, message);
    }
    #[cfg(not(target_family = "wasm"))]
    crate::testing::with(|fake| fake.logs.push((level, message.to_owned())));
}

/// The plugin's configuration as JSON text (what [`Plugin::Config`](crate::Plugin::Config)
/// is parsed from).
pub fn config_json() -> String {
    #[cfg(target_family = "wasm")]
    return wit::host::config();
    #[cfg(not(target_family = "wasm"))]
    crate::testing::with(|fake| fake.config.clone())
}

/// Which request this instance serves (see [`Plugin::State`](crate::Plugin::State)).
pub(crate) fn request_serial() -> u64 {
    #[cfg(target_family = "wasm")]
    return wit::host::request_serial();
    #[cfg(not(target_family = "wasm"))]
    crate::testing::with(|fake| fake.request_serial)
}

/// Fails the current phase call with `message` (a phase's `Err`).
pub(crate) fn fail(message: &str) {
    #[cfg(target_family = "wasm")]
    wit::host::fail(message);
    #[cfg(not(target_family = "wasm"))]
    crate::testing::with(|fake| {
        fake.failure.get_or_insert_with(|| message.to_owned());
    });
}

fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// The shared key-value store: one namespace per plugin, shared by all its instances
/// and all requests. Use it for state that must outlive a request (counters, caches).
pub mod kv {
    use super::*;

    /// The value of `key`, if present and not expired.
    pub fn get(key: &str) -> Option<Vec<u8>> {
        #[cfg(target_family = "wasm")]
        return wit::kv::get(key);
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| fake.kv_get(key))
    }

    /// The store refused a write: this plugin already holds as many entries or bytes
    /// as the gateway allows it (`[kv] max_entries` / `max_bytes`). Nothing was written
    /// and nothing was evicted; the write succeeds again once entries expire or are
    /// deleted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct KvFull;

    impl std::fmt::Display for KvFull {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the plugin's key-value store is full")
        }
    }

    impl std::error::Error for KvFull {}

    /// Sets `key` to `value`, expiring after `ttl` if given.
    pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvFull> {
        #[cfg(target_family = "wasm")]
        return wit::kv::try_set(key, value, ttl_ms(ttl)).map_err(|_| KvFull);
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| fake.kv_set(key, value.to_vec(), ttl_ms(ttl)))
    }

    /// Atomically adds `delta` to the integer at `key` (absent counts as 0) and returns
    /// the new value; `ttl` applies when the key is created. Refused (the counter
    /// unchanged) only when the key must be created or grow and the store is full.
    pub fn increment(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvFull> {
        #[cfg(target_family = "wasm")]
        return wit::kv::try_increment(key, delta, ttl_ms(ttl)).map_err(|_| KvFull);
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| fake.kv_increment(key, delta, ttl_ms(ttl)))
    }

    /// Atomically sets `key` to `new` if it currently holds `expected` (`None`: absent).
    /// Returns whether it did.
    pub fn compare_and_swap(
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
        ttl: Option<Duration>,
    ) -> Result<bool, KvFull> {
        #[cfg(target_family = "wasm")]
        return wit::kv::try_compare_and_swap(key, expected, new, ttl_ms(ttl)).map_err(|_| KvFull);
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| fake.kv_cas(key, expected, new.to_vec(), ttl_ms(ttl)))
    }

    /// Removes `key`.
    pub fn delete(key: &str) {
        #[cfg(target_family = "wasm")]
        wit::kv::delete(key);
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| fake.kv.remove(key));
    }
}

/// Metrics, exported by the gateway to Prometheus, labelled with the plugin's name.
pub mod metrics {
    /// Adds `value` to counter `name`.
    pub fn counter_add(name: &str, value: u64) {
        #[cfg(target_family = "wasm")]
        super::wit::metrics::counter_add(name, value);
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| *fake.counters.entry(name.to_owned()).or_default() += value);
    }

    /// Records `value` in histogram `name`.
    pub fn histogram_observe(name: &str, value: f64) {
        #[cfg(target_family = "wasm")]
        super::wit::metrics::histogram_observe(name, value);
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| {
            fake.histograms
                .entry(name.to_owned())
                .or_default()
                .push(value)
        });
    }
}

/// Outbound HTTP, allowed only to the hosts in the plugin's `allowed_hosts`.
pub mod http {
    use std::time::Duration;

    /// An outbound request.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OutboundRequest {
        /// `GET`, `POST`, ...
        pub method: String,
        /// An absolute `http://` URL.
        pub url: String,
        /// Request headers.
        pub headers: Vec<(String, Vec<u8>)>,
        /// Request body.
        pub body: Vec<u8>,
        /// Gives up after this long.
        pub timeout: Duration,
    }

    impl OutboundRequest {
        /// `GET url` with a 5 s timeout.
        pub fn get(url: &str) -> OutboundRequest {
            OutboundRequest {
                method: "GET".to_owned(),
                url: url.to_owned(),
                headers: Vec::new(),
                body: Vec::new(),
                timeout: Duration::from_secs(5),
            }
        }
    }

    /// A whole outbound response.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct OutboundResponse {
        /// Status code.
        pub status: u16,
        /// Headers.
        pub headers: Vec<(String, Vec<u8>)>,
        /// Body.
        pub body: Vec<u8>,
    }

    /// Why an outbound call failed.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum HttpError {
        /// The host is not in `allowed_hosts`.
        NotAllowed(String),
        /// This request already used its `max_outbound_calls`.
        LimitExceeded,
        /// No response in time.
        Timeout,
        /// The URL or request was invalid.
        InvalidRequest(String),
        /// Connecting or exchanging failed.
        Failed(String),
    }

    impl std::fmt::Display for HttpError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                HttpError::NotAllowed(host) => write!(f, "host `{host}` is not in allowed_hosts"),
                HttpError::LimitExceeded => write!(f, "too many outbound calls for this request"),
                HttpError::Timeout => write!(f, "timed out"),
                HttpError::InvalidRequest(why) => write!(f, "invalid request: {why}"),
                HttpError::Failed(why) => write!(f, "failed: {why}"),
            }
        }
    }

    impl std::error::Error for HttpError {}

    /// Sends `request` and waits for the whole response.
    pub fn call(request: &OutboundRequest) -> Result<OutboundResponse, HttpError> {
        #[cfg(target_family = "wasm")]
        {
            use crate::bindings::weir::plugin::http_client as wit;
            wit::call(&to_wit(request))
                .map(from_wit)
                .map_err(error_from_wit)
        }
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| fake.http_call(request))
    }

    /// Sends all `requests` at once and waits for every one; the results are in the
    /// order of `requests`. The whole call takes about as long as the slowest request
    /// (each gives up after its own `timeout`), not the sum of them, so a plugin can
    /// fan out to several services and compose their answers.
    ///
    /// Each request is checked as [`call`] checks it: a host outside `allowed_hosts`, or
    /// one past the route's `max_outbound_calls` (counted in list order), gets its own
    /// error and the others still go.
    ///
    /// Since `weir:plugin` 0.1.5: a plugin that uses it needs a gateway from 0.1.5 on.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use weir_plugin_sdk::host::http::{self, OutboundRequest};
    ///
    /// let mut user = OutboundRequest::get("http://users.internal/users/7");
    /// user.timeout = Duration::from_millis(200);
    /// let orders = OutboundRequest::get("http://orders.internal/orders?user=7");
    /// let [user, orders] = <[_; 2]>::try_from(http::call_all(&[user, orders]))
    ///     .expect("one result per request");
    /// match (user, orders) {
    ///     (Ok(user), Ok(orders)) => { /* compose user.body and orders.body */ }
    ///     (Err(e), _) | (_, Err(e)) => { /* answer 502, naming `e` */ }
    /// }
    /// ```
    pub fn call_all(requests: &[OutboundRequest]) -> Vec<Result<OutboundResponse, HttpError>> {
        #[cfg(target_family = "wasm")]
        {
            use crate::bindings::weir::plugin::http_client as wit;
            let requests: Vec<_> = requests.iter().map(to_wit).collect();
            wit::call_all(&requests)
                .into_iter()
                .map(|result| result.map(from_wit).map_err(error_from_wit))
                .collect()
        }
        #[cfg(not(target_family = "wasm"))]
        crate::testing::with(|fake| requests.iter().map(|r| fake.http_call(r)).collect())
    }

    #[cfg(target_family = "wasm")]
    fn to_wit(
        request: &OutboundRequest,
    ) -> crate::bindings::weir::plugin::http_client::OutboundRequest {
        use crate::bindings::weir::plugin::types::Header;
        crate::bindings::weir::plugin::http_client::OutboundRequest {
            method: request.method.clone(),
            url: request.url.clone(),
            headers: request
                .headers
                .iter()
                .map(|(name, value)| Header {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
            body: request.body.clone(),
            timeout_ms: u32::try_from(request.timeout.as_millis()).unwrap_or(u32::MAX),
        }
    }

    #[cfg(target_family = "wasm")]
    fn from_wit(
        response: crate::bindings::weir::plugin::http_client::OutboundResponse,
    ) -> OutboundResponse {
        OutboundResponse {
            status: response.status,
            headers: response
                .headers
                .into_iter()
                .map(|h| (h.name, h.value))
                .collect(),
            body: response.body,
        }
    }

    #[cfg(target_family = "wasm")]
    fn error_from_wit(error: crate::bindings::weir::plugin::http_client::HttpError) -> HttpError {
        use crate::bindings::weir::plugin::http_client as wit;
        match error {
            wit::HttpError::NotAllowed(h) => HttpError::NotAllowed(h),
            wit::HttpError::LimitExceeded => HttpError::LimitExceeded,
            wit::HttpError::Timeout => HttpError::Timeout,
            wit::HttpError::InvalidRequest(w) => HttpError::InvalidRequest(w),
            wit::HttpError::Failed(w) => HttpError::Failed(w),
        }
    }
}
