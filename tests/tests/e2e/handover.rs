//! Zero-downtime restarts of the real `weir` binary: SIGUSR2 starts a new process on the
//! same listening sockets, the old one drains once the new one is ready and exits 0, and
//! steady keep-alive load sees no failed request; a new process that fails leaves the
//! old one serving; and sockets handed in by socket activation (`LISTEN_FDS`), as
//! systemd and the test here pass them, are served.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};
use weir_tests::load::{Tally, until_stopped, until_stopped_with};
use weir_tests::{TestUpstream, WeirProcess, get};

/// A config with one route to `up` (whose replies say `x-upstream: NAME`), watching
/// nothing, so a rewritten file is only read by a new process.
fn config(up: &TestUpstream, listen: &str, extra: &str) -> String {
    format!(
        "[server]\nlisten = \"{listen}\"\nworkers = 2\nshutdown_grace = \"10s\"\n{extra}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [reload]\nwatch = false\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n",
        up.addr
    )
}

/// The `"pid":N` field of a JSON log line.
fn pid_in(line: &str) -> u32 {
    let at = line.find("\"pid\":").expect("a pid field") + 6;
    line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("a numeric pid")
}

/// A process this test did not start directly (a hand-over's new `weir`): stopped with
/// SIGTERM by [`Adopted::stop`], killed if the test ends first.
struct Adopted(u32);

impl Adopted {
    fn running(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.0))
            .is_ok_and(|stat| !stat.contains(") Z "))
    }

    /// SIGTERM, then waits for it to be gone (its parent, not this test, reaps it).
    async fn stop(&self) {
        kill("TERM", self.0);
        for _ in 0..500 {
            if !self.running() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the new process {} did not exit after SIGTERM", self.0);
    }
}

impl Drop for Adopted {
    fn drop(&mut self) {
        if self.running() {
            kill("KILL", self.0);
        }
    }
}

fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// Waits (off the runtime's workers) for a log line containing `needle`.
async fn log_line(weir: &WeirProcess, needle: &str) -> String {
    tokio::task::block_in_place(|| weir.wait_log(needle, Duration::from_secs(60)))
        .unwrap_or_else(|| panic!("no log line with {needle:?}; stderr: {}", weir.stderr()))
}

