//! The TOML schema: what an operator may write in `weir.toml`.
//!
//! Every table denies unknown keys so a typo is an error, never silence. Fields that
//! validation refers back to are [`Spanned`] so its errors can point at file, line and
//! column.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration;

use super::schema_upstream::UpstreamConfig;
use crate::path::{AmbiguousPaths, SlashPolicy};

/// A whole configuration file as written (before semantic validation).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The client-facing listener.
    #[serde(default)]
    pub server: ServerConfig,
    /// The admin listener (health, metrics, admin API).
    #[serde(default)]
    pub admin: AdminConfig,
    /// Where plugins come from.
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// How changes to the config file and the plugins directory are picked up.
    #[serde(default)]
    pub reload: ReloadConfig,
    /// The key-value store behind plugins.
    #[serde(default)]
    pub kv: KvConfig,
    /// The response cache's process-wide settings (routes opt in with `cache`).
    #[serde(default)]
    pub cache: CacheConfig,
    /// Upstream clusters, by name.
    #[serde(default, rename = "upstream")]
    pub upstreams: Vec<UpstreamConfig>,
    /// Routes, matched in the order they are written: the first match wins.
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
}

/// `[server]`: the client-facing listener and process-wide settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to accept clients on (HTTP/1.1 and h2c on the same port).
    pub listen: Spanned<String>,
    /// Worker threads, each with its own event loop and listener socket
    /// (`SO_REUSEPORT`). Default: one per CPU.
    pub workers: Option<Spanned<usize>>,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// How long a new process started by a hand-over (SIGUSR2) may take to report
    /// ready before the running one gives up on it, stops it and goes on serving.
    #[serde(with = "duration::positive")]
    pub handover_timeout: Duration,
    /// Emit one structured access-log event per request (target `weir::access`).
    pub access_log: bool,
    /// What to do with `%2F` / `%5C` (escaped `/` and `\`) in a request path:
    /// keep them as they are (the default), reject the request with 400, or decode them
    /// before normalising.
    pub escaped_slashes: SlashPolicy,
    /// What to do with a path a lenient backend reads differently (`%2F`, `%5C` or `\`
    /// as `/`, `;` parameters dropped): reject it with 400 when that reading hides a dot
    /// segment or matches another route (the default), or forward it as it is.
    pub ambiguous_paths: AmbiguousPaths,
    /// Proxies in front of this gateway (CIDRs or addresses) whose forwarding headers
    /// are believed: their `X-Forwarded-For` is appended to and the client's address is
    /// read from it. Every other client's `X-Forwarded-*`, `Forwarded` and `X-Real-IP`
    /// are replaced.
    pub trusted_proxies: Vec<Spanned<String>>,
    /// Headers removed from every request that does not come from a trusted proxy,
    /// because the gateway or a plugin sets them for the upstream (an identity, an id).
    pub strip_client_headers: Vec<Spanned<String>>,
    /// The pseudonym this gateway adds to `Via` (`1.1 weir` by default).
    pub via: Spanned<String>,
    /// W3C Trace Context on routed requests (default on): continue a valid incoming
    /// `traceparent` with a span id of this hop, or start a new trace, and log the trace
    /// id. Off leaves `traceparent` and `tracestate` untouched.
    pub trace_context: bool,
    /// Serve clients over TLS instead of plain HTTP.
    pub tls: Option<Spanned<TlsConfig>>,
    /// What one client may send and hold: sizes, timeouts, connections.
    pub limits: ClientLimitsConfig,
}

