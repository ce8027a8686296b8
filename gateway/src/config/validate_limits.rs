//! Validation of `[server.limits]` and `[kv]`: each bound within the range the gateway
//! can honour.

use std::ops::RangeInclusive;

use toml::Spanned;

use super::schema::{ClientLimitsConfig, KvConfig};
use super::validate::Checker;
use super::{ClientLimits, KvSettings};

/// The typed limits; a bound out of its range is reported and its default kept.
pub(super) fn check_limits(c: &mut Checker<'_>, raw: &ClientLimitsConfig) -> ClientLimits {
    let defaults = ClientLimits::default();
    let max_header_bytes = within(
        c,
        "max_header_bytes",
        bytes(&raw.max_header_bytes),
        8 * 1024..=1024 * 1024,
        defaults.max_header_bytes,
    );
    let max_uri_bytes = within(
        c,
        "max_uri_bytes",
        bytes(&raw.max_uri_bytes),
        64..=max_header_bytes,
        defaults.max_uri_bytes.min(max_header_bytes),
    );
    ClientLimits {
        max_header_bytes,
        max_headers: within(
            c,
            "max_headers",
            count(&raw.max_headers),
            1..=1000,
            defaults.max_headers,
        ),
        max_uri_bytes,
        max_request_body: raw.max_request_body.map(|b| b.as_u64()),
        header_read_timeout: raw.header_read_timeout,
        idle_timeout: raw.idle_timeout,
        max_connections: within(
            c,
            "max_connections",
            count(&raw.max_connections),
            1..=10_000_000,
            defaults.max_connections,
        ),
        max_concurrent_streams: within(
            c,
            "max_concurrent_streams",
            count(&raw.max_concurrent_streams),
            1..=10_000,
            defaults.max_concurrent_streams as usize,
        ) as u32,
    }
}

/// A size as written, with its place.
fn bytes(value: &Spanned<bytesize::ByteSize>) -> Spanned<(i128, String)> {
    let size = value.get_ref();
    Spanned::new(
        value.span(),
        (i128::from(size.as_u64()), size.display().iec().to_string()),
    )
}

/// A count as written, with its place.
fn count(value: &Spanned<i64>) -> Spanned<(i128, String)> {
    Spanned::new(
        value.span(),
        (i128::from(*value.get_ref()), value.get_ref().to_string()),
    )
}

/// `value` when it is in `range`; else an error at `server.limits.KEY` and `fallback`.
fn within(
    c: &mut Checker<'_>,
    key: &str,
    value: Spanned<(i128, String)>,
    range: RangeInclusive<usize>,
    fallback: usize,
) -> usize {
    within_table(c, "server.limits", key, value, range, fallback)
}

/// `value` when it is in `range`; else an error at `TABLE.KEY` and `fallback`.
fn within_table(
    c: &mut Checker<'_>,
    table: &str,
    key: &str,
    value: Spanned<(i128, String)>,
    range: RangeInclusive<usize>,
    fallback: usize,
) -> usize {
    let (number, shown) = value.get_ref();
    match usize::try_from(*number) {
        Ok(n) if range.contains(&n) => n,
        _ => {
            c.error(
                &value.span(),
                format!("{table}.{key}"),
                format!(
                    "{key} must be from {} to {}, not {shown}",
                    range.start(),
                    range.end()
                ),
            );
            fallback
        }
    }
}

/// The key-value store's per-plugin bounds (`[kv]`).
pub(super) fn check_kv(c: &mut Checker<'_>, raw: &KvConfig) -> KvSettings {
    let defaults = KvSettings::default();
    KvSettings {
        max_entries: within_table(
            c,
            "kv",
            "max_entries",
            count(&raw.max_entries),
            1..=1_000_000_000,
            defaults.max_entries as usize,
        ) as u64,
        max_bytes: within_table(
            c,
            "kv",
            "max_bytes",
            bytes(&raw.max_bytes),
            1024..=1 << 40,
            defaults.max_bytes as usize,
        ) as u64,
    }
}
