//! Active health checks through a real gateway: an endpoint that dies or fails its
//! checks leaves rotation (admin API, `weir_upstream_endpoint_healthy`) and comes back
//! when it passes again; with every endpoint unhealthy the balancer spreads over all
//! of them (panic mode); a reload that retires a cluster stops its checks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use weir_tests::client::{self, empty};
use weir_tests::gateway::{with_test_listeners, write_config};
use weir_tests::poll::until;
use weir_tests::{TestGateway, TestUpstream};

const CHECKS: &str = "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"200ms\", healthy = 2, unhealthy = 2 }";

fn checked(ups: &[&TestUpstream], extra: &str) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "[[upstream]]\nname = \"h\"\nendpoints = [{}]\n{CHECKS}\n{extra}\n\
         [[route]]\nname = \"all\"\nupstream = \"h\"\n",
        list.join(", ")
    )
}

/// Endpoint `address`'s entry in `/admin/upstreams`.
async fn endpoint(gw: &TestGateway, address: &str) -> serde_json::Value {
    let doc = gw.admin_json("/admin/upstreams").await;
    doc["upstreams"][0]["endpoints"]
        .as_array()
        .and_then(|list| list.iter().find(|e| e["address"] == address).cloned())
        .unwrap_or_else(|| panic!("no endpoint {address} in {doc:#}"))
}

async fn in_rotation(gw: &TestGateway, up: &TestUpstream) -> bool {
    endpoint(gw, &up.addr.to_string()).await["in_rotation"] == true
}

fn gauge(up: &TestUpstream) -> String {
    format!(
        "weir_upstream_endpoint_healthy{{endpoint=\"{}\",upstream=\"h\"}}",
        up.addr
    )
}

/// One request of the load: when it started and its status.
type Outcome = (Instant, u16);

