//! Validation of `[[route]]` tables: the upstream or split, the mirror, `host_rewrite`,
//! and the match conditions (host, path, methods, headers, cookies). Every problem is
//! collected with its key path (`route[0].match.path_prefix`) and place.

use std::collections::HashMap;
use std::str::FromStr;

use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method, StatusCode};
use toml::Spanned;

use super::error::nearest;
use super::schema::{HeaderCondition, MatchConfig, RespondConfig, RouteConfig};
use super::schema_upstream::Protocol;
use super::validate::Checker;
use super::validate_plugin::check_plugin;
use super::{
    CacheSettings, ClientLimits, DirectResponse, HeaderMatch, HostPattern, HostRewrite,
    MAX_SPLIT_WEIGHT, Mirror, PathPattern, PluginSettings, Route, RouteUpstream, SplitTarget,
};

pub(super) fn check_routes(
    c: &mut Checker<'_>,
    raw: &[RouteConfig],
    upstreams: &HashMap<&str, usize>,
    defaults: &PluginSettings,
    limits: &ClientLimits,
    cache: &CacheSettings,
    protocols: &[(&str, Protocol)],
) -> Vec<Route> {
    let mut seen: HashMap<&str, ()> = HashMap::new();
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = format!("route[{i}]");
        c.name(&r.name, &format!("{key}.name"));
        if seen.insert(r.name.get_ref(), ()).is_some() {
            c.error(
                &r.name.span(),
                format!("{key}.name"),
                format!("duplicate route name `{}`", r.name.get_ref()),
            );
        }
        let upstream = check_route_upstream(c, &key, r, upstreams);
        let mirror = r.mirror.as_ref().and_then(|m| {
            let mkey = format!("{key}.mirror");
            let upstream = upstream_index(
                c,
                &format!("{mkey}.upstream"),
                r,
                &m.get_ref().upstream,
                upstreams,
            );
            let percent = match &m.get_ref().percent {
                None => 100.0,
                Some(p) if (0.0..=100.0).contains(p.get_ref()) => *p.get_ref(),
                Some(p) => {
                    c.error(
                        &p.span(),
                        format!("{mkey}.percent"),
                        format!("percent must be between 0 and 100, not {}", p.get_ref()),
                    );
                    100.0
                }
            };
            let max_in_flight = match &m.get_ref().max_in_flight {
                None => 64,
                Some(n) => match u32::try_from(*n.get_ref()) {
                    Ok(n) if (1..=100_000).contains(&n) => n,
                    _ => {
                        c.error(
                            &n.span(),
                            format!("{mkey}.max_in_flight"),
                            format!(
                                "max_in_flight must be a whole number from 1 to 100000, not {}",
                                n.get_ref()
                            ),
                        );
                        64
                    }
                },
            };
            Some(Mirror {
                upstream: upstream?,
                percent,
                max_in_flight,
            })
        });
        let host_rewrite = match (&r.host_rewrite, r.auto_host_rewrite) {
            (Some(h), true) => {
                c.error(
                    &h.span(),
                    format!("{key}.host_rewrite"),
                    "set either `host_rewrite` or `auto_host_rewrite`, not both",
                );
                HostRewrite::Preserve
            }
            (Some(h), false) => match HeaderValue::from_str(h.get_ref()) {
                Ok(v) if Authority::from_str(h.get_ref()).is_ok() => HostRewrite::Literal(v),
                _ => {
                    c.error(
                        &h.span(),
                        format!("{key}.host_rewrite"),
                        format!("`{}` is not a valid host", h.get_ref()),
                    );
                    HostRewrite::Preserve
                }
            },
            (None, true) => HostRewrite::Endpoint,
            (None, false) => HostRewrite::Preserve,
        };
        let plugins = r
            .plugins
            .iter()
            .enumerate()
            .filter_map(|(j, p)| check_plugin(c, &format!("{key}.plugins[{j}]"), p, defaults))
            .collect();
        let (host, path, methods, headers) = check_match(c, &key, &r.matcher);
        let cookies = check_cookies(c, &key, &r.matcher);
        let route_cache = r.cache.as_ref().and_then(|raw| {
            super::validate_cache::check_route_cache(c, &format!("{key}.cache"), raw, cache)
        });
        let grpc_web = check_grpc_web(c, &key, r, &upstream, protocols);
        out.push(Route {
            name: r.name.get_ref().clone(),
            host,
            path,
            methods,
            headers,
            cookies,
            upstream,
            mirror,
            host_rewrite,
            plugins,
            max_request_body: r
                .max_request_body
                .map(|b| b.as_u64())
                .or(limits.max_request_body),
            cache: route_cache,
            grpc_web,
        });
    }
    out
}

