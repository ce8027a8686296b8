//! Configuration: the TOML schema, its parsing with precise diagnostics, and semantic
//! validation into the typed [`Config`] the rest of the gateway builds from.
//!
//! Loading is all-or-nothing: either every check passes and a whole [`Config`] comes
//! back, or every problem found comes back together in one [`ConfigError`].

mod duration;
mod endpoints_file;
mod error;
mod schema;
mod schema_upstream;
mod tls;
mod upstream;
mod upstream_tls;
mod validate;
mod validate_cache;
mod validate_limits;
mod validate_plugin;
mod validate_route;
mod validate_upstream;

#[cfg(test)]
mod roundtrip_tests;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

pub use endpoints_file::EndpointsFileError;
pub use error::{ConfigError, Diagnostic};
pub use schema::{ConfigFile, Isolation, OnError};
pub use schema_upstream::{Balancer, Protocol, Timeouts};
pub use tls::{Tls, TlsCertificate, files_named_in as tls_files_named_in};
pub use upstream::{Endpoint, HashOn, HealthCheck, Limits, Outlier, Retries, RetryOn, Upstream};
pub use upstream_tls::UpstreamTls;

/// A validated configuration: every name resolved, every address parsed.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was loaded from (`<embedded>` for built-in configs).
    pub source: PathBuf,
    /// Client-facing listener settings.
    pub server: Server,
    /// Admin listener settings.
    pub admin: Admin,
    /// Where plugins come from, and their default limits.
    pub plugins: Plugins,
    /// Live reloading.
    pub reload: Reload,
    /// The key-value store: its backend, and its bounds per plugin.
    pub kv: KvSettings,
    /// The response cache's shared settings.
    pub cache: CacheSettings,
    /// Command-line settings applied over the file's (kept so a reloaded file gets
    /// them too).
    pub overrides: Overrides,
    /// Upstream clusters; routes refer to them by index.
    pub upstreams: Vec<Upstream>,
    /// Routes in match order.
    pub routes: Vec<Route>,
}

impl Config {
    /// The digest of every TLS file the config loaded (the listener's and each
    /// upstream's), as they were loaded.
    pub fn tls_fingerprint(&self) -> [u8; 32] {
        self.tls_digest(|fingerprint, _| fingerprint)
    }

    /// [`Config::tls_fingerprint`] of the files as they are now: it differs when a
    /// certificate, key or CA file changed since they were loaded.
    pub fn current_tls_fingerprint(&self) -> [u8; 32] {
        self.tls_digest(|_, current| current())
    }

    fn tls_digest(&self, pick: impl Fn([u8; 32], &dyn Fn() -> [u8; 32]) -> [u8; 32]) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut digest = Sha256::new();
        if let Some(tls) = &self.server.tls {
            digest.update(pick(tls.fingerprint, &|| tls.current_fingerprint()));
        }
        for tls in self.upstreams.iter().filter_map(|u| u.tls.as_ref()) {
            digest.update(pick(tls.fingerprint, &|| tls.current_fingerprint()));
        }
        digest.finalize().into()
    }

    /// Every endpoints file the config's upstreams read.
    pub fn endpoint_files(&self) -> impl Iterator<Item = &std::path::Path> {
        self.upstreams
            .iter()
            .filter_map(|u| u.endpoints_file.as_deref())
    }

    /// Every TLS file the config reads: the listener's and each upstream's.
    pub fn tls_files(&self) -> Vec<&std::path::Path> {
        let mut files: Vec<&std::path::Path> =
            self.server.tls.iter().flat_map(|t| t.files()).collect();
        files.extend(
            self.upstreams
                .iter()
                .filter_map(|u| u.tls.as_ref())
                .flat_map(UpstreamTls::files),
        );
        files
    }
}

