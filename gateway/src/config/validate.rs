//! Semantic validation: turns a parsed [`ConfigFile`] into a typed [`Config`], collecting
//! every problem instead of stopping at the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::str::FromStr;

use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method};
use toml::Spanned;

use super::error::{Diagnostic, Source, nearest};
use super::schema::{ConfigFile, HeaderCondition, MatchConfig, PluginRef, RouteConfig};
use super::{
    Admin, Config, ConfigError, HeaderMatch, HostPattern, HostRewrite, Isolation, MAX_SPLIT_WEIGHT,
    Mirror, OnError, Overrides, PathPattern, PluginSettings, PluginUse, Plugins, Reload, Route,
    RouteUpstream, Server, SplitTarget,
};

/// Collects the problems found in one config file.
pub(super) struct Checker<'a> {
    source: &'a Source<'a>,
    problems: Vec<Diagnostic>,
}

impl Checker<'_> {
    /// How many problems were found so far.
    pub(super) fn problem_count(&self) -> usize {
        self.problems.len()
    }

    /// Records a problem with the value at `span`, whose dotted path is `key`.
    pub(super) fn error(
        &mut self,
        span: &Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems
            .push(self.source.diagnostic(span, key, message));
    }

    pub(super) fn error_with_help(
        &mut self,
        span: &Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let mut diag = self.source.diagnostic(span, key, message);
        diag.help = help;
        self.problems.push(diag);
    }

    fn socket_addr(&mut self, value: &Spanned<String>, key: &str) -> Option<SocketAddr> {
        match value.get_ref().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.error(
                    &value.span(),
                    key,
                    format!(
                        "`{}` is not an IP address with a port (e.g. \"127.0.0.1:8080\")",
                        value.get_ref()
                    ),
                );
                None
            }
        }
    }

    pub(super) fn name(&mut self, value: &Spanned<String>, key: &str) {
        let name = value.get_ref();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            self.error(
                &value.span(),
                key,
                format!(
                    "name `{name}` must be non-empty and use only letters, digits, `-`, `_` and `.`"
                ),
            );
        }
    }
}

pub(super) fn validate(source: &Source<'_>, raw: ConfigFile) -> Result<Config, ConfigError> {
    let mut c = Checker {
        source,
        problems: Vec::new(),
    };

    let listen = c.socket_addr(&raw.server.listen, "server.listen");
    let admin_listen = c.socket_addr(&raw.admin.listen, "admin.listen");
    if let (Some(a), Some(b)) = (listen, admin_listen)
        && a == b
        && a.port() != 0
    {
        c.error(
            &raw.admin.listen.span(),
            "admin.listen",
            format!("the admin listener cannot share the client listener's address {a}"),
        );
    }
    let token = raw.admin.token_env.as_ref().and_then(|var| {
        let problem = match std::env::var(var.get_ref()) {
            Ok(token) if !token.trim().is_empty() => return Some(token.trim().to_owned()),
            Ok(_) => format!("environment variable `{}` is empty", var.get_ref()),
            Err(std::env::VarError::NotPresent) => {
                format!("environment variable `{}` is not set", var.get_ref())
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                format!(
                    "environment variable `{}` is not valid UTF-8",
                    var.get_ref()
                )
            }
        };
        c.error(&var.span(), "admin.token_env", problem);
        None
    });
    let admin = admin_listen.map(|listen| Admin {
        listen,
        token,
        token_env: raw.admin.token_env.as_ref().map(|v| v.get_ref().clone()),
    });
    if let Some(problem) = admin.as_ref().and_then(Admin::exposure_problem)
        && raw.admin.token_env.is_none()
    {
        c.error(&raw.admin.listen.span(), "admin.listen", problem);
    }
    let workers = raw.server.workers.as_ref().map(|w| *w.get_ref());
    if let Some(w) = &raw.server.workers
        && *w.get_ref() == 0
    {
        c.error(&w.span(), "server.workers", "workers must be at least 1");
    }
    let pseudonym = raw.server.via.get_ref();
    let pseudonym_ok = !pseudonym.is_empty()
        && pseudonym
            .chars()
            .all(|ch| ch.is_ascii_graphic() && ch != ',');
    let via = match pseudonym_ok {
        true => Some(pseudonym.clone()),
        _ => {
            c.error(
                &raw.server.via.span(),
                "server.via",
                format!("`{pseudonym}` is not a valid Via pseudonym"),
            );
            None
        }
    };

    let tls = raw
        .server
        .tls
        .as_ref()
        .map(|t| super::tls::check(&mut c, t));

    let p = &raw.plugins;
    let defaults = settings(
        &PluginSettings::default(),
        p.memory_limit,
        p.timeout,
        p.on_error,
        p.isolation,
        p.max_body_bytes,
        p.max_outbound_calls,
    );
    let upstreams = super::validate_upstream::check_upstreams(&mut c, &raw.upstreams);
    let names: HashMap<&str, usize> = raw
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.get_ref().as_str(), i))
        .collect();
    let routes = check_routes(&mut c, &raw.routes, &names, &defaults);

    if !c.problems.is_empty() {
        c.problems.sort_by_key(|d| (d.line, d.column));
        return Err(ConfigError::Invalid(c.problems));
    }
    // Every `None` above pushed a problem, so these are all present here.
    let (Some(listen), Some(admin), Some(via)) = (listen, admin, via) else {
        unreachable!("a missing value always comes with a problem")
    };
    Ok(Config {
        source: source.file.to_owned(),
        server: Server {
            listen,
            workers,
            shutdown_grace: raw.server.shutdown_grace,
            access_log: raw.server.access_log,
            escaped_slashes: raw.server.escaped_slashes,
            via,
            trace_context: raw.server.trace_context,
            tls: tls.flatten(),
        },
        admin,
        plugins: Plugins {
            dir: raw.plugins.dir.into(),
            cache_dir: match raw.plugins.cache_dir {
                Some(dir) => Some(dir.into()),
                None => dirs::cache_dir().map(|d| d.join("weir")),
            },
            defaults,
        },
        reload: Reload {
            watch: raw.reload.watch,
            debounce: raw.reload.debounce,
        },
        overrides: Overrides::default(),
        upstreams,
        routes,
    })
}

