//! The immutable state a request reads: routes, clusters and the per-request settings,
//! built whole from a validated [`Config`] and swapped atomically.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use crate::cache::ResponseCache;
use crate::client_trust::ClientTrust;
use crate::config::Config;
use crate::plugin::ChainEntry;
use crate::router::{PathRules, RouteTable};
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
    /// Which clients' forwarding headers are believed, and what others may not send.
    pub trust: ClientTrust,
    /// `Via` values to append, by the request's HTTP version.
    pub via: ViaValues,
    /// Whether to emit access-log events.
    pub access_log: bool,
    /// Whether routed requests get W3C Trace Context handling.
    pub trace_context: bool,
    /// The response cache, when a route caches (kept across reloads while `[cache]
    /// memory` stays the same).
    pub cache: Option<Arc<ResponseCache>>,
    /// The header that reports `HIT`, `MISS` or `STALE` on cached routes.
    pub cache_header: Option<http::HeaderName>,
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

/// Chains that do not match their config's routes: a route would run with other
/// plugins than its config names.
#[derive(Debug, thiserror::Error)]
#[error("route `{route}` names plugins [{expected}] but its chain holds [{built}]")]
pub struct ChainMismatch {
    /// The route (or `(N routes)` when the number of chains is off).
    pub route: String,
    /// The plugins the config names.
    pub expected: String,
    /// The plugins the chain holds.
    pub built: String,
}

impl Snapshot {
    /// Looks up the DNS names of its clusters' endpoints that have no address yet
    /// (concurrently, each bounded): done before the snapshot serves, so its first
    /// requests find addresses, and never on a worker.
    pub async fn resolve_names(&self) {
        futures_util::future::join_all(self.clusters.iter().map(|c| c.resolve())).await;
    }

    /// Builds the runtime state for `config`, with one upstream pool per worker and
    /// `chains` holding one chain per route, exactly the plugins the route names.
    /// Clusters whose config did not change are taken over from `previous`, with their
    /// pooled connections; those whose endpoints alone changed keep the connections of
    /// the endpoints that stayed.
    pub fn new(
        config: Arc<Config>,
        workers: usize,
        chains: Vec<Arc<[ChainEntry]>>,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ChainMismatch> {
        check_chains(&config, &chains)?;
        let kept = |u: &crate::config::Upstream| {
            previous?.clusters.iter().find(|c| c.source == *u).cloned()
        };
        // A cluster whose endpoints alone changed is built from the one it replaces, so
        // the endpoints that stayed keep their pooled connections.
        let cluster = |u: &crate::config::Upstream| {
            let before = previous.and_then(|p| p.clusters.iter().find(|c| c.can_succeed(u)));
            Arc::new(match before {
                Some(before) => before.succeed(u, workers),
                None => Cluster::new(u, workers),
            })
        };
        let pseudonym = &config.server.via;
        let via_for = |version: &str| {
            HeaderValue::try_from(format!("{version} {pseudonym}"))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 weir"))
        };
        let cache = config.routes.iter().any(|r| r.cache.is_some()).then(|| {
            let memory = config.cache.memory;
            previous
                .and_then(|p| p.cache.clone())
                .filter(|c| c.memory() == memory)
                .unwrap_or_else(|| Arc::new(ResponseCache::new(memory)))
        });
        Ok(Snapshot {
            cache,
            cache_header: config.cache.header.clone(),
            routes: RouteTable::new(
                &config.routes,
                PathRules {
                    slashes: config.server.escaped_slashes,
                    ambiguous: config.server.ambiguous_paths,
                },
            ),
            chains,
            clusters: config
                .upstreams
                .iter()
                .map(|u| kept(u).unwrap_or_else(|| cluster(u)))
                .collect(),
            trust: ClientTrust::new(
                &config.server.trusted_proxies,
                &config.server.strip_client_headers,
            ),
            via: ViaValues {
                http10: via_for("1.0"),
                http11: via_for("1.1"),
                http2: via_for("2"),
            },
            access_log: config.server.access_log,
            trace_context: config.server.trace_context,
            tls: config.server.tls.as_ref().map(|t| t.server_config.clone()),
            config,
        })
    }
}

/// Checks that `chains` has one chain per route of `config`, each holding the plugins
/// the route names, in order.
fn check_chains(config: &Config, chains: &[Arc<[ChainEntry]>]) -> Result<(), ChainMismatch> {
    if chains.len() != config.routes.len() {
        return Err(ChainMismatch {
            route: format!("({} routes)", config.routes.len()),
            expected: format!("{} chains", config.routes.len()),
            built: format!("{} chains", chains.len()),
        });
    }
    for (route, chain) in config.routes.iter().zip(chains) {
        let expected = route.plugins.iter().map(|u| u.name.as_str());
        let built = chain.iter().map(|e| e.usage.name.as_str());
        if !expected.clone().eq(built.clone()) {
            return Err(ChainMismatch {
                route: route.name.clone(),
                expected: expected.collect::<Vec<_>>().join(", "),
                built: built.collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}

/// The current snapshot, shared by all workers; readers never block writers.
pub type SharedSnapshot = Arc<ArcSwap<Snapshot>>;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(routes: &str) -> Arc<Config> {
        let text = format!("[[upstream]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9\"]\n{routes}");
        Arc::new(Config::parse(Path::new("weir.toml"), &text).expect("valid config"))
    }

    #[test]
    fn a_route_never_runs_with_fewer_plugins_than_it_names() {
        let with_plugin = config(
            "[[route]]\nname = \"guarded\"\nupstream = \"up\"\nplugins = [{ name = \"api-key\" }]\n",
        );
        let empty = || Arc::<[ChainEntry]>::from(Vec::new());
        let error = Snapshot::new(with_plugin.clone(), 1, vec![empty()], None)
            .expect_err("a chain without the route's plugin");
        assert_eq!(error.route, "guarded");
        assert_eq!(error.expected, "api-key");
        let error =
            Snapshot::new(with_plugin, 1, Vec::new(), None).expect_err("no chain for the route");
        assert!(error.to_string().contains("1 chains"), "{error}");

        let plain = config("[[route]]\nname = \"open\"\nupstream = \"up\"\n");
        assert!(Snapshot::new(plain.clone(), 1, vec![empty()], None).is_ok());
        assert!(Snapshot::new(plain, 1, vec![empty(), empty()], None).is_err());
    }
}
