//! The route table: finds the first route, in config order, whose conditions all hold.
//!
//! Matching reads only what the request already carries (host, normalised path, method,
//! headers) and allocates nothing.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use crate::config::{self, HostPattern, HostRewrite, PathPattern};
use crate::telemetry::metrics::RouteSeries;

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
    /// Index of the upstream cluster in the snapshot.
    pub upstream: usize,
    /// What `Host` the upstream sees.
    pub host_rewrite: HostRewrite,
    /// Its request metrics, resolved once.
    pub series: RouteSeries,
    host: Option<HostPattern>,
    path: Option<PathPattern>,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl Route {
    fn matches(&self, req: &RequestFacts<'_>) -> bool {
        self.host_matches(req.host)
            && self.path_matches(req.path)
            && (self.methods.is_empty() || self.methods.contains(req.method))
            && self
                .headers
                .iter()
                .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value))
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

/// All routes, in match order.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Compiles validated route configs.
    pub fn new(routes: &[config::Route]) -> RouteTable {
        let routes = routes
            .iter()
            .enumerate()
            .map(|(index, r)| Route {
                name: Arc::from(r.name.as_str()),
                index,
                upstream: r.upstream,
                host_rewrite: r.host_rewrite.clone(),
                series: RouteSeries::new(&r.name),
                host: r.host.clone(),
                path: r.path.clone(),
                methods: r.methods.clone(),
                headers: r.headers.clone(),
            })
            .collect();
        RouteTable { routes }
    }

    /// The first route whose conditions all hold.
    pub fn find(&self, req: &RequestFacts<'_>) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(req))
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
mod tests {
    use super::*;
    use std::path::Path;

    fn table(routes: &str) -> RouteTable {
        let text = format!("[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n{routes}");
        let config = config::Config::parse(Path::new("t.toml"), &text).unwrap();
        RouteTable::new(&config.routes)
    }

    fn find<'a>(
        t: &'a RouteTable,
        host: Option<&str>,
        path: &str,
        method: Method,
    ) -> Option<&'a str> {
        let headers = HeaderMap::new();
        let facts = RequestFacts {
            host,
            path,
            method: &method,
            headers: &headers,
        };
        t.find(&facts).map(|r| &*r.name)
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
