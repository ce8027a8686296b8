//! Running a gateway as a process: start it, wait for SIGINT/SIGTERM, shut down
//! gracefully, exit; on SIGUSR2, hand the listening sockets over to a new process first
//! ([`crate::handover`]). Also the `check` summary.

use std::fmt::Write as _;

use crate::config::{Config, RouteUpstream};
use crate::handover::{self, HandoverError};
use crate::server::{Gateway, StartError};

/// Why a gateway process stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// It could not start.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The signal-handling runtime could not be set up.
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
}

/// SIGINT, SIGTERM, SIGHUP and SIGUSR2, caught. Install them before starting the gateway: once it logs
/// that it listens, a supervisor may signal it at any moment, and a signal that arrives
/// before the handlers would kill the process instead of shutting it down gracefully.
#[derive(Debug)]
pub struct Signals {
    runtime: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn install() -> Result<Signals, RunError> {
        use tokio::signal::unix::{SignalKind, signal};

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(RunError::Signals)?;
        let term = runtime
            .block_on(async { signal(SignalKind::terminate()) })
            .map_err(RunError::Signals)?;
        let int = runtime
            .block_on(async { signal(SignalKind::interrupt()) })
            .map_err(RunError::Signals)?;
        let hup = runtime
            .block_on(async { signal(SignalKind::hangup()) })
            .map_err(RunError::Signals)?;
        let usr2 = runtime
            .block_on(async { signal(SignalKind::user_defined2()) })
            .map_err(RunError::Signals)?;
        Ok(Signals {
            runtime,
            term,
            int,
            hup,
            usr2,
        })
    }

    /// Serves `gateway` until SIGINT or SIGTERM, then shuts down gracefully: stop
    /// accepting, let in-flight requests finish within the grace period, return. A second
    /// signal ends the wait at once. SIGHUP reloads the config and plugins. SIGUSR2 starts
    /// the same command line as a new process on the same listening sockets; once it
    /// reports ready this one drains the same way (and tells systemd the new process is
    /// the service's main one); if it fails, this one goes on serving and logs why.
    pub fn serve_until_signal(self, gateway: Gateway) -> Result<(), RunError> {
        let Signals {
            runtime,
            mut term,
            mut int,
            mut hup,
            mut usr2,
        } = self;
        let handed_over = runtime.block_on(async {
            // A new process started on SIGUSR2, until it is ready or has failed.
            let mut pending: Option<(u32, tokio::task::JoinHandle<Result<u32, HandoverError>>)> =
                None;
            let handed_over = loop {
                tokio::select! {
                    _ = term.recv() => {
                        tracing::info!("SIGTERM: shutting down gracefully");
                        break false;
                    }
                    _ = int.recv() => {
                        tracing::info!("SIGINT: shutting down gracefully");
                        break false;
                    }
                    _ = hup.recv() => {
                        tracing::info!("SIGHUP: reloading");
                        gateway.control().request_reload("SIGHUP");
                    }
                    _ = usr2.recv() => {
                        if std::process::id() == 1 {
                            // A container's first process: its exit ends the container,
                            // and the new process with it.
                            tracing::error!("SIGUSR2 ignored: this is process 1 (a container's init), whose exit would end the container; replace the container instead");
                            continue;
                        }
                        if let Some((pid, _)) = &pending {
                            tracing::warn!(pid, "SIGUSR2: a hand-over to a new process is already under way");
                            continue;
                        }
                        match gateway.start_successor(handover::same_command()) {
                            Ok(successor) => {
                                let pid = successor.pid();
                                tracing::info!(pid, "SIGUSR2: started a new process on the listening sockets; serving until it is ready");
                                pending = Some((pid, tokio::spawn(successor.ready())));
                            }
                            Err(e) => tracing::error!(error = %e, "SIGUSR2: hand-over failed; still serving"),
                        }
                    }
                    joined = async {
                        match pending.as_mut() {
                            Some((_, task)) => task.await,
                            None => std::future::pending().await,
                        }
                    } => {
                        pending = None;
                        match joined {
                            Ok(Ok(pid)) => {
                                tracing::info!(pid, "hand-over: the new process is ready; draining");
                                handover::notify(&[sd_notify::NotifyState::MainPid(pid)]);
                                break true;
                            }
                            Ok(Err(e)) => tracing::error!(error = %e, "hand-over failed; still serving"),
                            Err(e) => tracing::error!(error = %e, "hand-over failed; still serving"),
                        }
                    }
                }
            };
            // Stopping while a new process is still starting stops it too.
            if let Some((pid, task)) = pending.take() {
                tracing::info!(pid, "stopping the new process that was not ready yet");
                task.abort();
                let _ = task.await;
            }
            handed_over
        });
        if !handed_over {
            handover::notify_stopping();
        }
        gateway.shutdown();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            gateway.wait();
            let _ = done_tx.send(());
        });
        runtime.block_on(async {
            tokio::select! {
                _ = done_rx => tracing::info!("shutdown complete"),
                _ = term.recv() => tracing::warn!("second signal: exiting without waiting"),
                _ = int.recv() => tracing::warn!("second signal: exiting without waiting"),
            }
        });
        Ok(())
    }
}

