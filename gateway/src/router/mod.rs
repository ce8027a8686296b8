//! The route table: finds the first route, in config order, whose conditions all hold.
//!
//! Matching reads only what the request already carries (host, normalised path, method,
//! headers, cookies) and allocates nothing. A route then names its upstream: one, or a
//! weighted split drawn per request ([`split`]), plus an optional mirror.

pub mod split;

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use http::{HeaderMap, HeaderName, Method};

use crate::config::{self, HeaderMatch, HostPattern, HostRewrite, PathPattern};
use crate::error::ProxyError;
use crate::path::{AmbiguousPaths, PathError, SlashPolicy, lenient_reading};
use crate::telemetry::metrics::{MirrorSeries, RouteSeries};

pub use split::{Destination, Split, Target};

/// The facts about a request that routing looks at.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// Host without port, as sent (case is ignored when matching).
    pub host: Option<&'a str>,
    /// The normalised path, without query.
    pub path: &'a str,
    /// The request method.
    pub method: &'a Method,
    /// The request headers.
    pub headers: &'a HeaderMap,
}

/// A compiled route.
#[derive(Debug)]
pub struct Route {
    /// The route's name, shared with logs and metrics.
    pub name: Arc<str>,
    /// Its position in the config (indexes per-route state such as plugin chains).
    pub index: usize,
    /// Where its requests go: one upstream cluster (its index in the snapshot), or a
    /// weighted split.
    pub target: Target,
    /// Where copies of its requests go, if anywhere.
    pub mirror: Option<MirrorTarget>,
    /// What `Host` the upstream sees.
    pub host_rewrite: HostRewrite,
    /// The largest request body it takes, in bytes.
    pub max_request_body: Option<u64>,
    /// Its request metrics, resolved once.
    pub series: RouteSeries,
    /// How it caches responses (`None`: it does not).
    pub cache: Option<Arc<crate::cache::RouteCaching>>,
    /// Whether gRPC-Web calls on it go upstream as gRPC ([`crate::grpc_web`]).
    pub grpc_web: bool,
    host: Option<HostPattern>,
    path: Option<PathPattern>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderMatch)>,
    cookies: Vec<(String, String)>,
}

/// A route's mirror, resolved for the request path.
#[derive(Debug)]
pub struct MirrorTarget {
    /// Index of the upstream cluster that gets the copies.
    pub upstream: usize,
    /// A request is mirrored when a uniform draw below [`MIRROR_SCALE`] falls below
    /// this (`percent` in millionths of the requests).
    pub threshold: u32,
    /// Its `weir_mirror_requests_total{route,result}` series.
    pub series: MirrorSeries,
    /// Shadow requests of the route in flight now.
    pub in_flight: Arc<AtomicUsize>,
    /// The most shadow requests in flight at once.
    pub max_in_flight: usize,
}

/// The resolution of [`MirrorTarget::threshold`]: one millionth of the requests.
pub const MIRROR_SCALE: u32 = 1_000_000;

impl MirrorTarget {
    /// Whether this request is sampled for mirroring (one cheap draw, no lock).
    pub fn sampled(&self) -> bool {
        self.threshold >= MIRROR_SCALE
            || (self.threshold > 0
                && crate::random::below(MIRROR_SCALE as usize) < self.threshold as usize)
    }
}

impl Route {
    fn matches(&self, req: &RequestFacts<'_>) -> bool {
        self.host_matches(req.host)
            && self.path_matches(req.path)
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self
                .headers
                .iter()
                .all(|(name, condition)| header_matches(req.headers, name, condition))
            && self
                .cookies
                .iter()
                .all(|(name, value)| cookie_matches(req.headers, name, value))
    }

    fn host_matches(&self, host: Option<&str>) -> bool {
        match (&self.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(HostPattern::Exact(want)), Some(host)) => host.eq_ignore_ascii_case(want),
            (Some(HostPattern::Suffix(suffix)), Some(host)) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            None => true,
            Some(PathPattern::Exact(want)) => path == want,
            Some(PathPattern::Prefix(prefix)) => {
                path.starts_with(prefix.as_str())
                    && (prefix.ends_with('/')
                        || path.len() == prefix.len()
                        || path.as_bytes()[prefix.len()] == b'/')
            }
        }
    }
}

