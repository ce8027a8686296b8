//! Validation of `[[upstream]]` tables: endpoints and weights, the balancer and what it
//! hashes, health checks, outlier detection, retries and limits. Every problem is
//! collected with its key path (`upstream[0].health.interval`) and place.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::HeaderName;
use http::uri::{Authority, PathAndQuery};
use toml::Spanned;

use super::Balancer;
use super::error::nearest;
use super::schema_upstream::{
    EndpointEntry, HealthConfig, LimitsConfig, OutlierConfig, RetriesConfig, UpstreamConfig,
};
use super::upstream::{
    DEFAULT_PANIC_THRESHOLD, Endpoint, HashOn, HealthCheck, Limits, MAX_WEIGHT, Outlier, RETRY_ON,
    Retries, RetryOn, Upstream,
};
use super::validate::Checker;

/// The largest sum of endpoint weights a `consistent_hash` cluster may have: its ring
/// holds [`crate::upstream`]'s points per unit of weight, and this bounds its size.
pub(crate) const MAX_HASH_WEIGHT_SUM: u64 = 4096;

pub(super) fn check_upstreams(c: &mut Checker<'_>, raw: &[UpstreamConfig]) -> Vec<Upstream> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, u) in raw.iter().enumerate() {
        let key = format!("upstream[{i}]");
        c.name(&u.name, &format!("{key}.name"));
        if !seen.insert(u.name.get_ref()) {
            c.error(
                &u.name.span(),
                format!("{key}.name"),
                format!("duplicate upstream name `{}`", u.name.get_ref()),
            );
        }
        let (endpoints, endpoints_file) = check_endpoint_source(c, &key, u);
        let hash_on = check_balancer(c, &key, u, &endpoints);
        let panic_threshold = u
            .panic_threshold
            .as_ref()
            .map_or(DEFAULT_PANIC_THRESHOLD, |p| {
                integer(c, p, &format!("{key}.panic_threshold"), 0, 100) as u8
            });
        let health = u
            .health
            .as_ref()
            .and_then(|h| check_health(c, &format!("{key}.health"), h));
        // Without their tables a cluster still sets aside endpoints that refuse
        // connections and retries what failed before an answer, as nginx does.
        let outlier = u
            .outlier
            .as_ref()
            .map_or_else(Outlier::connect_failures, |o| {
                check_outlier(c, &format!("{key}.outlier"), o)
            });
        let retries = u.retries.as_ref().map_or_else(Retries::implicit, |r| {
            check_retries(c, &format!("{key}.retries"), r)
        });
        let limits = u.limits.as_ref().map_or_else(Limits::default, |l| {
            check_limits(c, &format!("{key}.limits"), l)
        });
        out.push(Upstream {
            name: u.name.get_ref().clone(),
            endpoints,
            endpoints_file,
            balancer: u.balancer,
            hash_on,
            panic_threshold,
            health,
            outlier,
            retries,
            limits,
            timeouts: u.timeouts,
            protocol: u.protocol,
            tls: u
                .tls
                .as_ref()
                .and_then(|t| super::upstream_tls::check(c, &format!("{key}.tls"), t, u.protocol)),
            dns_refresh: u
                .dns_refresh
                .unwrap_or(super::upstream::DEFAULT_DNS_REFRESH),
        });
    }
    out
}