/// `[server]`, typed.
#[derive(Debug, Clone)]
pub struct Server {
    /// Client listener address.
    pub listen: SocketAddr,
    /// Worker threads; `None` means one per CPU.
    pub workers: Option<usize>,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// How long a hand-over's new process may take to report ready.
    pub handover_timeout: Duration,
    /// Whether to emit access-log events.
    pub access_log: bool,
    /// Treatment of `%2F`/`%5C` in paths.
    pub escaped_slashes: crate::path::SlashPolicy,
    /// Treatment of paths a lenient backend reads as another route.
    pub ambiguous_paths: crate::path::AmbiguousPaths,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Headers removed from requests not from a trusted proxy.
    pub strip_client_headers: Vec<HeaderName>,
    /// The pseudonym this gateway adds to `Via` (e.g. `weir` in `1.1 weir`).
    pub via: String,
    /// Whether routed requests get W3C Trace Context (`traceparent`) handling.
    pub trace_context: bool,
    /// TLS on the client listener (`None`: plain HTTP).
    pub tls: Option<Tls>,
    /// Bounds on what clients send and hold.
    pub limits: ClientLimits,
}

/// `[server.limits]`, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Request line and headers, in bytes (431).
    pub max_header_bytes: usize,
    /// Header fields per request (431).
    pub max_headers: usize,
    /// Request target, in bytes (414).
    pub max_uri_bytes: usize,
    /// Request body, in bytes, unless a route says otherwise (413).
    pub max_request_body: Option<u64>,
    /// Time to send a request head once started (or from accept).
    pub header_read_timeout: Duration,
    /// Time a connection may stay with no request in flight.
    pub idle_timeout: Duration,
    /// Client connections at once, over all workers.
    pub max_connections: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            max_request_body: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            max_concurrent_streams: 100,
        }
    }
}

/// `[admin]`, typed.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Admin listener address.
    pub listen: SocketAddr,
    /// The bearer token the admin API requires, read from `token_env`.
    pub token: Option<String>,
    /// The variable the token came from, for messages.
    pub token_env: Option<String>,
}

impl Admin {
    /// Why this admin listener may not run: it is reachable from other machines and no
    /// token protects it.
    pub fn exposure_problem(&self) -> Option<String> {
        (!self.listen.ip().is_loopback() && self.token.is_none()).then(|| {
            format!(
                "the admin listener {} is not a loopback address: set `[admin] token_env` to an \
                 environment variable holding a bearer token, or listen on 127.0.0.1",
                self.listen
            )
        })
    }
}

/// `[reload]`, typed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reload {
    /// Watch the config file and plugins directory.
    pub watch: bool,
    /// Quiet time before acting on a change.
    pub debounce: Duration,
}

/// Command-line settings that win over the config file's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
}

/// One route.
#[derive(Debug, Clone)]
pub struct Route {
    /// Its unique name.
    pub name: String,
    /// Host condition.
    pub host: Option<HostPattern>,
    /// Path condition.
    pub path: Option<PathPattern>,
    /// Method condition (empty: any method).
    pub methods: Vec<Method>,
    /// Header conditions: each must hold.
    pub headers: Vec<(HeaderName, HeaderMatch)>,
    /// Cookie conditions: each cookie must be present with exactly this value.
    pub cookies: Vec<(String, String)>,
    /// Where requests go: one upstream or a weighted split.
    pub upstream: RouteUpstream,
    /// Shadow traffic to another upstream, if any.
    pub mirror: Option<Mirror>,
    /// What `Host` the upstream sees.
    pub host_rewrite: HostRewrite,
    /// The plugin chain.
    pub plugins: Vec<PluginUse>,
    /// The largest request body, in bytes (the route's own or the server's limit).
    pub max_request_body: Option<u64>,
    /// How the route caches responses (`None`: it does not).
    pub cache: Option<RouteCache>,
    /// Whether gRPC-Web calls on it are translated to gRPC (`grpc_web`).
    pub grpc_web: bool,
}

/// `[cache]`, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheSettings {
    /// Bytes all entries may take together.
    pub memory: u64,
    /// The header that reports `HIT`, `MISS` or `STALE` (`None`: not added).
    pub header: Option<HeaderName>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            memory: 256 * 1024 * 1024,
            header: Some(HeaderName::from_static("x-cache")),
        }
    }
}

/// A route's `cache`, typed. Entries stored under one value are never served under
/// another (see `crate::cache`), so a reload that changes it starts the route afresh.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteCache {
    /// Freshness of a response that gives none (zero: such responses are not stored).
    pub ttl_default: Duration,
    /// The largest body stored, in bytes.
    pub max_entry_size: u64,
    /// Request headers that are part of the key, lower-case, without repeats.
    pub vary: Vec<HeaderName>,
}

