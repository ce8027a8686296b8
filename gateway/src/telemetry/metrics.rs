//! Prometheus metrics: one process-wide registry, the series DESIGN.md names, and the
//! series plugins define through the `metrics` import (`weir_plugin_NAME_total` counters
//! and `weir_plugin_NAME` histograms, labelled with the plugin). `/metrics` on the admin
//! listener renders [`render`].
//!
//! One file on purpose (past 500 lines; its tests are in `metrics_tests.rs`): every
//! series is registered in the one [`Metrics`] registry below, so the full list of
//! metric names, a contract in DESIGN.md, reads in one place.
//!
//! Labels have bounded cardinality: route, upstream and endpoint names come from the
//! config (a request path never becomes a label), status codes are three digits, plugin
//! names come from the plugins directory, phases and failure kinds are fixed sets, and
//! each plugin may define at most [`MAX_PLUGIN_SERIES`] metrics of its own.
//!
//! The request path never calls `with_label_values` (it hashes the labels and takes a
//! lock): handles are resolved when a snapshot is built ([`RouteSeries`],
//! [`upstream_exchange_duration`]) so a request only touches atomics.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use http::StatusCode;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Metrics a single plugin may define through the `metrics` import; more are dropped.
pub const MAX_PLUGIN_SERIES: usize = 100;

/// Buckets for plugin call durations: 5 µs to 250 ms.
const CALL_BUCKETS: &[f64] = &[
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
];

/// Buckets for request and upstream exchange durations: 100 µs to 10 s.
const REQUEST_BUCKETS: &[f64] = &[
    1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `route` label of requests no route matched (including paths refused before routing).
pub const NO_ROUTE: &str = "-";

/// The registry and the fixed series.
struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_duration: HistogramVec,
    endpoint_healthy: IntGaugeVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    overflows: IntCounterVec,
    mirrors: IntCounterVec,
    plugin_call_duration: HistogramVec,
    plugin_failures: IntCounterVec,
    plugin_logs_dropped: IntCounterVec,
    plugin_refusals: IntCounterVec,
    kv_entries: IntGaugeVec,
    kv_bytes: IntGaugeVec,
    kv_errors: IntCounterVec,
    /// Families defined by plugins, by full metric name.
    plugin_defined: Mutex<HashMap<String, PluginDefined>>,
}

