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
    // The test client is no trusted proxy: its X-Forwarded-For is replaced.
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
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

/// Every header a client must not control, as a forging client sends them.
const FORGED: &str = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-For: 198.51.100.2\r\n\
                      X-Forwarded-Proto: https\r\nX-Forwarded-Host: evil.example\r\n\
                      X-Forwarded-Port: 443\r\nForwarded: for=203.0.113.7\r\n\
                      X-Real-IP: 203.0.113.7\r\nX-Consumer: admin\r\nX-Request-Id: forged\r\n\
                      X-Forwarded-Client-Cert: Hash=forged\r\nX-Team: kept\r\n";

/// A gateway with an `ip-filter` that denies 203.0.113.0/24 in front of `up`; `server`
/// is extra `[server]` settings.
fn filtered(up: &TestUpstream, server: &str) -> TestGateway {
    let dir = weir_tests::first_party::plugin_dir();
    TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n{server}\n\
         [plugins]\ndir = \"{dir}/plugins\"\ncache_dir = \"{cache}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n\
         plugins = [{{ name = \"ip-filter\", config = {{ deny = [\"203.0.113.0/24\"] }} }}]\n",
        up.addr,
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
    ))
}

async fn forged_request(gw: &TestGateway) -> String {
    raw_request(
        gw.addr,
        &format!("GET /who HTTP/1.1\r\nHost: shop.example\r\n{FORGED}Connection: close\r\n\r\n"),
    )
    .await
}

#[tokio::test]
async fn a_client_that_is_no_trusted_proxy_cannot_speak_for_anyone() {
    let up = TestUpstream::start("up");
    let gw = filtered(&up, "");
    let reply = forged_request(&gw).await;
    // The forged X-Forwarded-For does not make it 203.0.113.7: the filter lets it in.
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let seen = up.last();
    let only = |name: &str| {
        let values: Vec<_> = seen.headers.get_all(name).iter().collect();
        assert_eq!(values.len(), 1, "{name}: {values:?}");
        values[0].to_str().unwrap().to_owned()
    };
    assert_eq!(only("x-forwarded-for"), "127.0.0.1");
    assert_eq!(only("x-forwarded-proto"), "http");
    assert_eq!(only("x-forwarded-host"), "shop.example");
    for gone in [
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-consumer",
        "x-request-id",
        "x-forwarded-client-cert",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone}: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.headers["x-team"], "kept");
}

#[tokio::test]
async fn a_trusted_proxy_names_the_client_and_keeps_its_headers() {
    let up = TestUpstream::start("up");
    let gw = filtered(
        &up,
        "trusted_proxies = [\"127.0.0.1\", \"198.51.100.0/24\"]\n\
         strip_client_headers = [\"x-team\"]",
    );
    // Read from the right, 198.51.100.2 is trusted and 203.0.113.7 is the client, whom
    // the ip-filter denies.
    let reply = forged_request(&gw).await;
    assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    assert!(up.seen().is_empty());

    let reply = raw_request(
        gw.addr,
        &format!(
            "GET /who HTTP/1.1\r\nHost: shop.example\r\n{}Connection: close\r\n\r\n",
            FORGED.replace("203.0.113.7", "192.0.2.1")
        ),
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let seen = up.last();
    assert_eq!(
        seen.headers["x-forwarded-for"],
        "192.0.2.1, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(seen.headers["x-forwarded-proto"], "https");
    assert_eq!(seen.headers["x-forwarded-host"], "evil.example");
    for kept in [
        "x-forwarded-port",
        "forwarded",
        "x-real-ip",
        "x-consumer",
        "x-request-id",
        "x-team",
    ] {
        assert!(
            seen.headers.contains_key(kept),
            "{kept}: {:?}",
            seen.headers
        );
    }
    assert!(!seen.headers.contains_key("x-forwarded-client-cert"));

    // The same headers from a client the list does not name are dropped, x-team too.
    let strict = filtered(
        &up,
        "trusted_proxies = [\"10.0.0.0/8\"]\nstrip_client_headers = [\"x-team\"]",
    );
    let reply = forged_request(&strict).await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    let seen = up.last();
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert!(!seen.headers.contains_key("x-team"));
    assert_eq!(
        seen.headers["x-request-id"], "forged",
        "not listed here: kept"
    );
}
