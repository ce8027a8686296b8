//! A real `redis-server` (the Debian package; `cargo xtask test` installs it when
//! missing) for the key-value store's tests: on 127.0.0.1, a free port, a fresh
//! directory, no persistence. [`RedisServer::stop`] kills it (the gateway sees refused
//! connections), [`RedisServer::pause`] freezes it (connections stay open, nothing
//! answers: a slow Redis), and [`RedisServer::start_again`] serves the same port anew
//! (empty). Killed on drop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The server's program.
const PROGRAM: &str = "redis-server";

/// A running (or stopped) `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it also listens with TLS, if it does.
    pub tls_addr: Option<SocketAddr>,
    dir: PathBuf,
    /// Options added to the command line (TLS files, a password).
    extra: Vec<String>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free loopback port (a port another process takes between
    /// the pick and the bind is tried again with another).
    pub fn start() -> RedisServer {
        let dir = crate::gateway::fresh_dir();
        for _ in 0..5 {
            let addr = free_port();
            let mut server = RedisServer {
                addr,
                tls_addr: None,
                dir: dir.clone(),
                extra: Vec::new(),
                child: None,
            };
            if server.spawn().is_ok() {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// Starts a server that also listens with TLS (certificate and key files, the
    /// CA file) and requires `password` from every client.
    pub fn start_tls(cert: &Path, key: &Path, ca: &Path, password: &str) -> RedisServer {
        let dir = crate::gateway::fresh_dir();
        for _ in 0..5 {
            let tls_addr = free_port();
            let mut extra: Vec<String> = ["--tls-port", &tls_addr.port().to_string()]
                .iter()
                .map(|s| (*s).to_owned())
                .collect();
            for (option, path) in [
                ("--tls-cert-file", cert),
                ("--tls-key-file", key),
                ("--tls-ca-cert-file", ca),
            ] {
                extra.push(option.to_owned());
                extra.push(path.display().to_string());
            }
            extra.extend(["--tls-auth-clients", "no", "--requirepass", password].map(String::from));
            let mut server = RedisServer {
                addr: free_port(),
                tls_addr: Some(tls_addr),
                dir: dir.clone(),
                extra,
                child: None,
            };
            if server.spawn().is_ok() {
                return server;
            }
        }
        panic!("redis-server (TLS) did not start on any of 5 free ports");
    }

    /// A server that will listen at `addr` once [`RedisServer::start_again`] is called:
    /// for a gateway that starts while Redis is not up.
    pub fn not_started() -> RedisServer {
        RedisServer {
            addr: free_port(),
            tls_addr: None,
            dir: crate::gateway::fresh_dir(),
            extra: Vec::new(),
            child: None,
        }
    }

    /// `redis://ADDR`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: nothing is persisted).
    pub fn start_again(&mut self) {
        self.stop();
        let deadline = Instant::now() + Duration::from_secs(10);
        // The port may linger briefly after the old process.
        while let Err(e) = self.spawn() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start again on {}: {e}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Freezes the server (SIGSTOP): its connections stay open and nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("redis-server is running");
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Sends one command (inline form) and returns the first line of the answer.
    pub fn command(&self, command: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).expect("connect to redis-server");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("send");
        let mut answer = Vec::new();
        let mut buf = [0; 4096];
        while !answer.ends_with(b"\r\n") {
            let n = stream.read(&mut buf).expect("read the answer");
            assert!(n > 0, "redis-server closed the connection");
            answer.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&answer).trim_end().to_owned()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let child = Command::new(PROGRAM)
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.addr.port().to_string())
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "yes",
            ])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {PROGRAM} ({e}): `cargo xtask test` installs it, or \
                     `apt-get install redis-server`"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.child = None;
                return Err(format!("redis-server exited: {status}"));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err("redis-server did not answer PING within 10 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200))
        else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
        let mut buf = [0; 16];
        stream.write_all(b"PING\r\n").is_ok()
            && stream
                .read(&mut buf)
                // A server that requires a password answers, refusing.
                .is_ok_and(|n| buf[..n].starts_with(b"+PONG") || buf[..n].starts_with(b"-NOAUTH"))
    }
}

impl Drop for RedisServer {
    /// Kills the server (SIGKILL ends a paused one too).
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port no one listens on right now.
fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr")
}