/// A condition on a request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderMatch {
    /// Some value of the header equals this.
    Exact(HeaderValue),
    /// `true`: the header is present (any value); `false`: it is absent.
    Present(bool),
    /// Some value of the header starts with these bytes.
    Prefix(Vec<u8>),
}

/// Where a route's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteUpstream {
    /// Every request to this upstream (an index into [`Config::upstreams`]).
    Single(usize),
    /// Each request to one of these, drawn by weight.
    Split(Vec<SplitTarget>),
    /// No upstream: every request gets this answer.
    Respond(DirectResponse),
}

/// A route's fixed answer (`respond`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectResponse {
    /// Its status.
    pub status: http::StatusCode,
    /// Its `Content-Type`, if any.
    pub content_type: Option<HeaderValue>,
    /// Its body.
    pub body: bytes::Bytes,
}

impl RouteUpstream {
    /// The upstream (index into [`Config::upstreams`]) of a single-upstream route.
    pub fn single(&self) -> Option<usize> {
        match self {
            RouteUpstream::Single(index) => Some(*index),
            RouteUpstream::Split(_) | RouteUpstream::Respond(_) => None,
        }
    }

    /// Every upstream the route may send to, with its weight (1 for a single one; none
    /// for a fixed answer).
    pub fn targets(&self) -> Vec<SplitTarget> {
        match self {
            RouteUpstream::Single(upstream) => vec![SplitTarget {
                upstream: *upstream,
                weight: 1,
            }],
            RouteUpstream::Split(targets) => targets.clone(),
            RouteUpstream::Respond(_) => Vec::new(),
        }
    }
}

/// One share of a weighted split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SplitTarget {
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Its share relative to the other targets (at least 1).
    pub weight: u32,
}

/// The largest weight of a split entry.
pub(crate) const MAX_SPLIT_WEIGHT: u32 = 1_000_000;

/// A route's request mirroring (Envoy's request shadowing).
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    /// Index into [`Config::upstreams`] of the upstream that gets the copies.
    pub upstream: usize,
    /// The share of requests mirrored, 0 to 100.
    pub percent: f64,
    /// Shadow requests in flight at once (default 64); past it copies are dropped.
    pub max_in_flight: u32,
}

/// A host condition, lower-case and without port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// The host equals this.
    Exact(String),
    /// The host ends with this suffix, which starts with `.` (from `*.example.com`).
    Suffix(String),
}

/// A path condition on the normalised path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The path equals this.
    Exact(String),
    /// The path starts with this at a segment boundary.
    Prefix(String),
}

/// The `Host` header sent upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostRewrite {
    /// The client's `Host` (or `:authority`), unchanged.
    Preserve,
    /// This literal value.
    Literal(HeaderValue),
    /// The chosen endpoint's `host:port`.
    Endpoint,
}

/// `[kv]`, typed: where the key-value store lives and what each plugin may hold in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KvSettings {
    /// What each plugin may hold (these change live on a reload).
    pub bounds: KvBounds,
    /// Where the store lives (a change needs a restart).
    pub backend: KvBackend,
    /// How long one call may wait for a remote store (Redis) before it fails.
    pub timeout: Duration,
}

/// What each plugin may hold in the key-value store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvBounds {
    /// Entries per plugin.
    pub max_entries: u64,
    /// Bytes per plugin (keys, values and a fixed overhead per entry).
    pub max_bytes: u64,
}

impl Default for KvBounds {
    fn default() -> Self {
        KvBounds {
            max_entries: 100_000,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Where the key-value store lives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KvBackend {
    /// In this process: fast, but each replica counts on its own.
    #[default]
    Memory,
    /// In a Redis server that replicas share.
    Redis(RedisSettings),
}

/// How to reach Redis.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` (TLS), as written (checked to parse).
    pub url: String,
    /// The environment variable the password was read from, if any.
    pub password_env: Option<String>,
    /// That variable's value, read when the config was loaded.
    pub password: Option<String>,
    /// The CA file that signs the server's certificate (`rediss://`), if not the
    /// operating system's trusted CAs.
    pub ca: Option<PathBuf>,
    /// That file's PEM, read when the config was loaded.
    pub ca_pem: Option<Vec<u8>>,
}

impl RedisSettings {
    /// The server at `url`, with no password and the system's trusted CAs.
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            password_env: None,
            password: None,
            ca: None,
            ca_pem: None,
        }
    }
}

