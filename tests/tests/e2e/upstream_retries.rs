//! Retries through a real gateway: failed tries go to another endpoint when the policy
//! allows and the request can be sent again; non-idempotent and streamed requests are
//! not repeated; per-try timeouts cut slow tries short; the retry budget stops retries
//! from multiplying an outage; and killing an endpoint under load fails no request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use weir_tests::client::{self, empty, full};
use weir_tests::load::burst;
use weir_tests::poll::until;
use weir_tests::{TestGateway, TestUpstream};

/// Upstream `name` (unique per test: metrics are process-wide) over `ups`.
fn retrying(name: &str, ups: &[&TestUpstream], extra: &str) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "[[upstream]]\nname = \"{name}\"\nendpoints = [{}]\n{extra}\n\
         [[route]]\nname = \"all\"\nupstream = \"{name}\"\n",
        list.join(", ")
    )
}

fn statuses(replies: &[weir_tests::Reply]) -> BTreeMap<u16, usize> {
    let mut tally = BTreeMap::new();
    for r in replies {
        *tally.entry(r.status.as_u16()).or_insert(0) += 1;
    }
    tally
}

#[tokio::test]
async fn a_request_that_never_left_is_retried_elsewhere_whatever_its_method() {
    let (mut dead, live) = (TestUpstream::start("dead"), TestUpstream::start("live"));
    dead.stop();
    let gw = TestGateway::start(&retrying(
        "unsent",
        &[&dead, &live],
        "retries = { attempts = 1 }",
    ));
    for i in 0..10 {
        let reply = client::get(&gw.url(&format!("/g/{i}"))).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    // A POST with a streamed body: refused connections never saw it, so it is safe.
    for i in 0..10 {
        let req = Request::post(gw.url(&format!("/p/{i}")))
            .body(full(format!("body {i}")))
            .expect("request");
        let reply = client::send(&client::h1_client(), req).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("/p/{i} body {i}"));
    }
    assert_eq!(live.served(), 20);
    // Until the dead endpoint is set aside (after three refusals in a row).
    assert!(
        gw.metric("weir_upstream_retries_total{upstream=\"unsent\"}")
            .await
            >= 1.0
    );
}

