//! Proxy semantics: header hygiene both ways, X-Forwarded-* and Via, Host handling,
//! HTTP/2 clients, round robin, query strings and bodies.

use http::Request;
use weir_tests::client::{empty, full};
use weir_tests::{TestGateway, TestUpstream, get, h1_client, h2_client, raw_request, send};

fn one_route(up: &TestUpstream, extra_route: &str) -> String {
    format!(
        "[[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n{extra_route}",
        up.addr
    )
}

#[tokio::test]
async fn strips_hop_by_hop_request_headers_and_sets_forwarding_headers() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&one_route(&up, ""));
    let response = raw_request(
        gw.addr,
        "GET /x?a=1&b=2 HTTP/1.1\r\nHost: shop.example\r\nConnection: close, x-private\r\n\
         X-Private: secret\r\nKeep-Alive: timeout=5\r\nTE: gzip\r\nUpgrade: h2c\r\n\
         Proxy-Authorization: Basic Zm9v\r\nProxy-Connection: keep-alive\r\n\
         X-Forwarded-For: 203.0.113.7\r\nX-End-To-End: kept\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let seen = up.last();
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "te",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
        "transfer-encoding",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "shop.example");
    assert_eq!(seen.headers["via"], "1.1 weir");
    assert_eq!(seen.headers["host"], "shop.example", "Host passes through");
    assert_eq!(seen.target, "/x?a=1&b=2", "query preserved");
}

#[tokio::test]
async fn strips_hop_by_hop_response_headers() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&one_route(&up, ""));
    let reply = get(&gw.url("/hop")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-kept").as_deref(), Some("yes"));
    for gone in ["x-upstream-secret", "keep-alive", "proxy-authenticate"] {
        assert!(reply.header(gone).is_none(), "{gone} reached the client");
    }
    assert_eq!(reply.header("via").as_deref(), Some("1.1 weir"));
}

#[tokio::test]
async fn host_can_be_rewritten() {
    let up = TestUpstream::start("up");
    let literal = TestGateway::start(&one_route(&up, "host_rewrite = \"users.internal\"\n"));
    get(&literal.url("/")).await;
    assert_eq!(up.last().headers["host"], "users.internal");
    assert_eq!(
        up.last().headers["x-forwarded-host"],
        literal.addr.to_string()
    );

    let auto = TestGateway::start(&one_route(&up, "auto_host_rewrite = true\n"));
    get(&auto.url("/")).await;
    assert_eq!(up.last().headers["host"], up.addr.to_string());
}

#[tokio::test]
async fn http2_clients_are_proxied_to_http1_upstreams() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&one_route(&up, ""));
    let client = h2_client();
    let get = Request::get(gw.url("/h2/path?q=1")).body(empty()).unwrap();
    let reply = send(&client, get).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "/h2/path?q=1");
    let seen = up.last();
    assert_eq!(seen.version, http::Version::HTTP_11);
    assert_eq!(
        seen.headers["host"],
        gw.addr.to_string(),
        ":authority becomes Host"
    );
    assert_eq!(seen.headers["via"], "2 weir");

    let post = Request::post(gw.url("/echo"))
        .body(full("hello over h2"))
        .unwrap();
    let reply = send(&client, post).await;
    assert_eq!(reply.text(), "/echo hello over h2");
    // Many concurrent streams on one connection.
    let mut tasks = Vec::new();
    for i in 0..50 {
        let client = client.clone();
        let url = gw.url(&format!("/stream/{i}"));
        tasks.push(tokio::spawn(async move {
            send(&client, Request::get(url).body(empty()).unwrap()).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().text(), format!("/stream/{i}"));
    }
}

#[tokio::test]
async fn round_robin_over_endpoints_with_keep_alive() {
    let one = TestUpstream::start("one");
    let two = TestUpstream::start("two");
    let gw = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [[upstream]]\nname = \"pair\"\nendpoints = [\"{}\", \"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"pair\"\n",
        one.addr, two.addr
    ));
    let client = h1_client();
    let mut order = Vec::new();
    for _ in 0..6 {
        let reply = send(&client, Request::get(gw.url("/")).body(empty()).unwrap()).await;
        order.push(reply.header("x-upstream").unwrap());
    }
    assert_eq!(order, ["one", "two", "one", "two", "one", "two"]);
}

#[tokio::test]
async fn request_bodies_and_methods_pass_through() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&one_route(&up, ""));
    let client = h1_client();
    let put = Request::put(gw.url("/items/1"))
        .header("content-type", "text/plain")
        .body(full("payload"))
        .unwrap();
    let reply = send(&client, put).await;
    assert_eq!(reply.text(), "/items/1 payload");
    let seen = up.last();
    assert_eq!(seen.method, http::Method::PUT);
    assert_eq!(seen.headers["content-length"], "7");
}
