//! Zero-downtime restarts: listening sockets handed from a running `weir` to a new one.
//!
//! Both directions speak systemd's socket-activation protocol (`sd_listen_fds(3)`): the
//! sockets are file descriptors 3, 4, ... of the new process, `LISTEN_FDS` says how many
//! and `LISTEN_FDNAMES` names them, colon-separated. So a `weir.socket` unit hands
//! sockets to `weir` the same way an old `weir` does.
//!
//! - **Receiving** ([`Inherited::from_env`]): each descriptor must be a listening TCP
//!   socket. One named `server` serves clients and one named `admin` the admin API; an
//!   unnamed one (or one named otherwise, such as systemd's default, the unit's name)
//!   takes the role whose configured address it has. `LISTEN_PID`, when set, must be this
//!   process's id (else the descriptors were meant for another process and are left
//!   alone); when it is absent the descriptors are taken, as the `listenfd` crate and
//!   `systemfd --no-pid` do, because the process that starts a successor cannot know the
//!   successor's id before it runs.
//! - **Handing over** ([`crate::Gateway::start_successor`], on SIGUSR2): the running
//!   gateway starts the same command line again (`argv[0]`, looked up as the shell did,
//!   so a binary replaced at that path or a moved symlink starts the new version) with
//!   its own listening sockets, the very same ones, not new binds, so no connection
//!   queued in a backlog is lost, plus one more descriptor named `weir-handover`, a
//!   socket on which the new process writes `READY=1` once it serves. Until then, and
//!   for good if the new process exits or is not ready within `[server]
//!   handover_timeout`, the old one goes on serving. Once the new one is ready, the old
//!   one drains within `shutdown_grace` and exits 0.
//!
//! A new process with fewer workers than it inherited sockets gives some workers several;
//! one with more lets workers share a socket. It never binds a new socket on an address
//! it inherited: a socket of its own in the `SO_REUSEPORT` group would take a share of
//! new connections before the process is known to be ready, and closing it (if the
//! process then failed) would reset the connections queued on it.

use std::io::{self, Write as _};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

/// `LISTEN_FDNAMES` name of the client listener's sockets.
pub const SERVER_NAME: &str = "server";
/// `LISTEN_FDNAMES` name of the admin listener's socket.
pub const ADMIN_NAME: &str = "admin";
/// `LISTEN_FDNAMES` name of the socket a successor reports readiness on.
pub const CHANNEL_NAME: &str = "weir-handover";
/// The first inherited descriptor (after standard input, output and error).
const FIRST_FD: usize = 3;

/// A listening socket this process inherited.
#[derive(Debug)]
pub struct InheritedSocket {
    /// Its descriptor number at startup.
    pub(crate) fd: usize,
    /// Its `LISTEN_FDNAMES` name (empty when unnamed).
    pub(crate) name: String,
    pub(crate) listener: TcpListener,
    pub(crate) addr: SocketAddr,
}

impl std::fmt::Display for InheritedSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.name.as_str() {
            "" => write!(f, "inherited socket (fd {}, {})", self.fd, self.addr),
            name => write!(
                f,
                "inherited socket {name:?} (fd {}, {})",
                self.fd, self.addr
            ),
        }
    }
}

/// What this process inherited through the socket-activation protocol: listening
/// sockets, and, when an older `weir` started it, the channel to report readiness on.
#[derive(Debug, Default)]
pub struct Inherited {
    pub(crate) sockets: Vec<InheritedSocket>,
    channel: Option<UnixStream>,
    /// Why `LISTEN_FDS` was left alone, for the log.
    ignored: Option<String>,
}

/// An inherited descriptor that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("inherited file descriptor {fd} ({name:?}): {reason}")]
pub struct InheritError {
    fd: usize,
    name: String,
    reason: String,
}

impl Inherited {
    /// Nothing inherited: every listener is bound from the config.
    pub fn none() -> Inherited {
        Inherited::default()
    }

