//! The TOML schema of `[[upstream]]` tables: endpoints, the balancer, health checks,
//! outlier detection, retries, limits, timeouts, protocol and TLS (see [`super::schema`]
//! for the rest of the file).

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::duration;

/// `[[upstream]]`: a named cluster of endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The name routes refer to.
    pub name: Spanned<String>,
    /// Every endpoint: `"host:port"`, or `{ address = "host:port", weight = 3 }`.
    pub endpoints: Option<Spanned<Vec<Spanned<EndpointEntry>>>>,
    /// Or a JSON file listing them in the same forms, watched and applied live.
    pub endpoints_file: Option<Spanned<String>>,
    /// How a request picks an endpoint.
    #[serde(default)]
    pub balancer: Balancer,
    /// What `consistent_hash` hashes: `"header:NAME"`, `"cookie:NAME"` or `"ip"`.
    pub hash_on: Option<Spanned<String>>,
    /// Below this percentage of endpoints in rotation, the balancer ignores health and
    /// spreads over all of them (Envoy's panic threshold).
    pub panic_threshold: Option<Spanned<i64>>,
    /// Active health checks.
    pub health: Option<Spanned<HealthConfig>>,
    /// Passive outlier detection: ejecting endpoints that keep failing requests.
    pub outlier: Option<Spanned<OutlierConfig>>,
    /// Retries of failed exchanges.
    pub retries: Option<Spanned<RetriesConfig>>,
    /// Circuit breaking: connections, pending requests and requests in flight.
    pub limits: Option<Spanned<LimitsConfig>>,
    /// Connect and request timeouts.
    #[serde(default)]
    pub timeouts: Timeouts,
    /// The HTTP version spoken to the endpoints.
    #[serde(default)]
    pub protocol: Protocol,
    /// TLS to the endpoints: `tls = {}` verifies them against the system's CAs.
    pub tls: Option<Spanned<UpstreamTlsConfig>>,
    /// How often endpoints given by DNS name are resolved again (default 5 s).
    #[serde(default, with = "duration::optional_positive")]
    pub dns_refresh: Option<Duration>,
}

/// The HTTP version a cluster speaks to its endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 over a pool of keep-alive connections, one request at a time each.
    #[default]
    Http1,
    /// HTTP/2: a few connections per endpoint, each carrying many concurrent streams
    /// (h2c with prior knowledge over plain TCP, ALPN `h2` over TLS).
    Http2,
}

impl Protocol {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::Http2 => "http2",
        }
    }
}

/// `[[upstream]].tls`: how the gateway verifies the endpoints, and the client
/// certificate it presents to them.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file of the CAs the endpoints' certificates must chain to (default: the
    /// system's trusted CAs).
    pub ca: Option<Spanned<String>>,
    /// The name sent as SNI and verified in the certificate (default: the endpoint's
    /// host when it is a DNS name; an IP address is verified against IP SANs).
    pub server_name: Option<Spanned<String>>,
    /// PEM file of the client certificate chain presented to endpoints (mTLS).
    pub cert: Option<Spanned<String>>,
    /// PEM file of the client certificate's private key.
    pub key: Option<Spanned<String>>,
}

/// One entry of `endpoints`: an address, with a weight when written as a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointEntry {
    /// `host:port` or `ip:port`.
    pub address: String,
    /// Its share of the traffic relative to the others (1 when not given).
    pub weight: Option<i64>,
}

impl<'de> Deserialize<'de> for EndpointEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(EndpointVisitor)
    }
}

/// Reads `"host:port"` or `{ address = "host:port", weight = N }`.
struct EndpointVisitor;

impl<'de> serde::de::Visitor<'de> for EndpointVisitor {
    type Value = EndpointEntry;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an address string or a table `{ address = \"host:port\", weight = N }`")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<EndpointEntry, E> {
        Ok(EndpointEntry {
            address: v.to_owned(),
            weight: None,
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(
        self,
        mut map: A,
    ) -> Result<EndpointEntry, A::Error> {
        const FIELDS: &[&str] = &["address", "weight"];
        let (mut address, mut weight) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "address" => address = Some(map.next_value::<String>()?),
                "weight" => weight = Some(map.next_value::<i64>()?),
                other => return Err(serde::de::Error::unknown_field(other, FIELDS)),
            }
        }
        let address = address.ok_or_else(|| serde::de::Error::missing_field("address"))?;
        Ok(EndpointEntry { address, weight })
    }
}

