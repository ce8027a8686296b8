//! The access log: one structured `weir::access` event per request, in JSON with
//! `--log-format json`, naming route, upstream, endpoint, status and duration; and
//! silenced by `access_log = false`.

use std::time::{Duration, Instant};

use weir_tests::{TestUpstream, WeirProcess, get};

fn start(up: &TestUpstream, access_log: bool) -> WeirProcess {
    WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\naccess_log = {access_log}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nname = \"users\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"users-api\"\nupstream = \"users\"\nmatch = {{ path_prefix = \"/users\" }}\n",
            up.addr
        ),
    )
}

/// Log lines that arrive within `wait`.
fn lines_within(weir: &WeirProcess, wait: Duration) -> Vec<String> {
    let deadline = Instant::now() + wait;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match weir.log.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    lines
}

#[tokio::test]
async fn each_request_logs_one_json_access_event() {
    let up = TestUpstream::start("users");
    let weir = start(&up, true);
    assert_eq!(
        get(&format!("http://{}/users/7?q=1", weir.addr))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&format!("http://{}/nowhere", weir.addr)).await.status,
        404
    );
    let lines = lines_within(&weir, Duration::from_millis(500));
    let access: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("\"weir::access\""))
        .collect();
    assert_eq!(access.len(), 2, "{lines:#?}");
    let ok = access[0];
    for field in [
        "\"route\":\"users-api\"",
        "\"upstream\":\"users\"",
        &format!("\"endpoint\":\"{}\"", up.addr),
        "\"status\":200",
        "\"method\":\"GET\"",
        "\"path\":\"/users/7\"",
        "\"duration_ms\":",
        "\"client\":\"127.0.0.1\"",
    ] {
        assert!(ok.contains(field), "{field} missing from {ok}");
    }
    let missed = access[1];
    assert!(
        missed.contains("\"status\":404") && missed.contains("\"route\":\"-\""),
        "{missed}"
    );
    assert!(
        missed.contains("\"error\":\"no route matches the request\""),
        "{missed}"
    );
}

#[tokio::test]
async fn access_log_can_be_turned_off() {
    let up = TestUpstream::start("users");
    let weir = start(&up, false);
    assert_eq!(
        get(&format!("http://{}/users/1", weir.addr)).await.status,
        200
    );
    let lines = lines_within(&weir, Duration::from_millis(300));
    assert!(
        !lines.iter().any(|l| l.contains("weir::access")),
        "{lines:#?}"
    );
}
