//! Passive outlier detection through a real gateway: an endpoint that answers 5xx or
//! refuses connections several times in a row is ejected for a while, longer each
//! time, never more of the cluster than `max_ejected_percent`, and returns when its
//! ejection is over.

use std::time::Duration;

use weir_tests::client;
use weir_tests::poll::until;
use weir_tests::{TestGateway, TestUpstream};

fn outlying(ups: &[&TestUpstream], outlier: &str) -> String {
    let list: Vec<String> = ups.iter().map(|u| format!("\"{}\"", u.addr)).collect();
    format!(
        "[[upstream]]\nname = \"o\"\nendpoints = [{}]\noutlier = {{ {outlier} }}\n\
         [[route]]\nname = \"all\"\nupstream = \"o\"\n",
        list.join(", ")
    )
}

async fn endpoint(gw: &TestGateway, up: &TestUpstream) -> serde_json::Value {
    let doc = gw.admin_json("/admin/upstreams").await;
    doc["upstreams"][0]["endpoints"]
        .as_array()
        .and_then(|list| {
            list.iter()
                .find(|e| e["address"] == up.addr.to_string())
                .cloned()
        })
        .unwrap_or_else(|| panic!("no endpoint {} in {doc:#}", up.addr))
}

/// Sends `n` GETs one after the other; returns how many got each status.
async fn send(gw: &TestGateway, n: usize) -> std::collections::BTreeMap<u16, usize> {
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..n {
        let reply = client::get(&gw.url(&format!("/n/{i}"))).await;
        *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    statuses
}

#[tokio::test]
async fn an_endpoint_answering_5xx_is_ejected_longer_each_time_and_returns() {
    let (a, b, c) = (
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    );
    let gw = TestGateway::start(&outlying(
        &[&a, &b, &c],
        "consecutive_failures = 3, base_ejection = \"400ms\", max_ejected_percent = 50",
    ));
    c.set_status(500);
    // Round robin: c gets every third request, so its third 500 comes by the ninth.
    let statuses = send(&gw, 9).await;
    assert_eq!(statuses.get(&500), Some(&3), "{statuses:?}");
    let doc = endpoint(&gw, &c).await;
    assert_eq!(doc["in_rotation"], false, "{doc:#}");
    assert_eq!(doc["ejections"], 1, "{doc:#}");
    assert_eq!(
        gw.metric(&format!(
            "weir_upstream_ejections_total{{endpoint=\"{}\",upstream=\"o\"}}",
            c.addr
        ))
        .await,
        1.0
    );
    let served = c.served();
    assert_eq!(send(&gw, 30).await.get(&200), Some(&30), "c is out");
    assert_eq!(c.served(), served);

    // It comes back after the ejection, still failing: ejected again, for twice as long.
    let back = until(Duration::from_secs(5), "c back after 400 ms", || async {
        endpoint(&gw, &c).await["in_rotation"] == true
    })
    .await;
    eprintln!("first ejection ended after {back:?} (base 400 ms)");
    send(&gw, 9).await;
    let doc = endpoint(&gw, &c).await;
    assert_eq!(doc["ejections"], 2, "{doc:#}");
    let left = doc["ejected_for_ms"].as_u64().expect("ejected");
    assert!(left > 400 && left <= 800, "second ejection: {left} ms left");

    // Fixed meanwhile: it returns and stays.
    c.set_status(200);
    until(Duration::from_secs(5), "c back", || async {
        endpoint(&gw, &c).await["in_rotation"] == true
    })
    .await;
    let served = c.served();
    assert_eq!(send(&gw, 30).await.get(&200), Some(&30));
    assert!(c.served() >= served + 9, "c takes its share again");
}

#[tokio::test]
async fn never_more_than_max_ejected_percent_is_ejected() {
    let ups = [
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
        TestUpstream::start("d"),
    ];
    for up in &ups {
        up.set_status(503);
    }
    let refs: Vec<&TestUpstream> = ups.iter().collect();
    // 50% of 4: at most 2 ejected at once, however many fail.
    let gw = TestGateway::start(&outlying(
        &refs,
        "consecutive_failures = 2, base_ejection = \"30s\", max_ejected_percent = 50",
    ));
    let statuses = send(&gw, 40).await;
    assert_eq!(
        statuses.get(&503),
        Some(&40),
        "5xx pass through: {statuses:?}"
    );
    let doc = gw.admin_json("/admin/upstreams").await;
    let ejected = doc["upstreams"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter(|e| e["in_rotation"] == false)
        .count();
    assert_eq!(ejected, 2, "{doc:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_eject_without_health_checks() {
    let (a, mut b, c) = (
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    );
    let gw = TestGateway::start(&outlying(
        &[&a, &b, &c],
        "consecutive_failures = 2, base_ejection = \"30s\", max_ejected_percent = 34",
    ));
    assert_eq!(send(&gw, 6).await.get(&200), Some(&6));
    b.stop();
    // The refused requests were never sent: they go to another endpoint, and after two
    // refusals in a row `b` is out.
    let statuses = send(&gw, 12).await;
    assert_eq!(statuses.get(&200), Some(&12), "{statuses:?}");
    assert_eq!(endpoint(&gw, &b).await["in_rotation"], false);
    assert_eq!(endpoint(&gw, &b).await["ejections"], 1);
    assert_eq!(send(&gw, 30).await.get(&200), Some(&30));
}
