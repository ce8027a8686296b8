//! gRPC through the gateway: a client speaking HTTP/2 (h2c with prior knowledge, or
//! ALPN `h2` over TLS at the edge) calls an `http2` upstream that answers like a gRPC
//! server. Trailers cross in both directions, `te: trailers` reaches the upstream, and
//! a streamed response arrives message by message.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request};
use tokio::net::TcpStream;
use weir_tests::certs::TestCa;
use weir_tests::client::{self, FramedReply, h2_exchange, with_trailers};
use weir_tests::gateway::fresh_dir;
use weir_tests::{ProtoUpstream, TestGateway};

fn route_to(upstream: &ProtoUpstream, server_extra: &str) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 1
shutdown_grace = "5s"
{server_extra}

[[upstream]]
name = "grpc"
endpoints = ["{}"]
protocol = "http2"

[[route]]
name = "grpc"
match = {{ path_prefix = "/grpc" }}
upstream = "grpc"
"#,
        upstream.addr
    )
}

/// A gRPC-style call to `uri`: a body then the trailer `x-client-trailer: hello`.
fn call(uri: &str) -> Request<client::ClientBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", HeaderValue::from_static("hello"));
    Request::post(uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(with_trailers(&b"\0\0\0\0\x04ping"[..], trailers))
        .expect("request")
}

fn assert_grpc_ok(reply: &FramedReply) {
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/grpc");
    let trailers = reply.trailers.as_ref().expect("response trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "all good");
}

#[tokio::test]
async fn trailers_cross_both_ways_over_h2c() {
    let upstream = ProtoUpstream::h2c();
    let gw = TestGateway::start(&route_to(&upstream, ""));
    let io = TcpStream::connect(gw.addr).await.expect("connect");
    let reply = h2_exchange(io, call(&gw.url("/grpc/unary"))).await;

    assert_grpc_ok(&reply);
    // The upstream got the request trailer and echoed it in its own trailers.
    let trailers = reply.trailers.as_ref().expect("trailers");
    assert_eq!(trailers["x-echo-trailer"], "hello");
    assert_eq!(reply.data.concat(), b"\0\0\0\0\x09message 0");
    let seen = upstream.seen().pop().expect("a request");
    assert_eq!(seen.headers["te"], "trailers");
    assert_eq!(seen.headers["content-type"], "application/grpc");
    let request_trailers = seen.trailers.expect("request trailers upstream");
    assert_eq!(request_trailers["x-client-trailer"], "hello");
}

#[tokio::test]
async fn a_streamed_response_arrives_message_by_message_then_trailers() {
    let upstream = ProtoUpstream::h2c();
    let gw = TestGateway::start(&route_to(&upstream, ""));
    let io = TcpStream::connect(gw.addr).await.expect("connect");
    let reply = h2_exchange(io, call(&gw.url("/grpc/stream/5"))).await;

    assert_grpc_ok(&reply);
    let expected: Vec<Bytes> = (0..5)
        .map(|i| {
            let text = format!("message {i}");
            let mut framed = vec![0u8, 0, 0, 0, text.len() as u8];
            framed.extend_from_slice(text.as_bytes());
            Bytes::from(framed)
        })
        .collect();
    assert_eq!(reply.data, expected, "one data frame per message");
}

#[tokio::test]
async fn trailers_cross_over_tls_with_alpn_h2_at_the_edge() {
    let dir = fresh_dir();
    let ca = TestCa::new("Weir edge CA");
    let (cert, key) = ca.server(&["localhost"]).write(&dir, "edge");
    let tls = format!(
        "[server.tls]\ncertificates = [{{ cert = \"{}\", key = \"{}\" }}]",
        cert.display(),
        key.display()
    );
    let upstream = ProtoUpstream::h2c();
    let gw = TestGateway::start(&route_to(&upstream, &tls));

    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(ca.roots())
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = TcpStream::connect(gw.addr).await.expect("connect");
    let io = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("localhost".try_into().expect("name"), tcp)
        .await
        .expect("TLS handshake with the gateway");
    assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    let uri = format!("https://localhost:{}/grpc/unary", gw.addr.port());
    let reply = h2_exchange(io, call(&uri)).await;
    assert_grpc_ok(&reply);
    assert_eq!(reply.trailers.expect("trailers")["x-echo-trailer"], "hello");
    let seen = upstream.seen().pop().expect("a request");
    assert_eq!(
        seen.trailers.expect("request trailers")["x-client-trailer"],
        "hello"
    );
}

#[tokio::test]
async fn a_header_only_plugin_keeps_the_trailers() {
    let upstream = ProtoUpstream::h2c();
    let dir = weir_tests::first_party::plugin_dir();
    let gw = TestGateway::start(&format!(
        r#"[plugins]
dir = "{dir}/plugins"
cache_dir = "{cache}"

[[upstream]]
name = "grpc"
endpoints = ["{}"]
protocol = "http2"

[[route]]
name = "grpc"
match = {{ path_prefix = "/grpc" }}
upstream = "grpc"
plugins = [{{ name = "headers", config = {{ request = {{ set = {{ x-env = "prod" }} }}, response = {{ set = {{ x-frame-options = "DENY" }} }} }} }}]
"#,
        upstream.addr,
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
    ));
    let io = TcpStream::connect(gw.addr).await.expect("connect");
    let reply = h2_exchange(io, call(&gw.url("/grpc/stream/3"))).await;

    assert_grpc_ok(&reply);
    assert_eq!(reply.headers["x-frame-options"], "DENY");
    assert_eq!(reply.data.len(), 3);
    let seen = upstream.seen().pop().expect("a request");
    assert_eq!(seen.headers["x-env"], "prod");
    assert_eq!(
        seen.trailers.expect("request trailers")["x-client-trailer"],
        "hello"
    );
}