/// The endpoints of `u`: its `endpoints` list, or what its `endpoints_file` holds now
/// (exactly one of the two), and the file's path.
fn check_endpoint_source(
    c: &mut Checker<'_>,
    key: &str,
    u: &UpstreamConfig,
) -> (Vec<Endpoint>, Option<PathBuf>) {
    match (&u.endpoints, &u.endpoints_file) {
        (Some(_), Some(file)) => {
            c.error(
                &file.span(),
                format!("{key}.endpoints_file"),
                format!(
                    "upstream `{}` sets both `endpoints` and `endpoints_file`: keep one",
                    u.name.get_ref()
                ),
            );
            (Vec::new(), None)
        }
        (Some(list), None) => (check_endpoints(c, key, u, list), None),
        (None, Some(file)) => {
            let path = PathBuf::from(file.get_ref());
            let endpoints = match super::endpoints_file::read(&path, u.balancer) {
                Ok(endpoints) => endpoints,
                Err(e) => {
                    c.error(&file.span(), format!("{key}.endpoints_file"), e.to_string());
                    Vec::new()
                }
            };
            (endpoints, Some(path))
        }
        (None, None) => {
            c.error(
                &u.name.span(),
                format!("{key}.endpoints"),
                format!(
                    "upstream `{}` has no endpoints: set `endpoints` or `endpoints_file`",
                    u.name.get_ref()
                ),
            );
            (Vec::new(), None)
        }
    }
}

fn check_endpoints(
    c: &mut Checker<'_>,
    key: &str,
    u: &UpstreamConfig,
    list: &Spanned<Vec<Spanned<EndpointEntry>>>,
) -> Vec<Endpoint> {
    if list.get_ref().is_empty() {
        c.error(
            &list.span(),
            format!("{key}.endpoints"),
            format!("upstream `{}` has no endpoints", u.name.get_ref()),
        );
    }
    let mut endpoints = Vec::new();
    let mut addresses = HashSet::new();
    for (j, e) in list.get_ref().iter().enumerate() {
        let ekey = format!("{key}.endpoints[{j}]");
        match check_entry(e.get_ref(), &mut addresses) {
            Ok(endpoint) => endpoints.push(endpoint),
            Err(problems) => {
                for problem in problems {
                    match problem {
                        EntryProblem::Weight(why) => {
                            c.error(&e.span(), format!("{ekey}.weight"), why);
                        }
                        EntryProblem::Address(why) => c.error(&e.span(), ekey.clone(), why),
                    }
                }
            }
        }
    }
    endpoints
}

/// What is wrong with one endpoint entry.
#[derive(Debug)]
pub(super) enum EntryProblem {
    /// Its weight is out of range.
    Weight(String),
    /// Its address is not `host:port`, or another entry has it.
    Address(String),
}

/// One entry of `endpoints` (or of an endpoints file) as an endpoint; `seen` holds the
/// addresses of the entries before it, to refuse duplicates.
pub(super) fn check_entry(
    entry: &EndpointEntry,
    seen: &mut HashSet<Authority>,
) -> Result<Endpoint, Vec<EntryProblem>> {
    let EndpointEntry { address, weight } = entry;
    let mut problems = Vec::new();
    let weight = match weight {
        None => 1,
        Some(w) if (1..=i64::from(MAX_WEIGHT)).contains(w) => *w as u32,
        Some(w) => {
            problems.push(EntryProblem::Weight(format!(
                "weight {w} is out of range: write 1 to {MAX_WEIGHT}"
            )));
            1
        }
    };
    match parse_endpoint(address) {
        Ok(authority) if !seen.insert(authority.clone()) => {
            problems.push(EntryProblem::Address(format!(
                "endpoint `{address}` is listed twice (give it a weight instead)"
            )));
        }
        Ok(authority) if problems.is_empty() => return Ok(Endpoint { authority, weight }),
        Ok(_) => {}
        Err(why) => problems.push(EntryProblem::Address(why)),
    }
    Err(problems)
}