/// A route's `grpc_web`: its calls go upstream as gRPC, which needs HTTP/2, so every
/// upstream the route sends to must speak it (`protocols`: each upstream's name and
/// protocol, by index).
fn check_grpc_web(
    c: &mut Checker<'_>,
    key: &str,
    r: &RouteConfig,
    upstream: &RouteUpstream,
    protocols: &[(&str, Protocol)],
) -> bool {
    let Some(on) = r.grpc_web.as_ref().filter(|on| *on.get_ref()) else {
        return false;
    };
    // A route that responds itself was told already that `grpc_web` has no effect.
    for target in upstream.targets() {
        // An undefined upstream was reported already.
        let Some(&(cluster, protocol)) = protocols.get(target.upstream) else {
            continue;
        };
        if protocol != Protocol::Http2 {
            c.error(
                &on.span(),
                format!("{key}.grpc_web"),
                format!(
                    "gRPC-Web is translated to gRPC, which needs HTTP/2: set \
                     `protocol = \"http2\"` on upstream `{cluster}`"
                ),
            );
        }
    }
    true
}

/// A route's `upstream`, `split` or `respond`: exactly one of them, naming defined
/// upstreams.
fn check_route_upstream(
    c: &mut Checker<'_>,
    key: &str,
    r: &RouteConfig,
    upstreams: &HashMap<&str, usize>,
) -> RouteUpstream {
    let invalid = RouteUpstream::Single(usize::MAX);
    if let Some(respond) = &r.respond {
        if r.upstream.is_some() || r.split.is_some() {
            c.error(
                &respond.span(),
                format!("{key}.respond"),
                "set one of `upstream`, `split` or `respond`: a route that responds itself \
                 sends nothing upstream",
            );
        }
        let unused = [
            ("mirror", r.mirror.as_ref().map(|m| m.span())),
            ("host_rewrite", r.host_rewrite.as_ref().map(|h| h.span())),
            ("cache", r.cache.as_ref().map(|h| h.span())),
            ("grpc_web", r.grpc_web.as_ref().map(|h| h.span())),
            (
                "auto_host_rewrite",
                r.auto_host_rewrite.then(|| respond.span()),
            ),
        ];
        for (name, span) in unused {
            if let Some(span) = span {
                c.error(
                    &span,
                    format!("{key}.{name}"),
                    format!("`{name}` has no effect on a route that responds itself: remove it"),
                );
            }
        }
        return check_respond(c, &format!("{key}.respond"), respond.get_ref())
            .map_or(invalid, RouteUpstream::Respond);
    }
    match (&r.upstream, &r.split) {
        (Some(name), None) => RouteUpstream::Single(
            upstream_index(c, &format!("{key}.upstream"), r, name, upstreams).unwrap_or(usize::MAX),
        ),
        (Some(_), Some(split)) => {
            c.error(
                &split.span(),
                format!("{key}.split"),
                "set either `upstream` or `split`, not both",
            );
            invalid
        }
        (None, None) => {
            c.error(
                &r.name.span(),
                format!("{key}.upstream"),
                format!(
                    "route `{}` needs `upstream` (one upstream), `split` (a weighted split) or \
                     `respond` (a fixed answer)",
                    r.name.get_ref()
                ),
            );
            invalid
        }
        (None, Some(split)) => {
            if split.get_ref().is_empty() {
                c.error(
                    &split.span(),
                    format!("{key}.split"),
                    "a split needs at least one `{ upstream = \"...\", weight = N }` entry",
                );
                return invalid;
            }
            let mut targets = Vec::with_capacity(split.get_ref().len());
            let mut seen: HashMap<&str, ()> = HashMap::new();
            for (j, entry) in split.get_ref().iter().enumerate() {
                let ekey = format!("{key}.split[{j}]");
                let e = entry.get_ref();
                let upstream =
                    upstream_index(c, &format!("{ekey}.upstream"), r, &e.upstream, upstreams);
                if seen.insert(e.upstream.get_ref(), ()).is_some() {
                    c.error(
                        &e.upstream.span(),
                        format!("{ekey}.upstream"),
                        format!(
                            "upstream `{}` is listed twice in the split: give it one entry with the sum of the weights",
                            e.upstream.get_ref()
                        ),
                    );
                }
                let weight = match u32::try_from(*e.weight.get_ref()) {
                    Ok(w) if (1..=MAX_SPLIT_WEIGHT).contains(&w) => w,
                    _ => {
                        c.error(
                            &e.weight.span(),
                            format!("{ekey}.weight"),
                            format!(
                                "weight must be a whole number from 1 to {MAX_SPLIT_WEIGHT}, not {}",
                                e.weight.get_ref()
                            ),
                        );
                        1
                    }
                };
                if let Some(upstream) = upstream {
                    targets.push(SplitTarget { upstream, weight });
                }
            }
            RouteUpstream::Split(targets)
        }
    }
}