impl std::fmt::Debug for RedisSettings {
    /// Shows where the password came from, never the password (nor one in the URL).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("password_env", &self.password_env)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// `url` with any password in it replaced by `***`, for logs and messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => {
            let user_info = &rest[..at];
            let user = user_info
                .split_once(':')
                .map_or(user_info, |(user, _)| user);
            format!("{scheme}://{user}:***{}", &rest[at..])
        }
        None => url.to_owned(),
    }
}

/// `[plugins]`, typed.
#[derive(Debug, Clone)]
pub struct Plugins {
    /// The directory of `NAME.wasm` files.
    pub dir: PathBuf,
    /// Where compiled plugins are cached (`None`: no disk cache).
    pub cache_dir: Option<PathBuf>,
    /// Limits and policies of plugins that do not override them.
    pub defaults: PluginSettings,
}

/// The limits and policies one plugin runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginSettings {
    /// Linear memory an instance may use, in bytes.
    pub memory_limit: u64,
    /// CPU time per phase call.
    pub timeout: Duration,
    /// Failure policy.
    pub on_error: OnError,
    /// Instance sharing.
    pub isolation: Isolation,
    /// Largest body a body phase buffers, in bytes.
    pub max_body_bytes: u64,
    /// Outbound calls per request.
    pub max_outbound_calls: u32,
    /// With worker isolation, how many requests an instance serves before it is
    /// dropped and a fresh one takes its place (at least 1).
    pub max_reuse: u32,
}

impl Default for PluginSettings {
    fn default() -> Self {
        PluginSettings {
            memory_limit: 16 * 1024 * 1024,
            timeout: Duration::from_millis(50),
            on_error: OnError::Deny,
            // Worker: a reused instance costs ~1.5 µs a call, a fresh one ~7 µs
            // (docs/performance.md); `request` stays for plugins not trusted with other
            // requests' data.
            isolation: Isolation::Worker,
            max_body_bytes: 1024 * 1024,
            max_outbound_calls: 4,
            max_reuse: 10_000,
        }
    }
}

/// A plugin named on a route, with its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginUse {
    /// The plugin name (`NAME.wasm`).
    pub name: String,
    /// Its configuration, as the JSON text the plugin receives.
    pub config_json: String,
    /// Hosts it may call with `http-call` (`host` or `host:port`, lower-case).
    pub allowed_hosts: Vec<String>,
    /// Its limits and policies.
    pub settings: PluginSettings,
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            source: std::sync::Arc::new(e),
        })?;
        Config::parse(path, &text)
    }

    /// This config with `overrides` applied (and remembered for reloads).
    pub fn with_overrides(mut self, overrides: Overrides) -> Config {
        self.server.listen = overrides.listen.unwrap_or(self.server.listen);
        self.admin.listen = overrides.admin_listen.unwrap_or(self.admin.listen);
        self.overrides = overrides;
        self
    }

    /// Parses and validates config `text`; `file` names it in diagnostics.
    pub fn parse(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let source = error::Source { file, text };
        let raw = parse_file(&source)?;
        validate::validate(&source, raw)
    }
}

/// TOML and schema errors: the parser stops at the first one, so this is one diagnostic.
fn parse_file(source: &error::Source<'_>) -> Result<ConfigFile, ConfigError> {
    let de = toml::Deserializer::parse(source.text).map_err(|e| toml_error(source, &e, ""))?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        // `Spanned` fields show up in the path as a private marker segment; drop it.
        let key = e
            .path()
            .to_string()
            .replace(".$__serde_spanned_private_value", "");
        toml_error(source, e.inner(), &key)
    })
}

fn toml_error(source: &error::Source<'_>, err: &toml::de::Error, key: &str) -> ConfigError {
    let span = err.span().unwrap_or(0..0);
    let key = if key == "." { "" } else { key };
    let mut diag = source.diagnostic(&span, key, err.message().trim().to_owned());
    // A syntax error with no span still belongs in the file; point at its start.
    if diag.line == 0 && !source.text.is_empty() {
        diag.line = 1;
        diag.column = 1;
    }
    diag.help = error::suggest_from_serde_message(err.message());
    ConfigError::Invalid(vec![diag])
}