/// `[kv]`: the key-value store plugins share, and what each plugin may hold in it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvConfig {
    /// Entries one plugin may hold; past it, writes needing a new entry fail.
    pub max_entries: Spanned<i64>,
    /// Bytes one plugin may hold (keys, values and 96 bytes per entry).
    pub max_bytes: Spanned<bytesize::ByteSize>,
    /// Where the store lives: in this process, or in Redis (shared by replicas).
    pub backend: Spanned<KvBackendName>,
    /// The Redis server, `redis://` or `rediss://` (TLS); only with `backend = "redis"`.
    pub url: Option<Spanned<String>>,
    /// An environment variable holding the Redis password (kept out of the file).
    pub password_env: Option<Spanned<String>>,
    /// PEM file of the CAs that sign the Redis server's certificate (`rediss://`);
    /// without it, the operating system's trusted CAs.
    pub ca: Option<Spanned<String>>,
    /// How long one key-value call may wait for Redis before it fails.
    #[serde(with = "duration::positive")]
    pub timeout: Duration,
}

/// `[kv] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvBackendName {
    /// In this process (the default).
    #[default]
    Memory,
    /// In a Redis server.
    Redis,
}

impl Default for KvConfig {
    fn default() -> Self {
        Self {
            max_entries: Spanned::new(0..0, 100_000),
            max_bytes: Spanned::new(0..0, bytesize::ByteSize::mib(32)),
            backend: Spanned::new(0..0, KvBackendName::Memory),
            url: None,
            password_env: None,
            ca: None,
            timeout: Duration::from_millis(50),
        }
    }
}

/// `[cache]`: what every route's response cache shares.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// The memory all cached responses may take together (bodies and headers).
    pub memory: Spanned<bytesize::ByteSize>,
    /// The response header that says `HIT`, `MISS` or `STALE` (empty: none).
    pub header: Spanned<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory: Spanned::new(0..0, bytesize::ByteSize::mib(256)),
            header: Spanned::new(0..0, "x-cache".to_owned()),
        }
    }
}

/// A route's `cache`: its responses are stored and served by the RFC 9111 rules for a
/// shared cache.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteCacheConfig {
    /// How long a response without its own freshness (`max-age`, `s-maxage`,
    /// `Expires`) stays fresh; `"0s"` stores only responses that say how long.
    #[serde(default = "default_ttl", with = "duration")]
    pub ttl_default: Duration,
    /// The largest response body stored; larger ones stream through uncached.
    #[serde(default = "default_max_entry_size")]
    pub max_entry_size: Spanned<bytesize::ByteSize>,
    /// Request headers whose values are part of the cache key (each value its own
    /// entry), beside what a response's own `Vary` asks for.
    #[serde(default)]
    pub vary: Vec<Spanned<String>>,
}

fn default_ttl() -> Duration {
    Duration::from_secs(60)
}

fn default_max_entry_size() -> Spanned<bytesize::ByteSize> {
    Spanned::new(0..0, bytesize::ByteSize::mib(1))
}

/// `[server.limits]`: bounds on what clients send and hold, each refused with its own
/// status (or a closed connection) past it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLimitsConfig {
    /// The request line and headers together (431 past it; HTTP/2: the header list).
    pub max_header_bytes: Spanned<bytesize::ByteSize>,
    /// Header fields in one request (431 past it).
    pub max_headers: Spanned<i64>,
    /// The request target (414 past it).
    pub max_uri_bytes: Spanned<bytesize::ByteSize>,
    /// A request body, streamed or not (413 past it); a route's `max_request_body`
    /// overrides it. Default: no limit.
    pub max_request_body: Option<bytesize::ByteSize>,
    /// How long a client has to send a request's head once it started one (or since
    /// its connection opened); then its connection is closed.
    #[serde(with = "duration::positive")]
    pub header_read_timeout: Duration,
    /// How long a connection may stay open with no request in flight.
    #[serde(with = "duration::positive")]
    pub idle_timeout: Duration,
    /// Client connections open at once, over all workers; past it a new connection is
    /// closed as soon as it is accepted (and counted).
    pub max_connections: Spanned<i64>,
    /// HTTP/2 streams one connection may have open at once.
    pub max_concurrent_streams: Spanned<i64>,
}