/// Checks `hash_on` against the balancer; returns what to hash for `consistent_hash`.
fn check_balancer(
    c: &mut Checker<'_>,
    key: &str,
    u: &UpstreamConfig,
    endpoints: &[Endpoint],
) -> Option<HashOn> {
    match (&u.hash_on, u.balancer) {
        (None, Balancer::ConsistentHash) => {
            c.error(
                &u.name.span(),
                format!("{key}.hash_on"),
                "balancer `consistent_hash` needs `hash_on`: \"header:NAME\", \"cookie:NAME\" or \"ip\"",
            );
            None
        }
        (None, _) => None,
        (Some(h), Balancer::ConsistentHash) => {
            let total: u64 = endpoints.iter().map(|e| u64::from(e.weight)).sum();
            if total > MAX_HASH_WEIGHT_SUM {
                let (span, which) = match (&u.endpoints, &u.endpoints_file) {
                    (Some(list), _) => (list.span(), "endpoints"),
                    (None, Some(file)) => (file.span(), "endpoints_file"),
                    (None, None) => (u.name.span(), "endpoints"),
                };
                c.error(
                    &span,
                    format!("{key}.{which}"),
                    format!(
                        "the weights of a `consistent_hash` upstream add up to {total}; at most \
                         {MAX_HASH_WEIGHT_SUM} (scale them down: only their ratios matter)"
                    ),
                );
            }
            parse_hash_on(c, &format!("{key}.hash_on"), h)
        }
        (Some(h), other) => {
            c.error(
                &h.span(),
                format!("{key}.hash_on"),
                format!(
                    "`hash_on` applies to balancer `consistent_hash` only, not `{}`",
                    other.as_str()
                ),
            );
            None
        }
    }
}

fn parse_hash_on(c: &mut Checker<'_>, key: &str, h: &Spanned<String>) -> Option<HashOn> {
    let text = h.get_ref();
    let parsed = match text.split_once(':') {
        None if text == "ip" => Some(HashOn::Ip),
        Some(("header", name)) => HeaderName::from_str(name).ok().map(HashOn::Header),
        Some(("cookie", name))
            if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b)) =>
        {
            Some(HashOn::Cookie(name.to_owned()))
        }
        _ => None,
    };
    if parsed.is_none() {
        c.error(
            &h.span(),
            key,
            format!(
                "`{text}` is not something to hash: write \"header:NAME\", \"cookie:NAME\" or \"ip\""
            ),
        );
    }
    parsed
}

/// `ip:port`, `[v6]:port` or `hostname:port`.
fn parse_endpoint(text: &str) -> Result<Authority, String> {
    let bad = || format!("`{text}` is not an endpoint address: write `host:port` or `ip:port`");
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!("endpoint `{text}` needs a non-zero port"));
        }
        return Authority::from_str(&addr.to_string()).map_err(|_| bad());
    }
    let (host, port) = text.rsplit_once(':').ok_or_else(bad)?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err(format!("endpoint `{text}` has an invalid port `{port}`")),
    }
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
        });
    if !host_ok {
        return Err(bad());
    }
    Authority::from_str(text).map_err(|_| bad())
}

fn check_health(
    c: &mut Checker<'_>,
    key: &str,
    raw: &Spanned<HealthConfig>,
) -> Option<HealthCheck> {
    let h = raw.get_ref();
    let Some(path) = &h.path else {
        c.error(
            &raw.span(),
            format!("{key}.path"),
            "health checks need a `path` to request, e.g. \"/healthz\"",
        );
        return None;
    };
    let mut check = HealthCheck::with_path(path.get_ref().clone());
    if !path.get_ref().starts_with('/') || PathAndQuery::from_str(path.get_ref()).is_err() {
        c.error(
            &path.span(),
            format!("{key}.path"),
            format!(
                "`{}` is not a path: write it like \"/healthz\"",
                path.get_ref()
            ),
        );
    }
    if let Some(d) = &h.interval {
        check.interval = duration(c, d, &format!("{key}.interval")).unwrap_or(check.interval);
    }
    if let Some(d) = &h.timeout {
        check.timeout = duration(c, d, &format!("{key}.timeout")).unwrap_or(check.timeout);
    }
    if let Some(n) = &h.healthy {
        check.healthy = integer(c, n, &format!("{key}.healthy"), 1, 100) as u32;
    }
    if let Some(n) = &h.unhealthy {
        check.unhealthy = integer(c, n, &format!("{key}.unhealthy"), 1, 100) as u32;
    }
    if let Some(list) = &h.expected_statuses {
        if list.get_ref().is_empty() {
            c.error(
                &list.span(),
                format!("{key}.expected_statuses"),
                "no status would pass: list codes (200) or ranges (\"200-399\")",
            );
        }
        check.expected_statuses = list
            .get_ref()
            .iter()
            .enumerate()
            .filter_map(|(i, v)| status_range(c, v, &format!("{key}.expected_statuses[{i}]")))
            .collect();
    }
    Some(check)
}

