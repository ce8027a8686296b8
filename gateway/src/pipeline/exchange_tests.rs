//! The routing step in process: what a request looks like when its phases begin.

use std::path::Path;

use http::{HeaderMap, Method};

use super::*;
use crate::config::Config;

fn snapshot(extra: &str) -> Snapshot {
    let text = format!(
        "[[upstream]]\nname = \"up\"\nendpoints = [\"127.0.0.1:9\"]\n\
         [[route]]\nname = \"api\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/api/\" }}\n{extra}"
    );
    let config = Arc::new(Config::parse(Path::new("weir.toml"), &text).expect("valid config"));
    let routes = config.routes.len();
    let chains = (0..routes).map(|_| Arc::from(Vec::new())).collect();
    Snapshot::new(config, 1, chains, None).expect("no plugins")
}

fn connection() -> Connection {
    Connection {
        client: "192.0.2.7:50000".parse().unwrap(),
        client_ip: HeaderValue::from_static("192.0.2.7"),
        scheme: "http",
        worker: 0,
        client_cert: None,
        tunnels: tokio_util::task::TaskTracker::new(),
    }
}

/// An HTTP/1.1 request head; `Host: example.com` unless `headers` names one.
fn head(method: Method, uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut request = Request::builder().method(method).uri(uri);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request = request.header("host", "example.com");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(()).unwrap().into_parts().0
}

fn routed<'s>(
    snapshot: &'s Snapshot,
    conn: &'s Connection,
    head: http::request::Parts,
) -> Exchange<'s> {
    match Exchange::route(snapshot, conn, head, conn.client.ip()) {
        Ok(exchange) => exchange,
        Err(e) => panic!("not routed: {}", e.error),
    }
}

#[test]
fn a_request_is_routed_on_its_normalised_path_and_cleaned_for_forwarding() {
    let (snapshot, conn) = (snapshot(""), connection());
    let request = head(
        Method::GET,
        "/static/../api/./users?id=7",
        &[
            ("host", "shop.example"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-client-cert", "Hash=forged"),
            ("x-kept", "yes"),
        ],
    );
    let exchange = routed(&snapshot, &conn, request);
    assert_eq!(&*exchange.route.name, "api");
    assert_eq!(exchange.path_and_query.as_str(), "/api/users?id=7");
    let headers: &HeaderMap = &exchange.head.headers;
    for gone in [
        "connection",
        "x-private",
        "keep-alive",
        "x-forwarded-client-cert",
    ] {
        assert!(!headers.contains_key(gone), "{gone}: {headers:?}");
    }
    assert_eq!(headers["x-kept"], "yes");
    assert_eq!(
        headers["x-forwarded-for"], "192.0.2.7",
        "a client that is no trusted proxy"
    );
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "shop.example");
    assert_eq!(headers["via"], "1.1 weir");
    assert!(
        headers.contains_key("traceparent"),
        "trace context is on by default"
    );
    assert!(exchange.trace_id.is_some());
    assert!(exchange.upgrade.is_none());
    assert!(matches!(
        exchange.upstream_host(),
        UpstreamHost::Fixed(Some(h)) if h == "shop.example"
    ));
}

#[test]
fn an_unchanged_path_keeps_its_exact_bytes() {
    let (snapshot, conn) = (snapshot(""), connection());
    let exchange = routed(&snapshot, &conn, head(Method::GET, "/api/a%20b?q=%2F", &[]));
    assert_eq!(exchange.path_and_query.as_str(), "/api/a%20b?q=%2F");
}

#[test]
fn an_upgrade_is_remembered_while_its_headers_are_cleaned() {
    let (snapshot, conn) = (snapshot(""), connection());
    let request = head(
        Method::GET,
        "/api/ws",
        &[("connection", "Upgrade"), ("upgrade", "websocket")],
    );
    let exchange = routed(&snapshot, &conn, request);
    assert_eq!(
        exchange.upgrade,
        Some(HeaderValue::from_static("websocket"))
    );
    assert!(!exchange.head.headers.contains_key("upgrade"));
    assert!(!exchange.head.headers.contains_key("connection"));
}

#[test]
fn requests_that_cannot_be_routed_get_their_error() {
    let (snapshot, conn) = (snapshot(""), connection());
    let refused = |method, uri| match Exchange::route(
        &snapshot,
        &conn,
        head(method, uri, &[]),
        conn.client.ip(),
    ) {
        Ok(_) => panic!("{uri} was routed"),
        Err(e) => e.error,
    };
    assert!(matches!(
        refused(Method::GET, "/other"),
        ProxyError::NoRoute
    ));
    assert!(matches!(
        refused(Method::GET, "/api/%zz"),
        ProxyError::BadPath(crate::path::PathError::BadEscape)
    ));
    assert!(matches!(
        refused(Method::CONNECT, "example.com:443"),
        ProxyError::ConnectNotAllowed
    ));
}

