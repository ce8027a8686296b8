//! The typed `[[upstream]]` settings: endpoints and weights, balancer, and how the
//! cluster survives failure. Defaults follow Envoy's where the config is silent, and are
//! listed on each field.

use std::time::Duration;

use http::HeaderName;
use http::uri::Authority;

use super::{Balancer, Protocol, Timeouts, UpstreamTls};

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its unique name.
    pub name: String,
    /// Its endpoints, in the order written (for `endpoints_file`: as the file held them
    /// when read).
    pub endpoints: Vec<Endpoint>,
    /// The JSON file its endpoints come from, re-read when it changes (`None`: they
    /// are listed in the config).
    pub endpoints_file: Option<std::path::PathBuf>,
    /// Endpoint selection policy.
    pub balancer: Balancer,
    /// What `consistent_hash` hashes (present exactly when the balancer is
    /// `consistent_hash`).
    pub hash_on: Option<HashOn>,
    /// Below this percentage of endpoints in rotation, the balancer spreads over every
    /// endpoint, healthy or not (default 50, as in Envoy; 0: only when none is left).
    pub panic_threshold: u8,
    /// Active health checks (none by default).
    pub health: Option<HealthCheck>,
    /// Passive outlier detection ([`Outlier::connect_failures`] without an `outlier`
    /// table).
    pub outlier: Outlier,
    /// Retries ([`Retries::implicit`] without a `retries` table).
    pub retries: Retries,
    /// Circuit breakers (Envoy's defaults: 1024 each).
    pub limits: Limits,
    /// Connect, request and idle timeouts.
    pub timeouts: Timeouts,
    /// The HTTP version spoken to the endpoints (default `http1`).
    pub protocol: Protocol,
    /// TLS to the endpoints (none by default: plain TCP).
    pub tls: Option<UpstreamTls>,
    /// How often endpoints given by DNS name are resolved again (default 5 s, Envoy's
    /// `dns_refresh_rate`).
    pub dns_refresh: Duration,
}

/// The default [`Upstream::dns_refresh`].
pub(crate) const DEFAULT_DNS_REFRESH: Duration = Duration::from_secs(5);

/// The default [`Upstream::panic_threshold`].
pub(crate) const DEFAULT_PANIC_THRESHOLD: u8 = 50;

/// Passive outlier detection: an endpoint whose exchanges fail `consecutive_failures`
/// times in a row leaves rotation for a while. Defaults are Envoy's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outlier {
    /// Failed exchanges in a row that eject: a 5xx response, or a connect failure,
    /// reset or timeout (default 5).
    pub consecutive_failures: u32,
    /// How long the first ejection lasts; the n-th lasts n times as long (default 30 s).
    pub base_ejection: Duration,
    /// The longest an ejection lasts (default 300 s).
    pub max_ejection: Duration,
    /// The most of the cluster ejected at once, in percent of its endpoints, rounded
    /// down but at least one endpoint unless 0 (default 10).
    pub max_ejected_percent: u8,
    /// Only failures to connect count (the default set-aside of a cluster without an
    /// `outlier` table); a configured `outlier` counts every failure.
    pub connect_failures_only: bool,
}

impl Outlier {
    /// What a cluster without an `outlier` table gets: an endpoint that refused three
    /// connections in a row is set aside for 10 s (longer each time, up to a minute),
    /// at most half the cluster at once. Responses, even 5xx, never count.
    pub fn connect_failures() -> Outlier {
        Outlier {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: 50,
            connect_failures_only: true,
        }
    }
}

impl Default for Outlier {
    fn default() -> Self {
        Outlier {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 10,
            connect_failures_only: false,
        }
    }
}

/// A cluster's circuit breakers: past a limit, requests get a local 503 instead of
/// piling onto a struggling upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open to the cluster's endpoints, every worker's together (default
    /// 1024). A request that needs a new connection past it waits as pending.
    pub max_connections: u32,
    /// Requests waiting for a connection (default 1024).
    pub max_pending: u32,
    /// Requests in flight to the cluster, retries included (default 1024).
    pub max_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_pending: 1024,
            max_requests: 1024,
        }
    }
}