/// A route's `respond`: a final status (200 to 599), a body only where the status may
/// carry one, and a valid content type.
fn check_respond(c: &mut Checker<'_>, key: &str, r: &RespondConfig) -> Option<DirectResponse> {
    let status = match u16::try_from(*r.status.get_ref()).map(StatusCode::from_u16) {
        Ok(Ok(status)) if (200..=599).contains(&status.as_u16()) => Some(status),
        _ => {
            c.error(
                &r.status.span(),
                format!("{key}.status"),
                format!(
                    "status must be a final status code from 200 to 599, not {}",
                    r.status.get_ref()
                ),
            );
            None
        }
    };
    let body = r
        .body
        .as_ref()
        .map(|b| b.get_ref().clone())
        .unwrap_or_default();
    if let (Some(status), Some(b)) = (status, &r.body)
        && matches!(status.as_u16(), 204 | 304)
        && !b.get_ref().is_empty()
    {
        c.error(
            &b.span(),
            format!("{key}.body"),
            format!("a {status} response has no body: remove `body` or choose another status"),
        );
    }
    let content_type = match &r.content_type {
        Some(t) => match HeaderValue::from_str(t.get_ref()) {
            Ok(v) if !t.get_ref().trim().is_empty() => Some(v),
            _ => {
                c.error(
                    &t.span(),
                    format!("{key}.content_type"),
                    format!("`{}` is not a valid Content-Type value", t.get_ref()),
                );
                None
            }
        },
        None if !body.is_empty() => Some(HeaderValue::from_static("text/plain; charset=utf-8")),
        None => None,
    };
    Some(DirectResponse {
        status: status?,
        content_type,
        body: bytes::Bytes::from(body),
    })
}

/// The index of the upstream `name` names, or an error (with a did-you-mean) at `key`.
fn upstream_index(
    c: &mut Checker<'_>,
    key: &str,
    r: &RouteConfig,
    name: &Spanned<String>,
    upstreams: &HashMap<&str, usize>,
) -> Option<usize> {
    if let Some(&index) = upstreams.get(name.get_ref().as_str()) {
        return Some(index);
    }
    let help =
        nearest(name.get_ref(), upstreams.keys().copied()).map(|n| format!("did you mean `{n}`?"));
    c.error_with_help(
        &name.span(),
        key,
        format!(
            "route `{}` names upstream `{}`, which is not defined",
            r.name.get_ref(),
            name.get_ref()
        ),
        help,
    );
    None
}

/// Cookie conditions: names and values as RFC 6265 allows them.
fn check_cookies(c: &mut Checker<'_>, route_key: &str, m: &MatchConfig) -> Vec<(String, String)> {
    let mut cookies = Vec::with_capacity(m.cookies.len());
    for (name, value) in &m.cookies {
        let ckey = format!("{route_key}.match.cookies.{name}");
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b));
        let text = value.get_ref();
        let octets = text
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"\",;\\".contains(&b));
        if !token {
            c.error(
                &value.span(),
                ckey,
                format!("`{name}` is not a cookie name"),
            );
        } else if !octets {
            c.error(
                &value.span(),
                ckey,
                format!("`{text}` is not a valid cookie value (no spaces, quotes, commas, semicolons or backslashes)"),
            );
        } else {
            cookies.push((name.clone(), text.clone()));
        }
    }
    cookies
}

