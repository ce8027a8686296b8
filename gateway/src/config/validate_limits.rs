//! Validation of `[server.limits]` and `[kv]`: each bound within the range the gateway
//! can honour.

use std::ops::RangeInclusive;

use toml::Spanned;

use super::schema::KvBackendName;
use super::schema::{ClientLimitsConfig, KvConfig};
use super::validate::Checker;
use super::{ClientLimits, KvBackend, KvBounds, KvSettings, RedisSettings};

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

/// The key-value store (`[kv]`): its backend, its timeout and its per-plugin bounds.
pub(super) fn check_kv(c: &mut Checker<'_>, raw: &KvConfig) -> KvSettings {
    if raw.timeout > MAX_KV_TIMEOUT {
        c.error(
            &raw.backend.span(),
            "kv.timeout",
            format!(
                "timeout must be at most {}, not {}",
                humantime::format_duration(MAX_KV_TIMEOUT),
                humantime::format_duration(raw.timeout)
            ),
        );
    }
    KvSettings {
        bounds: check_kv_bounds(c, raw),
        backend: check_kv_backend(c, raw),
        timeout: raw.timeout.min(MAX_KV_TIMEOUT),
    }
}

/// The longest a key-value call may wait: a plugin call waits that long for it.
const MAX_KV_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `url` names a Redis server the client can connect to: `redis://` or
/// `rediss://` (TLS), a host, and optionally a port, a user, a password and a database.
pub(crate) fn check_redis_url(url: &str) -> Result<(), String> {
    use redis::IntoConnectionInfo;
    let shown = super::redact_url(url);
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss")) {
        return Err(format!(
            "`{shown}` is not a Redis URL: write `redis://HOST:PORT` (or `rediss://` for TLS)"
        ));
    }
    url.into_connection_info()
        .map(|_| ())
        .map_err(|e| format!("`{shown}` is not a valid Redis URL: {e}"))
}

/// `[kv] backend`, `url` and `password_env`: the URL must parse, and the password's
/// variable must be set, so that a bad one is refused when the config is loaded (a
/// reload keeps the previous config) rather than failing every call later.
fn check_kv_backend(c: &mut Checker<'_>, raw: &KvConfig) -> KvBackend {
    if *raw.backend.get_ref() == KvBackendName::Memory {
        for (key, value) in [
            ("url", &raw.url),
            ("password_env", &raw.password_env),
            ("ca", &raw.ca),
        ] {
            if let Some(value) = value {
                c.error(
                    &value.span(),
                    format!("kv.{key}"),
                    format!("`{key}` is only used with `backend = \"redis\"`"),
                );
            }
        }
        return KvBackend::Memory;
    }
    let Some(url) = &raw.url else {
        c.error(
            &raw.backend.span(),
            "kv.url",
            "`backend = \"redis\"` needs `url` (e.g. \"redis://127.0.0.1:6379\")",
        );
        return KvBackend::Memory;
    };
    if let Err(problem) = check_redis_url(url.get_ref()) {
        c.error(&url.span(), "kv.url", problem);
    }
    let password = raw
        .password_env
        .as_ref()
        .and_then(|var| c.env_value(var, "kv.password_env"));
    let ca_pem = raw.ca.as_ref().and_then(|ca| {
        let problem = if !url.get_ref().starts_with("rediss://") {
            "`ca` is only used with a `rediss://` (TLS) url".to_owned()
        } else {
            match std::fs::read(ca.get_ref()) {
                Ok(pem) if has_pem_certificate(&pem) => return Some(pem),
                Ok(_) => format!("`{}` holds no PEM certificate", ca.get_ref()),
                Err(e) => format!("cannot read `{}`: {e}", ca.get_ref()),
            }
        };
        c.error(&ca.span(), "kv.ca", problem);
        None
    });
    KvBackend::Redis(RedisSettings {
        url: url.get_ref().clone(),
        password_env: raw.password_env.as_ref().map(|v| v.get_ref().clone()),
        password,
        ca: raw.ca.as_ref().map(|ca| ca.get_ref().into()),
        ca_pem,
    })
}

/// Whether `pem` holds at least one PEM certificate.
fn has_pem_certificate(pem: &[u8]) -> bool {
    pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----")
}

/// The key-value store's per-plugin bounds.
fn check_kv_bounds(c: &mut Checker<'_>, raw: &KvConfig) -> KvBounds {
    let defaults = KvBounds::default();
    KvBounds {
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
