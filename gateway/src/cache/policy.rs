//! RFC 9111's rules for a shared cache, from `http-cache-semantics` (which implements
//! them: storability, freshness, `Age`, `Vary`, request directives), plus what a
//! gateway adds: the route's `ttl_default` for responses that give no freshness, and no
//! storing of `Set-Cookie` or `Vary: *`.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use http_cache_semantics::{CacheOptions, CachePolicy, RequestLike, ResponseLike};

/// The request a policy is made from: only what the rules read later is kept (the
/// headers the response varies on, and whether it was authorised), so an entry holds
/// no client's cookies or credentials.
#[derive(Debug)]
pub struct Asked<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl RequestLike for Asked<'_> {
    fn uri(&self) -> Uri {
        self.uri.clone()
    }
    fn is_same_uri(&self, _other: &Uri) -> bool {
        // The cache key already names the URI.
        true
    }
    fn method(&self) -> &Method {
        self.method
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// A response head as the policy sees it.
struct Answered<'a> {
    status: StatusCode,
    headers: &'a HeaderMap,
}

impl ResponseLike for Answered<'_> {
    fn status(&self) -> StatusCode {
        self.status
    }
    fn headers(&self) -> &HeaderMap {
        self.headers
    }
}

/// Whether a `Cache-Control` list in `headers` has `directive` (case-insensitive, with
/// or without a value).
pub fn has_directive(headers: &HeaderMap, directive: &str) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| {
            let name = d.split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case(directive)
        })
}

/// Whether the response says how long it stays fresh.
fn explicit_freshness(headers: &HeaderMap) -> bool {
    headers.contains_key(header::EXPIRES)
        || has_directive(headers, "max-age")
        || has_directive(headers, "s-maxage")
}

/// Whether the response names a validator a revalidation can send back.
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// Whether the stored response may be served stale when the upstream fails: not when
/// it asks every use to be checked (`no-cache`, `must-revalidate`, `proxy-revalidate`,
/// `s-maxage`, which implies `proxy-revalidate`).
pub fn may_serve_stale(headers: &HeaderMap) -> bool {
    ![
        "no-cache",
        "must-revalidate",
        "proxy-revalidate",
        "s-maxage",
    ]
    .iter()
    .any(|d| has_directive(headers, d))
}

/// The request headers a policy keeps: those the response varies on, the request's
/// cache directives and `Host`, and whether it carried `Authorization` (not its value
/// unless the response varies on it).
pub fn kept_request_headers(request: &HeaderMap, response: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    let varied = response
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| !n.is_empty());
    for name in varied {
        if let Ok(name) = http::HeaderName::from_bytes(name.as_bytes()) {
            for value in request.get_all(&name) {
                kept.append(name.clone(), value.clone());
            }
        }
    }
    // The policy compares `Host` too (the key holds it already).
    for name in [header::CACHE_CONTROL, header::PRAGMA, header::HOST] {
        for value in request.get_all(&name) {
            kept.append(name.clone(), value.clone());
        }
    }
    if request.contains_key(header::AUTHORIZATION) && !kept.contains_key(header::AUTHORIZATION) {
        kept.insert(header::AUTHORIZATION, HeaderValue::from_static("(present)"));
    }
    kept
}

/// Why a response is not stored (for tests and the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    /// Not a `GET`.
    Method,
    /// RFC 9111 forbids it (status, `no-store`, `private`, `Authorization`, ...).
    Rules,
    /// `Vary: *`: no request could ever match it.
    VaryStar,
    /// `Set-Cookie`: a shared cache would hand one client's cookie to others.
    SetCookie,
    /// Zero freshness and no validator: it could never be used.
    Useless,
}

/// The policy for storing the response to `asked` (its headers trimmed by
/// [`kept_request_headers`]), `ttl_default` standing for the freshness of a response
/// that gives none.
pub fn storable(
    asked: &Asked<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    ttl_default: Duration,
    now: SystemTime,
) -> Result<CachePolicy, NotStored> {
    if *asked.method != Method::GET {
        return Err(NotStored::Method);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let vary_star = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|n| n.trim() == "*");
    if vary_star {
        return Err(NotStored::VaryStar);
    }
    let policy = policy(asked, status, headers, ttl_default, now);
    if !policy.is_storable() {
        return Err(NotStored::Rules);
    }
    if policy.time_to_live(now).is_zero() && !has_validator(headers) {
        return Err(NotStored::Useless);
    }
    Ok(policy)
}

/// The policy for a response, without the storability checks (a revalidated entry's
/// new head).
pub fn policy(
    asked: &Asked<'_>,
    status: StatusCode,
    headers: &HeaderMap,
    ttl_default: Duration,
    now: SystemTime,
) -> CachePolicy {
    let options = CacheOptions {
        shared: true,
        // The route's `ttl_default` replaces the heuristic freshness from `Last-Modified`.
        cache_heuristic: 0.0,
        ..CacheOptions::default()
    };
    let mut seen = None;
    if !explicit_freshness(headers) && !ttl_default.is_zero() {
        let mut with_default = headers.clone();
        let value = format!("max-age={}", ttl_default.as_secs().max(1));
        with_default.append(
            header::CACHE_CONTROL,
            HeaderValue::try_from(value).expect("digits are a valid header value"),
        );
        seen = Some(with_default);
    }
    let answered = Answered {
        status,
        headers: seen.as_ref().unwrap_or(headers),
    };
    CachePolicy::new_options(asked, &answered, now, options)
}

/// Whether a stored response with `policy` answers `asked` without asking the upstream
/// (fresh, and the request's `Vary` headers and directives allow it).
pub fn fresh_for(policy: &CachePolicy, asked: &Asked<'_>, now: SystemTime) -> bool {
    matches!(
        policy.before_request(asked, now),
        http_cache_semantics::BeforeRequest::Fresh(_)
    )
}

/// Whether `asked` is the same variant the policy was stored for (its `Vary` headers
/// match), fresh or not: only then may a revalidation or a stale answer use the entry.
pub fn same_variant(policy: &CachePolicy, asked: &Asked<'_>, now: SystemTime) -> bool {
    match policy.before_request(asked, now) {
        http_cache_semantics::BeforeRequest::Fresh(_) => true,
        http_cache_semantics::BeforeRequest::Stale { matches, .. } => matches,
    }
}

/// A plain `GET /` without headers (tests of the cache share it).
#[cfg(test)]
pub(crate) fn plain_get() -> Asked<'static> {
    static GET: Method = Method::GET;
    static ROOT: std::sync::LazyLock<Uri> = std::sync::LazyLock::new(|| Uri::from_static("/"));
    static NONE: std::sync::LazyLock<HeaderMap> = std::sync::LazyLock::new(HeaderMap::new);
    Asked {
        method: &GET,
        uri: &ROOT,
        headers: &NONE,
    }
}

/// The policy a `200` without headers gets for [`plain_get`]: fresh for 60 s from now
/// (tests of the cache share it).
#[cfg(test)]
pub(crate) fn plain_ok_policy() -> CachePolicy {
    let none = HeaderMap::new();
    let now = SystemTime::now();
    policy(
        &plain_get(),
        StatusCode::OK,
        &none,
        Duration::from_secs(60),
        now,
    )
}

#[cfg(test)]
#[path = "policy_tests.rs"]
mod tests;