fn header_matches(headers: &HeaderMap, name: &HeaderName, condition: &HeaderMatch) -> bool {
    match condition {
        HeaderMatch::Exact(value) => headers.get_all(name).iter().any(|v| v == value),
        HeaderMatch::Present(present) => headers.contains_key(name) == *present,
        HeaderMatch::Prefix(prefix) => headers
            .get_all(name)
            .iter()
            .any(|v| v.as_bytes().starts_with(prefix)),
    }
}

/// Whether a `Cookie` header of the request carries `name=value` (every `Cookie` header
/// is read: HTTP/2 clients may split them).
fn cookie_matches(headers: &HeaderMap, name: &str, value: &str) -> bool {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .any(|pair| {
            let pair = pair.trim_ascii();
            pair.len() == name.len() + 1 + value.len()
                && pair.starts_with(name.as_bytes())
                && pair[name.len()] == b'='
                && pair.ends_with(value.as_bytes())
        })
}

/// How request paths are read before routing: `[server] escaped_slashes` and
/// `ambiguous_paths`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    /// What `%2F` and `%5C` become.
    pub slashes: SlashPolicy,
    /// Whether a path that a lenient backend reads as another route is refused.
    pub ambiguous: AmbiguousPaths,
}

impl Default for PathRules {
    fn default() -> Self {
        PathRules {
            slashes: SlashPolicy::Keep,
            ambiguous: AmbiguousPaths::Reject,
        }
    }
}

/// All routes, in match order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    paths: PathRules,
}

impl RouteTable {
    /// Compiles validated route configs.
    pub fn new(routes: &[config::Route], paths: PathRules) -> RouteTable {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                name: Arc::from(r.name.as_str()),
                index,
                target: Target::new(&r.upstream),
                mirror: r.mirror.as_ref().map(|m| MirrorTarget {
                    upstream: m.upstream,
                    threshold: (m.percent / 100.0 * f64::from(MIRROR_SCALE)).round() as u32,
                    series: MirrorSeries::new(&r.name),
                    in_flight: Arc::default(),
                    max_in_flight: m.max_in_flight as usize,
                }),
                host_rewrite: r.host_rewrite.clone(),
                max_request_body: r.max_request_body,
                grpc_web: r.grpc_web,
                series: RouteSeries::new(&r.name),
                cache: r
                    .cache
                    .as_ref()
                    .map(|c| Arc::new(crate::cache::RouteCaching::new(&r.name, c))),
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                headers: r.headers.clone(),
                cookies: r.cookies.clone(),
            })
            .collect();
        RouteTable { routes, paths }
    }

    /// The first route whose conditions all hold.
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(req))
    }

    /// Routes a request whose `facts.path` is the path as sent: normalises it, finds its
    /// route, and (unless `ambiguous_paths = "forward"`) refuses a path whose
    /// [`lenient_reading`] hides a dot segment or matches another route, so no spelling
    /// of a path reaches a route's upstream past another route's plugins. Returns the
    /// route and the normalised path.
    pub fn resolve<'p>(
        &self,
        facts: RequestFacts<'p>,
    ) -> Result<(&Route, Cow<'p, str>), ProxyError> {
        let path = crate::path::normalize(facts.path, self.paths.slashes)?;
        let route = self
            .find(&RequestFacts {
                path: &path,
                ..facts
            })
            .ok_or(ProxyError::NoRoute)?;
        if self.paths.ambiguous == AmbiguousPaths::Reject
            && let Some(reading) = lenient_reading(&path)
        {
            let reading = reading?;
            let read_as = self.find(&RequestFacts {
                path: &reading,
                ..facts
            });
            if read_as.map(|r| r.index) != Some(route.index) {
                return Err(PathError::Ambiguous.into());
            }
        }
        Ok((route, path))
    }
}

/// The host a request is for: the URI's authority (HTTP/2 `:authority`, or an HTTP/1
/// absolute-form target), else the `Host` header; without the port.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Option<&'a str> {
    let raw = match uri.authority() {
        Some(a) => a.as_str(),
        None => headers.get(http::header::HOST)?.to_str().ok()?,
    };
    Some(strip_port(raw))
}

fn strip_port(authority: &str) -> &str {
    // Drop any userinfo, then the port; keep IPv6 literals in brackets whole.
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.starts_with('[') {
        return host
            .split_once(']')
            .map_or(host, |(h, _)| &host[..=h.len()]);
    }
    host.split_once(':').map_or(host, |(h, _)| h)
}

#[cfg(test)]
mod resolve_tests;