    /// Takes the descriptors `LISTEN_FDS` announces. Call it first thing in `main`,
    /// before any thread starts: it removes `LISTEN_FDS` and `LISTEN_PID` from the
    /// environment (through `listenfd`), which is only sound while no other thread reads
    /// it.
    pub fn from_env() -> Result<Inherited, InheritError> {
        let Ok(count) = std::env::var("LISTEN_FDS") else {
            return Ok(Inherited::none());
        };
        if let Ok(pid) = std::env::var("LISTEN_PID")
            && !pid.is_empty()
            && pid.parse::<u32>().ok() != Some(std::process::id())
        {
            return Ok(Inherited {
                ignored: Some(format!(
                    "LISTEN_FDS={count} is for process {pid}, not this one ({}): not taken",
                    std::process::id()
                )),
                ..Inherited::default()
            });
        }
        let names: Vec<String> = std::env::var("LISTEN_FDNAMES")
            .map(|names| names.split(':').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut fds = listenfd::ListenFd::from_env();
        let mut inherited = Inherited::none();
        for index in 0..fds.len() {
            let fd = FIRST_FD + index;
            let name = names.get(index).cloned().unwrap_or_default();
            let fail = |reason: String| InheritError {
                fd,
                name: name.clone(),
                reason,
            };
            if name == CHANNEL_NAME {
                let channel = fds
                    .take_custom::<UnixStream>(
                        index,
                        libc::AF_UNIX,
                        libc::SOCK_STREAM,
                        "unix stream socket",
                    )
                    .map_err(|e| fail(e.to_string()))?;
                inherited.channel = channel;
                continue;
            }
            let listener = fds
                .take_tcp_listener(index)
                .map_err(|e| fail(e.to_string()))?
                .ok_or_else(|| fail("taken twice".to_owned()))?;
            match rustix::net::sockopt::socket_acceptconn(&listener) {
                Ok(true) => {}
                Ok(false) => return Err(fail("a TCP socket that is not listening".to_owned())),
                Err(e) => return Err(fail(e.to_string())),
            }
            listener
                .set_nonblocking(true)
                .map_err(|e| fail(e.to_string()))?;
            let addr = listener.local_addr().map_err(|e| fail(e.to_string()))?;
            inherited.sockets.push(InheritedSocket {
                fd,
                name,
                listener,
                addr,
            });
        }
        Ok(inherited)
    }

    /// Whether an older `weir` started this process (and waits for its readiness).
    pub fn from_predecessor(&self) -> bool {
        self.channel.is_some()
    }

    /// Logs what was inherited (or why `LISTEN_FDS` was not taken); call once logging
    /// is set up.
    pub fn log(&self) {
        if let Some(why) = &self.ignored {
            tracing::warn!("{why}");
        }
        for socket in &self.sockets {
            tracing::info!(fd = socket.fd, name = %socket.name, addr = %socket.addr, "inherited a listening socket");
        }
    }

    /// Says the gateway serves: to the older `weir` that started this one, over the
    /// hand-over channel, or else to systemd (`READY=1` on `NOTIFY_SOCKET`, when set).
    pub fn report_ready(&mut self) {
        match self.channel.take() {
            Some(mut channel) => {
                if let Err(e) = channel.write_all(b"READY=1\n") {
                    tracing::warn!(error = %e, "cannot tell the old process this one is ready");
                }
            }
            None => notify(&[sd_notify::NotifyState::Ready]),
        }
    }
}

/// Sends systemd a state change when it supervises this process (`NOTIFY_SOCKET` set);
/// a failure is logged, never fatal.
pub(crate) fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}

/// Tells systemd that this process is stopping (SIGTERM or SIGINT, not a hand-over).
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

/// The command line this process was started with: `argv[0]` as given (a bare name is
/// looked up on `PATH` again, a path is opened again, so it finds a binary installed
/// there since), and the same arguments. Standard output and error are shared.
pub fn same_command() -> Command {
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_else(|| "weir".into());
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    command
}