type Matchers = (
    Option<HostPattern>,
    Option<PathPattern>,
    Vec<Method>,
    Vec<(HeaderName, HeaderMatch)>,
);

fn check_match(c: &mut Checker<'_>, route_key: &str, m: &MatchConfig) -> Matchers {
    let key = format!("{route_key}.match");
    let host = m.host.as_ref().and_then(|h| {
        let text = h.get_ref().to_ascii_lowercase();
        let (pattern, bare) = match text.strip_prefix("*.") {
            Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_owned()),
            None => (HostPattern::Exact(text.clone()), text.clone()),
        };
        let valid = !bare.is_empty()
            && !bare.contains(':')
            && bare
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.');
        if valid {
            Some(pattern)
        } else {
            c.error(
                &h.span(),
                format!("{key}.host"),
                format!(
                    "`{}` is not a host pattern: write `api.example.com` or `*.example.com`, without a port",
                    h.get_ref()
                ),
            );
            None
        }
    });

    let path = match (&m.path, &m.path_prefix) {
        (Some(p), Some(_)) => {
            c.error(
                &p.span(),
                format!("{key}.path"),
                "set either `path` or `path_prefix`, not both",
            );
            None
        }
        (Some(p), None) => check_path(c, &format!("{key}.path"), p).map(PathPattern::Exact),
        (None, Some(p)) => check_path(c, &format!("{key}.path_prefix"), p).map(PathPattern::Prefix),
        (None, None) => None,
    };

    let mut methods = Vec::new();
    for (i, m) in m.methods.iter().enumerate() {
        let text = m.get_ref();
        let upper = text.to_ascii_uppercase();
        match Method::from_bytes(text.as_bytes()) {
            Ok(method) if *text == upper => methods.push(method),
            _ => {
                let help = Method::from_bytes(upper.as_bytes())
                    .is_ok()
                    .then(|| format!("methods are case-sensitive: did you mean `{upper}`?"));
                c.error_with_help(
                    &m.span(),
                    format!("{key}.methods[{i}]"),
                    format!("`{text}` is not an HTTP method"),
                    help,
                );
            }
        }
    }

    let mut headers = Vec::new();
    for (name, condition) in &m.headers {
        let hkey = format!("{key}.headers.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            c.error(
                &condition.span(),
                hkey,
                format!("`{name}` is not a header name"),
            );
            continue;
        };
        let matcher = match condition.get_ref() {
            HeaderCondition::Exact(value) => HeaderValue::from_str(value)
                .map(HeaderMatch::Exact)
                .map_err(|_| value),
            HeaderCondition::Prefix(prefix) => HeaderValue::from_str(prefix)
                .map(|_| HeaderMatch::Prefix(prefix.as_bytes().to_vec()))
                .map_err(|_| prefix),
            HeaderCondition::Present(present) => Ok(HeaderMatch::Present(*present)),
        };
        match matcher {
            Ok(matcher) => headers.push((header, matcher)),
            Err(value) => c.error(
                &condition.span(),
                hkey,
                format!("`{value}` is not a valid header value"),
            ),
        }
    }
    (host, path, methods, headers)
}

fn check_path(c: &mut Checker<'_>, key: &str, p: &Spanned<String>) -> Option<String> {
    let text = p.get_ref();
    match crate::path::normalize(text, crate::path::SlashPolicy::Keep) {
        Ok(normal) if normal == text.as_str() => Some(text.clone()),
        Ok(normal) => {
            c.error_with_help(
                &p.span(),
                key,
                format!("`{text}` is not a normalised path, so no request could match it"),
                Some(format!("did you mean `{normal}`?")),
            );
            None
        }
        Err(e) => {
            c.error(&p.span(), key, format!("`{text}`: {e}"));
            None
        }
    }
}
