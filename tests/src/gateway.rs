//! Gateways under test: in-process ([`TestGateway`], fast, for most tests) and the real
//! `weir` binary as a child process ([`WeirProcess`], for signals, exit codes and memory).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use weir_gateway::{Config, Gateway};

/// A gateway running in this process; shut down on drop.
#[derive(Debug)]
pub struct TestGateway {
    gateway: Option<Gateway>,
    /// The client listener.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl TestGateway {
    /// Starts a gateway from config text. `[server]` and `[admin]` listen on free
    /// loopback ports unless the text sets them.
    pub fn start(toml: &str) -> TestGateway {
        let text = with_test_listeners(toml);
        let config = Config::parse(Path::new("test.toml"), &text)
            .unwrap_or_else(|e| panic!("test config is invalid: {e}\n{text}"));
        let gateway = Gateway::start(config).expect("gateway starts");
        TestGateway {
            addr: gateway.local_addr(),
            admin: gateway.admin_addr(),
            gateway: Some(gateway),
        }
    }

    /// Starts a gateway from the config file at `path` (watched for changes, as in
    /// production). Write it with [`with_test_listeners`] for free ports.
    pub fn from_file(path: &Path) -> TestGateway {
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let gateway = Gateway::start(config).expect("gateway starts");
        TestGateway {
            addr: gateway.local_addr(),
            admin: gateway.admin_addr(),
            gateway: Some(gateway),
        }
    }

    /// `http://ADMIN` + `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// The snapshot requests currently read (routes, clusters, plugin chains).
    pub fn snapshot(&self) -> std::sync::Arc<weir_gateway::snapshot::Snapshot> {
        self.gateway.as_ref().expect("running").snapshot()
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `POST /admin/reload`: the status and the reload report.
    pub async fn reload(&self) -> (u16, serde_json::Value) {
        let req = http::Request::post(self.admin_url("/admin/reload"))
            .body(crate::client::empty())
            .expect("request");
        let reply = crate::client::send(&crate::client::h1_client(), req).await;
        let doc = serde_json::from_slice(&reply.body).expect("report JSON");
        (reply.status.as_u16(), doc)
    }

    /// `GET` an admin path that answers JSON (panics unless it is 200 and JSON).
    pub async fn admin_json(&self, path: &str) -> serde_json::Value {
        let reply = crate::client::get(&self.admin_url(path)).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        serde_json::from_slice(&reply.body).expect("admin JSON")
    }

    /// The value of one `/metrics` series, written as on its line
    /// (`name{label="value",...}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = crate::client::get(&self.admin_url("/metrics")).await.text();
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(str::trim))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for TestGateway {
    /// Starts a graceful shutdown and lets it finish in the background: waiting here
    /// would block the test's runtime, and with it the clients the gateway is draining.
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.shutdown();
            std::thread::spawn(move || gateway.wait());
        }
    }
}

/// Adds test defaults: port-0 listeners, a short grace period, two workers.
pub fn with_test_listeners(toml: &str) -> String {
    let mut text = String::new();
    if !toml.contains("[server]") {
        text.push_str("[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nshutdown_grace = \"5s\"\n");
    }
    if !toml.contains("[admin]") {
        text.push_str("[admin]\nlisten = \"127.0.0.1:0\"\n");
    }
    text.push_str(toml);
    text
}

/// The real `weir` binary running as a child process; killed on drop if still running.
#[derive(Debug)]
pub struct WeirProcess {
    child: Child,
    /// The client listener, read from the process's startup log.
    pub addr: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// Log lines (standard output, where `weir run` logs) after startup, as they arrive.
    pub log: mpsc::Receiver<String>,
    /// Everything written to standard error so far (errors, not log lines).
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl WeirProcess {
    /// Runs `BIN --log-format json ARGS...` (BIN from [`weir_bin!`](crate::weir_bin))
    /// and waits for its "listening" line.
    #[allow(clippy::zombie_processes)] // reaped by `Drop`, or by `wait_exit`
    pub fn spawn(bin: &Path, args: &[&str]) -> WeirProcess {
        WeirProcess::spawn_with_env(bin, args, &[])
    }

    /// [`WeirProcess::spawn`] with these environment variables set for the child.
    #[allow(clippy::zombie_processes)] // reaped by `Drop`, or by `wait_exit`
    pub fn spawn_with_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> WeirProcess {
        let mut command = Command::new(bin);
        command
            .arg("--log-format")
            .arg("json")
            .args(args)
            .envs(env.iter().copied());
        WeirProcess::spawn_command(command)
    }

    /// Runs `command`, which starts `weir ... --log-format json run ...` (perhaps
    /// through a wrapper, or with descriptors mapped), and waits for its "listening"
    /// line. `RUST_LOG` is `info` unless the command sets it.
    #[allow(clippy::zombie_processes)] // reaped by `Drop`, or by `wait_exit`
    pub fn spawn_command(mut command: Command) -> WeirProcess {
        if !command.get_envs().any(|(name, _)| name == "RUST_LOG") {
            command.env("RUST_LOG", "info");
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn weir");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let errors = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut pipe = child.stderr.take().expect("stderr");
        let sink = errors.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = std::io::Read::read(&mut pipe, &mut chunk) {
                let text = String::from_utf8_lossy(&chunk[..n]);
                sink.lock().expect("stderr buffer").push_str(&text);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "weir did not report listening within 20 s; its log so far:\n{}\nstderr:\n{}",
                    seen.join("\n"),
                    errors.lock().expect("stderr buffer")
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "weir exited ({:?}) before listening; its log:\n{}\nstderr:\n{}",
                    child.wait(),
                    seen.join("\n"),
                    errors.lock().expect("stderr buffer")
                ),
            };
            if line.contains("weir listening") {
                // The child is owned by the returned value, whose Drop kills and reaps it.
                let addr = json_field(&line, "addr").expect("addr in listening line");
                let admin = json_field(&line, "admin_addr").expect("admin_addr");
                return WeirProcess {
                    child,
                    addr: addr.parse().expect("addr"),
                    admin: admin.parse().expect("admin addr"),
                    log: rx,
                    stderr: errors,
                };
            }
            seen.push(line);
        }
    }

