//! Hostile plugins (the probe test guest in its hostile modes): each is held by its limit
//! and counted, the gateway answers for it, and a clean route keeps serving while
//! hostile ones are hammered. Each test copies the plugin in under its own name, so its
//! metric series (process-wide) are its alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weir_gateway::plugin::FailureKind;
use weir_tests::{TestGateway, TestUpstream, get, guest_wasm};

fn gateway(up: &TestUpstream, plugin: &str, routes: &[(&str, &str)]) -> TestGateway {
    let dir = weir_tests::gateway::plugin_dir(&[(guest_wasm!("probe"), plugin)]);
    let mut toml = format!(
        "[plugins]\ndir = \"{}/plugins\"\n[[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n",
        dir.display(),
        up.addr
    );
    for (name, use_) in routes {
        toml.push_str(&format!(
            "[[route]]\nname = \"{name}\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/{name}\" }}\nplugins = [{{ name = \"{plugin}\", {use_} }}]\n"
        ));
    }
    toml.push_str(
        "[[route]]\nname = \"clean\"\nupstream = \"up\"\nmatch = { path_prefix = \"/\" }\n",
    );
    TestGateway::start(&toml)
}

async fn refusals(gw: &TestGateway, plugin: &str, reason: &str) -> f64 {
    gw.metric(&format!(
        "weir_plugin_refusals_total{{plugin=\"{plugin}\",reason=\"{reason}\"}}"
    ))
    .await
}