fn check_outlier(c: &mut Checker<'_>, key: &str, raw: &Spanned<OutlierConfig>) -> Outlier {
    let o = raw.get_ref();
    let mut outlier = Outlier::default();
    if let Some(n) = &o.consecutive_failures {
        outlier.consecutive_failures =
            integer(c, n, &format!("{key}.consecutive_failures"), 1, 1000) as u32;
    }
    if let Some(d) = &o.base_ejection {
        outlier.base_ejection =
            duration(c, d, &format!("{key}.base_ejection")).unwrap_or(outlier.base_ejection);
    }
    if let Some(d) = &o.max_ejection {
        outlier.max_ejection =
            duration(c, d, &format!("{key}.max_ejection")).unwrap_or(outlier.max_ejection);
    }
    if outlier.max_ejection < outlier.base_ejection {
        let span = o.max_ejection.as_ref().map_or(raw.span(), Spanned::span);
        c.error(
            &span,
            format!("{key}.max_ejection"),
            format!(
                "the longest ejection ({}) is shorter than the first ({})",
                humantime::format_duration(outlier.max_ejection),
                humantime::format_duration(outlier.base_ejection)
            ),
        );
    }
    if let Some(n) = &o.max_ejected_percent {
        outlier.max_ejected_percent =
            integer(c, n, &format!("{key}.max_ejected_percent"), 0, 100) as u8;
    }
    outlier
}

fn check_retries(c: &mut Checker<'_>, key: &str, raw: &Spanned<RetriesConfig>) -> Retries {
    let r = raw.get_ref();
    let mut retries = Retries::default();
    if let Some(n) = &r.attempts {
        retries.attempts = integer(c, n, &format!("{key}.attempts"), 0, 10) as u32;
    }
    if let Some(list) = &r.on {
        retries.on = RetryOn::default();
        for (i, name) in list.iter().enumerate() {
            let on = &mut retries.on;
            let flag = match name.get_ref().as_str() {
                "connect-failure" => &mut on.connect_failure,
                "reset" => &mut on.reset,
                "5xx" => &mut on.server_error,
                "gateway-error" => &mut on.gateway_error,
                "retriable-status-codes" => &mut on.retriable_statuses,
                other => {
                    let help = nearest(other, RETRY_ON).map(|n| format!("did you mean `{n}`?"));
                    c.error_with_help(
                        &name.span(),
                        format!("{key}.on[{i}]"),
                        format!(
                            "`{other}` is not a retry condition: write one of {}",
                            RETRY_ON.map(|n| format!("`{n}`")).join(", ")
                        ),
                        help,
                    );
                    continue;
                }
            };
            *flag = true;
        }
    }
    if let Some(list) = &r.retriable_statuses {
        retries.on.retriable_statuses = true;
        for (i, status) in list.iter().enumerate() {
            let code = integer(
                c,
                status,
                &format!("{key}.retriable_statuses[{i}]"),
                100,
                599,
            );
            retries.retriable_statuses.push(code as u16);
        }
    }
    if retries.on.retriable_statuses && retries.retriable_statuses.is_empty() {
        c.error(
            &raw.span(),
            format!("{key}.retriable_statuses"),
            "`retriable-status-codes` needs `retriable_statuses`, e.g. [409]",
        );
    }
    if let Some(d) = &r.per_try_timeout {
        retries.per_try_timeout = duration(c, d, &format!("{key}.per_try_timeout"));
    }
    retries.allow_non_idempotent = r.allow_non_idempotent.unwrap_or(false);
    if let Some(d) = &r.backoff_base {
        let base = duration(c, d, &format!("{key}.backoff_base")).unwrap_or(retries.backoff_base);
        retries.backoff_base = base;
        retries.backoff_max = base.saturating_mul(10);
    }
    if let Some(d) = &r.backoff_max {
        retries.backoff_max =
            duration(c, d, &format!("{key}.backoff_max")).unwrap_or(retries.backoff_max);
        if retries.backoff_max < retries.backoff_base {
            c.error(
                &d.span(),
                format!("{key}.backoff_max"),
                "the longest backoff is shorter than its base",
            );
        }
    }
    if let Some(n) = &r.budget_percent {
        retries.budget_percent = integer(c, n, &format!("{key}.budget_percent"), 0, 100) as u8;
    }
    if let Some(n) = &r.min_retry_concurrency {
        retries.min_retry_concurrency =
            integer(c, n, &format!("{key}.min_retry_concurrency"), 0, 100_000) as u32;
    }
    retries
}

