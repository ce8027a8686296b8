//! Prometheus metrics: one process-wide registry, the series DESIGN.md names, and the
//! series plugins define through the `metrics` import (`weir_plugin_NAME_total` counters
//! and `weir_plugin_NAME` histograms, labelled with the plugin). `/metrics` on the admin
//! listener renders [`render`].
//!
//! Labels have bounded cardinality: plugin names come from the plugins directory, phases
//! and failure kinds are fixed sets, and each plugin may define at most
//! [`MAX_PLUGIN_SERIES`] metrics of its own.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// Metrics a single plugin may define through the `metrics` import; more are dropped.
pub const MAX_PLUGIN_SERIES: usize = 100;

/// Buckets for plugin call durations: 5 µs to 250 ms.
const CALL_BUCKETS: &[f64] = &[
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25,
];

/// The registry and the fixed series.
struct Metrics {
    registry: Registry,
    plugin_call_duration: HistogramVec,
    plugin_failures: IntCounterVec,
    plugin_logs_dropped: IntCounterVec,
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
    for collector in [
        Box::new(plugin_call_duration.clone()) as Box<dyn prometheus::core::Collector>,
        Box::new(plugin_failures.clone()),
        Box::new(plugin_logs_dropped.clone()),
    ] {
        registry
            .register(collector)
            .expect("each static series is registered once");
    }
    Metrics {
        registry,
        plugin_call_duration,
        plugin_failures,
        plugin_logs_dropped,
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

/// The fixed series of one plugin, resolved once so a call only touches atomics.
#[derive(Debug, Clone)]
pub struct PluginSeries {
    /// Call durations by phase, in [`PHASE_NAMES`] order.
    pub durations: [Histogram; 5],
    /// Failures by kind: trap, timeout, memory, error.
    pub failures: [IntCounter; 4],
    /// Dropped log lines.
    pub logs_dropped: IntCounter,
}

/// The `phase` label values.
pub const PHASE_NAMES: [&str; 5] = [
    "request_headers",
    "request_body",
    "response_headers",
    "response_body",
    "log",
];

/// The `kind` label values.
pub const FAILURE_KINDS: [&str; 4] = ["trap", "timeout", "memory", "error"];

impl PluginSeries {
    /// The series of plugin `name`.
    pub fn new(name: &str) -> PluginSeries {
        let m = &*METRICS;
        PluginSeries {
            durations: PHASE_NAMES
                .map(|phase| m.plugin_call_duration.with_label_values(&[name, phase])),
            failures: FAILURE_KINDS.map(|kind| m.plugin_failures.with_label_values(&[name, kind])),
            logs_dropped: m.plugin_logs_dropped.with_label_values(&[name]),
        }
    }
}

/// A metric name a plugin chose, made valid for Prometheus: lower-case letters, digits
/// and `_` (anything else becomes `_`), starting with a letter.
fn sanitize(name: &str) -> Option<String> {
    let clean: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        })
        .collect();
    let clean = clean.trim_matches('_').to_owned();
    (clean.starts_with(|c: char| c.is_ascii_lowercase()) && clean.len() <= 100).then_some(clean)
}

/// The counter `weir_plugin_NAME_total{plugin}` a plugin defines; `None` when the name is
/// unusable or already a histogram.
pub fn plugin_counter(plugin: &str, name: &str) -> Option<IntCounter> {
    let full = format!("weir_plugin_{}_total", sanitize(name)?);
    let family = plugin_family(&full, || {
        IntCounterVec::new(
            Opts::new(full.clone(), "Counter defined by a plugin."),
            &["plugin"],
        )
        .ok()
        .map(PluginDefined::Counter)
    })?;
    match family {
        PluginDefined::Counter(vec) => Some(vec.with_label_values(&[plugin])),
        PluginDefined::Histogram(_) => None,
    }
}

/// The histogram `weir_plugin_NAME{plugin}` a plugin defines (Prometheus' default
/// buckets); `None` when the name is unusable or already a counter.
pub fn plugin_histogram(plugin: &str, name: &str) -> Option<Histogram> {
    let full = format!("weir_plugin_{}", sanitize(name)?);
    let family = plugin_family(&full, || {
        HistogramVec::new(
            HistogramOpts::new(full.clone(), "Histogram defined by a plugin."),
            &["plugin"],
        )
        .ok()
        .map(PluginDefined::Histogram)
    })?;
    match family {
        PluginDefined::Histogram(vec) => Some(vec.with_label_values(&[plugin])),
        PluginDefined::Counter(_) => None,
    }
}

/// The family named `full`, registered on first use. A name that clashes with another
/// registered series is refused (`None`).
fn plugin_family(
    full: &str,
    make: impl FnOnce() -> Option<PluginDefined>,
) -> Option<PluginDefined> {
    let mut defined = METRICS
        .plugin_defined
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some(family) = defined.get(full) {
        return Some(family.clone());
    }
    let family = make()?;
    let collector: Box<dyn prometheus::core::Collector> = match &family {
        PluginDefined::Counter(vec) => Box::new(vec.clone()),
        PluginDefined::Histogram(vec) => Box::new(vec.clone()),
    };
    METRICS.registry.register(collector).ok()?;
    defined.insert(full.to_owned(), family.clone());
    Some(family)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_are_sanitized_and_bounded() {
        assert_eq!(sanitize("Cache Hits!").as_deref(), Some("cache_hits"));
        assert_eq!(sanitize("9lives"), None);
        assert_eq!(sanitize("__"), None);
        assert_eq!(sanitize(&"a".repeat(101)), None);
    }

    #[test]
    fn plugin_series_render_and_types_do_not_clash() {
        plugin_counter("p", "unit_test_hits").unwrap().inc_by(3);
        assert!(plugin_histogram("p", "unit_test_hits_total").is_none());
        plugin_histogram("p", "unit_test_latency")
            .unwrap()
            .observe(0.5);
        let text = render();
        assert!(
            text.contains("weir_plugin_unit_test_hits_total{plugin=\"p\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("weir_plugin_unit_test_latency_count{plugin=\"p\"} 1"),
            "{text}"
        );
    }
}
