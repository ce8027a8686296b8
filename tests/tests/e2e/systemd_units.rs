//! `examples/systemd/`: the unit files pass `systemd-analyze verify` (where systemd's
//! tools are installed, as on Debian with the `systemd` package), and carry what the
//! deployment guide promises: readiness, reload and hand-over wiring, the hardening, and
//! a socket that `weir` takes as its client listener.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn units() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/systemd")
}

/// `(section, key, value)` for every assignment, as systemd reads them (comments and
/// blank lines skipped; no line continuations in these files).
fn directives(name: &str) -> Vec<(String, String, String)> {
    let text = std::fs::read_to_string(units().join(name)).expect("unit file");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        assert!(!line.ends_with('\\'), "{name}: no continuation lines");
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{name}: not an assignment: {line}"));
        out.push((
            section.clone(),
            key.trim().to_owned(),
            value.trim().to_owned(),
        ));
    }
    out
}

/// The value of `key` in `[section]` (the last assignment wins, as in systemd).
fn value<'a>(directives: &'a [(String, String, String)], section: &str, key: &str) -> &'a str {
    directives
        .iter()
        .rev()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .unwrap_or_else(|| panic!("no {key}= in [{section}]"))
}

#[test]
fn the_service_is_hardened_and_wired_for_readiness_reload_and_hand_over() {
    let unit = directives("weir.service");
    let service = |key| value(&unit, "Service", key);
    assert_eq!(service("Type"), "notify", "weir sends READY=1");
    assert_eq!(service("NotifyAccess"), "main");
    assert!(
        service("ExecStart").starts_with("/usr/local/bin/weir run --config /etc/weir/"),
        "{}",
        service("ExecStart")
    );
    assert_eq!(service("ExecReload"), "/bin/kill -HUP $MAINPID");
    // SIGTERM to the main process only: after a hand-over, the old process still
    // draining must not get a second signal (which would cut its connections).
    assert_eq!(service("KillSignal"), "SIGTERM");
    assert_eq!(service("KillMode"), "mixed");
    let stop = service("TimeoutStopSec")
        .strip_suffix('s')
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > Duration::from_secs(30),
        "longer than the default shutdown_grace"
    );
    assert_eq!(service("User"), "weir", "a dedicated user");
    assert_eq!(service("ProtectSystem"), "strict");
    assert_eq!(service("NoNewPrivileges"), "yes");
    assert_eq!(service("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(service("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(
        service("CacheDirectory"),
        "weir",
        "the plugin compile cache"
    );
    assert!(
        unit.iter().any(|(s, k, v)| s == "Service"
            && k == "Environment"
            && v == "XDG_CACHE_HOME=/var/cache"),
        "the compile cache in the CacheDirectory"
    );
}

#[test]
fn the_socket_hands_weir_its_client_listener() {
    let unit = directives("weir.socket");
    let socket = |key| value(&unit, "Socket", key);
    assert_eq!(
        socket("FileDescriptorName"),
        weir_gateway::handover::SERVER_NAME
    );
    assert_eq!(socket("Service"), "weir.service");
    assert!(socket("ListenStream").ends_with(":80"));
}

#[test]
fn systemd_analyze_verifies_the_units() {
    let Ok(version) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed: checked the directives only");
        return;
    };
    assert!(version.status.success());
    // The units as installed, but starting this build's binary (verify checks that the
    // executable exists).
    let dir = weir_tests::gateway::write_config("").with_file_name("units");
    std::fs::create_dir_all(&dir).expect("units dir");
    for name in ["weir.service", "weir.socket"] {
        let text = std::fs::read_to_string(units().join(name)).expect("unit");
        let text = text.replace(
            "/usr/local/bin/weir",
            weir_tests::weir_bin!().to_str().expect("UTF-8"),
        );
        std::fs::write(dir.join(name), text).expect("write unit");
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(dir.join("weir.service"))
        .arg(dir.join("weir.socket"))
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // It warns (exit 0) about unknown keys and the like: any word about our units fails.
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("weir.")).collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}