impl Default for ClientLimitsConfig {
    fn default() -> Self {
        Self {
            max_header_bytes: Spanned::new(0..0, bytesize::ByteSize::kib(32)),
            max_headers: Spanned::new(0..0, 100),
            max_uri_bytes: Spanned::new(0..0, bytesize::ByteSize::kib(8)),
            max_request_body: None,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: Spanned::new(0..0, 10_000),
            max_concurrent_streams: Spanned::new(0..0, 100),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: Spanned::new(0..0, "127.0.0.1:8080".to_owned()),
            workers: None,
            shutdown_grace: Duration::from_secs(30),
            handover_timeout: Duration::from_secs(60),
            access_log: true,
            escaped_slashes: SlashPolicy::Keep,
            ambiguous_paths: AmbiguousPaths::Reject,
            trusted_proxies: Vec::new(),
            strip_client_headers: DEFAULT_STRIPPED
                .iter()
                .map(|name| Spanned::new(0..0, (*name).to_owned()))
                .collect(),
            via: Spanned::new(0..0, "weir".to_owned()),
            trace_context: true,
            tls: None,
            limits: ClientLimitsConfig::default(),
        }
    }
}

/// What `strip_client_headers` holds unless the config says otherwise: the consumer
/// the `api-key` plugin names and the id the `request-id` plugin keeps or makes.
const DEFAULT_STRIPPED: [&str; 2] = ["x-consumer", "x-request-id"];

/// `[server.tls]`: the client listener speaks TLS 1.2 and 1.3, with a certificate
/// chosen by SNI, ALPN `h2` and `http/1.1`, and optionally client certificates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificates and keys. Each serves the names it lists; the one without `names`
    /// is the default, for clients that send no SNI or a name no entry lists.
    pub certificates: Spanned<Vec<Spanned<CertificateConfig>>>,
    /// A PEM file of CA certificates: when set, every client must present a
    /// certificate issued by one of them (mutual TLS).
    pub client_ca: Option<Spanned<String>>,
}

/// One entry of `[server.tls] certificates`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file with the certificate chain, leaf first.
    pub cert: Spanned<String>,
    /// PEM file with the certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: Spanned<String>,
    /// Server names (`a.example.com`, `*.example.com`) this certificate is chosen for.
    pub names: Option<Spanned<Vec<Spanned<String>>>>,
}

/// `[admin]`: the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Address of the admin listener; loopback by default.
    pub listen: Spanned<String>,
    /// An environment variable holding a bearer token the admin API requires
    /// (`Authorization: Bearer TOKEN`) on every path but `/healthz` and `/readyz`.
    /// Required when `listen` is not a loopback address.
    pub token_env: Option<Spanned<String>>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: Spanned::new(0..0, "127.0.0.1:9901".to_owned()),
            token_env: None,
        }
    }
}

/// `[reload]`: live reloading of the config file and the plugins directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReloadConfig {
    /// Watch the config file and `[plugins] dir` and reload on change. Off: only SIGHUP
    /// and `POST /admin/reload` reload.
    pub watch: bool,
    /// How long a file must be quiet before a change is acted on, so a copy written in
    /// several steps is read once, whole.
    #[serde(with = "duration::positive")]
    pub debounce: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            watch: true,
            debounce: Duration::from_millis(100),
        }
    }
}

/// `[plugins]`: where plugin `.wasm` files live, and the default limits and policies
/// of every plugin (a route's plugin entry can override each).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// The directory watched for `NAME.wasm` files.
    pub dir: String,
    /// Where compiled plugins are cached, so a restart skips compilation. Default: the
    /// OS cache directory (`$XDG_CACHE_HOME/weir` or `~/.cache/weir`).
    pub cache_dir: Option<String>,
    // Defaults for every plugin; a route's plugin entry can override each.
    /// Linear memory an instance may use (e.g. `"16MiB"`).
    pub memory_limit: Option<bytesize::ByteSize>,
    /// CPU time one phase call may take (e.g. `"20ms"`), enforced by epoch interruption.
    #[serde(default, with = "duration::optional_positive")]
    pub timeout: Option<Duration>,
    /// `deny` (the client gets a 5xx) or `allow` (the plugin is skipped) when the plugin
    /// fails: trap, timeout, memory exhaustion, panic.
    pub on_error: Option<OnError>,
    /// `request` (a fresh instance per request) or `worker` (instances reused).
    pub isolation: Option<Isolation>,
    /// Largest body a body phase buffers (413 past it).
    pub max_body_bytes: Option<bytesize::ByteSize>,
    /// Outbound HTTP calls one request may make through `http-call`.
    pub max_outbound_calls: Option<u32>,
    /// With `isolation = "worker"`: requests an instance serves before it is replaced
    /// by a fresh one (at least 1).
    pub max_reuse: Option<Spanned<i64>>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        Self {
            dir: "./plugins".to_owned(),
            cache_dir: None,
            memory_limit: None,
            timeout: None,
            on_error: None,
            isolation: None,
            max_body_bytes: None,
            max_outbound_calls: None,
            max_reuse: None,
        }
    }
}