#[cfg(test)]
mod table_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn table(routes: &str) -> RouteTable {
        let text = format!("[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n{routes}");
        let config = config::Config::parse(Path::new("t.toml"), &text).unwrap();
        RouteTable::new(&config.routes, PathRules::default())
    }

    fn find<'a>(
        t: &'a RouteTable,
        host: Option<&str>,
        path: &str,
        method: Method,
    ) -> Option<&'a str> {
        find_with(t, host, path, method, &HeaderMap::new())
    }

    fn find_with<'a>(
        t: &'a RouteTable,
        host: Option<&str>,
        path: &str,
        method: Method,
        headers: &HeaderMap,
    ) -> Option<&'a str> {
        let facts = RequestFacts {
            host,
            path,
            method: &method,
            headers,
        };
        t.find(&facts).map(|r| &*r.name)
    }

    fn cookie(text: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.append(http::header::COOKIE, http::HeaderValue::from_static(text));
        headers
    }

    #[test]
    fn cookies_match_by_exact_name_and_value() {
        let t = table(
            "[[route]]\nname = \"canary\"\nupstream = \"u\"\nmatch = { cookies = { canary = \"1\" } }\n",
        );
        let hit = |text: &'static str| find_with(&t, None, "/", Method::GET, &cookie(text));
        assert_eq!(hit("canary=1"), Some("canary"));
        assert_eq!(hit("a=b; canary=1; c=d"), Some("canary"));
        assert_eq!(hit("a=b;canary=1"), Some("canary"));
        assert_eq!(hit("canary=10"), None);
        assert_eq!(hit("xcanary=1"), None);
        assert_eq!(hit("canary=2"), None);
        assert_eq!(hit("other=canary=1"), None);
        let mut split = cookie("a=b");
        split.append(
            http::header::COOKIE,
            http::HeaderValue::from_static("canary=1"),
        );
        assert_eq!(
            find_with(&t, None, "/", Method::GET, &split),
            Some("canary")
        );
    }

    #[test]
    fn headers_match_by_presence_and_prefix() {
        let t = table(
            "[[route]]\nname = \"present\"\nupstream = \"u\"\nmatch = { headers = { x-canary = { present = true } } }\n\
             [[route]]\nname = \"prefix\"\nupstream = \"u\"\nmatch = { headers = { user-agent = { prefix = \"beta/\" }, x-off = { present = false } } }\n",
        );
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut h = HeaderMap::new();
            for (n, v) in pairs {
                h.append(*n, http::HeaderValue::from_static(v));
            }
            h
        };
        let hit = |h: HeaderMap| find_with(&t, None, "/", Method::GET, &h).map(str::to_owned);
        assert_eq!(hit(with(&[("x-canary", "")])).as_deref(), Some("present"));
        assert_eq!(
            hit(with(&[("user-agent", "beta/2")])).as_deref(),
            Some("prefix")
        );
        assert_eq!(hit(with(&[("user-agent", "beta/2"), ("x-off", "1")])), None);
        assert_eq!(hit(with(&[("user-agent", "stable/2")])), None);
    }

    #[test]
    fn prefix_respects_segment_boundaries() {
        let t = table(
            "[[route]]\nname = \"users\"\nupstream = \"u\"\nmatch = { path_prefix = \"/users\" }\n",
        );
        assert_eq!(find(&t, None, "/users", Method::GET), Some("users"));
        assert_eq!(find(&t, None, "/users/1", Method::GET), Some("users"));
        assert_eq!(find(&t, None, "/usersx", Method::GET), None);
    }

    #[test]
    fn hosts_match_exactly_or_by_suffix() {
        let t = table(
            "[[route]]\nname = \"exact\"\nupstream = \"u\"\nmatch = { host = \"api.example.com\" }\n\
             [[route]]\nname = \"wild\"\nupstream = \"u\"\nmatch = { host = \"*.example.com\" }\n",
        );
        assert_eq!(
            find(&t, Some("API.example.com"), "/", Method::GET),
            Some("exact")
        );
        assert_eq!(
            find(&t, Some("a.b.example.com"), "/", Method::GET),
            Some("wild")
        );
        assert_eq!(find(&t, Some("example.com"), "/", Method::GET), None);
        assert_eq!(find(&t, None, "/", Method::GET), None);
    }

    #[test]
    fn strips_ports_and_userinfo() {
        assert_eq!(strip_port("a.com:80"), "a.com");
        assert_eq!(strip_port("u@a.com:80"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("a.com"), "a.com");
    }
}