fn check_limits(c: &mut Checker<'_>, key: &str, raw: &Spanned<LimitsConfig>) -> Limits {
    let l = raw.get_ref();
    let mut limits = Limits::default();
    let max = i64::from(u32::MAX);
    if let Some(n) = &l.max_connections {
        limits.max_connections = integer(c, n, &format!("{key}.max_connections"), 1, max) as u32;
    }
    if let Some(n) = &l.max_pending {
        limits.max_pending = integer(c, n, &format!("{key}.max_pending"), 0, max) as u32;
    }
    if let Some(n) = &l.max_requests {
        limits.max_requests = integer(c, n, &format!("{key}.max_requests"), 1, max) as u32;
    }
    limits
}

/// A status code (`204`) or an inclusive range (`"200-299"`).
fn status_range(
    c: &mut Checker<'_>,
    value: &Spanned<toml::Value>,
    key: &str,
) -> Option<(u16, u16)> {
    let code = |n: i64| u16::try_from(n).ok().filter(|n| (100..=599).contains(n));
    let parsed = match value.get_ref() {
        toml::Value::Integer(n) => code(*n).map(|n| (n, n)),
        toml::Value::String(text) => text.split_once('-').and_then(|(low, high)| {
            let low = code(low.trim().parse().ok()?)?;
            let high = code(high.trim().parse().ok()?)?;
            (low <= high).then_some((low, high))
        }),
        _ => None,
    };
    if parsed.is_none() {
        c.error(
            &value.span(),
            key,
            format!(
                "`{}` is not a status (100-599) or a range of them like \"200-299\"",
                value.get_ref()
            ),
        );
    }
    parsed
}

/// A duration longer than zero, written like `"500ms"` or `"5s"`.
fn duration(c: &mut Checker<'_>, value: &Spanned<String>, key: &str) -> Option<Duration> {
    let text = value.get_ref();
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => {
            c.error(&value.span(), key, "the duration must be longer than zero");
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            c.error(
                &value.span(),
                key,
                format!(
                    "invalid duration `{text}`: {e} (write it like \"500ms\", \"5s\" or \"1m\")"
                ),
            );
            None
        }
    }
}

/// An integer in `low..=high`; `low` (after an error) when it is not.
fn integer(c: &mut Checker<'_>, value: &Spanned<i64>, key: &str, low: i64, high: i64) -> i64 {
    let n = *value.get_ref();
    if (low..=high).contains(&n) {
        return n;
    }
    c.error(
        &value.span(),
        key,
        format!("{n} is out of range: write {low} to {high}"),
    );
    low
}
