//! `protocol = "http2"`: requests go as HTTP/2 streams multiplexed over few connections
//! per endpoint (h2c with prior knowledge here; over TLS in `upstream_tls`), a full
//! connection makes room by opening another, a dead one is replaced, and health
//! checks and circuit breaking keep working. The upstream is a real HTTP/2 server
//! that counts the connections it accepts.

use std::time::{Duration, Instant};

use http::Version;
use weir_tests::client::{get, get_owned};
use weir_tests::{ProtoOptions, ProtoUpstream, TestGateway};

fn config(upstream: &ProtoUpstream, workers: usize, extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = {workers}
shutdown_grace = "5s"

[[upstream]]
name = "h2"
endpoints = ["{}"]
protocol = "http2"
{extra}

[[route]]
name = "all"
match = {{ path_prefix = "/" }}
upstream = "h2"
"#,
        upstream.addr
    )
}

/// GETs `path` `n` times at once; the statuses in order.
async fn concurrently(gw: &TestGateway, path: &str, n: usize) -> Vec<u16> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(get_owned(gw.url(path))))
        .collect();
    let mut statuses = Vec::with_capacity(n);
    for task in tasks {
        statuses.push(task.await.expect("request task").status.as_u16());
    }
    statuses
}

#[tokio::test]
async fn concurrent_requests_share_one_connection_per_worker() {
    let upstream = ProtoUpstream::h2c();
    let gw = TestGateway::start(&config(&upstream, 2, ""));

    let statuses = concurrently(&gw, "/slow/300", 40).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");

    // One connection per worker at most, many streams on each.
    assert!(
        upstream.connections() <= 2,
        "{} connections",
        upstream.connections()
    );
    assert!(
        upstream.peak_concurrency() > upstream.connections(),
        "peak {} over {} connections: not multiplexed",
        upstream.peak_concurrency(),
        upstream.connections()
    );
    let seen = upstream.seen();
    assert_eq!(seen.len(), 40);
    let first = &seen[0];
    assert_eq!(first.version, Version::HTTP_2);
    // The client's Host became the :authority, with the target in absolute form.
    assert_eq!(first.uri, format!("http://{}/slow/300", gw.addr));
    assert!(!first.headers.contains_key("connection"), "{first:?}");
    assert_eq!(get(&gw.url("/")).await.text(), "HTTP/2.0");
}

#[tokio::test]
async fn a_connection_at_the_peers_stream_limit_makes_another_open() {
    let upstream = ProtoUpstream::start(ProtoOptions {
        http2_only: true,
        max_concurrent_streams: Some(4),
        ..ProtoOptions::default()
    });
    let gw = TestGateway::start(&config(&upstream, 1, ""));
    // The first exchange learns the peer's limit.
    assert_eq!(get(&gw.url("/")).await.status, 200);
    assert_eq!(upstream.connections(), 1);

    let statuses = concurrently(&gw, "/slow/500", 12).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    // 12 streams at once, 4 per connection: three connections, the first one reused.
    assert_eq!(upstream.connections(), 3);
    assert!(
        upstream.peak_concurrency() >= 9,
        "{}",
        upstream.peak_concurrency()
    );
}

#[tokio::test]
async fn a_dead_connection_is_replaced() {
    let mut upstream = ProtoUpstream::h2c();
    let gw = TestGateway::start(&config(&upstream, 1, ""));
    assert_eq!(get(&gw.url("/")).await.status, 200);
    assert_eq!(upstream.connections(), 1);

    // The upstream goes away (every connection closed) and comes back.
    upstream.restart();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.connections(), 2);
    // And the new connection is shared again.
    let statuses = concurrently(&gw, "/slow/100", 10).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(upstream.connections(), 2);
}

#[tokio::test]
async fn health_checks_speak_http2() {
    let upstream = ProtoUpstream::h2c();
    let gw = TestGateway::start(&config(
        &upstream,
        1,
        r#"health = { path = "/healthz", interval = "100ms", unhealthy = 1 }"#,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream
        .seen()
        .iter()
        .filter(|s| s.uri.ends_with("/healthz"))
        .count()
        < 3
    {
        assert!(Instant::now() < deadline, "no health checks within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let check = upstream
        .seen()
        .into_iter()
        .find(|s| s.uri.ends_with("/healthz"))
        .expect("a check");
    assert_eq!(check.version, Version::HTTP_2);
    assert_eq!(check.uri, format!("http://{}/healthz", upstream.addr));
    // An HTTP/2-only endpoint passes: it stays in rotation.
    let series = format!(
        "weir_upstream_endpoint_healthy{{endpoint=\"{}\",upstream=\"h2\"}}",
        upstream.addr
    );
    assert_eq!(gw.metric(&series).await, 1.0);
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

#[tokio::test]
async fn max_connections_bounds_http2_connections_and_waiting_streams() {
    let upstream = ProtoUpstream::start(ProtoOptions {
        http2_only: true,
        max_concurrent_streams: Some(2),
        ..ProtoOptions::default()
    });
    let gw = TestGateway::start(&config(
        &upstream,
        1,
        r#"limits = { max_connections = 1 }
timeouts = { connect = "300ms" }"#,
    ));
    assert_eq!(get(&gw.url("/")).await.status, 200);

    // Two streams fit on the one connection allowed; the others wait as pending for a
    // stream and give up after the connect timeout.
    let mut statuses = concurrently(&gw, "/slow/1500", 6).await;
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 503, 503, 503, 503]);
    assert_eq!(upstream.connections(), 1);
}

#[tokio::test]
async fn after_goaway_new_streams_go_to_a_new_connection() {
    let upstream = ProtoUpstream::h2c();
    let gw = TestGateway::start(&config(&upstream, 1, ""));
    assert_eq!(get(&gw.url("/")).await.status, 200);

    // A slow request holds the connection open while the upstream says GOAWAY.
    let slow = tokio::spawn(get_owned(gw.url("/slow/800")));
    let deadline = Instant::now() + Duration::from_secs(10);
    while upstream.seen().len() < 2 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    upstream.goaway();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // New requests are not sent to the draining connection: they open another.
    for _ in 0..3 {
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    assert_eq!(upstream.connections(), 2);
    // The stream in flight when GOAWAY came finishes on the old connection.
    assert_eq!(slow.await.expect("slow request").status, 200);
}