/// `health`: active health checks, as written (checked by validation, so every problem
/// is reported together).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// The path (and query) to `GET`.
    pub path: Option<Spanned<String>>,
    /// Time between checks of an endpoint.
    pub interval: Option<Spanned<String>>,
    /// Time a check may take.
    pub timeout: Option<Spanned<String>>,
    /// Passes in a row that bring an endpoint back into rotation.
    pub healthy: Option<Spanned<i64>>,
    /// Failures in a row that take an endpoint out of rotation.
    pub unhealthy: Option<Spanned<i64>>,
    /// Statuses that pass: codes (`200`) and ranges (`"200-399"`).
    pub expected_statuses: Option<Spanned<Vec<Spanned<toml::Value>>>>,
}

/// `outlier`: passive outlier detection, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// Failed exchanges in a row (5xx, connect failure, reset, timeout) that eject.
    pub consecutive_failures: Option<Spanned<i64>>,
    /// The first ejection's length; the n-th lasts n times as long.
    pub base_ejection: Option<Spanned<String>>,
    /// The longest an ejection lasts.
    pub max_ejection: Option<Spanned<String>>,
    /// The most of the cluster that may be ejected at once, in percent.
    pub max_ejected_percent: Option<Spanned<i64>>,
}

/// `retries`: when and how failed exchanges are tried again, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetriesConfig {
    /// Tries after the first.
    pub attempts: Option<Spanned<i64>>,
    /// What is retried: `connect-failure`, `reset`, `5xx`, `gateway-error`,
    /// `retriable-status-codes`.
    pub on: Option<Vec<Spanned<String>>>,
    /// Statuses retried (implies `retriable-status-codes`).
    pub retriable_statuses: Option<Vec<Spanned<i64>>>,
    /// Time one try may take to the response head.
    pub per_try_timeout: Option<Spanned<String>>,
    /// Retry methods that are not idempotent (POST, PATCH) too.
    pub allow_non_idempotent: Option<bool>,
    /// The base of the exponential backoff between tries.
    pub backoff_base: Option<Spanned<String>>,
    /// The longest wait between tries.
    pub backoff_max: Option<Spanned<String>>,
    /// Retries in flight may be this percentage of the requests in flight...
    pub budget_percent: Option<Spanned<i64>>,
    /// ...or this many, whichever is more.
    pub min_retry_concurrency: Option<Spanned<i64>>,
}

/// `limits`: the cluster's circuit breakers, as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Connections open to the cluster's endpoints, all workers together.
    pub max_connections: Option<Spanned<i64>>,
    /// Requests waiting for a connection.
    pub max_pending: Option<Spanned<i64>>,
    /// Requests in flight.
    pub max_requests: Option<Spanned<i64>>,
}

/// Endpoint selection policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balancer {
    /// Each endpoint in turn, as often as its weight says (smooth weighted round robin).
    #[default]
    RoundRobin,
    /// The less loaded of two endpoints drawn by weight (power of two choices over
    /// requests in flight per unit of weight).
    LeastRequest,
    /// The endpoint a hash of the request (`hash_on`) lands on in a ring of virtual
    /// nodes, so a key keeps its endpoint while that endpoint is in rotation.
    ConsistentHash,
    /// An endpoint drawn at random, by weight.
    Random,
}

impl Balancer {
    /// The name as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Balancer::RoundRobin => "round_robin",
            Balancer::LeastRequest => "least_request",
            Balancer::ConsistentHash => "consistent_hash",
            Balancer::Random => "random",
        }
    }
}

/// Upstream timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Timeouts {
    /// Time allowed to establish a TCP connection to an endpoint (504 past it).
    #[serde(with = "duration::positive")]
    pub connect: Duration,
    /// Time from sending the request until the upstream's response headers arrive
    /// (504 past it), every retry and backoff included. Bodies then stream without a
    /// total deadline.
    #[serde(with = "duration::positive")]
    pub request: Duration,
    /// How long a pooled keep-alive connection may stay unused before it is closed
    /// instead of reused.
    #[serde(with = "duration::positive")]
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(15),
            idle: Duration::from_secs(60),
        }
    }
}
