//! The response cache's series: `weir_cache_hits_total{route}`,
//! `weir_cache_misses_total{route}`, `weir_cache_stale_total{route}` (served stale
//! because the upstream failed), `weir_cache_evictions_total{route}` (removed to make
//! room), and `weir_cache_bytes` (what all entries weigh now).

use super::*;

/// The cache's families, registered on first use.
struct CacheFamilies {
    hits: IntCounterVec,
    misses: IntCounterVec,
    stale: IntCounterVec,
    evictions: IntCounterVec,
    bytes: IntGauge,
}

static CACHE: LazyLock<CacheFamilies> = LazyLock::new(|| {
    let family = |name: &str, help: &str| {
        let vec = IntCounterVec::new(Opts::new(name, help), &["route"])
            .expect("static metric options are valid");
        METRICS
            .registry
            .register(Box::new(vec.clone()))
            .expect("each static series is registered once");
        vec
    };
    let bytes = IntGauge::new(
        "weir_cache_bytes",
        "Bytes the response cache holds now (bodies, headers, keys and a fixed overhead \
         per entry; [cache] memory bounds it).",
    )
    .expect("static metric options are valid");
    METRICS
        .registry
        .register(Box::new(bytes.clone()))
        .expect("each static series is registered once");
    CacheFamilies {
        hits: family(
            "weir_cache_hits_total",
            "Requests on a cached route answered from the cache (fresh, or revalidated \
             with a 304).",
        ),
        misses: family(
            "weir_cache_misses_total",
            "Requests on a cached route that went to the upstream for their response.",
        ),
        stale: family(
            "weir_cache_stale_total",
            "Requests answered with a stale entry because the upstream failed.",
        ),
        evictions: family(
            "weir_cache_evictions_total",
            "Entries removed from the cache to make room for others.",
        ),
        bytes,
    }
});

/// A cached route's series, resolved once.
#[derive(Debug, Clone)]
pub struct CacheSeries {
    /// `weir_cache_hits_total{route}`.
    pub hits: IntCounter,
    /// `weir_cache_misses_total{route}`.
    pub misses: IntCounter,
    /// `weir_cache_stale_total{route}`.
    pub stale: IntCounter,
    /// `weir_cache_evictions_total{route}`.
    pub evictions: IntCounter,
}

impl CacheSeries {
    /// The series of route `route`.
    pub fn new(route: &str) -> CacheSeries {
        CacheSeries {
            hits: CACHE.hits.with_label_values(&[route]),
            misses: CACHE.misses.with_label_values(&[route]),
            stale: CACHE.stale.with_label_values(&[route]),
            evictions: CACHE.evictions.with_label_values(&[route]),
        }
    }
}

/// `weir_cache_bytes`.
pub fn cache_bytes() -> &'static IntGauge {
    &CACHE.bytes
}