#[derive(Clone)]
enum PluginDefined {
    Counter(IntCounterVec),
    Histogram(HistogramVec),
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new(
            "weir_requests_total",
            "Requests answered, by matched route (`-` for none) and status code sent.",
        ),
        &["route", "status"],
    )
    .expect("static metric options are valid");
    let request_duration = HistogramVec::new(
        HistogramOpts::new(
            "weir_request_duration_seconds",
            "Time from a request's arrival (its head parsed) to its response head being \
             ready to write, by matched route (`-` for none); body streaming is not included.",
        )
        .buckets(REQUEST_BUCKETS.to_vec()),
        &["route"],
    )
    .expect("static metric options are valid");
    let upstream_duration = HistogramVec::new(
        HistogramOpts::new(
            "weir_upstream_request_duration_seconds",
            "Time of one upstream exchange that got a response, from sending the request \
             (connecting first if no pooled connection is idle) to the upstream's response \
             head, by upstream cluster.",
        )
        .buckets(REQUEST_BUCKETS.to_vec()),
        &["upstream"],
    )
    .expect("static metric options are valid");
    let endpoint_healthy = IntGaugeVec::new(
        Opts::new(
            "weir_upstream_endpoint_healthy",
            "1 if the endpoint is in rotation (passes its health checks, or has none, and \
             is not ejected by outlier detection), 0 if not.",
        ),
        &["upstream", "endpoint"],
    )
    .expect("static metric options are valid");
    let ejections = IntCounterVec::new(
        Opts::new(
            "weir_upstream_ejections_total",
            "Times outlier detection ejected the endpoint from rotation.",
        ),
        &["upstream", "endpoint"],
    )
    .expect("static metric options are valid");
    let retries = IntCounterVec::new(
        Opts::new(
            "weir_upstream_retries_total",
            "Retries sent to the upstream cluster (not counting first tries).",
        ),
        &["upstream"],
    )
    .expect("static metric options are valid");
    let overflows = IntCounterVec::new(
        Opts::new(
            "weir_upstream_overflow_total",
            "Requests the circuit breakers refused (503) by the limit reached \
             (connections, pending, requests), and retries the retry budget refused (retries).",
        ),
        &["upstream", "limit"],
    )
    .expect("static metric options are valid");
    let mirrors = IntCounterVec::new(
        Opts::new(
            "weir_mirror_requests_total",
            "Shadow copies of a route's sampled requests, by result: sent (the mirror \
             upstream answered; the answer is discarded), failed (it did not answer), \
             dropped (too many shadow requests in flight), skipped (a request body that \
             is not mirrored: streamed, or larger than the mirror's buffer).",
        ),
        &["route", "result"],
    )
    .expect("static metric options are valid");
    let plugin_call_duration = HistogramVec::new(
        HistogramOpts::new(
            "weir_plugin_call_duration_seconds",
            "Time spent in one plugin phase call (instantiation excluded).",
        )
        .buckets(CALL_BUCKETS.to_vec()),
        &["plugin", "phase"],
    )
    .expect("static metric options are valid");
    let plugin_failures = IntCounterVec::new(
        Opts::new(
            "weir_plugin_failures_total",
            "Plugin failures by kind: trap, timeout, memory, error.",
        ),
        &["plugin", "kind"],
    )
    .expect("static metric options are valid");
    let plugin_logs_dropped = IntCounterVec::new(
        Opts::new(
            "weir_plugin_logs_dropped_total",
            "Plugin log lines (and guest stdout/stderr lines) dropped by the rate limit.",
        ),
        &["plugin"],
    )
    .expect("static metric options are valid");
    let plugin_refusals = IntCounterVec::new(
        Opts::new(
            "weir_plugin_refusals_total",
            "What the gateway refused a plugin, by reason: edit (a header, path or status \
             edit refused: a header the gateway owns, an invalid value, a read-only message), local_response (a local answer too large, or \
             headers dropped from it), outbound_calls (http-call past its per-request \
             limit), kv_full (a write past the plugin's key-value bounds), suspended (a \
             call not made because the plugin's failures were suspended for a while).",
        ),
        &["plugin", "reason"],
    )
    .expect("static metric options are valid");
    let kv_entries = IntGaugeVec::new(
        Opts::new(
            "weir_kv_entries",
            "Entries a plugin holds in the key-value store ([kv] max_entries bounds it).",
        ),
        &["plugin"],
    )
    .expect("static metric options are valid");
    let kv_bytes = IntGaugeVec::new(
        Opts::new(
            "weir_kv_bytes",
            "Bytes a plugin holds in the key-value store: keys, values and a fixed \
             overhead per entry ([kv] max_bytes bounds it).",
        ),
        &["plugin"],
    )
    .expect("static metric options are valid");
    let kv_errors = IntCounterVec::new(
        Opts::new(
            "weir_kv_errors_total",
            "Key-value calls that failed in the store itself (the Redis backend), by plugin \
             and kind: timeout (no answer within [kv] timeout), unavailable (no connection \
             to Redis), error (Redis answered with an error). The plugin's call fails and \
             its on_error policy applies.",
        ),
        &["plugin", "kind"],
    )
    .expect("static metric options are valid");
    for collector in [
        Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(request_duration.clone()),
        Box::new(upstream_duration.clone()),
        Box::new(endpoint_healthy.clone()),
        Box::new(ejections.clone()),
        Box::new(retries.clone()),
        Box::new(overflows.clone()),
        Box::new(mirrors.clone()),
        Box::new(plugin_call_duration.clone()),
        Box::new(plugin_failures.clone()),
        Box::new(plugin_logs_dropped.clone()),
        Box::new(plugin_refusals.clone()),
        Box::new(kv_entries.clone()),
        Box::new(kv_bytes.clone()),
        Box::new(kv_errors.clone()),
    ] {
        registry
            .register(collector)
            .expect("each static series is registered once");
    }
    Metrics {
        registry,
        requests,
        request_duration,
        upstream_duration,
        endpoint_healthy,
        ejections,
        retries,
        overflows,
        mirrors,
        plugin_call_duration,
        plugin_failures,
        plugin_logs_dropped,
        plugin_refusals,
        kv_entries,
        kv_bytes,
        kv_errors,
        plugin_defined: Mutex::default(),
    }
});