fn check_routes(
    c: &mut Checker<'_>,
    raw: &[RouteConfig],
    upstreams: &HashMap<&str, usize>,
    defaults: &PluginSettings,
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
        });
    }
    out
}

/// A route's `upstream` or `split`: exactly one of them, naming defined upstreams.
fn check_route_upstream(
    c: &mut Checker<'_>,
    key: &str,
    r: &RouteConfig,
    upstreams: &HashMap<&str, usize>,
) -> RouteUpstream {
    let invalid = RouteUpstream::Single(usize::MAX);
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
                    "route `{}` needs `upstream` (one upstream) or `split` (a weighted split)",
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

fn settings(
    base: &PluginSettings,
    memory_limit: Option<bytesize::ByteSize>,
    timeout: Option<std::time::Duration>,
    on_error: Option<OnError>,
    isolation: Option<Isolation>,
    max_body_bytes: Option<bytesize::ByteSize>,
    max_outbound_calls: Option<u32>,
) -> PluginSettings {
    PluginSettings {
        memory_limit: memory_limit.map_or(base.memory_limit, |b| b.as_u64()),
        timeout: timeout.unwrap_or(base.timeout),
        on_error: on_error.unwrap_or(base.on_error),
        isolation: isolation.unwrap_or(base.isolation),
        max_body_bytes: max_body_bytes.map_or(base.max_body_bytes, |b| b.as_u64()),
        max_outbound_calls: max_outbound_calls.unwrap_or(base.max_outbound_calls),
    }
}

/// Resolves a plugin config's `NAME_env` keys: each names an environment variable of
/// the gateway, which the plugin cannot read (its sandbox has no environment). The
/// plugin gets `{ name = "VAR", value = "..." }` in its place. Returns the keys whose
/// variable is unset or not UTF-8, with what is wrong (never the value).
fn resolve_env_keys(config: &mut toml::Table) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for (key, value) in config.iter_mut() {
        if !key.ends_with("_env") {
            continue;
        }
        let toml::Value::String(var) = value else {
            continue;
        };
        match std::env::var(var.as_str()) {
            Ok(contents) => {
                let mut resolved = toml::Table::new();
                resolved.insert("name".to_owned(), toml::Value::String(var.clone()));
                resolved.insert("value".to_owned(), toml::Value::String(contents));
                *value = toml::Value::Table(resolved);
            }
            Err(std::env::VarError::NotPresent) => problems.push((
                key.clone(),
                format!("environment variable `{var}` is not set"),
            )),
            Err(std::env::VarError::NotUnicode(_)) => problems.push((
                key.clone(),
                format!("environment variable `{var}` is not valid UTF-8"),
            )),
        }
    }
    problems
}

fn check_plugin(
    c: &mut Checker<'_>,
    key: &str,
    p: &PluginRef,
    defaults: &PluginSettings,
) -> Option<PluginUse> {
    let name = p.name.get_ref();
    if name.is_empty()
        || !name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
    {
        c.error(
            &p.name.span(),
            format!("{key}.name"),
            format!("plugin name `{name}` must use only a-z, 0-9, `-` and `_` (it names the file NAME.wasm)"),
        );
        return None;
    }
    let settings = settings(
        defaults,
        p.memory_limit,
        p.timeout,
        p.on_error,
        p.isolation,
        p.max_body_bytes,
        p.max_outbound_calls,
    );
    if settings.memory_limit < 1024 * 1024 {
        c.error(
            &p.name.span(),
            format!("{key}.memory_limit"),
            "memory_limit must be at least 1MiB",
        );
    }
    let mut plugin_config = p.config.clone().unwrap_or_default();
    for (env_key, problem) in resolve_env_keys(&mut plugin_config) {
        c.error(&p.name.span(), format!("{key}.config.{env_key}"), problem);
    }
    let config_json = match serde_json::to_string(&plugin_config) {
        Ok(json) => json,
        Err(e) => {
            c.error(
                &p.name.span(),
                format!("{key}.config"),
                format!("cannot pass this config to the plugin: {e}"),
            );
            return None;
        }
    };
    Some(PluginUse {
        name: name.clone(),
        config_json,
        allowed_hosts: p
            .allowed_hosts
            .iter()
            .map(|h| h.to_ascii_lowercase())
            .collect(),
        settings,
    })
}
