//! `[server.limits]`: each bound answered with its status (431, 414, 413) or a closed
//! connection (slow heads, idle connections, the connection cap), while the gateway keeps
//! serving other clients.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_tests::{TestGateway, TestUpstream};

/// A gateway with one worker, `limits` as its `[server.limits]`, and a route `route`
/// to `up` with `route_extra`.
fn gateway(up: &TestUpstream, limits: &str, route: &str, route_extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[server.limits]\n{limits}\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"{route}\"\nupstream = \"up\"\n{route_extra}",
        up.addr
    ))
}

/// Writes `request` and reads until the gateway closes (or resets) the connection.
async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(request).await;
    read_to_close(&mut stream, Duration::from_secs(10))
        .await
        .expect("the gateway closes the connection within 10 s")
}

/// What arrives until the peer closes or resets, or `None` past `limit`.
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(limit, read).await.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

fn status_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or_default()
}

#[tokio::test]
async fn oversized_heads_get_431_and_long_targets_414() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        "max_header_bytes = \"16KiB\"\nmax_headers = 20\nmax_uri_bytes = \"1KiB\"",
        "heads",
        "",
    );
    let big_header = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "v".repeat(20_000)
    );
    let reply = exchange(gw.addr, big_header.as_bytes()).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 431 "), "{reply}");

    let many: String = (0..25).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = exchange(
        gw.addr,
        format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 431 "), "{reply}");

    let long = format!(
        "GET /{} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        "a".repeat(2000)
    );
    let reply = exchange(gw.addr, long.as_bytes()).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 414 "), "{reply}");
    assert!(reply.contains("request target too long"), "{reply}");

    // Within every bound: served.
    let fine: String = (0..15).map(|i| format!("X-H{i}: v\r\n")).collect();
    let reply = exchange(
        gw.addr,
        format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n{fine}Connection: close\r\n\r\n",
            "a".repeat(900)
        )
        .as_bytes(),
    )
    .await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200 "), "{reply}");
    assert_eq!(
        up.seen().len(),
        1,
        "only the request within bounds went upstream"
    );
}

#[tokio::test]
async fn a_body_past_the_routes_limit_is_a_413_declared_or_streamed() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        "max_request_body = \"1MiB\"",
        "small-bodies",
        "max_request_body = \"1KiB\"",
    );
    let body = "x".repeat(2000);
    let declared = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n{body}"
    );
    let reply = exchange(gw.addr, declared.as_bytes()).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(
        up.seen().is_empty(),
        "a declared length is refused before anything is sent"
    );

    let streamed = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         400\r\n{}\r\n400\r\n{}\r\n0\r\n\r\n",
        "y".repeat(1024),
        "z".repeat(1024)
    );
    let reply = exchange(gw.addr, streamed.as_bytes()).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 413 "), "{reply}");
    assert!(up.seen().len() <= 1, "an aborted request at most");

    let within = format!(
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{}",
        "w".repeat(1000)
    );
    let reply = exchange(gw.addr, within.as_bytes()).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200 "), "{reply}");
    let series =
        |status: u16| format!("weir_requests_total{{route=\"small-bodies\",status=\"{status}\"}}");
    assert_eq!(gw.metric(&series(413)).await, 2.0);
}

#[tokio::test]
async fn a_slow_head_is_cut_off_but_an_idle_keep_alive_connection_waits_its_own_time() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        "header_read_timeout = \"1s\"\nidle_timeout = \"4s\"",
        "slow-heads",
        "",
    );
    // A client that trickles its head a byte at a time never finishes it in time.
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if slow.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(8), trickle)
        .await
        .expect("the gateway closes the slow connection within 8 s");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );

    // An idle keep-alive connection outlives the head deadline and is served again...
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    for round in 0..2 {
        idle.write_all(request).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .expect("a response")
            .unwrap();
        assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 "),
            "round {round}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // ...and closed once idle for idle_timeout.
    let started = Instant::now();
    let rest = read_to_close(&mut idle, Duration::from_secs(10)).await;
    assert_eq!(rest.as_deref(), Some(""), "closed without a word");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let closed =
        |reason: &str| format!("weir_client_connections_closed_total{{reason=\"{reason}\"}}");
    assert!(gw.metric(&closed("header_read_timeout")).await >= 1.0);
    assert!(gw.metric(&closed("idle_timeout")).await >= 1.0);
}

#[tokio::test]
async fn past_max_connections_a_new_connection_is_closed_and_the_rest_are_served() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, "max_connections = 2", "capped", "");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(gw.addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 "));
        held.push(stream);
    }
    // The third is accepted and closed at once: no hang, no answer.
    let started = Instant::now();
    let reply = exchange(gw.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(reply, "", "refused without an answer");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The held connections are still served.
    held[0]
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = held[0].read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200 "));
    // One closes: a new client gets in.
    drop(held.pop());
    weir_tests::poll::until(Duration::from_secs(5), "a free connection slot", || async {
        exchange(
            gw.addr,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await
        .starts_with("HTTP/1.1 200 ")
    })
    .await;
    let refused = "weir_client_connections_closed_total{reason=\"max_connections\"}";
    assert!(gw.metric(refused).await >= 1.0);
}