/// What happens to a request when a plugin fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// The client gets 500 (503 for a timeout); nothing of the plugin leaks.
    Deny,
    /// The plugin is skipped for this request.
    Allow,
}

/// How plugin instances are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// A fresh instance per request, dropped after it.
    Request,
    /// Instances reused across requests of a worker, recycled after a bounded number of
    /// requests and after any failure.
    Worker,
}

/// `[[route]]`: which requests go where, through which plugins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, used in logs and metrics.
    pub name: Spanned<String>,
    /// Conditions a request must meet; all given conditions must hold.
    #[serde(default, rename = "match")]
    pub matcher: MatchConfig,
    /// The upstream cluster requests on this route go to (or use `split`).
    pub upstream: Option<Spanned<String>>,
    /// A weighted split over several upstreams, instead of `upstream`: each request
    /// goes to one of them, drawn by weight.
    pub split: Option<Spanned<Vec<Spanned<SplitEntry>>>>,
    /// Shadow traffic: a copy of (a share of) the requests goes to another upstream,
    /// fire-and-forget.
    pub mirror: Option<Spanned<MirrorConfig>>,
    /// A fixed answer instead of an upstream (Envoy's `direct_response`): the route's
    /// plugins still run, and nothing is sent anywhere.
    pub respond: Option<Spanned<RespondConfig>>,
    /// The plugin chain (request phases in this order, response phases in reverse).
    #[serde(default)]
    pub plugins: Vec<PluginRef>,
    /// Replace the `Host` header sent upstream with this value.
    pub host_rewrite: Option<Spanned<String>>,
    /// Replace the `Host` header sent upstream with the chosen endpoint's `host:port`.
    #[serde(default)]
    pub auto_host_rewrite: bool,
    /// The largest request body on this route (413 past it), instead of
    /// `[server.limits] max_request_body`.
    pub max_request_body: Option<bytesize::ByteSize>,
    /// Cache the upstream's responses (see [`RouteCacheConfig`]).
    pub cache: Option<Spanned<RouteCacheConfig>>,
    /// Translate gRPC-Web calls (`application/grpc-web[-text]`) to gRPC over HTTP/2 for
    /// the upstream, and the answers back (every upstream of the route must be
    /// `protocol = "http2"`). Default: off, such calls are relayed as they are.
    pub grpc_web: Option<Spanned<bool>>,
}

/// One entry of a route's `split`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitEntry {
    /// The upstream this share goes to.
    pub upstream: Spanned<String>,
    /// Its share relative to the other entries (a positive integer).
    pub weight: Spanned<i64>,
}

/// A route's `respond`: the fixed answer it gives.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// The status code, 200 to 599.
    pub status: Spanned<i64>,
    /// The body (none: an empty body).
    #[serde(default)]
    pub body: Option<Spanned<String>>,
    /// Its `Content-Type` (default `text/plain; charset=utf-8` when there is a body).
    pub content_type: Option<Spanned<String>>,
}

/// A route's `mirror`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// The upstream that receives the shadow requests.
    pub upstream: Spanned<String>,
    /// The share of the route's requests mirrored, 0 to 100 (default 100).
    pub percent: Option<Spanned<f64>>,
    /// Shadow requests of this route in flight at once; past it, copies are dropped
    /// (and counted). Default 64.
    pub max_in_flight: Option<Spanned<i64>>,
}

