//! The container image built and run here, where no registry is reachable:
//! `container/Containerfile.scratch` (`FROM scratch`, nothing pulled) built by podman
//! around the tests' own `weir` (glibc), exactly the shared libraries `ldd` lists for it
//! and the first-party plugins, then run with podman and reached from the host through
//! ports published on 127.0.0.1. `cargo xtask image` builds the same Containerfile
//! around a static (musl) `weir`, a release build too slow for CI.
//!
//! podman is `WEIR_PODMAN` (set by `cargo xtask test`, which installs podman: there a
//! missing podman fails these tests), else `podman` on the `PATH`; with neither they
//! skip.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use http::StatusCode;
use weir_tests::gateway::fresh_dir;
use weir_tests::{Reply, client, first_party, guest_wasm, poll, weir_bin};

/// The admin token the containers get (the default config wants one: its admin
/// listener is off loopback).
const TOKEN: &str = "test-token";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// podman: `WEIR_PODMAN`, else `podman` if it runs; `None` (the test skips) otherwise.
fn podman() -> Option<Podman> {
    if let Some(program) = std::env::var_os("WEIR_PODMAN") {
        return Some(Podman {
            program: program.into(),
        });
    }
    Command::new("podman")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
        .then(|| Podman {
            program: "podman".into(),
        })
}

/// The podman program.
struct Podman {
    program: PathBuf,
}

impl Podman {
    /// Runs `podman ARGS` to completion.
    fn output(&self, args: &[&str]) -> Output {
        Command::new(&self.program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program.display()))
    }

    /// `podman ARGS`, which must succeed: its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {} failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// `podman run` options that hosts like these need and any host accepts. runc when it
/// is installed: Debian 12's crun (1.8) refuses a host whose cgroups are half v1, half
/// v2 ("cgroups in hybrid mode not supported"). Limits no higher than the host's: by
/// default podman asks for more open files and processes than the host allows, which
/// root without `CAP_SYS_RESOURCE` may not ("setrlimit `RLIMIT_NOFILE`: Operation not
/// permitted").
fn run_options() -> Vec<&'static str> {
    let mut options = vec![
        "--ulimit",
        "nofile=4096:4096",
        "--ulimit",
        "nproc=4096:4096",
    ];
    if Command::new("runc").arg("--version").output().is_ok() {
        options.extend(["--runtime", "runc"]);
    }
    options
}

/// The shared libraries `ldd` says `binary` loads, the dynamic loader included, at the
/// paths it gives (the kernel's vDSO has no file and is left out).
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !text.contains("not found"),
        "{text}"
    );
    // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)`, `/lib64/ld-linux-x86-64.so.2 (0x...)`.
    text.lines()
        .filter_map(|line| line.split("=>").last()?.split_whitespace().next())
        .filter(|path| path.starts_with('/'))
        .map(PathBuf::from)
        .collect()
}

/// The Containerfile's build context (its header lists the tree) around the tests'
/// `weir`: the binary without its debug info (the same code in a tenth of the size),
/// the libraries it loads, the default config, every first-party plugin and a `/tmp`
/// anyone may write.
fn stage_context() -> PathBuf {
    let context = fresh_dir();
    let rootfs = context.join("rootfs");
    let bin_dir = rootfs.join("usr/local/bin");
    std::fs::create_dir_all(&bin_dir).expect("bin dir");
    let status = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(bin_dir.join("weir"))
        .arg(weir_bin!())
        .status()
        .expect("run strip (binutils)");
    assert!(status.success(), "strip failed");

    let libraries = shared_libraries(weir_bin!());
    assert!(
        libraries.iter().any(|l| l.ends_with("libc.so.6")),
        "{libraries:?}"
    );
    for library in &libraries {
        let inside = rootfs.join(library.strip_prefix("/").expect("absolute"));
        std::fs::create_dir_all(inside.parent().expect("a directory")).expect("lib dir");
        // Through symbolic links: the image holds each file at the path asked for.
        std::fs::copy(library, &inside).expect("copy library");
    }

    let etc = rootfs.join("etc/weir");
    std::fs::create_dir_all(&etc).expect("etc dir");
    std::fs::copy(root().join("container/weir.toml"), etc.join("weir.toml")).expect("copy config");
    std::fs::rename(
        first_party::plugin_dir().join("plugins"),
        etc.join("plugins"),
    )
    .expect("move plugins");

    let tmp = rootfs.join("tmp");
    std::fs::create_dir(&tmp).expect("tmp dir");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    context
}

