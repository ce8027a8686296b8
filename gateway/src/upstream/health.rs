//! Active health checks. Every cluster with `health` set gets one task that checks all
//! its endpoints each `interval` (see [`super::probe`]) and moves an endpoint out of
//! rotation after `unhealthy` failures in a row and back after `healthy` passes in a
//! row. A new endpoint starts in rotation and its first check decides at once, so a
//! dead endpoint leaves after one interval rather than `unhealthy` of them.
//!
//! The tasks run off the request path on one thread of their own, started when the
//! first cluster with checks appears and stopped when the gateway shuts down. A task
//! holds its cluster weakly and stops as soon as the cluster is dropped (a reload that
//! changed or removed it), so a retired cluster never keeps checking.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::runtime::Handle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::Cluster;
use super::probe::{ProbeFailure, Target, probe};
use crate::config::HealthCheck;

/// The health-check thread; stopped (and joined) when dropped.
#[derive(Debug, Default)]
pub struct HealthChecks {
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    handle: Handle,
    stop: CancellationToken,
    thread: Option<JoinHandle<()>>,
}

impl HealthChecks {
    /// No thread yet: it starts with the first cluster that has checks.
    pub fn new() -> HealthChecks {
        HealthChecks::default()
    }

    /// Starts checking each of `clusters` that has `health` set and is not checked yet.
    pub fn watch(&mut self, clusters: &[Arc<Cluster>]) {
        for cluster in clusters {
            // DNS endpoints are looked up again on the same thread (see `super::dns`).
            if cluster.has_dns_endpoints()
                && !cluster
                    .dns_started
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                && let Some(handle) = self.handle()
            {
                handle.spawn(super::dns::refresh_cluster(
                    Arc::downgrade(cluster),
                    cluster.retired.clone(),
                    cluster.source.dns_refresh,
                ));
            }
            let Some(check) = cluster.source.health.clone() else {
                continue;
            };
            if cluster
                .health_started
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                continue; // kept from the previous snapshot: already checked
            }
            let Some(handle) = self.handle() else {
                return;
            };
            handle.spawn(check_cluster(
                Arc::downgrade(cluster),
                cluster.retired.clone(),
                check,
            ));
        }
    }

    /// The runtime of the health-check thread, started on first use.
    fn handle(&mut self) -> Option<Handle> {
        if let Some(running) = &self.running {
            return Some(running.handle.clone());
        }
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the health-check runtime: active health checks are off");
                return None;
            }
        };
        let handle = runtime.handle().clone();
        let stop = CancellationToken::new();
        let until = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-health".to_owned())
            .spawn(move || runtime.block_on(until.cancelled()));
        match thread {
            Ok(thread) => {
                self.running = Some(Running {
                    handle: handle.clone(),
                    stop,
                    thread: Some(thread),
                });
                Some(handle)
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start the health-check thread: active health checks are off");
                None
            }
        }
    }
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        if let Some(running) = &mut self.running {
            running.stop.cancel();
            if let Some(thread) = running.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// What a check loop remembers of one endpoint between checks.
#[derive(Debug, Clone, Copy, Default)]
struct Streak {
    /// Whether it was checked before (its first check decides at once).
    checked: bool,
    passes: u32,
    failures: u32,
}

/// The rounds of a background task on a cluster (health checks, DNS refreshes): one
/// per interval until the cluster is retired or dropped. The cluster is held weakly
/// between rounds, so a task never keeps a replaced cluster alive.
pub(crate) struct Rounds {
    cluster: Weak<Cluster>,
    retired: CancellationToken,
    tick: tokio::time::Interval,
}

impl Rounds {
    /// Rounds every `every`, the first one at once.
    pub(crate) fn new(
        cluster: Weak<Cluster>,
        retired: CancellationToken,
        every: Duration,
    ) -> Rounds {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Rounds {
            cluster,
            retired,
            tick,
        }
    }

    /// Waits for the next round: the cluster, or `None` once the task should end.
    pub(crate) async fn next(&mut self) -> Option<Arc<Cluster>> {
        tokio::select! {
            () = self.retired.cancelled() => return None,
            _ = self.tick.tick() => {}
        }
        self.cluster.upgrade()
    }
}

/// Checks every endpoint of `cluster` each interval until the cluster is retired.
async fn check_cluster(cluster: Weak<Cluster>, retired: CancellationToken, check: HealthCheck) {
    let mut rounds = Rounds::new(cluster, retired.clone(), check.interval);
    let mut streaks = Vec::new();
    while let Some(cluster) = rounds.next().await {
        streaks.resize(cluster.endpoints.len(), Streak::default());
        let probes = cluster.endpoints.iter().enumerate().map(|(index, e)| {
            let target = Target {
                connector: &cluster.connector,
                protocol: cluster.source.protocol,
                index,
                endpoint: e,
            };
            probe(target, &check)
        });
        let results = tokio::select! {
            () = retired.cancelled() => return,
            results = futures_util::future::join_all(probes) => results,
        };
        for (index, result) in results.into_iter().enumerate() {
            judge(&cluster, &check, index, &mut streaks[index], result);
        }
    }
}

/// Applies one check result to endpoint `index`: counts the streak and moves the
/// endpoint in or out of rotation when a threshold is reached.
fn judge(
    cluster: &Cluster,
    check: &HealthCheck,
    index: usize,
    streak: &mut Streak,
    result: Result<(), ProbeFailure>,
) {
    let endpoint = &cluster.endpoints[index];
    let first = !std::mem::replace(&mut streak.checked, true);
    let healthy = endpoint.healthy();
    match result {
        Ok(()) => {
            streak.passes += 1;
            streak.failures = 0;
            endpoint.set_check_error(None);
            if !healthy && (first || streak.passes >= check.healthy) {
                tracing::info!(
                    upstream = %cluster.name,
                    endpoint = %endpoint.authority,
                    passes = streak.passes,
                    "endpoint passed its health checks: back in rotation"
                );
                cluster.set_healthy(index, true);
            }
        }
        Err(failure) => {
            streak.failures += 1;
            streak.passes = 0;
            let reason = failure.to_string();
            if healthy && (first || streak.failures >= check.unhealthy) {
                tracing::warn!(
                    upstream = %cluster.name,
                    endpoint = %endpoint.authority,
                    failures = streak.failures,
                    error = %reason,
                    "endpoint failed its health checks: out of rotation"
                );
                cluster.set_healthy(index, false);
            }
            endpoint.set_check_error(Some(reason));
        }
    }
}
