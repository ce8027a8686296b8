//! The immutable state a request reads: routes, clusters and the per-request settings,
//! built whole from a validated [`Config`] and swapped atomically.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::config::{Config, EscapedSlashes};
use crate::path::SlashPolicy;
use crate::plugin::ChainEntry;
use crate::router::RouteTable;
use crate::upstream::Cluster;

/// Everything one request needs, consistent with one config version.
#[derive(Debug)]
pub struct Snapshot {
    /// The config this was built from.
    pub config: Arc<Config>,
    /// The route table.
    pub routes: RouteTable,
    /// Upstream clusters, indexed as in the config.
    pub clusters: Vec<Arc<Cluster>>,
    /// Each route's plugin chain, indexed as the routes.
    pub chains: Vec<Arc<[ChainEntry]>>,
    /// How request paths are normalised.
    pub slashes: SlashPolicy,
    /// `Via` values to append, by the request's HTTP version.
    pub via: ViaValues,
    /// Whether to emit access-log events.
    pub access_log: bool,
    /// Whether routed requests get W3C Trace Context handling.
    pub trace_context: bool,
    /// What TLS handshakes on the client listener use (`None`: plain HTTP). Taken per
    /// connection, so a reload's new certificates serve the next handshake.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The `Via` entries for HTTP/1.0, 1.1 and 2 (`1.0 weir`, `1.1 weir`, `2 weir`).
#[derive(Debug, Clone)]
pub struct ViaValues {
    /// For HTTP/1.0 messages.
    pub http10: HeaderValue,
    /// For HTTP/1.1 messages.
    pub http11: HeaderValue,
    /// For HTTP/2 messages.
    pub http2: HeaderValue,
}

impl Snapshot {
    /// Builds the runtime state for `config`, with one upstream pool per worker.
    pub fn build(config: Arc<Config>, workers: usize, chains: Vec<Arc<[ChainEntry]>>) -> Snapshot {
        Snapshot::build_after(config, workers, chains, None)
    }

    /// [`Snapshot::build`] for a reload: clusters whose config did not change are taken
    /// over from `previous`, with their pooled connections.
    pub fn build_after(
        config: Arc<Config>,
        workers: usize,
        chains: Vec<Arc<[ChainEntry]>>,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let kept = |u: &crate::config::Upstream| {
            previous?.clusters.iter().find(|c| c.source == *u).cloned()
        };
        let pseudonym = &config.server.via;
        let via_for = |version: &str| {
            HeaderValue::try_from(format!("{version} {pseudonym}"))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 weir"))
        };
        Snapshot {
            routes: RouteTable::new(&config.routes),
            chains: if chains.len() == config.routes.len() {
                chains
            } else {
                config
                    .routes
                    .iter()
                    .map(|_| Arc::from(Vec::new()))
                    .collect()
            },
            clusters: config
                .upstreams
                .iter()
                .map(|u| kept(u).unwrap_or_else(|| Arc::new(Cluster::new(u, workers))))
                .collect(),
            slashes: match config.server.escaped_slashes {
                EscapedSlashes::Keep => SlashPolicy::Keep,
                EscapedSlashes::Reject => SlashPolicy::Reject,
                EscapedSlashes::Decode => SlashPolicy::Decode,
            },
            via: ViaValues {
                http10: via_for("1.0"),
                http11: via_for("1.1"),
                http2: via_for("2"),
            },
            access_log: config.server.access_log,
            trace_context: config.server.trace_context,
            tls: config.server.tls.as_ref().map(|t| t.server_config.clone()),
            config,
        }
    }
}

/// The current snapshot, shared by all workers; readers never block writers.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;