fn failures(gw: &TestGateway, kind: FailureKind) -> u64 {
    gw.snapshot().chains[0][0].plugin.stats.failures(kind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_plugin_is_held_by_its_limit_and_counted() {
    let up = TestUpstream::start("up");
    let target = TestUpstream::start("target");
    let call_loop = format!(
        "config = {{ mode = \"call-loop\", url = \"http://{}/x\" }}, allowed_hosts = [\"{}\"]",
        target.addr, target.addr
    );
    let gw = gateway(
        &up,
        "hostile-limits",
        &[
            ("recurse", "config = { mode = \"recurse\" }"),
            ("huge", "config = { mode = \"huge\" }"),
            ("forbidden", "config = { mode = \"forbidden\" }"),
            ("respond", "config = { mode = \"forbidden-respond\" }"),
            (
                "flood",
                "config = { mode = \"log-flood\", size = 90 }, timeout = \"1s\"",
            ),
            (
                "deluge",
                "config = { mode = \"log-flood\", size = 300 }, timeout = \"1s\"",
            ),
            ("calls", &call_loop),
        ],
    );

    // Unbounded recursion exhausts the guest's stack: a trap, not the gateway's stack.
    let reply = get(&gw.url("/recurse")).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(failures(&gw, FailureKind::Trap), 1);

    // An 8 MiB local answer is over max_body_bytes (1 MiB by default): a failure.
    let reply = get(&gw.url("/huge")).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert!(reply.body.len() < 1024, "the huge body is not sent");
    assert_eq!(failures(&gw, FailureKind::Error), 1);
    assert_eq!(refusals(&gw, "hostile-limits", "local_response").await, 1.0);

    // Framing and routing headers are the gateway's: every edit of them is refused,
    // and the request goes on as it was.
    let reply = get(&gw.url("/forbidden")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    assert_eq!(seen.headers["x-after-forbidden"], "yes");
    assert_eq!(seen.headers["host"], gw.addr.to_string().as_str());
    assert!(!seen.headers.contains_key("transfer-encoding"));
    assert!(!seen.headers.contains_key("content-length"));
    assert_eq!(
        reply.text(),
        "/forbidden",
        "the body the upstream sent, whole"
    );
    assert_eq!(reply.header("content-length").as_deref(), Some("10"));
    assert_eq!(refusals(&gw, "hostile-limits", "edit").await, 5.0);

    // A local answer's framing and hop-by-hop headers are dropped; the rest is sent.
    let reply = get(&gw.url("/respond")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "short");
    assert_eq!(reply.header("content-length").as_deref(), Some("5"));
    assert_eq!(reply.header("x-kept").as_deref(), Some("yes"));
    assert_eq!(reply.header("transfer-encoding"), None);
    assert_eq!(reply.header("connection"), None);
    assert_eq!(refusals(&gw, "hostile-limits", "local_response").await, 4.0);

    // 2 × 90 lines of 64 KiB: 100 a second are logged (cut to 4 KiB), the rest dropped
    // and counted.
    for _ in 0..2 {
        let reply = get(&gw.url("/flood")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let dropped = gw
        .metric("weir_plugin_logs_dropped_total{plugin=\"hostile-limits\"}")
        .await;
    assert!(dropped >= 80.0, "{dropped}");
    // Over 100 log calls in one call is a flood: the call fails.
    let reply = get(&gw.url("/deluge")).await;
    assert_eq!(reply.status, 500, "{}", reply.text());
    assert_eq!(
        failures(&gw, FailureKind::Error),
        2,
        "the huge answer and the deluge"
    );

    // http-call in a loop: the per-request limit (4 by default) stops it.
    let reply = get(&gw.url("/calls")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    assert_eq!(seen.headers["x-calls-made"], "4");
    assert!(
        seen.headers["x-calls-refusal"]
            .to_str()
            .unwrap()
            .contains("too many outbound calls"),
        "{:?}",
        seen.headers["x-calls-refusal"]
    );
    assert_eq!(target.seen().len(), 4);
    assert_eq!(refusals(&gw, "hostile-limits", "outbound_calls").await, 1.0);

    // None of it reached the upstream where it should not, or hurt the clean route.
    assert_eq!(get(&gw.url("/elsewhere")).await.status, 200);
    assert!(
        up.seen()
            .iter()
            .all(|s| ["/forbidden", "/flood", "/calls", "/elsewhere"].contains(&s.target.as_str())),
        "{:?}",
        up.seen()
            .iter()
            .map(|s| s.target.clone())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_whose_failures_waste_time_is_suspended_and_tried_again_later() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        "hostile-suspend",
        &[(
            "spin",
            "config = { mode = \"loop\" }, timeout = \"80ms\", on_error = \"deny\"",
        )],
    );
    // Each timeout wastes 80 ms or more; past 200 ms in a second the plugin is set
    // aside and its requests are answered at once, without a call. On a quiet machine
    // the third timeout does it. On a loaded one a single timeout can overrun past
    // 200 ms, or the requests come so far apart that a second holds fewer timeouts, so
    // the loop goes on (bounded) until one is refused as suspended, then sends a few
    // more that must all be refused.
    let mut statuses = Vec::new();
    while statuses.len() < 60 {
        let reply = get(&gw.url("/spin")).await;
        let suspended = reply.status == 503 && reply.text().contains("plugin suspended");
        statuses.push((reply.status, reply.text()));
        if suspended {
            break;
        }
    }
    for _ in 0..5 {
        let reply = get(&gw.url("/spin")).await;
        statuses.push((reply.status, reply.text()));
    }
    let timeouts = failures(&gw, FailureKind::Timeout);
    assert!(timeouts >= 1, "{timeouts} timeouts: {statuses:?}");
    let suspended = statuses
        .iter()
        .filter(|(status, text)| *status == 503 && text.contains("plugin suspended"))
        .count() as u64;
    assert_eq!(suspended, 6, "suspended, and stays so: {statuses:?}");
    assert_eq!(suspended + timeouts, statuses.len() as u64, "{statuses:?}");
    assert_eq!(
        refusals(&gw, "hostile-suspend", "suspended").await,
        suspended as f64
    );
    assert_eq!(get(&gw.url("/other")).await.status, 200);

    // After the pause (1 s) the plugin is tried again: one more timeout suspends it
    // at once, for longer (2 s).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = get(&gw.url("/spin")).await;
    assert!(reply.text().contains("plugin timeout"), "{}", reply.text());
    let reply = get(&gw.url("/spin")).await;
    assert!(
        reply.text().contains("plugin suspended"),
        "{}",
        reply.text()
    );
    assert_eq!(failures(&gw, FailureKind::Timeout), timeouts + 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let reply = get(&gw.url("/spin")).await;
    assert!(
        reply.text().contains("plugin suspended"),
        "still within the longer pause: {}",
        reply.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_routes_each_within_their_own_budget_are_suspended_for_the_workers() {
    let up = TestUpstream::start("up");
    let dir = weir_tests::gateway::plugin_dir(&[(guest_wasm!("probe"), "hostile-spread")]);
    // One worker, three routes whose plugin loops to a 40 ms timeout: taken in turn, each
    // wastes 160 ms in 12 requests, under its own 200 ms a second, but together they
    // take the worker's second past its 100 ms budget.
    let mut toml = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[plugins]\ndir = \"{}/plugins\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n",
        dir.display(),
        up.addr
    );
    for name in ["a", "b", "c"] {
        toml.push_str(&format!(
            "[[route]]\nname = \"spread-{name}\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/{name}\" }}\n\
             plugins = [{{ name = \"hostile-spread\", config = {{ mode = \"loop\" }}, timeout = \"40ms\" }}]\n"
        ));
    }
    let gw = TestGateway::start(&toml);
    let mut statuses = Vec::new();
    for _ in 0..4 {
        for name in ["a", "b", "c"] {
            let reply = get(&gw.url(&format!("/{name}"))).await;
            statuses.push((reply.status, reply.text()));
        }
    }
    let timeouts = failures(&gw, FailureKind::Timeout);
    let suspended = statuses
        .iter()
        .filter(|(status, text)| *status == 503 && text.contains("plugin suspended"))
        .count() as u64;
    assert_eq!(timeouts + suspended, 12, "{statuses:?}");
    // Past 100 ms of the worker's second (three timeouts), each route is suspended at
    // its next failure. (On a loaded machine the second may run out first: a few more.)
    assert!(timeouts <= 7, "{timeouts} timeouts: {statuses:?}");
    assert_eq!(
        refusals(&gw, "hostile-spread", "suspended").await,
        suspended as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_route_serves_every_request_while_hostile_routes_are_hammered() {
    let up = TestUpstream::start("up");
    let gw = Arc::new(gateway(
        &up,
        "hostile-load",
        &[
            ("loop", "config = { mode = \"loop\" }, timeout = \"20ms\""),
            (
                "oom",
                "config = { mode = \"oom\" }, memory_limit = \"8MiB\"",
            ),
            ("recurse", "config = { mode = \"recurse\" }"),
            (
                "huge",
                "config = { mode = \"huge\", size = 4000000 }, memory_limit = \"8MiB\"",
            ),
            ("trap", "config = { mode = \"trap\" }"),
            ("flood", "config = { mode = \"log-flood\", size = 1000 }"),
        ],
    ));
    let hammered = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let hammers: Vec<_> = ["/loop", "/oom", "/recurse", "/huge", "/trap", "/flood"]
        .into_iter()
        .map(|path| {
            let (gw, hammered) = (gw.clone(), hammered.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let status = get(&gw.url(path)).await.status;
                    assert!(status == 500 || status == 503, "{path}: {status}");
                    hammered.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let mut clean = 0;
    while Instant::now() < deadline {
        let reply = get(&gw.url("/clean")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        clean += 1;
    }
    for hammer in hammers {
        hammer.await.unwrap();
    }
    let hammered = hammered.load(Ordering::Relaxed);
    eprintln!("clean route: {clean} requests served; hostile routes: {hammered} refused");
    assert!(clean > 0 && hammered > 0);
    assert!(
        refusals(&gw, "hostile-load", "suspended").await > 0.0,
        "the looping plugin was suspended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_cannot_reach_files_the_environment_or_the_network() {
    let up = TestUpstream::start("up");
    // A listener the plugin is told about and must not reach.
    let bait = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    bait.set_nonblocking(true).unwrap();
    let bait_addr = bait.local_addr().unwrap();
    let gw = gateway(
        &up,
        "hostile-escape",
        &[(
            "escape",
            // Many WASI calls in one phase: a loaded machine may take more than the
            // default 50 ms, and this test is about what is refused, not about time.
            &format!("config = {{ mode = \"escape\", url = \"{bait_addr}\" }}, timeout = \"5s\""),
        )],
    );
    let reply = get(&gw.url("/escape")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    let header = |name: &str| seen.headers[name].to_str().unwrap().to_owned();
    for name in [
        "x-escape-file",
        "x-escape-dir",
        "x-escape-write",
        "x-escape-tcp",
        "x-escape-udp",
        "x-escape-listen",
        "x-escape-dns",
    ] {
        assert!(
            header(name).starts_with("refused: "),
            "{name}: {}",
            header(name)
        );
    }
    // Sockets are refused by the host (the WASI context allows no address), not merely
    // unimplemented; files are not there at all (no directory is preopened).
    for name in ["x-escape-tcp", "x-escape-udp", "x-escape-listen"] {
        assert!(
            header(name).contains("Permission denied"),
            "{name}: {}",
            header(name)
        );
    }
    assert_eq!(header("x-escape-env"), "0");
    assert_eq!(header("x-escape-args"), "0");
    assert!(
        matches!(bait.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "nothing connected to the bait"
    );
    assert!(!std::path::Path::new("/tmp/weir-escape").exists());
    eprintln!(
        "escape attempts: {:?}",
        seen.headers
            .iter()
            .filter(|(n, _)| n.as_str().starts_with("x-escape"))
            .collect::<Vec<_>>()
    );
}