/// An image built by [`Image::build`]; removed on drop.
struct Image<'a> {
    podman: &'a Podman,
    tag: String,
}

impl<'a> Image<'a> {
    /// Stages a context and builds it with `container/Containerfile.scratch`, under a
    /// tag of this test's own.
    fn build(podman: &'a Podman) -> Image<'a> {
        let context = stage_context();
        let tag = format!(
            "localhost/weir-e2e:{}-{}",
            std::process::id(),
            context.file_name().and_then(|n| n.to_str()).expect("name")
        );
        let containerfile = root().join("container/Containerfile.scratch");
        let _one_at_a_time = image_store_lock();
        podman.ok(&[
            "build",
            "--quiet",
            "--tag",
            &tag,
            "--file",
            containerfile.to_str().expect("UTF-8 path"),
            context.to_str().expect("UTF-8 path"),
        ]);
        Image { podman, tag }
    }

    /// `podman image inspect` of one field, as JSON.
    fn inspect(&self, field: &str) -> serde_json::Value {
        let out = self.podman.ok(&[
            "image",
            "inspect",
            "--format",
            &format!("{{{{json {field}}}}}"),
            &self.tag,
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{field}: {e}: {out}"))
    }
}

impl Drop for Image<'_> {
    fn drop(&mut self) {
        let _one_at_a_time = image_store_lock();
        let _ = self.podman.output(&["rmi", "--force", &self.tag]);
    }
}

/// Held while a test builds or removes an image. Podman's image store does not take
/// concurrent builds and removals well: a build beside another test's build or `rmi`
/// has failed with "deleting build container …: container not known".
fn image_store_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A container started from an [`Image`]; removed (killed if it still runs) on drop.
struct Container<'a> {
    podman: &'a Podman,
    name: String,
}

impl<'a> Container<'a> {
    /// `podman run --detach IMAGE ARGS` with [`run_options`] and `options`, then waits
    /// for the gateway's "listening" log line.
    fn start(image: &Image<'a>, options: &[&str], args: &[&str]) -> Container<'a> {
        let name = image.tag.replace("localhost/weir-e2e:", "weir-e2e-");
        let mut run = vec!["run", "--detach", "--name", &name];
        run.extend(run_options());
        run.extend(options);
        run.push(&image.tag);
        run.extend(args);
        image.podman.ok(&run);
        let container = Container {
            podman: image.podman,
            name,
        };
        container.wait_listening();
        container
    }

    /// Polls the log for up to 60 s (compiling the plugins on a busy machine is the
    /// slow part) until the gateway listens; panics with the log if it stops first.
    fn wait_listening(&self) {
        let started = Instant::now();
        loop {
            let logs = self.logs();
            if logs.contains("weir listening") {
                return;
            }
            let running =
                self.podman
                    .ok(&["inspect", "--format", "{{.State.Running}}", &self.name]);
            assert!(
                running.trim() == "true",
                "the container stopped before listening:\n{logs}"
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "not listening within 60 s:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Its log so far (the gateway logs to standard output; errors go to standard error).
    fn logs(&self) -> String {
        let out = self.podman.output(&["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Where the host reaches the container's TCP `port` (published on 127.0.0.1).
    fn host_addr(&self, port: u16) -> SocketAddr {
        let out = self
            .podman
            .ok(&["port", &self.name, &format!("{port}/tcp")]);
        out.lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("no host address for {port}: {out:?}"))
    }

    /// `podman stop` (SIGTERM, SIGKILL after 20 s): the exit code and the log.
    fn stop(&self) -> (String, String) {
        self.podman.ok(&["stop", "--time", "20", &self.name]);
        let code = self
            .podman
            .ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        (code.trim().to_owned(), self.logs())
    }
}

impl Drop for Container<'_> {
    fn drop(&mut self) {
        let _ = self
            .podman
            .output(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// `podman stop` ends the gateway the way it expects: SIGTERM, drained, exit 0.
fn assert_stops_cleanly(container: &Container<'_>) {
    let (code, logs) = container.stop();
    assert_eq!(code, "0", "{logs}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}

/// `GET url` with these headers.
async fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    first_party::get_with(url, headers).await
}

#[tokio::test]
async fn the_scratch_image_serves_its_default_config_from_the_host_and_stops_with_0() {
    let Some(podman) = podman() else {
        eprintln!("skipped: podman is not installed (`cargo xtask setup` installs it)");
        return;
    };
    let image = Image::build(&podman);

    // One layer, ours: nothing came from a registry. Run as the Dockerfile's image is.
    assert_eq!(
        image.inspect(".RootFS.Layers").as_array().map(Vec::len),
        Some(1)
    );
    let config = image.inspect(".Config");
    assert_eq!(
        config["Entrypoint"],
        serde_json::json!(["/usr/local/bin/weir", "run"])
    );
    assert_eq!(config["User"], "65532:65532");
    let ports = config["ExposedPorts"].as_object().expect("ExposedPorts");
    assert!(
        ports.contains_key("8080/tcp") && ports.contains_key("9901/tcp"),
        "{ports:?}"
    );
    let env = config["Env"].to_string();
    assert!(env.contains("WEIR_CONFIG=/etc/weir/weir.toml"), "{env}");

    let weir = Container::start(
        &image,
        &[
            "--env",
            &format!("WEIR_ADMIN_TOKEN={TOKEN}"),
            "--publish",
            "127.0.0.1::8080",
            "--publish",
            "127.0.0.1::9901",
        ],
        &[],
    );
    let (addr, admin) = (weir.host_addr(8080), weir.host_addr(9901));
    assert!(addr.ip().is_loopback() && admin.ip().is_loopback());

    // The default config's reply, through the request-id plugin the image ships.
    let reply = client::get(&format!("http://{addr}/anything")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert!(reply.text().contains("Weir is running"), "{}", reply.text());
    assert!(reply.header("x-request-id").is_some(), "{reply:?}");
    let health = client::get(&format!("http://{admin}/healthz")).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());
    let routes = format!("http://{admin}/admin/routes");
    assert_eq!(client::get(&routes).await.status, StatusCode::UNAUTHORIZED);
    let bearer = format!("Bearer {TOKEN}");
    let routes = get(&routes, &[("authorization", &bearer)]).await;
    assert_eq!(routes.status, StatusCode::OK, "{}", routes.text());

    assert_stops_cleanly(&weir);
}

#[tokio::test]
async fn the_quickstart_answers_from_the_host_out_of_the_scratch_image() {
    let Some(podman) = podman() else {
        eprintln!("skipped: podman is not installed (`cargo xtask setup` installs it)");
        return;
    };
    let image = Image::build(&podman);
    // No config: the quickstart, listening where the published port leads. Its admin
    // listener stays on the container's loopback (off it, it would need a token).
    let weir = Container::start(
        &image,
        &["--unsetenv", "WEIR_CONFIG", "--publish", "127.0.0.1::8080"],
        &["--listen", "0.0.0.0:8080"],
    );
    let addr = weir.host_addr(8080);

    let reply = client::get(&format!("http://{addr}/hello")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.text();
    assert!(body.contains("\"upstream\": \"weir demo\""), "{body}");
    assert!(body.contains("\"via\": \"1.1 weir\""), "{body}");

    // The embedded plugins, written under the image's XDG_CACHE_HOME, guard /private.
    let private = format!("http://{addr}/private/hello");
    let refused = get(&private, &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    let key = weir_gateway::quickstart::DEMO_API_KEY;
    let admitted = get(&private, &[("x-api-key", key)]).await;
    assert_eq!(admitted.status, StatusCode::OK, "{}", admitted.text());
    assert!(
        admitted.text().contains("\"x-consumer\": \"demo\""),
        "{}",
        admitted.text()
    );

    assert_stops_cleanly(&weir);
}

/// Writes `bytes` to `dest` as a deploy would: a temporary name in the same directory,
/// then a rename, so the watcher never reads half a file.
fn write_atomically(dest: &Path, bytes: &[u8]) {
    let name = dest.file_name().and_then(|n| n.to_str()).expect("name");
    let partial = dest.with_file_name(format!(".{name}.partial"));
    std::fs::write(&partial, bytes).expect("write");
    std::fs::rename(&partial, dest).expect("rename");
}

/// `GET /admin/plugins` with the token.
async fn admin_plugins(admin: SocketAddr) -> serde_json::Value {
    let reply = get(
        &format!("http://{admin}/admin/plugins"),
        &[("authorization", &format!("Bearer {TOKEN}"))],
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    serde_json::from_slice(&reply.body).expect("JSON")
}

#[tokio::test]
async fn a_plugin_dropped_into_the_mounted_plugins_directory_is_picked_up() {
    let Some(podman) = podman() else {
        eprintln!("skipped: podman is not installed (`cargo xtask setup` installs it)");
        return;
    };
    let image = Image::build(&podman);
    // The config and the plugins from the host, mounted as docs/operations.md shows:
    // the image's default config, and only the plugin it names.
    let host = fresh_dir();
    let (config_dir, plugins_dir) = (host.join("config"), host.join("plugins"));
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::create_dir_all(&plugins_dir).expect("plugins dir");
    let default = std::fs::read_to_string(root().join("container/weir.toml")).expect("read");
    std::fs::write(config_dir.join("weir.toml"), &default).expect("write config");
    std::fs::copy(
        guest_wasm!("request_id"),
        plugins_dir.join("request-id.wasm"),
    )
    .expect("copy plugin");
    let weir = Container::start(
        &image,
        &[
            "--env",
            &format!("WEIR_ADMIN_TOKEN={TOKEN}"),
            "--env",
            "WEIR_CONFIG=/etc/weir/config/weir.toml",
            "--volume",
            &format!("{}:/etc/weir/config:ro", config_dir.display()),
            "--volume",
            &format!("{}:/etc/weir/plugins:ro", plugins_dir.display()),
            "--publish",
            "127.0.0.1::8080",
            "--publish",
            "127.0.0.1::9901",
        ],
        &["--log-format", "json"],
    );
    let (addr, admin) = (weir.host_addr(8080), weir.host_addr(9901));
    let hot = format!("http://{addr}/hot");
    assert_eq!(get(&hot, &[]).await.header("x-hot-loaded"), None);

    // 1. A config with a route whose plugin, `headers`, is not in the directory yet:
    //    refused for now, the running config keeps serving.
    let route = "[[route]]\nname = \"hot\"\nmatch = { path_prefix = \"/hot\" }\n\
                 plugins = [{ name = \"headers\", config = { response = { set = { x-hot-loaded = \"yes\" } } } }]\n\
                 respond = { status = 200, body = \"hot\\n\" }\n\n";
    let first_route = default
        .find("[[route]]")
        .expect("a route in the default config");
    let waiting = format!(
        "{}{route}{}",
        &default[..first_route],
        &default[first_route..]
    );
    write_atomically(&config_dir.join("weir.toml"), waiting.as_bytes());
    poll::until(
        Duration::from_secs(60),
        "the config refused for headers.wasm",
        || async {
            admin_plugins(admin).await["config"]["last_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("/etc/weir/plugins/headers.wasm"))
        },
    )
    .await;
    assert_eq!(get(&hot, &[]).await.header("x-hot-loaded"), None);

    // 2. The plugin file arrives in the mounted directory: loaded, the route applies.
    write_atomically(
        &plugins_dir.join("headers.wasm"),
        &std::fs::read(guest_wasm!("headers")).expect("read plugin"),
    );
    poll::until(
        Duration::from_secs(60),
        "the route using headers.wasm",
        || async { get(&hot, &[]).await.header("x-hot-loaded").as_deref() == Some("yes") },
    )
    .await;
    let doc = admin_plugins(admin).await;
    let headers = doc["plugins"]
        .as_array()
        .and_then(|plugins| plugins.iter().find(|p| p["name"] == "headers"))
        .unwrap_or_else(|| panic!("headers not loaded: {doc:#}"));
    assert_eq!(headers["file"], "present", "{doc:#}");
    assert_eq!(headers["routes"], serde_json::json!(["hot"]), "{doc:#}");
    assert!(doc["config"]["last_error"].is_null(), "{doc:#}");

    // Its log went to standard output as JSON lines (arguments reach `weir run`).
    let (code, logs) = weir.stop();
    assert_eq!(code, "0", "{logs}");
    let listening = logs
        .lines()
        .find(|line| line.contains("weir listening"))
        .expect("listening line");
    let event: serde_json::Value = serde_json::from_str(listening).expect("a JSON line");
    assert_eq!(event["addr"], "0.0.0.0:8080", "{listening}");
    assert!(logs.contains("shutdown complete"), "{logs}");
}
