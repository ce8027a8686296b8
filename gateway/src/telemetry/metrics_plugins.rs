//! The series of plugins: the gateway's fixed ones per plugin ([`PluginSeries`],
//! [`KvSeries`]) and the counters and histograms plugins define themselves.

use super::*;

/// The fixed series of one plugin, resolved once so a call only touches atomics.
#[derive(Debug, Clone)]
pub struct PluginSeries {
    /// Call durations by phase, in [`PHASE_NAMES`] order.
    pub durations: [Histogram; 5],
    /// Failures by kind: trap, timeout, memory, error.
    pub failures: [IntCounter; 4],
    /// Dropped log lines.
    pub logs_dropped: IntCounter,
    /// Refusals by reason, in [`REFUSAL_REASONS`] order ([`Refusal`] indexes it).
    pub refusals: [IntCounter; 5],
}

/// What one plugin holds in the key-value store.
#[derive(Debug)]
pub struct KvSeries {
    /// `weir_kv_entries{plugin}`.
    pub entries: IntGauge,
    /// `weir_kv_bytes{plugin}`.
    pub bytes: IntGauge,
}

/// The `kind` label values of `weir_kv_errors_total`, in [`KvErrorSeries`] order.
pub const KV_ERROR_KINDS: [&str; 3] = ["timeout", "unavailable", "error"];

/// One plugin's `weir_kv_errors_total` series, by kind in [`KV_ERROR_KINDS`] order.
#[derive(Debug, Clone)]
pub struct KvErrorSeries(pub [IntCounter; 3]);

impl KvErrorSeries {
    /// The series of plugin `name`, present at 0 from the start.
    pub fn new(name: &str) -> KvErrorSeries {
        let m = &*METRICS;
        KvErrorSeries(KV_ERROR_KINDS.map(|kind| m.kv_errors.with_label_values(&[name, kind])))
    }
}

impl KvSeries {
    /// The series of plugin `name`.
    pub fn new(name: &str) -> KvSeries {
        let m = &*METRICS;
        KvSeries {
            entries: m.kv_entries.with_label_values(&[name]),
            bytes: m.kv_bytes.with_label_values(&[name]),
        }
    }
}

/// The `reason` label values of `weir_plugin_refusals_total`.
pub const REFUSAL_REASONS: [&str; 5] = [
    "edit",
    "local_response",
    "outbound_calls",
    "kv_full",
    "suspended",
];

/// Why the gateway refused a plugin something (an index into [`REFUSAL_REASONS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A header, path or status edit: a header the gateway owns, an invalid name or
    /// value, a message the phase may only read.
    Edit,
    /// A local response too large, or headers dropped from it.
    LocalResponse,
    /// `http-call` past the per-request limit.
    OutboundCalls,
    /// A key-value write past the plugin's bounds.
    KvFull,
    /// A call not made: the plugin was suspended after repeated failures.
    Suspended,
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
            refusals: REFUSAL_REASONS
                .map(|reason| m.plugin_refusals.with_label_values(&[name, reason])),
        }
    }

    /// Counts one refusal.
    pub fn refused(&self, why: Refusal) {
        self.refusals[why as usize].inc();
    }
}

/// A metric name a plugin chose, made valid for Prometheus: lower-case letters, digits
/// and `_` (anything else becomes `_`), starting with a letter.
pub(super) fn sanitize(name: &str) -> Option<String> {
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