/// A header condition as written: an exact value (`"v"`), or a table
/// `{ present = true }` (any value), `{ present = false }` (absent) or
/// `{ prefix = "v" }` (a value starting with `v`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderCondition {
    /// The header has exactly this value.
    Exact(String),
    /// `{ present = bool }`.
    Present(bool),
    /// `{ prefix = "..." }`.
    Prefix(String),
}

impl<'de> Deserialize<'de> for HeaderCondition {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(HeaderConditionVisitor)
    }
}

/// Reads `"value"`, `{ present = bool }` or `{ prefix = "..." }`.
struct HeaderConditionVisitor;

impl<'de> serde::de::Visitor<'de> for HeaderConditionVisitor {
    type Value = HeaderCondition;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a header value, `{ present = true }` or `{ prefix = \"...\" }`")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HeaderCondition, E> {
        Ok(HeaderCondition::Exact(v.to_owned()))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<HeaderCondition, A::Error> {
        const FIELDS: &[&str] = &["present", "prefix"];
        let mut found = None;
        while let Some(key) = map.next_key::<String>()? {
            let condition = match key.as_str() {
                "present" => HeaderCondition::Present(map.next_value()?),
                "prefix" => HeaderCondition::Prefix(map.next_value()?),
                other => return Err(serde::de::Error::unknown_field(other, FIELDS)),
            };
            if found.replace(condition).is_some() {
                return Err(serde::de::Error::custom(
                    "a header condition is one of `present` or `prefix`, not both",
                ));
            }
        }
        found.ok_or_else(|| serde::de::Error::missing_field("present"))
    }
}

/// A route's match conditions. An empty match matches every request.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// Exact host (`api.example.com`) or wildcard suffix (`*.example.com`), without port.
    pub host: Option<Spanned<String>>,
    /// The normalised path equals this.
    pub path: Option<Spanned<String>>,
    /// The normalised path starts with this, at a segment boundary or ending in `/`.
    pub path_prefix: Option<Spanned<String>>,
    /// The method is one of these.
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    /// Each named header is present with exactly this value (or meets the condition
    /// given as a table: `{ present = true }`, `{ present = false }`, `{ prefix = "v" }`).
    #[serde(default)]
    pub headers: BTreeMap<String, Spanned<HeaderCondition>>,
    /// Each named cookie is present with exactly this value.
    #[serde(default)]
    pub cookies: BTreeMap<String, Spanned<String>>,
}

/// One entry of a route's plugin chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// The plugin's name: `NAME.wasm` in the plugins directory.
    pub name: Spanned<String>,
    /// The plugin's own configuration, handed to it as JSON.
    #[serde(default)]
    pub config: Option<toml::Table>,
    /// Hosts (`host` or `host:port`) the plugin may reach with `http-call`.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    // Overrides of the `[plugins]` defaults.
    /// Linear memory an instance may use (e.g. `"16MiB"`).
    pub memory_limit: Option<bytesize::ByteSize>,
    /// CPU time one phase call may take (e.g. `"20ms"`), enforced by epoch interruption.
    #[serde(default, with = "duration::optional_positive")]
    pub timeout: Option<Duration>,
    /// `deny` (the client gets a 5xx) or `allow` (the plugin is skipped) when the plugin
    /// fails: trap, timeout, memory exhaustion, panic.
    pub on_error: Option<OnError>,
    /// `request` (a fresh instance per request) or `worker` (instances reused).
    pub isolation: Option<Isolation>,
    /// Largest body a body phase buffers (413 past it).
    pub max_body_bytes: Option<bytesize::ByteSize>,
    /// Outbound HTTP calls one request may make through `http-call`.
    pub max_outbound_calls: Option<u32>,
    /// With `isolation = "worker"`: requests an instance serves before it is replaced
    /// by a fresh one (at least 1).
    pub max_reuse: Option<Spanned<i64>>,
}