    /// Writes `toml` to a temporary file and runs `BIN run --config FILE`.
    pub fn with_config(bin: &Path, toml: &str) -> WeirProcess {
        let config = write_config(toml);
        let path = config.to_str().expect("temp paths are UTF-8");
        WeirProcess::spawn(bin, &["run", "--config", path])
    }

    /// Waits (off the async runtime) up to `limit` for the exit code, as
    /// [`WeirProcess::wait_exit`].
    pub async fn exit_code(mut self, limit: Duration) -> Option<i32> {
        tokio::task::spawn_blocking(move || self.wait_exit(limit))
            .await
            .expect("wait task")
    }

    /// What the process has written to standard error so far (its log is on standard
    /// output, in [`WeirProcess::log`]).
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Reads log lines until one contains `needle` and returns it; `None` if none does
    /// within `limit` (or the process's output ended). Lines read on the way are gone.
    pub fn wait_log(&self, needle: &str, limit: Duration) -> Option<String> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.log.recv_timeout(left).ok()?;
            if line.contains(needle) {
                return Some(line);
            }
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`) with `kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `limit` for the process to exit; its exit code, or `None` if it was
    /// still running (it is then killed).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        None
    }

    /// The process's peak resident memory (`VmHWM`) in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc status")
    }
}

impl Drop for WeirProcess {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The string value of `"name":"value"` in a JSON log line.
fn json_field(line: &str, name: &str) -> Option<String> {
    let key = format!("\"{name}\":\"");
    let start = line.find(&key)? + key.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// A new empty directory under the system temp dir, unique to this process and call.
pub fn fresh_dir() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    static CLEANED: std::sync::Once = std::sync::Once::new();
    CLEANED.call_once(remove_dead_runs);
    let dir = std::env::temp_dir()
        .join(format!("weir-test-{}", std::process::id()))
        .join(N.fetch_add(1, Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Removes the directories of earlier test processes that have exited (tests keep
/// theirs while they run, and compile caches make them large), so runs do not pile up.
fn remove_dead_runs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("weir-test-")) else {
            continue;
        };
        // `weir-test-PID` (and the older `weir-test-PID-N`): gone when PID is.
        let pid = pid.split('-').next().unwrap_or(pid);
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The plugin compile cache (`[plugins] cache_dir`) the tests of this process share:
/// Cranelift takes seconds of CPU for a large plugin such as `jwt-auth`, and the cache is
/// keyed by the plugin's SHA-256 and the engine, so a test that starts a gateway with a
/// plugin another test already compiled loads the artifact instead. Tests about the
/// cache itself use a fresh one. Removed with this process's other directories.
pub fn compile_cache() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    // Not made here: the gateway makes it, `0700`, as it does any cache directory.
    DIR.get_or_init(|| fresh_dir().join("compile-cache"))
}

/// A fresh directory with a `plugins/` folder holding each `(wasm, NAME)` as
/// `NAME.wasm` (a compile cache can go in `cache/` beside it, or see
/// [`compile_cache`]).
pub fn plugin_dir(plugins: &[(&Path, &str)]) -> PathBuf {
    let dir = fresh_dir();
    std::fs::create_dir_all(dir.join("plugins")).expect("plugins dir");
    for (wasm, name) in plugins {
        std::fs::copy(wasm, dir.join("plugins").join(format!("{name}.wasm"))).expect("copy plugin");
    }
    dir
}

/// Writes `text` to a fresh temporary file named `weir.toml` and returns its path.
pub fn write_config(text: &str) -> PathBuf {
    let path = fresh_dir().join("weir.toml");
    std::fs::write(&path, text).expect("write config");
    path
}