fn assert_none_failed(tally: &Tally) {
    assert!(
        tally.failed.is_empty(),
        "{} of {} requests failed: {:?}",
        tally.failed.len(),
        tally.ok + tally.failed.len(),
        &tally.failed[..tally.failed.len().min(10)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_hands_over_to_a_new_process_without_failing_a_request() {
    let old_up = TestUpstream::start("old");
    let new_up = TestUpstream::start("new");
    let path = weir_tests::gateway::write_config(&config(&old_up, "127.0.0.1:0", ""));
    let weir = WeirProcess::spawn(
        weir_tests::weir_bin!(),
        &["run", "--config", path.to_str().expect("UTF-8")],
    );
    let (addr, admin) = (weir.addr, weir.admin);
    let url = format!("http://{addr}/steady");

    // Eight HTTP/1.1 keep-alive clients and two HTTP/2 ones, bounded in count and time.
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(until_stopped(
        url.clone(),
        8,
        50_000,
        stop.clone(),
        "x-upstream",
    ));
    let load_h2 = tokio::spawn(until_stopped_with(
        weir_tests::h2_client,
        url.clone(),
        2,
        50_000,
        stop.clone(),
        "x-upstream",
    ));
    tokio::time::sleep(Duration::from_millis(400)).await;

    // The new process reads the config as it is now: its answers come from "new".
    std::fs::write(&path, config(&new_up, "127.0.0.1:0", "")).expect("rewrite config");
    weir.signal("USR2");
    let ready = log_line(&weir, "the new process is ready").await;
    let successor = Adopted(pid_in(&ready));
    assert_ne!(successor.0, weir.pid());
    let old_pid = weir.pid();
    let code = weir.exit_code(Duration::from_secs(20)).await;
    assert_eq!(code, Some(0), "the old process drained and exited 0");

    // The new one alone serves, on the same sockets, the client and the admin one.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stop.store(true, Ordering::Relaxed);
    for (protocol, tally) in [
        ("HTTP/1.1", load.await.expect("load task")),
        ("HTTP/2", load_h2.await.expect("load task")),
    ] {
        eprintln!("{protocol} answered: {:?}", tally.by_header);
        assert_none_failed(&tally);
        let (old, new) = (tally.by_header.get("old"), tally.by_header.get("new"));
        assert!(
            old.is_some_and(|n| *n > 0) && new.is_some_and(|n| *n > 0),
            "{protocol}: both processes answered under load: {:?}",
            tally.by_header
        );
    }
    assert!(successor.running(), "the new process serves on");
    assert!(
        !Path::new(&format!("/proc/{old_pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{old_pid}/stat"))
                .is_ok_and(|s| s.contains(") Z ")),
        "the old process is gone"
    );
    let reply = get(&url).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-upstream").as_deref(), Some("new"));
    let ready = get(&format!("http://{admin}/readyz")).await;
    assert_eq!(ready.status, 200, "the admin listener was handed over too");
    successor.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the socket closed with its last holder"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_process_that_fails_or_hangs_leaves_the_old_one_serving() {
    let up = TestUpstream::start("up");
    let good = config(&up, "127.0.0.1:0", "handover_timeout = \"2s\"");
    let path = weir_tests::gateway::write_config(&good);
    // Started through a symlink, as `/usr/local/bin/weir -> weir-1.2.3` would be: a
    // hand-over starts whatever the link names then.
    let dir = path.parent().expect("config dir");
    let link = dir.join("weir");
    std::os::unix::fs::symlink(weir_tests::weir_bin!(), &link).expect("symlink");
    let weir = WeirProcess::spawn(&link, &["run", "--config", path.to_str().expect("UTF-8")]);
    let url = format!("http://{}/steady", weir.addr);
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(until_stopped(
        url.clone(),
        4,
        50_000,
        stop.clone(),
        "x-upstream",
    ));

    // A config the new process refuses: it exits 1 before it is ready.
    std::fs::write(&path, "[server]\nlisten = 5\n").expect("break config");
    weir.signal("USR2");
    let failed = log_line(&weir, "hand-over failed").await;
    assert!(failed.contains("exited"), "{failed}");
    assert_eq!(get(&url).await.status, 200, "the old process serves on");

    // A binary that never becomes ready: stopped after `handover_timeout`.
    std::fs::write(&path, &good).expect("restore config");
    let hang = dir.join("hang.sh");
    std::fs::write(&hang, "#!/bin/sh\nexec sleep 60\n").expect("script");
    std::fs::set_permissions(&hang, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(&hang, &link).expect("symlink to the script");
    weir.signal("USR2");
    let started = log_line(&weir, "started a new process").await;
    let hung = pid_in(&started);
    let failed = log_line(&weir, "hand-over failed").await;
    assert!(
        failed.contains("did not report ready within 2s"),
        "{failed}"
    );
    assert!(
        !Adopted(hung).running(),
        "the process that did not become ready was stopped"
    );
    assert_eq!(get(&url).await.status, 200, "the old process serves on");

    // The real binary again: the hand-over goes through.
    std::fs::remove_file(&link).expect("unlink");
    std::os::unix::fs::symlink(weir_tests::weir_bin!(), &link).expect("symlink");
    weir.signal("USR2");
    let ready = log_line(&weir, "the new process is ready").await;
    let successor = Adopted(pid_in(&ready));
    assert_eq!(weir.exit_code(Duration::from_secs(20)).await, Some(0));
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = load.await.expect("load task");
    assert_none_failed(&tally);
    assert!(tally.ok > 0);
    successor.stop().await;
}

/// `sh -c 'LISTEN_PID=$$ exec weir ...'` with `listener` as descriptor 3: how a service
/// manager passes a socket (the shell's pid is the one `weir` runs as after `exec`).
fn activated(
    listener: std::net::TcpListener,
    name: Option<&str>,
    listen_pid: Option<&str>,
    config: &Path,
) -> Command {
    let mut command = Command::new("sh");
    let pid = listen_pid.unwrap_or("$$");
    command
        .arg("-c")
        .arg(format!("LISTEN_PID={pid} exec \"$0\" \"$@\""))
        .arg(weir_tests::weir_bin!())
        .args(["--log-format", "json", "run", "--config"])
        .arg(config)
        .env("LISTEN_FDS", "1")
        .fd_mappings(vec![FdMapping {
            parent_fd: OwnedFd::from(listener),
            child_fd: 3,
        }])
        .expect("one mapping");
    match name {
        Some(name) => command.env("LISTEN_FDNAMES", name),
        None => command.env_remove("LISTEN_FDNAMES"),
    };
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation_serves_the_socket_it_is_given() {
    let up = TestUpstream::start("up");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Unnamed: it is the client listener because it has `[server] listen`'s address.
    let path = weir_tests::gateway::write_config(&config(&up, &addr.to_string(), ""));
    let weir = WeirProcess::spawn_command(activated(listener, None, None, &path));
    assert_eq!(weir.addr, addr, "it serves on the inherited socket");
    let reply = get(&format!("http://{addr}/activated")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-upstream").as_deref(), Some("up"));
    // Two workers share the one socket; a hand-over passes it on.
    weir.signal("USR2");
    let ready = log_line(&weir, "the new process is ready").await;
    let successor = Adopted(pid_in(&ready));
    assert_eq!(weir.exit_code(Duration::from_secs(20)).await, Some(0));
    assert_eq!(get(&format!("http://{addr}/after")).await.status, 200);
    successor.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[test]
fn sockets_for_another_process_or_that_fit_no_listener_are_refused() {
    let up = TestUpstream::start("up");
    // LISTEN_PID names another process: the socket is not taken, so `weir` binds
    // `[server] listen` itself, and finds the address taken (by that very socket).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let path = weir_tests::gateway::write_config(&config(&up, &addr.to_string(), ""));
    let mut command = activated(listener.try_clone().expect("dup"), None, Some("1"), &path);
    let out = command.output().expect("run weir");
    assert_eq!(out.status.code(), Some(1));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(stdout.contains("is for process 1"), "{stdout}");
    assert!(stderr.contains("already in use"), "{stderr}");

    // Named `server`, but `[server] listen` is another port.
    let path = weir_tests::gateway::write_config(&config(&up, "127.0.0.1:1", ""));
    let out = activated(listener, Some("server"), None, &path)
        .output()
        .expect("run weir");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is the client listener, but [server] listen is 127.0.0.1:1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_the_new_main_pid_and_stopping() {
    let up = TestUpstream::start("up");
    let dir = weir_tests::gateway::write_config("");
    let socket_path = dir.with_file_name("notify.sock");
    let notify = UnixDatagram::bind(&socket_path).expect("bind the notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let path = weir_tests::gateway::write_config(&config(&up, "127.0.0.1:0", ""));
    let mut command = Command::new(weir_tests::weir_bin!());
    command
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .env("NOTIFY_SOCKET", &socket_path);
    let weir = WeirProcess::spawn_command(command);
    let message = |socket: &UnixDatagram| {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(message(&notify), "READY=1\n");

    weir.signal("USR2");
    let ready = log_line(&weir, "the new process is ready").await;
    let successor = Adopted(pid_in(&ready));
    // The new process told the old one, not systemd, that it is ready; the old one
    // names it the main process.
    assert_eq!(message(&notify), format!("MAINPID={}\n", successor.0));
    assert_eq!(weir.exit_code(Duration::from_secs(20)).await, Some(0));
    successor.stop().await;
    assert_eq!(message(&notify), "STOPPING=1\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_socket_activate_hands_weir_its_socket() {
    // systemd's own implementation of the protocol (LISTEN_PID set, the socket named by
    // --fdname), in the `systemd` package.
    if Command::new("systemd-socket-activate")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-socket-activate is not installed: skipped");
        return;
    }
    let up = TestUpstream::start("up");
    let addr = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        free.local_addr().expect("addr")
    };
    let path = weir_tests::gateway::write_config(&config(&up, &addr.to_string(), ""));
    let mut command = Command::new("systemd-socket-activate");
    command
        .arg("-l")
        .arg(addr.to_string())
        .arg("--fdname=server")
        .arg(weir_tests::weir_bin!())
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path);
    // It starts `weir` on the first connection, which waits in the socket's backlog.
    let first = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for _ in 0..100 {
            if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
                stream
                    .write_all(b"GET /first HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                    .expect("send");
                let mut reply = String::new();
                let _ = stream.read_to_string(&mut reply);
                return reply;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("systemd-socket-activate did not listen on {addr}");
    });
    let weir = WeirProcess::spawn_command(command);
    let reply = tokio::task::spawn_blocking(move || first.join().expect("first request"))
        .await
        .expect("join");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert_eq!(weir.addr, addr);
    weir.signal("TERM");
    assert_eq!(weir.exit_code(Duration::from_secs(10)).await, Some(0));
}