/// Sends GETs to `url` from `clients` keep-alive clients until `stop` (at most `max`
/// each).
async fn load(url: String, clients: usize, max: usize, stop: Arc<AtomicBool>) -> Vec<Outcome> {
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, stop) = (url.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client = client::h1_client();
            let mut outcomes = Vec::new();
            while !stop.load(Ordering::Relaxed) && outcomes.len() < max {
                let started = Instant::now();
                let req = Request::get(&url).body(empty()).expect("request");
                let reply = client::send(&client, req).await;
                outcomes.push((started, reply.status.as_u16()));
            }
            outcomes
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_endpoint_leaves_rotation_and_returns_when_it_serves_again() {
    let (a, mut b, c) = (
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    );
    let gw = TestGateway::start(&checked(&[&a, &b, &c], ""));
    until(Duration::from_secs(5), "first checks", || async {
        b.health_checks() > 0
    })
    .await;

    let stop = Arc::new(AtomicBool::new(false));
    let running = tokio::spawn(load(gw.url("/load"), 4, 5000, stop.clone()));
    until(Duration::from_secs(5), "load started", || async {
        b.served() > 10
    })
    .await;

    let killed = Instant::now();
    b.stop();
    let took = until(Duration::from_secs(5), "b out of rotation", || async {
        !in_rotation(&gw, &b).await
    })
    .await;
    let detected = Instant::now();
    eprintln!("killed endpoint out of rotation {took:?} after it stopped");
    assert_eq!(gw.metric(&gauge(&b)).await, 0.0);
    // Refused connections set it aside at once; the checks then mark it unhealthy.
    until(Duration::from_secs(5), "b unhealthy", || async {
        endpoint(&gw, &b.addr.to_string()).await["healthy"] == false
    })
    .await;
    let doc = endpoint(&gw, &b.addr.to_string()).await;
    assert!(
        doc["last_check_error"]
            .as_str()
            .unwrap_or_default()
            .contains("connect failed"),
        "{doc:#}"
    );

    // Serve again: two passing checks bring it back.
    b.restart();
    let back = until(Duration::from_secs(5), "b back in rotation", || async {
        in_rotation(&gw, &b).await
    })
    .await;
    eprintln!("restarted endpoint back in rotation after {back:?}");
    let served_before = b.served();
    until(Duration::from_secs(5), "b serving again", || async {
        b.served() > served_before
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let outcomes = running.await.expect("load");
    assert_eq!(gw.metric(&gauge(&b)).await, 1.0);

    let failed_before = outcomes
        .iter()
        .filter(|(at, s)| *at >= killed && *at < detected && *s != 200)
        .count();
    let failed_after: Vec<_> = outcomes
        .iter()
        .filter(|(at, s)| *at >= detected && *s != 200)
        .collect();
    eprintln!(
        "{} requests; {failed_before} failed between the kill and its detection, {} after",
        outcomes.len(),
        failed_after.len()
    );
    assert!(failed_after.is_empty(), "{failed_after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_status_decides_with_thresholds() {
    let (a, b) = (TestUpstream::start("a"), TestUpstream::start("b"));
    let gw = TestGateway::start(&checked(&[&a, &b], "panic_threshold = 0"));
    until(Duration::from_secs(5), "first checks", || async {
        a.health_checks() > 0 && b.health_checks() > 0
    })
    .await;
    b.set_health(503);
    until(Duration::from_secs(5), "b out of rotation", || async {
        !in_rotation(&gw, &b).await
    })
    .await;
    let doc = endpoint(&gw, &b.addr.to_string()).await;
    assert_eq!(doc["last_check_error"], "answered 503", "{doc:#}");
    assert_eq!(doc["health_checked"], true);
    // b still answers ordinary requests, but gets none now.
    let served = b.served();
    for i in 0..20 {
        let reply = client::get(&gw.url(&format!("/n/{i}"))).await;
        assert_eq!(reply.header("x-upstream").as_deref(), Some("a"));
    }
    assert_eq!(b.served(), served);

    // 2 passes in a row bring it back; a 3xx passes (the default is 200-399).
    b.set_health(302);
    let checks = b.health_checks();
    until(Duration::from_secs(5), "b back in rotation", || async {
        in_rotation(&gw, &b).await
    })
    .await;
    assert!(b.health_checks() >= checks + 2, "back after two passes");
}

#[tokio::test]
async fn with_every_endpoint_unhealthy_the_balancer_uses_them_all() {
    let (a, b) = (TestUpstream::start("a"), TestUpstream::start("b"));
    a.set_health(500);
    b.set_health(500);
    let gw = TestGateway::start(&checked(&[&a, &b], ""));
    until(Duration::from_secs(5), "panic mode", || async {
        gw.admin_json("/admin/upstreams").await["upstreams"][0]["panic"] == true
    })
    .await;
    let mut names = std::collections::BTreeSet::new();
    for i in 0..10 {
        let reply = client::get(&gw.url(&format!("/n/{i}"))).await;
        assert_eq!(reply.status, 200);
        names.extend(reply.header("x-upstream"));
    }
    assert_eq!(
        names.len(),
        2,
        "both endpoints serve in panic mode: {names:?}"
    );
    assert_eq!(endpoint(&gw, &a.addr.to_string()).await["healthy"], false);

    // One recovers: panic mode ends (1 of 2 is the 50% threshold) and only it serves.
    a.set_health(200);
    until(Duration::from_secs(5), "panic over", || async {
        gw.admin_json("/admin/upstreams").await["upstreams"][0]["panic"] == false
    })
    .await;
    for i in 0..10 {
        let reply = client::get(&gw.url(&format!("/m/{i}"))).await;
        assert_eq!(reply.header("x-upstream").as_deref(), Some("a"));
    }
}

#[tokio::test]
async fn retired_clusters_and_a_stopped_gateway_stop_checking() {
    let up = TestUpstream::start("up");
    let config = write_config(&with_test_listeners(&checked(&[&up], "")));
    let gw = TestGateway::from_file(&config);
    until(Duration::from_secs(5), "checks running", || async {
        up.health_checks() >= 2
    })
    .await;

    // The new config changes the cluster (no checks): the old one is dropped.
    std::fs::write(
        &config,
        with_test_listeners(&checked(&[&up], "").replace(CHECKS, "")),
    )
    .expect("write config");
    assert_eq!(gw.reload().await.0, 200);
    assert_eq!(client::get(&gw.url("/")).await.status, 200);
    let after_reload = up.health_checks();
    // Absence takes waiting: ten intervals with no check (one may have been in flight).
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(
        up.health_checks() <= after_reload + 1,
        "{} checks after the reload",
        up.health_checks() - after_reload
    );

    // Checks again, then shut down: they stop with the gateway.
    std::fs::write(&config, with_test_listeners(&checked(&[&up], ""))).expect("write config");
    assert_eq!(gw.reload().await.0, 200);
    let resumed = up.health_checks();
    until(Duration::from_secs(5), "checks resumed", || async {
        up.health_checks() > resumed
    })
    .await;
    drop(gw);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_stop = up.health_checks();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(up.health_checks(), at_stop, "checks ran after shutdown");
}
