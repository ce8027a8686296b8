//! Endpoints given by DNS name (`api.internal:8080`), Envoy's STRICT_DNS: the name is
//! resolved before a snapshot holding the cluster starts serving and again every
//! `dns_refresh`, off the request path and off every runtime thread (tokio's resolver
//! runs lookups on its blocking pool; each is bounded by [`LOOKUP_TIMEOUT`]), and new
//! connections go to the addresses of the latest answer (every address in turn until
//! one connects). An endpoint written as an IP address is never looked up.
//!
//! A name that does not resolve before its snapshot serves leaves the endpoint with no
//! address: it stays in the cluster (health checks and outlier detection treat it like
//! any endpoint that refuses connections), requests sent to it fail with 502, and it
//! serves as soon as a refresh resolves it. A refresh that fails keeps the last good
//! addresses. Both are logged.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::uri::Authority;
use tokio_util::sync::CancellationToken;

use super::Cluster;

/// The addresses new connections to one endpoint go to.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// Whether the endpoint is a DNS name (resolved again on an interval).
    dns: bool,
    addresses: ArcSwap<Vec<SocketAddr>>,
}

impl Resolved {
    /// The address itself for an IP; for a name, no address until [`Cluster::resolve`]
    /// or a refresh looks it up (building a cluster never waits on DNS).
    pub(crate) fn new(authority: &Authority) -> Resolved {
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Resolved {
                dns: false,
                addresses: ArcSwap::from_pointee(vec![SocketAddr::new(ip, port)]),
            };
        }
        Resolved {
            dns: true,
            addresses: ArcSwap::from_pointee(Vec::new()),
        }
    }

    /// Takes the addresses `before` (the same name, in a cluster this one replaces)
    /// resolved, so the endpoint serves without a new lookup.
    pub(crate) fn carry_over(&self, before: &Resolved) {
        if self.dns && before.dns {
            self.addresses.store(before.current());
        }
    }

    /// Whether the endpoint is a DNS name.
    pub(crate) fn is_dns(&self) -> bool {
        self.dns
    }

    /// The addresses to connect to (empty: the name has not resolved yet).
    pub(crate) fn current(&self) -> Arc<Vec<SocketAddr>> {
        self.addresses.load_full()
    }

    /// Looks the name up again; keeps the last good addresses when that fails.
    async fn refresh(&self, upstream: &str, authority: &Authority) {
        let lookup =
            tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(authority.as_str()));
        let found = match lookup.await {
            Ok(found) => found,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {LOOKUP_TIMEOUT:?}"),
            )),
        };
        match found {
            Ok(found) => {
                let mut fresh: Vec<SocketAddr> = found.collect();
                let mut old = (*self.current()).clone();
                fresh.sort();
                old.sort();
                if fresh != old && !fresh.is_empty() {
                    tracing::info!(
                        upstream,
                        endpoint = %authority,
                        addresses = ?fresh,
                        "endpoint resolves to new addresses"
                    );
                    self.addresses.store(Arc::new(fresh));
                }
            }
            Err(e) if self.current().is_empty() => tracing::warn!(
                upstream,
                endpoint = %authority,
                error = %e,
                "endpoint does not resolve: it takes no connections until it does"
            ),
            Err(e) => tracing::warn!(
                upstream,
                endpoint = %authority,
                error = %e,
                "endpoint did not resolve again: keeping its last addresses"
            ),
        }
    }
}

impl Cluster {
    /// Whether any endpoint is a DNS name.
    pub(crate) fn has_dns_endpoints(&self) -> bool {
        self.endpoints.iter().any(|e| e.resolved.is_dns())
    }

    /// Resolves the DNS-named endpoints that have no address yet, all at once: before a
    /// snapshot holding the cluster serves.
    pub(crate) async fn resolve(&self) {
        let unresolved = self
            .endpoints
            .iter()
            .filter(|e| e.resolved.is_dns() && e.resolved.current().is_empty())
            .map(|e| e.resolved.refresh(&self.name, &e.authority));
        futures_util::future::join_all(unresolved).await;
    }

    /// Resolves every DNS-named endpoint again.
    async fn refresh_dns(&self) {
        for endpoint in self.endpoints.iter().filter(|e| e.resolved.is_dns()) {
            endpoint
                .resolved
                .refresh(&self.name, &endpoint.authority)
                .await;
        }
    }
}

/// Re-resolves `cluster`'s DNS endpoints every `every` until the cluster is dropped or
/// `retired` is cancelled. Holds the cluster weakly between rounds.
/// How long one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) async fn refresh_cluster(
    cluster: Weak<Cluster>,
    retired: CancellationToken,
    every: Duration,
) {
    let mut rounds = super::health::Rounds::new(cluster, retired, every);
    // The first round is now: the cluster was resolved before it served.
    rounds.next().await;
    while let Some(cluster) = rounds.next().await {
        cluster.refresh_dns().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn ip_endpoints_are_not_looked_up() {
        let r = Resolved::new(&Authority::from_str("10.1.2.3:8080").unwrap());
        assert!(!r.is_dns());
        assert_eq!(*r.current(), ["10.1.2.3:8080".parse().unwrap()]);
        let v6 = Resolved::new(&Authority::from_str("[::1]:81").unwrap());
        assert_eq!(*v6.current(), ["[::1]:81".parse().unwrap()]);
    }

    #[tokio::test]
    async fn names_resolve_and_a_failed_refresh_keeps_the_last_addresses() {
        let local = Authority::from_str("localhost:8080").unwrap();
        let r = Resolved::new(&local);
        assert!(r.is_dns());
        assert!(r.current().is_empty(), "building looks nothing up");
        r.refresh("u", &local).await;
        assert!(
            r.current()
                .iter()
                .all(|a| a.ip().is_loopback() && a.port() == 8080),
            "{:?}",
            r.current()
        );
        assert!(!r.current().is_empty());
        // `.invalid` never resolves (RFC 6761): no addresses at first, and a failed
        // refresh keeps what a name had.
        let bad = Authority::from_str("no-such-host.invalid:80").unwrap();
        let unresolved = Resolved::new(&bad);
        unresolved.refresh("u", &bad).await;
        assert!(unresolved.current().is_empty());
        let before = r.current();
        r.refresh("u", &bad).await;
        assert_eq!(r.current(), before);
    }
}