/// The Prometheus text exposition of every series.
pub fn render() -> String {
    let families = METRICS.registry.gather();
    let mut out = Vec::new();
    // Encoding gathered families into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&families, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The content type of [`render`]'s output.
pub fn content_type() -> String {
    TextEncoder::new().format_type().to_owned()
}

/// The request series of one route, resolved when the route table is built so that
/// recording a request costs a few atomic operations and no label lookup.
///
/// `weir_request_duration_seconds` runs from the request's arrival (the pipeline gets its
/// parsed head) to its response head being ready to write; the body streams after.
/// `weir_requests_total` gets one series per status code actually sent: the counters sit
/// in a table indexed by status code, filled on first use, one block per status class
/// (so a route costs a few hundred bytes until it sends statuses of a class).
pub struct RouteSeries {
    route: Box<str>,
    duration: Histogram,
    /// Counters for statuses 100..=599: `classes[code / 100 - 1][code % 100]`.
    classes: [OnceLock<Box<StatusBlock>>; 5],
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries")
            .field("route", &self.route)
            .finish_non_exhaustive()
    }
}

/// The counters of one status class (e.g. 200..=299), each created on first use.
type StatusBlock = [OnceLock<IntCounter>; 100];

impl RouteSeries {
    /// The series of route `route`.
    pub fn new(route: &str) -> RouteSeries {
        RouteSeries {
            route: route.into(),
            duration: METRICS.request_duration.with_label_values(&[route]),
            classes: Default::default(),
        }
    }

    /// The series of requests no route matched (route label [`NO_ROUTE`]).
    pub fn unrouted() -> &'static RouteSeries {
        static UNROUTED: LazyLock<RouteSeries> = LazyLock::new(|| RouteSeries::new(NO_ROUTE));
        &UNROUTED
    }

    /// Counts one answered request: its status and the time until its response head was
    /// ready (see `weir_request_duration_seconds`).
    pub fn record(&self, status: StatusCode, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        let make = || {
            METRICS
                .requests
                .with_label_values(&[&*self.route, status.as_str()])
        };
        let code = usize::from(status.as_u16());
        match self.classes.get((code / 100).wrapping_sub(1)) {
            Some(class) => class.get_or_init(|| Box::new(std::array::from_fn(|_| OnceLock::new())))
                [code % 100]
                .get_or_init(make)
                .inc(),
            // 600..=999 are valid but unheard of: resolved each time.
            None => make().inc(),
        }
    }
}

/// The `weir_upstream_request_duration_seconds` histogram of cluster `upstream`, to be
/// kept with the cluster: one exchange that got a response, from sending the request
/// (connecting first when no pooled connection is idle) to the upstream's response head.
/// Failed exchanges are not observed; they show as 502/504 in `weir_requests_total`.
pub fn upstream_exchange_duration(upstream: &str) -> Histogram {
    METRICS.upstream_duration.with_label_values(&[upstream])
}

/// Sets `weir_upstream_endpoint_healthy{upstream, endpoint}`.
pub fn set_endpoint_healthy(upstream: &str, endpoint: &str, healthy: bool) {
    endpoint_health(upstream, endpoint).set(i64::from(healthy));
}

/// The `weir_upstream_endpoint_healthy{upstream, endpoint}` gauge, to be kept with the
/// endpoint: 1 while it passes its health checks (or has none) and is not ejected by
/// outlier detection, 0 otherwise.
pub fn endpoint_health(upstream: &str, endpoint: &str) -> IntGauge {
    METRICS
        .endpoint_healthy
        .with_label_values(&[upstream, endpoint])
}

/// Drops the `{upstream, endpoint}` series (`weir_upstream_endpoint_healthy`,
/// `weir_upstream_ejections_total`): the endpoint left the config (a reload), so it no
/// longer has a health to report.
pub fn forget_endpoint(upstream: &str, endpoint: &str) {
    let _ = METRICS
        .endpoint_healthy
        .remove_label_values(&[upstream, endpoint]);
    let _ = METRICS.ejections.remove_label_values(&[upstream, endpoint]);
}

/// The `weir_upstream_ejections_total{upstream, endpoint}` counter, to be kept with the
/// endpoint.
pub fn endpoint_ejections(upstream: &str, endpoint: &str) -> IntCounter {
    METRICS.ejections.with_label_values(&[upstream, endpoint])
}

/// The `weir_upstream_retries_total{upstream}` counter, to be kept with the cluster.
pub fn upstream_retries(upstream: &str) -> IntCounter {
    METRICS.retries.with_label_values(&[upstream])
}

/// The `weir_upstream_overflow_total{upstream, limit}` counter, to be kept with the
/// cluster; `limit` is `connections`, `pending`, `requests` or `retries`.
pub fn upstream_overflows(upstream: &str, limit: &str) -> IntCounter {
    METRICS.overflows.with_label_values(&[upstream, limit])
}

