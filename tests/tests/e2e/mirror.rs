//! Request mirroring: a shadow upstream gets copies of a route's requests (Host
//! suffixed `-shadow`) while the client gets the primary's answers, unhindered by a slow
//! or dead shadow; sampling by percent; bounded shadow requests in flight.

use std::time::{Duration, Instant};

use http::Request;
use weir_tests::client::{empty, full, h1_client};
use weir_tests::{TestGateway, TestUpstream, send};

/// A gateway whose route `route` goes to `primary` and mirrors to `shadow` as `mirror`
/// says. Metrics are process-wide and tests run side by side: each test names its own
/// route.
fn config(route: &str, primary: &TestUpstream, shadow: &TestUpstream, mirror: &str) -> String {
    format!(
        "[[upstream]]\nname = \"shop\"\nendpoints = [\"{}\"]\n\
         [[upstream]]\nname = \"shop-shadow\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"{route}\"\nupstream = \"shop\"\nmirror = {mirror}\n",
        primary.addr, shadow.addr
    )
}

async fn mirror_count(gw: &TestGateway, result: &str) -> usize {
    let routes = gw.admin_json("/admin/routes").await;
    let route = routes["routes"][0]["name"]
        .as_str()
        .expect("route name")
        .to_owned();
    gw.metric(&format!(
        "weir_mirror_requests_total{{result=\"{result}\",route=\"{route}\"}}"
    ))
    .await as usize
}

/// Waits (at most 10 s) until every shadow request sent has been answered and counted:
/// the `sent` count equals what the shadow served, twice in a row.
async fn settle(gw: &TestGateway, shadow: &TestUpstream) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = usize::MAX;
    loop {
        let sent = mirror_count(gw, "sent").await;
        if sent == shadow.served() && sent == last {
            return sent;
        }
        assert!(
            Instant::now() < deadline,
            "shadow requests did not settle: {sent} counted, {} served",
            shadow.served()
        );
        last = sent;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_shadow_gets_copies_with_a_shadow_host_and_the_client_the_primarys_answers() {
    let primary = TestUpstream::start("primary");
    let shadow = TestUpstream::start("shadow");
    let gw = TestGateway::start(&config(
        "mirror-copies",
        &primary,
        &shadow,
        "{ upstream = \"shop-shadow\", percent = 100 }",
    ));
    let client = h1_client();
    for i in 0..10 {
        let req = Request::get(gw.url(&format!("/item/{i}")))
            .header("host", "shop.example.com:8080")
            .body(empty())
            .expect("request");
        let reply = send(&client, req).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-upstream").as_deref(), Some("primary"));
    }
    // A small body is mirrored too.
    let req = Request::post(gw.url("/order"))
        .header("host", "shop.example.com")
        .body(full("one widget"))
        .expect("request");
    let reply = send(&client, req).await;
    assert_eq!(reply.text(), "/order one widget");

    assert_eq!(settle(&gw, &shadow).await, 11);
    let seen = shadow.seen();
    assert_eq!(seen.len(), 11);
    for s in &seen[..10] {
        assert_eq!(s.headers["host"], "shop.example.com-shadow:8080", "{s:?}");
        assert!(s.target.starts_with("/item/"));
    }
    let post = seen
        .iter()
        .find(|s| s.target == "/order")
        .expect("POST mirrored");
    assert_eq!(post.method, "POST");
    assert_eq!(post.headers["host"], "shop.example.com-shadow");
    assert_eq!(post.headers["content-length"], "10");
    // The primary saw the client's host, unsuffixed.
    assert_eq!(primary.last().headers["host"], "shop.example.com");

    let routes = gw.admin_json("/admin/routes").await;
    assert_eq!(routes["routes"][0]["mirror"]["upstream"], "shop-shadow");
    assert_eq!(routes["routes"][0]["mirror"]["percent"], 100.0);
}

#[tokio::test]
async fn a_slow_shadow_neither_delays_the_client_nor_piles_up() {
    let primary = TestUpstream::start("primary");
    let shadow = TestUpstream::start("shadow");
    shadow.set_delay(Duration::from_secs(3));
    let gw = TestGateway::start(&config(
        "mirror-slow",
        &primary,
        &shadow,
        "{ upstream = \"shop-shadow\", max_in_flight = 4 }",
    ));
    let client = h1_client();
    let started = Instant::now();
    for _ in 0..10 {
        let reply = send(
            &client,
            Request::get(gw.url("/")).body(empty()).expect("request"),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("x-upstream").as_deref(), Some("primary"));
    }
    // Waiting on the shadow would take 3 s per request.
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "10 requests took {:?}",
        started.elapsed()
    );
    // Four were in flight at once; the other six were dropped and counted.
    assert_eq!(mirror_count(&gw, "dropped").await, 6);
}

#[tokio::test]
async fn a_dead_shadow_does_not_fail_the_client() {
    let primary = TestUpstream::start("primary");
    let mut shadow = TestUpstream::start("shadow");
    let gw = TestGateway::start(&config(
        "mirror-dead",
        &primary,
        &shadow,
        "{ upstream = \"shop-shadow\" }",
    ));
    shadow.stop();
    let client = h1_client();
    for _ in 0..5 {
        let reply = send(
            &client,
            Request::get(gw.url("/")).body(empty()).expect("request"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while mirror_count(&gw, "failed").await < 5 {
        assert!(
            Instant::now() < deadline,
            "failed shadow requests not counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn percent_samples_requests_and_streamed_bodies_are_skipped() {
    let primary = TestUpstream::start("primary");
    let shadow = TestUpstream::start("shadow");
    let gw = TestGateway::start(&config(
        "mirror-sampled",
        &primary,
        &shadow,
        "{ upstream = \"shop-shadow\", percent = 25 }",
    ));
    const TOTAL: usize = 800;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = gw.url("/sampled");
        tasks.push(tokio::spawn(async move {
            let client = h1_client();
            for _ in 0..TOTAL / 4 {
                let reply = send(&client, Request::get(&url).body(empty()).expect("request")).await;
                assert_eq!(reply.status, 200);
            }
        }));
    }
    for task in tasks {
        task.await.expect("client task");
    }
    let mirrored = settle(&gw, &shadow).await;
    // Binomial: mean 200, standard deviation sqrt(800 × 0.25 × 0.75) ≈ 12.2. Seven
    // standard deviations either way (±86) cannot flake in practice.
    assert!(
        (114..=286).contains(&mirrored),
        "{mirrored} of {TOTAL} mirrored at 25%"
    );
    assert_eq!(primary.served(), TOTAL);

    // A chunked (streamed) body goes to the primary whole; its copy is skipped.
    let before = mirror_count(&gw, "skipped").await;
    // Sampling is random: send until one is sampled (at 25%, 200 tries all miss with
    // probability 10^-25).
    for _ in 0..200 {
        let stream = futures_util::stream::iter((0..3).map(|_| {
            Ok::<_, std::io::Error>(hyper::body::Frame::data(bytes::Bytes::from_static(
                b"chunk",
            )))
        }));
        let body = http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream));
        let req = Request::post(gw.url("/upload"))
            .body(body)
            .expect("request");
        let reply = send(&h1_client(), req).await;
        assert_eq!(reply.text(), "15");
        if mirror_count(&gw, "skipped").await > before {
            break;
        }
    }
    assert!(mirror_count(&gw, "skipped").await > before);
}