#[tokio::test]
async fn answered_requests_are_retried_only_when_idempotent_and_replayable() {
    let (bad, good) = (TestUpstream::start("bad"), TestUpstream::start("good"));
    bad.set_status(503);
    let gw = TestGateway::start(&retrying(
        "answered",
        &[&bad, &good],
        "retries = { attempts = 2, on = [\"gateway-error\"] }",
    ));
    for i in 0..10 {
        let reply = client::get(&gw.url(&format!("/g/{i}"))).await;
        assert_eq!(reply.status, 200, "GET {i} is retried on `good`");
        assert_eq!(reply.header("x-upstream").as_deref(), Some("good"));
    }
    // POST: one try each, whatever it got.
    let (bad_before, good_before) = (bad.served(), good.served());
    let mut answers = BTreeMap::new();
    for i in 0..10 {
        let req = Request::post(gw.url(&format!("/p/{i}")))
            .body(full("x"))
            .expect("request");
        let reply = client::send(&client::h1_client(), req).await;
        *answers.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    let sent = (bad.served() - bad_before) + (good.served() - good_before);
    assert_eq!(sent, 10, "no POST was sent twice: {answers:?}");
    assert_eq!(answers.get(&503), Some(&(bad.served() - bad_before)));
    assert!(answers.contains_key(&503), "{answers:?}");
}

#[tokio::test]
async fn streamed_bodies_are_not_sent_twice_even_when_allowed() {
    let (bad, good) = (TestUpstream::start("bad"), TestUpstream::start("good"));
    bad.set_status(503);
    let gw = TestGateway::start(&retrying(
        "streamed",
        &[&bad, &good],
        "retries = { attempts = 2, on = [\"5xx\"], allow_non_idempotent = true }",
    ));
    let (bad_before, good_before) = (bad.served(), good.served());
    for i in 0..10 {
        let req = Request::post(gw.url(&format!("/p/{i}")))
            .body(full("streamed"))
            .expect("request");
        client::send(&client::h1_client(), req).await;
    }
    assert_eq!(
        (bad.served() - bad_before) + (good.served() - good_before),
        10
    );
    // Without a body, a POST is replayable, and allowed here.
    for i in 0..10 {
        let req = Request::post(gw.url(&format!("/e/{i}")))
            .body(empty())
            .expect("request");
        let reply = client::send(&client::h1_client(), req).await;
        assert_eq!(reply.status, 200);
    }
}

#[tokio::test]
async fn retriable_statuses_are_retried() {
    let (conflict, good) = (TestUpstream::start("conflict"), TestUpstream::start("good"));
    conflict.set_status(409);
    let gw = TestGateway::start(&retrying(
        "statuses",
        &[&conflict, &good],
        "retries = { attempts = 1, retriable_statuses = [409] }",
    ));
    for i in 0..6 {
        let reply = client::get(&gw.url(&format!("/g/{i}"))).await;
        assert_eq!(reply.status, 200);
    }
    assert!(conflict.served() >= 2, "the 409s were tried first");
}

#[tokio::test]
async fn a_slow_try_is_cut_short_by_the_per_try_timeout() {
    let (slow, fast) = (TestUpstream::start("slow"), TestUpstream::start("fast"));
    slow.set_delay(Duration::from_secs(5));
    let gw = TestGateway::start(&retrying(
        "per-try",
        &[&slow, &fast],
        "retries = { attempts = 1, on = [\"reset\"], per_try_timeout = \"200ms\" }",
    ));
    for i in 0..4 {
        let started = Instant::now();
        let reply = client::get(&gw.url(&format!("/g/{i}"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-upstream").as_deref(), Some("fast"));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
}

/// Ten concurrent requests to an endpoint that always fails, with up to 3 retries each
/// but a budget of 2 retries in flight: at most 2 requests retry (3 times each), the
/// other 8 get the failure at once. Without the budget it would take 40 tries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_at_the_budget() {
    let failing = TestUpstream::start("failing");
    failing.set_status(500);
    failing.set_delay(Duration::from_millis(300));
    let gw = TestGateway::start(&retrying(
        "budget",
        &[&failing],
        "retries = { attempts = 3, on = [\"5xx\"], budget_percent = 0, min_retry_concurrency = 2, backoff_base = \"1ms\" }",
    ));
    let replies = burst(10, 10, |i| {
        Request::get(gw.url(&format!("/b/{i}")))
            .body(empty())
            .expect("request")
    })
    .await;
    assert_eq!(statuses(&replies).get(&500), Some(&10));
    let tries = failing.served();
    let retries = gw
        .metric("weir_upstream_retries_total{upstream=\"budget\"}")
        .await;
    let refused = gw
        .metric("weir_upstream_overflow_total{limit=\"retries\",upstream=\"budget\"}")
        .await;
    eprintln!("budget of 2: {tries} tries for 10 requests, {retries} retries, {refused} refused");
    assert!(tries <= 10 + 2 * 3, "{tries} tries");
    assert!((2.0..=6.0).contains(&retries), "{retries} retries");
    assert!(refused >= 8.0, "{refused} refused by the budget");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_endpoints_under_load_fails_no_request() {
    let (a, mut b, c) = (
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    );
    let gw = TestGateway::start(&retrying(
        "killed",
        &[&a, &b, &c],
        "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"500ms\", unhealthy = 2 }\n\
         retries = { attempts = 2 }",
    ));
    // Three clients: with the default budget (3 retries in flight at least), a retry is
    // never refused, so every request must succeed.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for n in 0..3 {
        let (url, stop) = (gw.url(&format!("/load/{n}")), stop.clone());
        clients.push(tokio::spawn(async move {
            let client = client::h1_client();
            let mut statuses = Vec::new();
            while !stop.load(Ordering::Relaxed) && statuses.len() < 20_000 {
                let req = Request::get(&url).body(empty()).expect("request");
                statuses.push(client::send(&client, req).await.status.as_u16());
            }
            statuses
        }));
    }
    until(Duration::from_secs(5), "load reaches b", || async {
        b.served() > 20
    })
    .await;
    b.stop();
    let doc = until(Duration::from_secs(5), "b out of rotation", || async {
        let doc = gw.admin_json("/admin/upstreams").await;
        doc["upstreams"][0]["endpoints"][1]["in_rotation"] == false
    })
    .await;
    let a_before = a.served();
    until(
        Duration::from_secs(5),
        "more load after detection",
        || async { a.served() > a_before + 200 },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for client in clients {
        all.extend(client.await.expect("client"));
    }
    let failed = all.iter().filter(|s| **s != 200).count();
    let mut tally = BTreeMap::new();
    for s in &all {
        *tally.entry(*s).or_insert(0) += 1;
    }
    eprintln!("statuses {tally:?}");
    let retries = gw
        .metric("weir_upstream_retries_total{upstream=\"killed\"}")
        .await;
    eprintln!(
        "{} requests, b detected after {doc:?}, {failed} failed, {retries} retries",
        all.len()
    );
    assert_eq!(failed, 0);
}
