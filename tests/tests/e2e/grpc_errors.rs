//! gRPC-aware errors: when the gateway itself fails a gRPC call (no route, upstream down,
//! a timeout, a plugin's denial, a body too large), an HTTP/2 client with
//! `content-type: application/grpc` gets a trailers-only gRPC response (HTTP 200,
//! `grpc-status`, a percent-encoded `grpc-message`, no body), never a JSON body it
//! cannot read. Other clients keep the JSON errors, and metrics count the status the
//! failure stands for.

use http::Request;
use tokio::net::TcpStream;
use weir_tests::client::{self, FramedReply, h2_exchange};
use weir_tests::first_party::plugin_dir;
use weir_tests::{TestGateway, TestUpstream, closed_addr};

/// Routes to every kind of failure: `/down` (nothing listens), `/slow` (a 200 ms
/// request timeout), `/small` (16-byte bodies), and plugins that deny: `/keyed`
/// (api-key: 401), `/walled` (ip-filter: 403), `/limited` (rate-limit: one a day: 429).
fn gateway(up: &TestUpstream) -> TestGateway {
    let dir = plugin_dir();
    let route = |name: &str, upstream: &str, extra: &str| {
        format!(
            "[[route]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}\" }}\n\
             upstream = \"{upstream}\"\n{extra}\n"
        )
    };
    let mut text = format!(
        "[plugins]\ndir = \"{dir}/plugins\"\ncache_dir = \"{cache}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
         [[upstream]]\nname = \"slow\"\nendpoints = [\"{up}\"]\ntimeouts = {{ request = \"200ms\" }}\n\
         [[upstream]]\nname = \"down\"\nendpoints = [\"{down}\"]\n",
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
        up = up.addr,
        down = closed_addr(),
    );
    text.push_str(&route("down", "down", ""));
    text.push_str(&route("slow", "slow", ""));
    text.push_str(&route("small", "up", "max_request_body = \"16\""));
    text.push_str(&route(
        "keyed",
        "up",
        "plugins = [{ name = \"api-key\", config = { consumers = { alice = \"alice-key\" } } }]",
    ));
    text.push_str(&route(
        "walled",
        "up",
        "plugins = [{ name = \"ip-filter\", config = { deny = [\"127.0.0.0/8\", \"::1\"] } }]",
    ));
    text.push_str(&route(
        "limited",
        "up",
        "plugins = [{ name = \"rate-limit\", config = { requests = 1, window = \"1d\" } }]",
    ));
    TestGateway::start(&text)
}

/// A unary gRPC call to `path` over h2c: one length-prefixed message of `message`.
async fn call(gw: &TestGateway, path: &str, message: &[u8]) -> FramedReply {
    let mut body = vec![0u8];
    body.extend_from_slice(&(message.len() as u32).to_be_bytes());
    body.extend_from_slice(message);
    let req = Request::post(gw.url(path))
        .header("content-type", "application/grpc+proto")
        .header("te", "trailers")
        .body(client::full(body))
        .expect("request");
    let io = TcpStream::connect(gw.addr).await.expect("connect");
    h2_exchange(io, req).await
}

/// A trailers-only gRPC response with `code`, whose message holds `message`.
#[track_caller]
fn assert_status(reply: &FramedReply, code: u16, message: &str) {
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(
        reply.headers["content-type"], "application/grpc",
        "{reply:?}"
    );
    assert_eq!(
        reply.headers["grpc-status"],
        code.to_string().as_str(),
        "{reply:?}"
    );
    let got = reply.headers["grpc-message"].to_str().expect("ASCII");
    assert!(
        got.contains(message),
        "grpc-message {got:?}, wanted {message:?}"
    );
    assert!(
        reply.data.iter().all(|d| d.is_empty()),
        "a body: {:?}",
        reply.data
    );
    assert!(reply.trailers.is_none(), "trailers-only: {reply:?}");
    assert!(reply.headers.contains_key("via"), "{reply:?}");
}

#[tokio::test]
async fn the_gateways_own_failures_are_grpc_statuses() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up);

    assert_status(
        &call(&gw, "/nowhere/Svc/Method", b"x").await,
        12,
        "no route matches the request",
    );
    assert_status(&call(&gw, "/down/Svc/Method", b"x").await, 14, "upstream");
    assert_status(
        &call(&gw, "/slow/3000", b"x").await,
        4,
        "upstream response timeout",
    );
    assert_status(
        &call(&gw, "/small/Svc/Method", &[7u8; 64]).await,
        8,
        "request body too large",
    );
    assert!(
        up.seen().iter().all(|s| !s.target.starts_with("/small")),
        "a refused body reached the upstream"
    );

    // Counted as the HTTP status the failure stands for, not as the 200 on the wire.
    let series = |route: &str, status: u16| {
        format!("weir_requests_total{{route=\"{route}\",status=\"{status}\"}}")
    };
    assert_eq!(gw.metric(&series("slow", 504)).await, 1.0);
    assert_eq!(gw.metric(&series("slow", 200)).await, 0.0);
    assert_eq!(gw.metric(&series("small", 413)).await, 1.0);
}

#[tokio::test]
async fn plugin_denials_are_grpc_statuses_with_their_headers() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up);

    // The plugin's JSON body becomes the message, percent-encoded where it must be.
    assert_status(
        &call(&gw, "/keyed/Svc/Method", b"x").await,
        16,
        "{\"error\":\"missing API key\"}",
    );
    assert_status(&call(&gw, "/walled/Svc/Method", b"x").await, 7, "forbidden");
    let first = call(&gw, "/limited/Svc/Method", b"x").await;
    assert_eq!(first.status, 200, "the first call reaches the upstream");
    assert!(!first.headers.contains_key("grpc-status"), "{first:?}");
    let limited = call(&gw, "/limited/Svc/Method", b"x").await;
    assert_status(&limited, 8, "");
    // The plugin's own headers stay with the status.
    assert!(
        limited
            .headers
            .keys()
            .any(|k| k.as_str().starts_with("ratelimit") || k.as_str() == "retry-after"),
        "{limited:?}"
    );
}

/// The same failures for clients that are not gRPC keep their JSON errors.
#[tokio::test]
async fn other_clients_keep_json_errors() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up);
    // HTTP/1.1 with a gRPC content type: gRPC runs over HTTP/2 only.
    let h1 = client::send(
        &client::h1_client(),
        Request::post(gw.url("/nowhere"))
            .header("content-type", "application/grpc")
            .body(client::empty())
            .expect("request"),
    )
    .await;
    assert_eq!(h1.status, 404);
    assert_eq!(h1.text(), "{\"error\":\"no route matches the request\"}\n");
    // HTTP/2 without one (gRPC-Web gets gRPC-Web statuses: see grpc_web.rs).
    for content_type in ["application/json", "text/plain"] {
        let req = Request::post(gw.url("/down/x"))
            .header("content-type", content_type)
            .body(client::empty())
            .expect("request");
        let io = TcpStream::connect(gw.addr).await.expect("connect");
        let reply = h2_exchange(io, req).await;
        assert_eq!(reply.status, 502, "{content_type}: {reply:?}");
        assert_eq!(reply.headers["content-type"], "application/json");
        assert!(!reply.headers.contains_key("grpc-status"));
    }
}