/// What became of one sampled mirror request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MirrorResult {
    /// The mirror upstream answered (the answer was discarded).
    Sent,
    /// The mirror upstream did not answer (connect failure, reset, timeout, refusal).
    Failed,
    /// Too many shadow requests were in flight: not sent.
    Dropped,
    /// Its body could not be mirrored (streamed, or too large): not sent.
    Skipped,
}

/// A route's `weir_mirror_requests_total{route, result}` series, resolved once.
#[derive(Debug, Clone)]
pub struct MirrorSeries {
    /// By [`MirrorResult`] order: sent, failed, dropped, skipped.
    results: [IntCounter; 4],
}

impl MirrorSeries {
    /// The series of route `route`.
    pub fn new(route: &str) -> MirrorSeries {
        MirrorSeries {
            results: ["sent", "failed", "dropped", "skipped"]
                .map(|result| METRICS.mirrors.with_label_values(&[route, result])),
        }
    }

    /// Counts one sampled request's result.
    pub fn record(&self, result: MirrorResult) {
        self.results[result as usize].inc();
    }
}

/// The series of plugins: the gateway's own per plugin, and those plugins define.
#[path = "metrics_plugins.rs"]
mod plugins;
pub use plugins::*;

/// The response cache's series.
#[path = "metrics_cache.rs"]
mod cache;
pub use cache::*;

/// Reload outcomes: `weir_plugin_reloads_total{result}` counts attempts to load a new
/// or changed plugin file, `weir_config_reloads_total{result}` attempts to apply a
/// changed config file or changed TLS files; `result` is `success` or `error`.
struct Reloads {
    plugin: [IntCounter; 2],
    config: [IntCounter; 2],
}

static RELOADS: LazyLock<Reloads> = LazyLock::new(|| {
    let family = |name: &str, help: &str| {
        let vec = IntCounterVec::new(Opts::new(name, help), &["result"])
            .expect("static metric options are valid");
        METRICS
            .registry
            .register(Box::new(vec.clone()))
            .expect("each static series is registered once");
        ["success", "error"].map(|result| vec.with_label_values(&[result]))
    };
    Reloads {
        plugin: family(
            "weir_plugin_reloads_total",
            "Loads of a new or changed plugin file, by result (success, error).",
        ),
        config: family(
            "weir_config_reloads_total",
            "Applications of a changed config file or TLS files, by result (success, error).",
        ),
    }
});

/// Registers the reload series, so they show (at zero) before the first reload.
pub fn init_reloads() {
    LazyLock::force(&RELOADS);
}

/// Counts one plugin file load.
pub fn plugin_reloaded(ok: bool) {
    RELOADS.plugin[usize::from(!ok)].inc();
}

/// Counts one config file application.
pub fn config_reloaded(ok: bool) {
    RELOADS.config[usize::from(!ok)].inc();
}

/// Client connections: `weir_client_connections` open now, and
/// `weir_client_connections_closed_total{reason}` closed by the gateway for a limit:
/// `max_connections` (closed as accepted), `header_read_timeout`, `idle_timeout`,
/// `reset_flood` (requests abandoned too fast: HTTP/2 rapid reset).
#[derive(Debug)]
pub struct ClientConnections {
    /// Open now.
    pub open: IntGauge,
    /// Closed at `max_connections`.
    pub over_limit: IntCounter,
    /// Closed for a slow request head.
    pub header_timeout: IntCounter,
    /// Closed after `idle_timeout`.
    pub idle: IntCounter,
    /// Closed for abandoning requests too fast (HTTP/2 rapid reset).
    pub reset_flood: IntCounter,
}

/// The client connection series.
pub static CLIENT_CONNECTIONS: LazyLock<ClientConnections> = LazyLock::new(|| {
    let open = IntGauge::new("weir_client_connections", "Client connections open now.")
        .expect("static metric options are valid");
    let closed = IntCounterVec::new(
        Opts::new(
            "weir_client_connections_closed_total",
            "Client connections the gateway closed for a limit, by reason (max_connections, \
             header_read_timeout, idle_timeout, reset_flood).",
        ),
        &["reason"],
    )
    .expect("static metric options are valid");
    for collector in [
        Box::new(open.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(closed.clone()),
    ] {
        METRICS
            .registry
            .register(collector)
            .expect("each family is registered once");
    }
    ClientConnections {
        open,
        over_limit: closed.with_label_values(&["max_connections"]),
        header_timeout: closed.with_label_values(&["header_read_timeout"]),
        idle: closed.with_label_values(&["idle_timeout"]),
        reset_flood: closed.with_label_values(&["reset_flood"]),
    }
});

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