/// The `weir check` summary of a valid config: listeners, upstreams, routes.
pub fn summary(config: &Config, chains: &[std::sync::Arc<[crate::plugin::ChainEntry]>]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: configuration is valid", config.source.display());
    let _ = writeln!(out, "listeners:");
    let _ = writeln!(out, "  server  {}", config.server.listen);
    if let Some(tls) = &config.server.tls {
        let _ = writeln!(out, "    TLS 1.3 and 1.2, ALPN h2 and http/1.1");
        for c in &tls.certificates {
            let names: Vec<String> = c.names.iter().map(ToString::to_string).collect();
            let serves = match names.is_empty() {
                true => "default".to_owned(),
                false => names.join(", "),
            };
            let _ = writeln!(out, "    certificate {}  {serves}", c.cert.display());
        }
        if let Some(ca) = &tls.client_ca {
            let _ = writeln!(
                out,
                "    client certificates required, from {}",
                ca.display()
            );
        }
    }
    let _ = writeln!(out, "  admin   {}", config.admin.listen);
    let _ = writeln!(out, "upstreams ({}):", config.upstreams.len());
    for u in &config.upstreams {
        let endpoints: Vec<String> = u
            .endpoints
            .iter()
            .map(|e| match e.weight {
                1 => e.authority.to_string(),
                w => format!("{} (weight {w})", e.authority),
            })
            .collect();
        let _ = writeln!(
            out,
            "  {}  {:?}  [{}]  connect {:?}, request {:?}",
            u.name,
            u.balancer,
            endpoints.join(", "),
            u.timeouts.connect,
            u.timeouts.request
        );
    }
    let _ = writeln!(out, "routes ({}, first match wins):", config.routes.len());
    for (i, r) in config.routes.iter().enumerate() {
        let mut conditions = Vec::new();
        if let Some(h) = &r.host {
            conditions.push(format!("host {h:?}"));
        }
        if let Some(p) = &r.path {
            conditions.push(format!("path {p:?}"));
        }
        if !r.methods.is_empty() {
            conditions.push(format!("methods {:?}", r.methods));
        }
        for (name, value) in &r.headers {
            conditions.push(format!("header {name}={value:?}"));
        }
        if conditions.is_empty() {
            conditions.push("any request".to_owned());
        }
        let _ = writeln!(
            out,
            "  {}  {}  -> {}",
            r.name,
            conditions.join(", "),
            destination(config, &r.upstream)
        );
        if let Some(m) = &r.mirror {
            let _ = writeln!(
                out,
                "      mirror {}% to {}",
                m.percent, config.upstreams[m.upstream].name
            );
        }
        for entry in chains.get(i).into_iter().flat_map(|c| c.iter()) {
            let p = &entry.plugin;
            let _ = writeln!(
                out,
                "      plugin {} (sha256 {}, weir:plugin {}, phases {}, isolation {:?}, on_error {:?})",
                p.name,
                &p.version[..12],
                p.wit_version,
                p.phases.names().join("+"),
                entry.settings.isolation,
                entry.settings.on_error,
            );
            if let Some(why) = entry.not_preinitialised_because() {
                let _ = writeln!(
                    out,
                    "        NOT pre-initialised, so `init` runs in every fresh instance: {why}"
                );
            }
        }
    }
    out
}

/// Where a route sends its requests, as the summary shows it.
fn destination(config: &Config, upstream: &RouteUpstream) -> String {
    let name = |index: usize| config.upstreams[index].name.as_str();
    match upstream {
        RouteUpstream::Single(index) => name(*index).to_owned(),
        RouteUpstream::Split(targets) => targets
            .iter()
            .map(|t| format!("{} (weight {})", name(t.upstream), t.weight))
            .collect::<Vec<_>>()
            .join(", "),
        RouteUpstream::Respond(direct) => {
            format!("respond {} ({} bytes)", direct.status, direct.body.len())
        }
    }
}