/// Retries of failed exchanges. Defaults follow Envoy's retry policy and retry budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retries {
    /// Tries after the first (default 1, at most 10).
    pub attempts: u32,
    /// Which outcomes are retried (default `connect-failure` and `reset`).
    pub on: RetryOn,
    /// Statuses retried when `on.retriable_statuses` (none by default).
    pub retriable_statuses: Vec<u16>,
    /// Time one try may take to the response head (default: what is left of the
    /// `request` timeout, which bounds all tries together).
    pub per_try_timeout: Option<Duration>,
    /// Retry non-idempotent methods too (default false: only GET, HEAD, OPTIONS, PUT,
    /// DELETE and TRACE).
    pub allow_non_idempotent: bool,
    /// Backoff before the n-th retry: a random wait below base × (2ⁿ − 1) (default 25 ms).
    pub backoff_base: Duration,
    /// The longest backoff (default 10 × `backoff_base`).
    pub backoff_max: Duration,
    /// Retries in flight may be at most this percentage of the cluster's requests in
    /// flight (default 20)...
    pub budget_percent: u8,
    /// ...or this many, whichever is more (default 3).
    pub min_retry_concurrency: u32,
}

impl Retries {
    /// What a cluster without a `retries` table gets: one more try, elsewhere, for an
    /// idempotent request without a streamed body whose connection failed after it was
    /// sent (a request that could not be sent always goes to another endpoint anyway).
    /// Its budget is every request in flight, as nginx has none: each request is tried
    /// at most twice anyway, and when an endpoint dies, however many of the requests in
    /// flight were caught on it are all tried again (a share such as 50 % falls short
    /// whenever more than that share happened to be on it).
    pub fn implicit() -> Retries {
        Retries {
            on: RetryOn {
                reset: true,
                ..RetryOn::default()
            },
            budget_percent: 100,
            ..Retries::default()
        }
    }
}

impl Default for Retries {
    fn default() -> Self {
        Retries {
            attempts: 1,
            on: RetryOn {
                connect_failure: true,
                reset: true,
                ..RetryOn::default()
            },
            retriable_statuses: Vec::new(),
            per_try_timeout: None,
            allow_non_idempotent: false,
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            budget_percent: 20,
            min_retry_concurrency: 3,
        }
    }
}

/// The outcomes a retry policy retries (Envoy's `retry_on` conditions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryOn {
    /// `connect-failure`: the connection failed or timed out; nothing was sent.
    pub connect_failure: bool,
    /// `reset`: the connection failed after the request was sent, or no response head
    /// came within the try's timeout.
    pub reset: bool,
    /// `5xx`: any 5xx response, and everything `connect-failure` and `reset` retry.
    pub server_error: bool,
    /// `gateway-error`: 502, 503 or 504, and everything `connect-failure` and `reset`
    /// retry.
    pub gateway_error: bool,
    /// `retriable-status-codes`: the statuses in `retriable_statuses`.
    pub retriable_statuses: bool,
}

/// The names `on` accepts.
pub(crate) const RETRY_ON: [&str; 5] = [
    "connect-failure",
    "reset",
    "5xx",
    "gateway-error",
    "retriable-status-codes",
];

/// Active health checks: `GET path` to every endpoint each `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// The path and query to request (required).
    pub path: String,
    /// Time between checks (default 5 s).
    pub interval: Duration,
    /// Time one check may take, connecting included (default 1 s). A round of checks
    /// waits for its slowest; the next round starts `interval` after the previous one
    /// started, or at once if that one took longer.
    pub timeout: Duration,
    /// Passes in a row that bring an endpoint back into rotation (default 2).
    pub healthy: u32,
    /// Failures in a row that take an endpoint out of rotation (default 3).
    pub unhealthy: u32,
    /// Inclusive status ranges that pass (default 200-399).
    pub expected_statuses: Vec<(u16, u16)>,
}

impl HealthCheck {
    /// The defaults of everything but `path`.
    pub(crate) fn with_path(path: String) -> HealthCheck {
        HealthCheck {
            path,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy: 2,
            unhealthy: 3,
            expected_statuses: vec![(200, 399)],
        }
    }

    /// Whether a check answered with `status` passes.
    pub fn expects(&self, status: u16) -> bool {
        self.expected_statuses
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

/// One endpoint of a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` as an HTTP authority.
    pub authority: Authority,
    /// Its share of the traffic relative to the other endpoints (default 1, at most
    /// [`MAX_WEIGHT`]).
    pub weight: u32,
}

/// The largest endpoint weight.
pub(crate) const MAX_WEIGHT: u32 = 1000;

/// What a consistent-hash balancer hashes to choose an endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashOn {
    /// The value of this request header (`header:NAME`).
    Header(HeaderName),
    /// The value of this cookie (`cookie:NAME`).
    Cookie(String),
    /// The client's IP address (`ip`).
    Ip,
}

impl std::fmt::Display for HashOn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashOn::Header(name) => write!(f, "header:{name}"),
            HashOn::Cookie(name) => write!(f, "cookie:{name}"),
            HashOn::Ip => f.write_str("ip"),
        }
    }
}
