//! The typed `[[upstream]]` settings: endpoints and weights, balancer, and how the
//! cluster survives failure. Defaults follow Envoy's where the config is silent, and are
//! listed on each field.

use http::HeaderName;
use http::uri::Authority;

use super::{Balancer, Timeouts};

/// One upstream cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Its unique name.
    pub name: String,
    /// Its endpoints, in the order written.
    pub endpoints: Vec<Endpoint>,
    /// Endpoint selection policy.
    pub balancer: Balancer,
    /// What `consistent_hash` hashes (present exactly when the balancer is
    /// `consistent_hash`).
    pub hash_on: Option<HashOn>,
    /// Connect, request and idle timeouts.
    pub timeouts: Timeouts,
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
