//! The client-facing server: binds listeners (or takes inherited ones, see
//! [`crate::handover`]), runs one worker thread per client socket, and shuts down
//! gracefully, or hands its sockets to a successor first.

mod deadlines;
mod listener;
mod sniff;
mod tls;
mod worker;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::handover::{HandoverError, Inherited, Listening, Successor};
use crate::plugin::PluginError;
use crate::reload::{Control, Reloader, StartFailure};
use crate::snapshot::ChainMismatch;
use crate::snapshot::{SharedSnapshot, Snapshot};

pub(crate) use deadlines::RequestSlot;
pub(crate) use listener::bind_reuseport;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A worker thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Plugins named by routes could not be loaded or configured.
    #[error("{}", plugin_errors(.0))]
    Plugins(Vec<PluginError>),
    /// The plugin chains built do not match the routes.
    #[error("{0}")]
    Chains(ChainMismatch),
    /// The admin listener would be reachable from other machines without a token.
    #[error("{0}")]
    AdminExposed(String),
    /// Inherited sockets (socket activation, a hand-over) do not fit the config.
    #[error("{0}")]
    Inherited(String),
}

fn plugin_errors(errors: &[PluginError]) -> String {
    let mut text = format!(
        "{} plugin error{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
    for e in errors {
        text.push_str("\n  ");
        text.push_str(&e.to_string());
    }
    text
}

pub use crate::reload::LoadedPlugins;

/// Loads the plugins `config`'s routes name (creating the plugin host only if any do)
/// and returns one chain per route: what `weir check` validates, built as startup and
/// reloads build it.
pub fn load_plugins(config: &Config) -> Result<LoadedPlugins, StartError> {
    crate::reload::check_plugins(config).map_err(StartError::Plugins)
}

/// A running gateway. Dropping it does not stop it: call [`Gateway::shutdown`] and then
/// [`Gateway::wait`].
#[derive(Debug)]
pub struct Gateway {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    control: Arc<Control>,
    shutdown: CancellationToken,
    threads: Vec<JoinHandle<()>>,
    /// Duplicates of the listening sockets for a successor; gone once shutting down.
    listening: Mutex<Option<Listening>>,
}

impl Gateway {
    /// Loads the plugins, binds the listeners and starts the workers, the admin
    /// listener and live reloading.
    pub fn start(config: Config) -> Result<Gateway, StartError> {
        Gateway::start_with(config, &mut Inherited::none())
    }

    /// [`Gateway::start`] on the listening sockets `inherited` holds (socket activation,
    /// or a hand-over from an older `weir`), binding only the listeners it lacks.
    pub fn start_with(config: Config, inherited: &mut Inherited) -> Result<Gateway, StartError> {
        if let Some(problem) = config.admin.exposure_problem() {
            return Err(StartError::AdminExposed(problem));
        }
        let workers = config.server.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let (reloader, first) = Reloader::start(config, workers).map_err(|e| match e {
            StartFailure::Plugins(errors) => StartError::Plugins(errors),
            StartFailure::Chains(mismatch) => StartError::Chains(mismatch),
        })?;
        let config = first.config.clone();
        let listen = config.server.listen;
        let admin_listen = config.admin.listen;
        let bind_error = |addr| move |source| StartError::Bind { addr, source };
        let sorted =
            listener::sort_inherited(std::mem::take(&mut inherited.sockets), listen, admin_listen)
                .map_err(StartError::Inherited)?;
        let server_sockets = match sorted.server.is_empty() {
            true => bind_reuseport(listen, workers).map_err(bind_error(listen))?,
            false => sorted.server,
        };
        let admin_listener = match sorted.admin {
            Some(admin) => admin,
            None => bind_reuseport(admin_listen, 1)
                .map_err(bind_error(admin_listen))?
                .remove(0),
        };
        let addr = server_sockets[0].local_addr().map_err(bind_error(listen))?;
        let admin_addr = admin_listener
            .local_addr()
            .map_err(bind_error(admin_listen))?;
        let duplicate = |l: &std::net::TcpListener| l.try_clone().map(std::os::fd::OwnedFd::from);
        let listening = Listening {
            server: server_sockets
                .iter()
                .map(duplicate)
                .collect::<Result<_, _>>()
                .map_err(bind_error(listen))?,
            admin: duplicate(&admin_listener).map_err(bind_error(admin_listen))?,
        };
        let sockets = server_sockets.len();
        let listeners = listener::deal(server_sockets, workers).map_err(bind_error(listen))?;

        let grace = config.server.shutdown_grace;
        let tls = config.server.tls.is_some();
        let (control, queue) = reloader.control(first);
        let snapshot: SharedSnapshot = control.shared_snapshot();
        let shutdown = CancellationToken::new();
        let mut threads = Vec::with_capacity(workers + 1);
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for (id, listeners) in listeners.into_iter().enumerate() {
            let worker = worker::Worker {
                id,
                connections: connections.clone(),
                listeners,
                snapshot: snapshot.clone(),
                shutdown: shutdown.clone(),
                grace,
                tls,
            };
            let handle = std::thread::Builder::new()
                .name(format!("weir-worker-{id}"))
                .spawn(move || {
                    if let Err(e) = worker.run() {
                        tracing::error!(worker = id, error = %e, "worker failed");
                    }
                })
                .map_err(StartError::Thread)?;
            threads.push(handle);
        }
        threads.push(
            reloader
                .spawn(control.clone(), queue, shutdown.clone())
                .map_err(StartError::Thread)?,
        );
        let admin = crate::admin::Admin {
            listener: admin_listener,
            shutdown: shutdown.clone(),
            control: control.clone(),
        };
        threads.push(
            std::thread::Builder::new()
                .name("weir-admin".to_owned())
                .spawn(move || {
                    if let Err(e) = admin.run() {
                        tracing::error!(error = %e, "admin listener failed");
                    }
                })
                .map_err(StartError::Thread)?,
        );
        tracing::info!(%addr, %admin_addr, workers, sockets, tls, "weir listening");
        Ok(Gateway {
            addr,
            admin_addr,
            control,
            shutdown,
            threads,
            listening: Mutex::new(Some(listening)),
        })
    }

    /// The address clients connect to (the real port when the config said port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin listener's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The snapshot requests currently read.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.control.snapshot()
    }

    /// The live-reload handle: status, and reloads on demand.
    pub fn control(&self) -> &Arc<Control> {
        &self.control
    }

    /// Starts `command` (normally [`crate::handover::same_command`]) as this gateway's
    /// successor, with this gateway's listening sockets. Await
    /// [`Successor::ready`], then [`Gateway::shutdown`]: until then this gateway serves
    /// as before, and goes on doing so if the successor fails.
    pub fn start_successor(
        &self,
        command: std::process::Command,
    ) -> Result<Successor, HandoverError> {
        let listening = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let listening = listening.as_ref().ok_or(HandoverError::ShuttingDown)?;
        let timeout = self.control.snapshot().config.server.handover_timeout;
        Successor::spawn(command, listening, timeout)
    }

    /// Stops accepting connections and lets in-flight requests finish within the grace
    /// period. Returns at once; [`Gateway::wait`] waits for the end.
    pub fn shutdown(&self) {
        self.control.drain();
        self.shutdown.cancel();
        // Without a successor holding them, the sockets close with the workers'.
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }

    /// Blocks until every worker has finished (after [`Gateway::shutdown`]).
    pub fn wait(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}
