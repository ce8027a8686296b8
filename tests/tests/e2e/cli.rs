//! The real `weir` binary: `--version`, `--help`, `check` on valid, invalid and missing
//! files, `run` refusing an invalid config, and the quickstart serving traffic and
//! stopping cleanly on SIGTERM. Short commands run under a deadline and are killed past
//! it; long-running ones are `WeirProcess`es, killed on drop.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use http::StatusCode;
use weir_tests::gateway::write_config;
use weir_tests::{TestUpstream, WeirProcess, get, weir_bin};

/// How long a command that should exit by itself may run before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

/// A finished `weir` command.
#[derive(Debug)]
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `weir ARGS...` to completion; kills it and fails the test if it is still running
/// after [`DEADLINE`].
fn weir(args: &[&str]) -> Finished {
    weir_with_env(args, &[])
}

/// [`weir`] with these environment variables set (`WEIR_CONFIG` is unset otherwise).
fn weir_with_env(args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut child = Command::new(weir_bin!())
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("WEIR_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`weir {}` still running after {DEADLINE:?}", args.join(" "));
        }
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn version_prints_the_version() {
    let out = weir(&["--version"]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(out.stdout.trim(), "weir 0.1.0", "{out:?}");
    assert_eq!(env!("CARGO_PKG_VERSION"), "0.1.0");
}

#[test]
fn help_works_for_the_top_level_run_and_check() {
    let top = weir(&["--help"]);
    assert_eq!(top.code, Some(0), "{top:?}");
    for word in ["Usage:", "run", "check", "--log-format", "--version"] {
        assert!(
            top.stdout.contains(word),
            "top-level help lacks {word:?}:\n{top:?}"
        );
    }

    let run = weir(&["run", "--help"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    for word in ["--config", "--listen", "--admin-listen", "quickstart"] {
        assert!(
            run.stdout.contains(word),
            "`run --help` lacks {word:?}:\n{run:?}"
        );
    }

    let check = weir(&["check", "--help"]);
    assert_eq!(check.code, Some(0), "{check:?}");
    for word in ["--config", "Validate"] {
        assert!(
            check.stdout.contains(word),
            "`check --help` lacks {word:?}:\n{check:?}"
        );
    }
}

#[test]
fn check_without_a_config_is_a_usage_error() {
    let out = weir(&["check"]);
    assert_eq!(out.code, Some(2), "clap's usage-error code: {out:?}");
    assert!(out.stderr.contains("--config"), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn check_prints_a_summary_of_a_valid_config() {
    // `check` binds nothing, so these addresses are only printed.
    let path = write_config(
        r#"
[server]
listen = "127.0.0.1:18080"

[admin]
listen = "127.0.0.1:19901"

[[upstream]]
name = "users"
endpoints = ["127.0.0.1:9001", "localhost:9002"]
timeouts = { connect = "1s" }

[[upstream]]
name = "static-web"
endpoints = ["127.0.0.1:9003"]

[[route]]
name = "users-api"
match = { path_prefix = "/users", methods = ["GET"] }
upstream = "users"

[[route]]
name = "everything-else"
upstream = "static-web"
"#,
    );
    let out = weir(&["check", "--config", path_str(&path)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    let summary = &out.stdout;
    for expected in [
        format!("{}: configuration is valid", path.display()),
        "listeners:".to_owned(),
        "server  127.0.0.1:18080".to_owned(),
        "admin   127.0.0.1:19901".to_owned(),
        "upstreams (2):".to_owned(),
        "users  RoundRobin  [127.0.0.1:9001, localhost:9002]".to_owned(),
        "static-web".to_owned(),
        "routes (2, first match wins):".to_owned(),
        "users-api".to_owned(),
        "-> users".to_owned(),
        "everything-else  any request  -> static-web".to_owned(),
    ] {
        assert!(
            summary.contains(&expected),
            "summary lacks {expected:?}:\n{summary}"
        );
    }
    // Routes are listed in match order.
    let first = summary.find("users-api").expect("users-api listed");
    let second = summary
        .find("everything-else")
        .expect("everything-else listed");
    assert!(first < second, "{summary}");
    assert!(!out.stderr.contains("error"), "{out:?}");
}

#[test]
fn check_reports_every_error_with_place_key_and_suggestion() {
    let path = write_config(
        r#"[[upstream]]
name = "users"
endpoints = ["127.0.0.1:9001"]

[[route]]
name = "r"
match = { path_prefix = "/users", methods = ["get"] }
upstream = "user"
"#,
    );
    let out = weir(&["check", "--config", path_str(&path)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "no summary for an invalid config: {out:?}"
    );
    let file = path.display();
    for expected in [
        "error: 2 errors in configuration".to_owned(),
        format!(
            "{file}:7:46: `route[0].match.methods[0]`: `get` is not an HTTP method \
             (methods are case-sensitive: did you mean `GET`?)"
        ),
        format!(
            "{file}:8:12: `route[0].upstream`: route `r` names upstream `user`, \
             which is not defined (did you mean `users`?)"
        ),
    ] {
        assert!(
            out.stderr.contains(&expected),
            "stderr lacks {expected:?}:\n{}",
            out.stderr
        );
    }
}

#[test]
fn check_reports_a_typo_in_a_key() {
    let path = write_config("[server]\nlisen = \"127.0.0.1:8080\"\n");
    let out = weir(&["check", "--config", path_str(&path)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = format!(
        "{}:2:1: `server.lisen`: unknown field `lisen`",
        path.display()
    );
    assert!(out.stderr.contains(&expected), "{out:?}");
    assert!(out.stderr.contains("(did you mean `listen`?)"), "{out:?}");
}

/// A route asks for `tenant-gate`; the plugins directory has `tenant_gate.wasm`, the
/// name cargo gives crate `tenant-gate`'s output. `check` points at that file and says
/// to rename it; renamed, the config checks.
#[test]
fn check_points_at_a_plugin_file_named_the_cargo_way() {
    let dir = weir_tests::gateway::plugin_dir(&[(weir_tests::guest_wasm!("probe"), "tenant_gate")]);
    let path = write_config(&format!(
        "[plugins]\ndir = \"{dir}/plugins\"\ncache_dir = \"{cache}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9\"]\n\
         [[route]]\nname = \"r\"\nupstream = \"up\"\nplugins = [{{ name = \"tenant-gate\" }}]\n",
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display()
    ));
    let out = weir(&["check", "--config", path_str(&path)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    for expected in [
        format!(
            "plugin `tenant-gate`: cannot read {}/plugins/tenant-gate.wasm",
            dir.display()
        ),
        "`tenant_gate.wasm` is there: rename it to `tenant-gate.wasm`".to_owned(),
    ] {
        assert!(
            out.stderr.contains(&expected),
            "stderr lacks {expected:?}:\n{out:?}"
        );
    }
    std::fs::rename(
        dir.join("plugins/tenant_gate.wasm"),
        dir.join("plugins/tenant-gate.wasm"),
    )
    .unwrap();
    let out = weir(&["check", "--config", path_str(&path)]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(out.stdout.contains("plugin tenant-gate ("), "{out:?}");
}

#[test]
fn check_of_a_missing_file_says_it_cannot_read_it() {
    let out = weir(&["check", "--config", "/nonexistent/weir.toml"]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(
        out.stderr
            .contains("error: cannot read config file /nonexistent/weir.toml"),
        "{out:?}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
}

#[test]
fn run_refuses_an_invalid_config_without_serving() {
    // Were it accepted, it would listen on free loopback ports; `weir` then never exits
    // and the deadline fails the test.
    let path = write_config(
        r#"[server]
listen = "127.0.0.1:0"
workers = 0

[admin]
listen = "127.0.0.1:0"
"#,
    );
    let out = weir(&["run", "--config", path_str(&path)]);
    assert_eq!(out.code, Some(1), "{out:?}");
    let expected = format!(
        "{}:3:11: `server.workers`: workers must be at least 1",
        path.display()
    );
    assert!(out.stderr.contains(&expected), "{out:?}");
    assert!(!out.stdout.contains("weir listening"), "{out:?}");
}

#[test]
fn run_of_a_missing_file_fails_without_serving() {
    let out = weir(&[
        "run",
        "--config",
        "/nonexistent/weir.toml",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(out.code, Some(1), "{out:?}");
    assert!(out.stderr.contains("cannot read config file"), "{out:?}");
}

#[tokio::test]
async fn quickstart_serves_the_demo_upstream_and_stops_on_sigterm() {
    let mut weir = WeirProcess::spawn(
        weir_bin!(),
        &[
            "run",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    );
    assert!(weir.addr.ip().is_loopback() && weir.addr.port() != 0);
    assert_ne!(weir.addr, weir.admin);

    let reply = get(&format!("http://{}/hello?x=1", weir.addr)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let body = reply.text();
    assert!(body.contains("\"upstream\": \"weir demo\""), "{body}");
    assert!(body.contains("\"path\": \"/hello?x=1\""), "{body}");
    // The demo upstream echoes the headers it received: the gateway added these.
    assert!(
        body.contains("\"x-forwarded-for\": \"127.0.0.1\""),
        "{body}"
    );
    assert!(body.contains("\"via\": \"1.1 weir\""), "{body}");

    let health = get(&format!("http://{}/healthz", weir.admin)).await;
    assert_eq!(health.status, StatusCode::OK, "{}", health.text());

    // The embedded plugins guard /private: request-id, then api-key.
    let private = format!("http://{}/private/hello", weir.addr);
    let refused = weir_tests::first_party::get_with(&private, &[]).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "{}",
        refused.text()
    );
    assert!(refused.header("x-request-id").is_some(), "{refused:?}");
    let admitted = weir_tests::first_party::get_with(
        &private,
        &[("x-api-key", weir_gateway::quickstart::DEMO_API_KEY)],
    )
    .await;
    assert_eq!(admitted.status, StatusCode::OK, "{}", admitted.text());
    let body = admitted.text();
    assert!(body.contains("\"x-consumer\": \"demo\""), "{body}");
    assert!(body.contains("\"x-request-id\""), "{body}");
    assert!(!body.contains("x-api-key"), "{body}");

    weir.signal("TERM");
    assert_eq!(
        weir.wait_exit(Duration::from_secs(10)),
        Some(0),
        "weir should exit 0 after SIGTERM"
    );
}

#[tokio::test]
async fn run_with_a_config_proxies_and_stops_on_sigint() {
    let upstream = TestUpstream::start("users");
    let path = write_config(&format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 1
shutdown_grace = "5s"

[admin]
listen = "127.0.0.1:0"

[[upstream]]
name = "users"
endpoints = ["{}"]

[[route]]
name = "users-api"
match = {{ path_prefix = "/users" }}
upstream = "users"
"#,
        upstream.addr
    ));
    let mut weir = WeirProcess::spawn(weir_bin!(), &["run", "--config", path_str(&path)]);

    let reply = get(&format!("http://{}/users/7", weir.addr)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-upstream").as_deref(), Some("users"));
    let seen = upstream.last();
    assert_eq!(seen.target, "/users/7");
    assert_eq!(
        seen.headers
            .get("x-forwarded-for")
            .map(|v| v.to_str().expect("ascii")),
        Some("127.0.0.1")
    );

    let unrouted = get(&format!("http://{}/other", weir.addr)).await;
    assert_eq!(
        unrouted.status,
        StatusCode::NOT_FOUND,
        "{}",
        unrouted.text()
    );

    weir.signal("INT");
    assert_eq!(
        weir.wait_exit(Duration::from_secs(10)),
        Some(0),
        "weir should exit 0 after SIGINT"
    );
}

#[test]
fn a_second_weir_on_a_port_in_use_refuses_to_start() {
    let config = |listen: &str| {
        format!(
            "[server]\nlisten = \"{listen}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[upstream]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9\"]\n\
             [[route]]\nname = \"all\"\nupstream = \"up\"\n"
        )
    };
    let first = WeirProcess::with_config(weir_bin!(), &config("127.0.0.1:0"));
    // With SO_REUSEPORT alone, this one would start and take half the connections.
    let path = write_config(&config(&first.addr.to_string()));
    let second = weir(&["run", "--config", path_str(&path)]);
    assert_ne!(second.code, Some(0), "{second:?}");
    assert!(
        second.stderr.contains(&first.addr.to_string()) && second.stderr.contains("already in use"),
        "{second:?}"
    );
}

/// A config proxying `/users` to `upstream`, on free ports.
fn users_config(upstream: &TestUpstream) -> std::path::PathBuf {
    write_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\nshutdown_grace = \"5s\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nname = \"users\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"users-api\"\nupstream = \"users\"\nmatch = {{ path_prefix = \"/users\" }}\n",
        upstream.addr
    ))
}

#[test]
fn check_takes_the_config_from_weir_config_and_the_flag_wins() {
    let upstream = TestUpstream::start("users");
    let good = users_config(&upstream);
    let from_env = weir_with_env(&["check"], &[("WEIR_CONFIG", path_str(&good))]);
    assert_eq!(from_env.code, Some(0), "{from_env:?}");
    assert!(
        from_env
            .stdout
            .contains(&format!("{}: configuration is valid", good.display())),
        "{from_env:?}"
    );

    // Both given: the flag is used, the variable ignored.
    let missing = "/nonexistent/weir.toml";
    let flag_wins = weir_with_env(
        &["check", "--config", path_str(&good)],
        &[("WEIR_CONFIG", missing)],
    );
    assert_eq!(flag_wins.code, Some(0), "{flag_wins:?}");
    let flag_wins = weir_with_env(
        &["check", "--config", missing],
        &[("WEIR_CONFIG", path_str(&good))],
    );
    assert_eq!(flag_wins.code, Some(1), "{flag_wins:?}");
    assert!(
        flag_wins.stderr.contains("cannot read config file"),
        "{flag_wins:?}"
    );

    let help = weir(&["run", "--help"]);
    assert!(help.stdout.contains("WEIR_CONFIG"), "{help:?}");
}

#[tokio::test]
async fn run_takes_the_config_from_weir_config_and_stops_on_sigterm() {
    let upstream = TestUpstream::start("users");
    let path = users_config(&upstream);
    // No --config: without the variable this would be the quickstart.
    let mut weir =
        WeirProcess::spawn_with_env(weir_bin!(), &["run"], &[("WEIR_CONFIG", path_str(&path))]);
    let reply = get(&format!("http://{}/users/1", weir.addr)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("x-upstream").as_deref(), Some("users"));
    weir.signal("TERM");
    assert_eq!(weir.wait_exit(Duration::from_secs(10)), Some(0));
}

/// Runs `weir --log-format json ARGS...` until it logs that it listens, sends SIGTERM,
/// and returns what it wrote on standard output, line by line, on standard error, and
/// its exit code.
fn json_run_until_sigterm(args: &[&str]) -> (Vec<String>, String, Option<i32>) {
    use std::io::BufRead as _;

    let mut child = Command::new(weir_bin!())
        .args(["--log-format", "json"])
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("WEIR_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weir");
    let mut stderr = child.stderr.take().expect("stderr");
    let stderr = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let started = Instant::now();
    while !lines.iter().any(|l: &String| l.contains("weir listening")) {
        match rx.recv_timeout(DEADLINE.saturating_sub(started.elapsed())) {
            Ok(line) => lines.push(line),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no listening line ({e}); log so far: {lines:#?}");
            }
        }
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("weir still running after SIGTERM; log: {lines:#?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    lines.extend(rx.iter());
    (lines, stderr.join().expect("stderr reader"), status.code())
}

/// Every line is one JSON log event.
fn assert_json_lines(lines: &[String]) {
    assert!(!lines.is_empty());
    for line in lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}"));
        assert!(event.get("level").is_some(), "{line}");
        assert!(event.get("timestamp").is_some(), "{line}");
    }
}

/// What a container runtime collects: with `--log-format json`, every line `weir run`
/// writes on standard output is one JSON log event; standard error stays empty (it is
/// for errors that stop the process), and SIGTERM ends the process with 0.
#[test]
fn json_logs_are_one_object_per_line_on_stdout_and_sigterm_exits_zero() {
    let upstream = TestUpstream::start("users");
    let path = users_config(&upstream);
    let (lines, stderr, code) = json_run_until_sigterm(&["run", "--config", path_str(&path)]);
    assert_eq!(code, Some(0), "{lines:#?}\n{stderr}");
    assert_eq!(stderr, "", "{lines:#?}");
    assert!(
        lines.iter().any(|l| l.contains("shutdown complete")),
        "{lines:#?}"
    );
    assert_json_lines(&lines);
}

/// The quickstart's banner goes through the logger with `--log-format json` (one event
/// carrying the addresses), so its standard output is JSON lines too.
#[test]
fn the_quickstart_banner_is_a_json_log_event_with_log_format_json() {
    let (lines, stderr, code) = json_run_until_sigterm(&[
        "run",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(code, Some(0), "{lines:#?}\n{stderr}");
    assert_json_lines(&lines);
    let banner = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON"))
        .find(|e| e["message"] == "weir quickstart is running (no config file given)")
        .unwrap_or_else(|| panic!("no quickstart event: {lines:#?}"));
    for field in ["gateway", "admin", "demo_upstream"] {
        let addr = banner[field].as_str().unwrap_or_default();
        assert!(addr.parse::<std::net::SocketAddr>().is_ok(), "{banner}");
    }
    assert!(
        banner["help"]
            .as_str()
            .is_some_and(|h| h.contains("curl -i http://")),
        "{banner}"
    );
}
