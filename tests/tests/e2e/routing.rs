//! Routing by host, path, method and header, first match wins, and path normalisation
//! before matching — through a real gateway to real upstreams.

use weir_tests::{TestGateway, TestUpstream, get, raw_request};

fn two_upstreams() -> (TestUpstream, TestUpstream) {
    (TestUpstream::start("a"), TestUpstream::start("b"))
}

fn config(a: &TestUpstream, b: &TestUpstream, routes: &str) -> String {
    format!(
        "[[upstream]]\nname = \"a\"\nendpoints = [\"{}\"]\n\
         [[upstream]]\nname = \"b\"\nendpoints = [\"{}\"]\n{routes}",
        a.addr, b.addr
    )
}

/// The upstream a raw HTTP/1.1 request reached (its `x-upstream`), or the status line.
async fn reached(gw: &TestGateway, method: &str, target: &str, extra: &str) -> String {
    let request = format!(
        "{method} {target} HTTP/1.1\r\nHost: example.com\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    let response = raw_request(gw.addr, &request).await;
    let status = response.lines().next().unwrap_or_default().to_owned();
    response
        .lines()
        .find_map(|l| l.strip_prefix("x-upstream: "))
        .map_or(status, ToOwned::to_owned)
}

#[tokio::test]
async fn routes_by_host_exact_and_wildcard() {
    let (a, b) = two_upstreams();
    let gw = TestGateway::start(&config(
        &a,
        &b,
        "[[route]]\nname = \"api\"\nupstream = \"a\"\nmatch = { host = \"api.example.com\" }\n\
         [[route]]\nname = \"wild\"\nupstream = \"b\"\nmatch = { host = \"*.example.com\" }\n",
    ));
    let host = |h: &str| format!("Host: {h}\r\n");
    let send = |h: String| {
        let addr = gw.addr;
        async move {
            let r = raw_request(
                addr,
                &format!("GET / HTTP/1.1\r\n{h}Connection: close\r\n\r\n"),
            )
            .await;
            r.lines()
                .find_map(|l| l.strip_prefix("x-upstream: "))
                .map_or_else(
                    || r.lines().next().unwrap_or_default().to_owned(),
                    ToOwned::to_owned,
                )
        }
    };
    assert_eq!(send(host("api.example.com")).await, "a");
    assert_eq!(
        send(host("API.Example.com:8080")).await,
        "a",
        "case and port ignored"
    );
    assert_eq!(send(host("www.example.com")).await, "b");
    assert_eq!(send(host("deep.www.example.com")).await, "b");
    assert!(
        send(host("example.com")).await.contains("404"),
        "the bare suffix is not a subdomain"
    );
    assert!(send(host("api.example.org")).await.contains("404"));
}

#[tokio::test]
async fn routes_by_path_exact_and_prefix() {
    let (a, b) = two_upstreams();
    let gw = TestGateway::start(&config(
        &a,
        &b,
        "[[route]]\nname = \"exact\"\nupstream = \"a\"\nmatch = { path = \"/health\" }\n\
         [[route]]\nname = \"users\"\nupstream = \"b\"\nmatch = { path_prefix = \"/users\" }\n",
    ));
    assert_eq!(reached(&gw, "GET", "/health", "").await, "a");
    assert!(reached(&gw, "GET", "/health/x", "").await.contains("404"));
    assert_eq!(reached(&gw, "GET", "/users", "").await, "b");
    assert_eq!(reached(&gw, "GET", "/users/42?x=1", "").await, "b");
    assert!(reached(&gw, "GET", "/usersx", "").await.contains("404"));
}

#[tokio::test]
async fn routes_by_method_and_header_in_order() {
    let (a, b) = two_upstreams();
    let gw = TestGateway::start(&config(
        &a,
        &b,
        "[[route]]\nname = \"writes\"\nupstream = \"a\"\nmatch = { methods = [\"POST\", \"DELETE\"] }\n\
         [[route]]\nname = \"canary\"\nupstream = \"a\"\nmatch = { headers = { x-canary = \"yes\" } }\n\
         [[route]]\nname = \"rest\"\nupstream = \"b\"\n",
    ));
    assert_eq!(reached(&gw, "POST", "/x", "").await, "a");
    assert_eq!(reached(&gw, "DELETE", "/x", "").await, "a");
    assert_eq!(reached(&gw, "GET", "/x", "").await, "b");
    assert_eq!(reached(&gw, "GET", "/x", "X-Canary: yes\r\n").await, "a");
    assert_eq!(reached(&gw, "GET", "/x", "X-Canary: no\r\n").await, "b");
}

#[tokio::test]
async fn unmatched_request_gets_404_json() {
    let (a, b) = two_upstreams();
    let gw = TestGateway::start(&config(
        &a,
        &b,
        "[[route]]\nname = \"only\"\nupstream = \"a\"\nmatch = { path_prefix = \"/only\" }\n",
    ));
    let reply = get(&gw.url("/elsewhere")).await;
    assert_eq!(reply.status, 404);
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert!(reply.text().contains("\"error\""), "{}", reply.text());
    // A local answer carries the gateway's Via like a relayed one.
    assert_eq!(reply.header("via").as_deref(), Some("1.1 weir"));
    assert!(a.seen().is_empty() && b.seen().is_empty());
}

#[tokio::test]
async fn path_is_normalised_before_matching_and_forwarding() {
    let (public, admin) = two_upstreams();
    let gw = TestGateway::start(&config(
        &public,
        &admin,
        "[[route]]\nname = \"admin\"\nupstream = \"b\"\nmatch = { path_prefix = \"/admin\" }\n\
         [[route]]\nname = \"public\"\nupstream = \"a\"\nmatch = { path_prefix = \"/public\" }\n",
    ));
    let cases = [
        ("/public/../admin", "b", "/admin"),
        ("/public/./x", "a", "/public/x"),
        ("//admin", "b", "/admin"),
        ("/public//x", "a", "/public/x"),
        ("/public/%2e%2e/admin", "b", "/admin"),
        ("/public/%2E%2e/admin/secret", "b", "/admin/secret"),
        ("/public/.%2E/admin", "b", "/admin"),
        ("/../../admin", "b", "/admin"),
        ("/%61dmin", "b", "/admin"),
        (
            "/public/a?q=/../admin&x=%2e",
            "a",
            "/public/a?q=/../admin&x=%2e",
        ),
        ("/public/../admin?keep=1", "b", "/admin?keep=1"),
    ];
    for (target, want_upstream, want_target) in cases {
        let got = reached(&gw, "GET", target, "").await;
        assert_eq!(got, want_upstream, "{target} went to the wrong upstream");
        let upstream = if want_upstream == "a" {
            &public
        } else {
            &admin
        };
        assert_eq!(
            upstream.last().target,
            want_target,
            "{target} was forwarded as"
        );
    }
    let bad = reached(&gw, "GET", "/public/%zz", "").await;
    assert!(bad.contains("400"), "{bad}");
}

#[tokio::test]
async fn escaped_slashes_can_be_rejected_or_decoded() {
    let (a, b) = two_upstreams();
    let routes = "[[route]]\nname = \"admin\"\nupstream = \"b\"\nmatch = { path_prefix = \"/admin\" }\n\
                  [[route]]\nname = \"public\"\nupstream = \"a\"\n";
    let server = |mode: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\nescaped_slashes = \"{mode}\"\n{}",
            config(&a, &b, routes)
        )
    };
    let reject = TestGateway::start(&server("reject"));
    assert!(
        reached(&reject, "GET", "/public/..%2Fadmin", "")
            .await
            .contains("400")
    );
    let decode = TestGateway::start(&server("decode"));
    assert_eq!(reached(&decode, "GET", "/public/..%2Fadmin", "").await, "b");
    // Kept, the path hides a `..` from the routes: refused by default...
    let keep = TestGateway::start(&server("keep"));
    assert!(
        reached(&keep, "GET", "/public/..%2Fadmin", "")
            .await
            .contains("400")
    );
    // ...and forwarded as it is only when the operator says every backend reads it
    // strictly.
    let forward = TestGateway::start(&server("keep\"\nambiguous_paths = \"forward"));
    assert_eq!(
        reached(&forward, "GET", "/public/..%2Fadmin", "").await,
        "a"
    );
    assert_eq!(a.last().target, "/public/..%2Fadmin");
}
