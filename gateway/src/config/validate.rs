//! Semantic validation: turns a parsed [`ConfigFile`] into a typed [`Config`], collecting
//! every problem instead of stopping at the first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;

use toml::Spanned;

use super::error::{Diagnostic, Source};
use super::schema::{ConfigFile, ServerConfig};
use super::validate_plugin::settings;
use super::validate_route::check_routes;
use super::{Admin, Config, ConfigError, Overrides, PluginSettings, Plugins, Reload, Server};

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

    /// The value of the environment variable `var` names (a secret the config refers to
    /// rather than holds), or a problem recorded at `var` when it is unset, not UTF-8 or
    /// blank.
    pub(super) fn env_value(&mut self, var: &Spanned<String>, key: &str) -> Option<String> {
        let name = var.get_ref();
        let problem = match std::env::var(name) {
            Ok(value) if !value.trim().is_empty() => return Some(value),
            Ok(_) => format!("environment variable `{name}` is empty"),
            Err(std::env::VarError::NotPresent) => {
                format!("environment variable `{name}` is not set")
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                format!("environment variable `{name}` is not valid UTF-8")
            }
        };
        self.error(&var.span(), key, problem);
        None
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
    let token = raw
        .admin
        .token_env
        .as_ref()
        .and_then(|var| c.env_value(var, "admin.token_env"))
        .map(|token| token.trim().to_owned());
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

    let (trusted_proxies, strip_client_headers) = check_forwarding(&mut c, &raw.server);
    let limits = super::validate_limits::check_limits(&mut c, &raw.server.limits);
    let kv = super::validate_limits::check_kv(&mut c, &raw.kv);
    let cache = super::validate_cache::check_cache(&mut c, &raw.cache);

    let tls = raw
        .server
        .tls
        .as_ref()
        .map(|t| super::tls::check(&mut c, t));

    let p = &raw.plugins;
    let mut defaults = settings(
        &PluginSettings::default(),
        p.memory_limit,
        p.timeout,
        p.on_error,
        p.isolation,
        p.max_body_bytes,
        p.max_outbound_calls,
    );
    defaults.max_reuse = super::validate_plugin::max_reuse(
        &mut c,
        "plugins.max_reuse",
        p.max_reuse.as_ref(),
        defaults.max_reuse,
    );
    let upstreams = super::validate_upstream::check_upstreams(&mut c, &raw.upstreams);
    let names: HashMap<&str, usize> = raw
        .upstreams
        .iter()
        .enumerate()
        .map(|(i, u)| (u.name.get_ref().as_str(), i))
        .collect();
    let protocols: Vec<(&str, super::Protocol)> = raw
        .upstreams
        .iter()
        .map(|u| (u.name.get_ref().as_str(), u.protocol))
        .collect();
    let routes = check_routes(
        &mut c,
        &raw.routes,
        &names,
        &defaults,
        &limits,
        &cache,
        &protocols,
    );

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
            handover_timeout: raw.server.handover_timeout,
            access_log: raw.server.access_log,
            escaped_slashes: raw.server.escaped_slashes,
            ambiguous_paths: raw.server.ambiguous_paths,
            trusted_proxies,
            strip_client_headers,
            via,
            trace_context: raw.server.trace_context,
            tls: tls.flatten(),
            limits,
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
        kv,
        cache,
        overrides: Overrides::default(),
        upstreams,
        routes,
    })
}

/// `[server] trusted_proxies` (CIDRs or plain addresses) and `strip_client_headers`
/// (header names; hop-by-hop ones and `Host` are refused, as the gateway handles them).
fn check_forwarding(
    c: &mut Checker<'_>,
    server: &ServerConfig,
) -> (Vec<ipnet::IpNet>, Vec<http::HeaderName>) {
    let mut trusted = Vec::with_capacity(server.trusted_proxies.len());
    for (i, entry) in server.trusted_proxies.iter().enumerate() {
        let text = entry.get_ref().trim();
        let parsed = text
            .parse::<ipnet::IpNet>()
            .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match parsed {
            Ok(net) => trusted.push(net.trunc()),
            Err(_) => c.error(
                &entry.span(),
                format!("server.trusted_proxies[{i}]"),
                format!(
                    "`{}` is not an address or a CIDR block (`10.0.0.0/8`, `2001:db8::/32`, \
                     `192.0.2.7`)",
                    entry.get_ref()
                ),
            ),
        }
    }
    let mut stripped = Vec::with_capacity(server.strip_client_headers.len());
    for (i, entry) in server.strip_client_headers.iter().enumerate() {
        let key = format!("server.strip_client_headers[{i}]");
        match http::HeaderName::from_bytes(entry.get_ref().as_bytes()) {
            Ok(name) if name == http::header::HOST || crate::hop_by_hop::is_hop_by_hop(&name) => {
                c.error(
                    &entry.span(),
                    key,
                    format!("`{name}` is handled by the gateway itself and cannot be listed"),
                );
            }
            Ok(name) => stripped.push(name),
            Err(_) => c.error(
                &entry.span(),
                key,
                format!("`{}` is not a valid header name", entry.get_ref()),
            ),
        }
    }
    (trusted, stripped)
}