/// Why a hand-over did not happen; the running gateway keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The gateway is shutting down or another hand-over holds the sockets.
    #[error("the gateway is shutting down")]
    ShuttingDown,
    /// Preparing the descriptors or starting the process failed.
    #[error("cannot start the new process: {0}")]
    Spawn(#[source] io::Error),
    /// The new process exited before it reported ready.
    #[error("the new process {pid} exited ({status}) before it was ready (its log says why)")]
    Exited {
        /// Its process id.
        pid: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// The new process did not report ready in time; it was stopped.
    #[error("the new process {pid} did not report ready within {timeout:?}; it was stopped")]
    NotReady {
        /// Its process id.
        pid: u32,
        /// `[server] handover_timeout`.
        timeout: Duration,
    },
    /// Reading the hand-over channel failed; the new process was stopped.
    #[error("the hand-over channel failed: {0}; the new process was stopped")]
    Channel(#[source] io::Error),
}

/// Duplicates of a gateway's listening sockets, kept to hand them over.
#[derive(Debug)]
pub(crate) struct Listening {
    pub(crate) server: Vec<OwnedFd>,
    pub(crate) admin: OwnedFd,
}

/// A new `weir` started with this one's sockets, not yet known to serve. Dropped
/// before it is ready, it is killed (and reaped).
#[derive(Debug)]
pub struct Successor {
    child: Option<Child>,
    channel: Option<UnixStream>,
    timeout: Duration,
}

impl Successor {
    /// Starts `command` with `listening` as its descriptors 3, 4, ... and the hand-over
    /// channel after them.
    pub(crate) fn spawn(
        mut command: Command,
        listening: &Listening,
        timeout: Duration,
    ) -> Result<Successor, HandoverError> {
        let (ours, theirs) = UnixStream::pair().map_err(HandoverError::Spawn)?;
        let mut mappings = Vec::with_capacity(listening.server.len() + 2);
        let mut names = Vec::with_capacity(listening.server.len() + 2);
        for fd in &listening.server {
            mappings.push(fd.try_clone().map_err(HandoverError::Spawn)?);
            names.push(SERVER_NAME);
        }
        mappings.push(listening.admin.try_clone().map_err(HandoverError::Spawn)?);
        names.push(ADMIN_NAME);
        mappings.push(OwnedFd::from(theirs));
        names.push(CHANNEL_NAME);
        let mappings: Vec<FdMapping> = mappings
            .into_iter()
            .enumerate()
            .map(|(i, parent_fd)| FdMapping {
                parent_fd,
                child_fd: i32::try_from(FIRST_FD + i).unwrap_or(i32::MAX),
            })
            .collect();
        command
            .env("LISTEN_FDS", names.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"))
            .env_remove("LISTEN_PID")
            .fd_mappings(mappings)
            .map_err(|e| HandoverError::Spawn(io::Error::other(e)))?;
        let child = command.spawn().map_err(HandoverError::Spawn)?;
        // The command holds the descriptors it mapped: our copy of the child's end of
        // the channel must close, or its exit would not end our read.
        drop(command);
        Ok(Successor {
            child: Some(child),
            channel: Some(ours),
            timeout,
        })
    }

    /// The new process's id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Waits until the new process reports ready (its pid), exits, or passes the
    /// timeout (it is then killed).
    pub async fn ready(mut self) -> Result<u32, HandoverError> {
        let pid = self.pid();
        let channel = self.channel.take().expect("a successor is awaited once");
        let outcome = async {
            channel.set_nonblocking(true)?;
            let mut channel = tokio::net::UnixStream::from_std(channel)?;
            let mut said = Vec::new();
            loop {
                let mut chunk = [0u8; 64];
                let n = tokio::io::AsyncReadExt::read(&mut channel, &mut chunk).await?;
                if n == 0 {
                    return Ok(false);
                }
                said.extend_from_slice(&chunk[..n]);
                if said.windows(7).any(|w| w == b"READY=1") {
                    return Ok(true);
                }
            }
        };
        match tokio::time::timeout(self.timeout, outcome).await {
            Ok(Ok(true)) => {
                // Ready: from now on it runs on its own.
                self.child = None;
                Ok(pid)
            }
            Ok(Ok(false)) => {
                // It closed the channel: it is exiting, or gone.
                let mut child = self.child.take().expect("child present");
                for _ in 0..100 {
                    if let Ok(Some(status)) = child.try_wait() {
                        return Err(HandoverError::Exited { pid, status });
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                self.child = Some(child);
                Err(HandoverError::Channel(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed without READY=1",
                )))
            }
            Ok(Err(e)) => Err(HandoverError::Channel(e)),
            Err(_) => Err(HandoverError::NotReady {
                pid,
                timeout: self.timeout,
            }),
        }
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
