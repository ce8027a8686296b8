//! Circuit breaking and upstream timeouts through a real gateway: past `max_requests`,
//! or with connections and the pending queue full, requests get a local 503 (and the
//! breaker closes again when load drops); pending requests get a connection when one
//! is returned; connections idle past `idle` are not reused.

use std::collections::BTreeMap;
use std::time::Duration;

use http::Request;
use weir_tests::client::{self, empty};
use weir_tests::load::burst;
use weir_tests::poll::until;
use weir_tests::{Reply, TestGateway, TestUpstream};

fn limited(name: &str, up: &TestUpstream, server: &str, extra: &str) -> String {
    format!(
        "{server}[[upstream]]\nname = \"{name}\"\nendpoints = [\"{}\"]\n{extra}\n\
         [[route]]\nname = \"all\"\nupstream = \"{name}\"\n",
        up.addr
    )
}

/// One worker, so that a single pool serves every request.
const ONE_WORKER: &str = "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n";

fn statuses(replies: &[Reply]) -> BTreeMap<u16, usize> {
    let mut tally = BTreeMap::new();
    for r in replies {
        *tally.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    tally
}

async fn concurrent(gw: &TestGateway, n: usize) -> Vec<Reply> {
    burst(n, n, |i| {
        Request::get(gw.url(&format!("/c/{i}")))
            .body(empty())
            .expect("request")
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_opens_the_breaker_and_it_closes_again() {
    let up = TestUpstream::start("up");
    up.set_delay(Duration::from_millis(300));
    let gw = TestGateway::start(&limited(
        "max-requests",
        &up,
        "",
        "limits = { max_requests = 2 }",
    ));
    let replies = concurrent(&gw, 6).await;
    assert_eq!(
        statuses(&replies),
        BTreeMap::from([(200, 2), (503, 4)]),
        "two in flight, the rest refused"
    );
    let refused = replies.iter().find(|r| r.status == 503).expect("a 503");
    assert_eq!(refused.text(), "{\"error\":\"upstream overloaded\"}\n");
    assert_eq!(
        refused.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        gw.metric("weir_upstream_overflow_total{limit=\"requests\",upstream=\"max-requests\"}")
            .await,
        4.0
    );
    assert_eq!(up.served(), 2, "refused requests never reach the upstream");
    // Load is back under the limit: the breaker lets requests through again.
    up.set_delay(Duration::ZERO);
    assert_eq!(
        statuses(&concurrent(&gw, 2).await),
        BTreeMap::from([(200, 2)])
    );
    let load = &gw.admin_json("/admin/upstreams").await["upstreams"][0]["load"];
    assert_eq!(load["requests"], 0, "{load}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_pool_queues_requests_as_pending_and_refuses_past_max_pending() {
    let up = TestUpstream::start("up");
    up.set_delay(Duration::from_millis(300));
    let gw = TestGateway::start(&limited(
        "pending",
        &up,
        ONE_WORKER,
        "limits = { max_connections = 1, max_pending = 1 }",
    ));
    let replies = concurrent(&gw, 3).await;
    // One request has the connection, one waits for it and gets it next, one is
    // refused at once.
    assert_eq!(statuses(&replies), BTreeMap::from([(200, 2), (503, 1)]));
    assert_eq!(
        up.connections(),
        1,
        "the pending request reused the connection"
    );
    assert_eq!(
        gw.metric("weir_upstream_overflow_total{limit=\"pending\",upstream=\"pending\"}")
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_request_gives_up_after_the_connect_timeout() {
    let up = TestUpstream::start("up");
    up.set_delay(Duration::from_secs(2));
    let gw = TestGateway::start(&limited(
        "wait",
        &up,
        ONE_WORKER,
        "limits = { max_connections = 1 }\ntimeouts = { connect = \"200ms\" }",
    ));
    let slow = tokio::spawn(client::get_owned(gw.url("/slow")));
    until(
        Duration::from_secs(5),
        "the slow request holds the connection",
        || async {
            gw.admin_json("/admin/upstreams").await["upstreams"][0]["load"]["connections"] == 1
        },
    )
    .await;
    let started = std::time::Instant::now();
    let waited = client::get(&gw.url("/waits")).await;
    assert_eq!(waited.status, 503, "{}", waited.text());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(150) && took < Duration::from_millis(1500),
        "gave up after {took:?}"
    );
    assert_eq!(slow.await.expect("slow request").status, 200);
    assert_eq!(
        gw.metric("weir_upstream_overflow_total{limit=\"connections\",upstream=\"wait\"}")
            .await,
        1.0
    );
}

/// `max_connections` counts every worker's connections: a worker that needs one while
/// another worker holds the only one idle closes that one (waiting, if need be, for it
/// to be returned) instead of waiting for the connect timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_of_another_worker_makes_room() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&limited(
        "shared",
        &up,
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n",
        "limits = { max_connections = 1 }",
    ));
    // A fresh client connection per request lands on either worker.
    for i in 0..20 {
        let reply = client::get(&gw.url(&format!("/s/{i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let load = &gw.admin_json("/admin/upstreams").await["upstreams"][0]["load"];
    assert!(load["connections"].as_u64().unwrap_or(9) <= 1, "{load}");
}

#[tokio::test]
async fn connections_idle_past_the_idle_timeout_are_not_reused() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&limited(
        "idle",
        &up,
        ONE_WORKER,
        "timeouts = { idle = \"200ms\" }",
    ));
    let client = client::h1_client();
    let get = |path: &str| {
        client::send(
            &client,
            Request::get(gw.url(path)).body(empty()).expect("request"),
        )
    };
    assert_eq!(get("/1").await.status, 200);
    assert_eq!(get("/2").await.status, 200);
    assert_eq!(up.connections(), 1, "reused while fresh");
    // Waiting is the point here: the connection must sit idle past the timeout.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get("/3").await.status, 200);
    assert_eq!(
        up.connections(),
        2,
        "the idle connection was closed, not reused"
    );
}