#[test]
fn the_upstream_host_follows_the_routes_host_rewrite() {
    let snapshot = snapshot(
        "[[route]]\nname = \"literal\"\nupstream = \"up\"\nhost_rewrite = \"users.internal\"\n\
         match = { path_prefix = \"/lit/\" }\n\
         [[route]]\nname = \"auto\"\nupstream = \"up\"\nauto_host_rewrite = true\n",
    );
    let conn = connection();
    let host = [("host", "shop.example")];
    let literal = routed(&snapshot, &conn, head(Method::GET, "/lit/x", &host));
    assert!(matches!(
        literal.upstream_host(),
        UpstreamHost::Fixed(Some(h)) if h == "users.internal"
    ));
    let auto = routed(&snapshot, &conn, head(Method::GET, "/x", &host));
    assert_eq!(&*auto.route.name, "auto");
    assert!(matches!(auto.upstream_host(), UpstreamHost::Endpoint));
}

#[test]
fn an_http_1_1_request_names_its_host_once_and_validly() {
    let (snapshot, conn) = (snapshot(""), connection());
    let host_error = |head| match Exchange::route(&snapshot, &conn, head, conn.client.ip()) {
        Ok(_) => None,
        Err(e) => match e.error {
            ProxyError::BadHost(why) => Some(why),
            e => panic!("{e}"),
        },
    };
    let mut none = head(Method::GET, "/api/x", &[]);
    none.headers.remove("host");
    assert_eq!(host_error(none), Some("no Host header"));
    let mut two = head(Method::GET, "/api/x", &[("host", "a.example")]);
    two.headers
        .append("host", HeaderValue::from_static("b.example"));
    assert_eq!(host_error(two), Some("more than one Host header"));
    let invalid = head(Method::GET, "/api/x", &[("host", "a b/c")]);
    assert_eq!(host_error(invalid), Some("not a valid host"));
    let empty = head(Method::GET, "/api/x", &[("host", "")]);
    assert_eq!(host_error(empty), None, "empty: a target without authority");

    // HTTP/1.0 may leave it out; an absolute-form target's authority wins over Host.
    let mut old = head(Method::GET, "/api/x", &[]);
    old.headers.remove("host");
    old.version = Version::HTTP_10;
    assert_eq!(host_error(old), None);
    let absolute = head(
        Method::GET,
        "http://target.example/api/x",
        &[("host", "header.example")],
    );
    let exchange = routed(&snapshot, &conn, absolute);
    assert_eq!(exchange.head.headers["x-forwarded-host"], "target.example");
}

#[test]
fn grpc_calls_are_told_apart_only_when_answered() {
    let (snapshot, conn) = (snapshot(""), connection());
    let unrouted = |version, content_type| {
        let mut head = head(Method::POST, "/other", &[("content-type", content_type)]);
        head.version = version;
        match Exchange::route(&snapshot, &conn, head, conn.client.ip()) {
            Ok(_) => panic!("routed"),
            Err(e) => e.grpc,
        }
    };
    let grpc = Some(GrpcProtocol::Grpc);
    assert_eq!(unrouted(Version::HTTP_2, "application/grpc"), grpc);
    assert_eq!(unrouted(Version::HTTP_2, "application/grpc+proto"), grpc);
    assert_eq!(unrouted(Version::HTTP_2, "application/json"), None);
    assert_eq!(
        unrouted(Version::HTTP_11, "application/grpc"),
        None,
        "gRPC runs over HTTP/2"
    );
    // gRPC-Web over any version, its statuses in its own content type.
    assert_eq!(
        unrouted(Version::HTTP_11, "application/grpc-web"),
        Some(GrpcProtocol::Web)
    );
    assert_eq!(
        unrouted(Version::HTTP_2, "application/grpc-web-text+proto"),
        Some(GrpcProtocol::WebText)
    );
    let mut call = head(
        Method::POST,
        "/api/x",
        &[("content-type", "application/grpc")],
    );
    call.version = Version::HTTP_2;
    assert_eq!(routed(&snapshot, &conn, call).grpc(), grpc);
    assert_eq!(
        routed(&snapshot, &conn, head(Method::GET, "/api/x", &[])).grpc(),
        None
    );
}
