//! Upstream keep-alive: connections are reused, a pooled connection the endpoint closed
//! is replaced without failing the request, and abandoned responses do not poison the
//! pool.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use weir_tests::client::empty;
use weir_tests::{TestGateway, TestUpstream, get, h1_client, send};

fn gateway_to(endpoint: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{endpoint}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n"
    ))
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = TestUpstream::start("up");
    let gw = gateway_to(&up.addr.to_string());
    for i in 0..20 {
        let reply = get(&gw.url(&format!("/n/{i}"))).await;
        assert_eq!(reply.text(), format!("/n/{i}"));
    }
    assert_eq!(
        up.connections(),
        1,
        "keep-alive to the upstream was not used"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_bounded_pool() {
    let up = TestUpstream::start("up");
    let gw = gateway_to(&up.addr.to_string());
    let client = h1_client();
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (client, url) = (client.clone(), gw.url(&format!("/r{round}/{i}")));
            tasks.push(tokio::spawn(async move {
                send(&client, Request::get(url).body(empty()).unwrap()).await
            }));
        }
        for (i, task) in tasks.into_iter().enumerate() {
            assert_eq!(task.await.unwrap().text(), format!("/r{round}/{i}"));
        }
    }
    let opened = up.connections();
    assert!(
        opened <= 40,
        "{opened} connections for at most 40 requests in flight"
    );
}

/// An upstream that answers each request with keep-alive, then closes the connection
/// 50 ms later, like a server with a short keep-alive timeout.
fn closing_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(32) {
            let Ok(mut stream) = stream else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    line.clear();
                }
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok",
                );
                std::thread::sleep(Duration::from_millis(50));
                drop(stream);
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn pooled_connection_closed_by_the_upstream_is_replaced() {
    let (addr, served) = closing_upstream();
    let gw = gateway_to(&addr.to_string());
    for _ in 0..5 {
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), "ok");
        // Let the upstream close the now idle pooled connection.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_download_does_not_poison_the_pool() {
    let up = TestUpstream::start("up");
    let gw = gateway_to(&up.addr.to_string());
    let client = h1_client();
    let req = Request::get(gw.url("/download/104857600"))
        .body(empty())
        .unwrap();
    let response = client.request(req).await.unwrap();
    let mut body = response.into_body();
    // Read a little, then walk away from the rest.
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.data_ref().is_some());
    drop(body);
    drop(client);
    for i in 0..5 {
        let reply = get(&gw.url(&format!("/after/{i}"))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("/after/{i}"));
    }
}
