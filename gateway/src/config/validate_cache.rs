//! Validation of `[cache]` and a route's `cache`: the memory budget, the status header,
//! and each route's freshness default, entry size and key headers.

use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::schema::{CacheConfig, RouteCacheConfig};
use super::validate::Checker;
use super::{CacheSettings, RouteCache};

/// The smallest and largest `[cache] memory`.
const MEMORY: std::ops::RangeInclusive<u64> = 1024..=(1 << 40);
/// The largest `max_entry_size`: entries are weighed in `u32`.
const MAX_ENTRY_SIZE: u64 = 1 << 30;
/// The longest `ttl_default` (a year).
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// `[cache]`.
pub(super) fn check_cache(c: &mut Checker<'_>, raw: &CacheConfig) -> CacheSettings {
    let defaults = CacheSettings::default();
    let memory = raw.memory.get_ref().as_u64();
    let memory = if MEMORY.contains(&memory) {
        memory
    } else {
        c.error(
            &raw.memory.span(),
            "cache.memory",
            format!(
                "memory must be from 1KiB to 1TiB, not {}",
                raw.memory.get_ref().display().iec()
            ),
        );
        defaults.memory
    };
    let header = match raw.header.get_ref().as_str() {
        "" => None,
        name => match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) if !crate::hop_by_hop::is_hop_by_hop(&name) => Some(name),
            _ => {
                c.error(
                    &raw.header.span(),
                    "cache.header",
                    format!(
                        "`{name}` is not a header name the gateway may set (write \"\" for no header)"
                    ),
                );
                defaults.header
            }
        },
    };
    CacheSettings { memory, header }
}

/// A route's `cache` (at `key`), within the `[cache]` budget.
pub(super) fn check_route_cache(
    c: &mut Checker<'_>,
    key: &str,
    raw: &Spanned<RouteCacheConfig>,
    shared: &CacheSettings,
) -> Option<RouteCache> {
    let before = c.problem_count();
    let r = raw.get_ref();
    // A span inside the table when the key was written, else the table's.
    let at = |span: std::ops::Range<usize>| if span.is_empty() { raw.span() } else { span };
    if r.ttl_default > MAX_TTL {
        c.error(
            &raw.span(),
            format!("{key}.ttl_default"),
            format!(
                "ttl_default must be at most a year, not {}",
                humantime::format_duration(r.ttl_default)
            ),
        );
    }
    let size = r.max_entry_size.get_ref().as_u64();
    if size == 0 || size > MAX_ENTRY_SIZE.min(shared.memory) {
        c.error(
            &at(r.max_entry_size.span()),
            format!("{key}.max_entry_size"),
            format!(
                "max_entry_size must be from 1B to {} (and within [cache] memory, {}), not {}",
                bytesize::ByteSize::b(MAX_ENTRY_SIZE).display().iec(),
                bytesize::ByteSize::b(shared.memory).display().iec(),
                r.max_entry_size.get_ref().display().iec()
            ),
        );
    }
    let mut vary: Vec<HeaderName> = Vec::with_capacity(r.vary.len());
    for (i, name) in r.vary.iter().enumerate() {
        let vkey = format!("{key}.vary[{i}]");
        match HeaderName::from_bytes(name.get_ref().as_bytes()) {
            Ok(header) if vary.contains(&header) => c.error(
                &name.span(),
                vkey,
                format!("`{}` is named twice", name.get_ref()),
            ),
            Ok(header) => vary.push(header),
            Err(_) => c.error(
                &name.span(),
                vkey,
                format!("`{}` is not a valid header name", name.get_ref()),
            ),
        }
    }
    (c.problem_count() == before).then(|| RouteCache {
        ttl_default: r.ttl_default,
        max_entry_size: size,
        vary,
    })
}
