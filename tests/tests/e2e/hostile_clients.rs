//! Hostile or broken clients get a 4xx and lose their connection; the upstream is never
//! blamed and never sees more than an aborted request.

use weir_tests::{TestGateway, TestUpstream, raw_request};

/// A gateway with one route, `route` (metrics are per process: each test names its own).
fn gateway(upstream: &TestUpstream, route: &str, route_extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"{route}\"\nupstream = \"up\"\n{route_extra}",
        upstream.addr
    ))
}

/// Chunked request bodies whose framing is broken, each after a valid head.
const BROKEN_CHUNKS: [(&str, &str); 3] = [
    ("an invalid chunk size", "zz\r\nhello\r\n0\r\n\r\n"),
    (
        "a chunk size that overflows",
        "fffffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
    ),
    ("chunk lines ended by a bare LF", "5\nhello\n0\n\n"),
];

#[tokio::test]
async fn a_broken_chunked_body_is_the_clients_400_and_closes_its_connection() {
    let upstream = TestUpstream::start("up");
    let gw = gateway(&upstream, "broken-chunks", "");
    for (what, body) in BROKEN_CHUNKS {
        // No `Connection: close`: the gateway must close by itself (else this times out).
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
        );
        let reply = raw_request(gw.addr, &request).await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{what}: {reply}");
        assert!(reply.contains("malformed request body"), "{what}: {reply}");
    }
    let answered =
        |status| format!("weir_requests_total{{route=\"broken-chunks\",status=\"{status}\"}}");
    assert_eq!(gw.metric(&answered(400)).await, 3.0);
    assert_eq!(gw.metric(&answered(502)).await, 0.0);
}

#[tokio::test]
async fn a_broken_body_read_for_a_plugin_is_a_400_too() {
    let upstream = TestUpstream::start("up");
    let dir = weir_tests::gateway::plugin_dir(&[(weir_tests::guest_wasm!("bodies"), "bodies")]);
    // The bodies guest reads the request body whole (its log phase posts to a closed port).
    let plugins = format!(
        "plugins = [{{ name = \"bodies\", config = {{ log_url = \"http://127.0.0.1:9/log\" }} }}]\n\
         [plugins]\ndir = \"{}\"\n",
        dir.join("plugins").display()
    );
    let gw = gateway(&upstream, "broken-for-plugin", &plugins);
    let (what, body) = BROKEN_CHUNKS[0];
    let request = format!(
        "POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
    );
    let reply = raw_request(gw.addr, &request).await;
    assert!(reply.starts_with("HTTP/1.1 400 "), "{what}: {reply}");
    assert!(upstream.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn an_http_1_1_request_without_one_valid_host_is_a_400_and_goes_nowhere() {
    let upstream = TestUpstream::start("up");
    let gw = gateway(&upstream, "hosts", "");
    for (what, head) in [
        ("no Host", "GET / HTTP/1.1\r\n"),
        (
            "two Host headers",
            "GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n",
        ),
        ("an invalid Host", "GET / HTTP/1.1\r\nHost: a b\r\n"),
    ] {
        let reply = raw_request(gw.addr, &format!("{head}Connection: close\r\n\r\n")).await;
        assert!(reply.starts_with("HTTP/1.1 400 "), "{what}: {reply}");
        assert!(reply.contains("bad Host header"), "{what}: {reply}");
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    // HTTP/1.0 may leave it out; the upstream, spoken to in HTTP/1.1, still gets one:
    // the endpoint's address.
    let reply = raw_request(gw.addr, "GET / HTTP/1.0\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.0 200 "), "{reply}");
    let seen = upstream.last();
    assert_eq!(
        seen.headers
            .get("host")
            .map(|h| h.to_str().unwrap().to_owned()),
        Some(upstream.addr.to_string()),
        "{seen:?}"
    );
}

/// An upstream that answers every request in HTTP/1.0 and closes its connection.
fn http_1_0_upstream() -> std::net::SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let _ = stream.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok");
        }
    });
    addr
}

#[tokio::test]
async fn an_http_1_1_client_gets_http_1_1_and_keep_alive_from_an_http_1_0_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = http_1_0_upstream();
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"old\"\nendpoints = [\"{addr}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"old\"\n"
    ));
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    for round in 0..2 {
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
            .await
            .unwrap();
        let mut reply = Vec::new();
        let mut buf = [0u8; 1024];
        while !reply.ends_with(b"\r\n\r\nok") {
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                    .await
                    .expect("a whole response within 5 s")
                    .unwrap();
            assert!(
                read > 0,
                "round {round}: the gateway closed the client's connection"
            );
            reply.extend_from_slice(&buf[..read]);
        }
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200 "), "round {round}: {reply}");
    }
}

/// Spellings of `/admin/...` (and of the exact route `/files/a/b`) that a backend
/// decoding `%2F`/`%5C`, reading `\` as `/` or dropping `;` parameters would serve as
/// the protected path.
const PROTECTED_SPELLINGS: [&str; 12] = [
    "/public/..%2Fadmin/users",
    "/public/..%2fadmin/users",
    "/public/%2E%2E%2Fadmin/users",
    "/public/..%5Cadmin/users",
    "/public\\..\\admin/users",
    "/public/..;/admin/users",
    "/admin;x=1/users",
    "/admin\\users",
    "/admin%2Fusers",
    "/files/a%2Fb",
    "/files\\a\\b",
    "/files/a;v=2/b",
];

#[tokio::test]
async fn no_spelling_of_a_path_dodges_its_routes_auth_plugin() {
    let upstream = TestUpstream::start("up");
    let dir = weir_tests::first_party::plugin_dir();
    let auth = "plugins = [{ name = \"api-key\", config = { consumers = { ops = \"k1\" } } }]";
    let gw = TestGateway::start(&format!(
        "[plugins]\ndir = \"{dir}/plugins\"\ncache_dir = \"{cache}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"tricks-admin\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/admin\" }}\n{auth}\n\
         [[route]]\nname = \"tricks-file\"\nupstream = \"up\"\nmatch = {{ path = \"/files/a/b\" }}\n{auth}\n\
         [[route]]\nname = \"tricks-rest\"\nupstream = \"up\"\n",
        upstream.addr,
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
    ));
    for spelled in PROTECTED_SPELLINGS {
        let reply = raw_request(
            gw.addr,
            &format!("GET {spelled} HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let status = reply.lines().next().unwrap_or_default();
        assert!(
            status.starts_with("HTTP/1.1 400 ") || status.starts_with("HTTP/1.1 401 "),
            "{spelled}: {reply}"
        );
    }
    assert!(upstream.seen().is_empty(), "{:?}", upstream.seen());
    // Encoded slashes that no route reads differently still pass.
    let reply = raw_request(
        gw.addr,
        "GET /docs/a%2Fb HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 200 "), "{reply}");
    assert_eq!(upstream.last().target, "/docs/a%2Fb");
}

/// An upstream that records the raw bytes of the first request on each connection
/// (what arrives within 300 ms), answers 200 and closes.
fn recording_upstream() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(16) {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(std::time::Duration::from_millis(300)))
                .unwrap();
            let mut bytes = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                bytes.extend_from_slice(&buf[..n]);
            }
            record
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&bytes).into_owned());
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok");
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn content_length_beside_transfer_encoding_reaches_the_upstream_with_one_framing() {
    let (addr, seen) = recording_upstream();
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"raw\"\nendpoints = [\"{addr}\"]\n\
         [[route]]\nname = \"cl-te\"\nupstream = \"raw\"\n"
    ));
    // Both orders; a Content-Length that disagrees with the chunked body, which ends in
    // what would be a second request to a reader trusting the Content-Length.
    let body = "5\r\nhello\r\n0\r\n\r\n";
    for head in [
        "Content-Length: 4\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nContent-Length: 4",
    ] {
        let request = format!(
            "POST /upload HTTP/1.1\r\nHost: example.com\r\n{head}\r\nConnection: close\r\n\r\n{body}"
        );
        let reply = raw_request(gw.addr, &request).await;
        assert!(
            reply.starts_with("HTTP/1.1 200 ") || reply.starts_with("HTTP/1.1 400 "),
            "{head:?}: {reply}"
        );
    }
    let seen = seen.lock().unwrap().clone();
    for raw in &seen {
        let (head, body) = raw.split_once("\r\n\r\n").expect("a whole head");
        let head = head.to_ascii_lowercase();
        let lengths = head.matches("\r\ncontent-length:").count();
        let chunked = head.contains("\r\ntransfer-encoding:");
        assert!(lengths + usize::from(chunked) <= 1, "two framings: {raw:?}");
        if lengths == 1 {
            let declared: usize = head
                .split("\r\ncontent-length:")
                .nth(1)
                .and_then(|v| v.split("\r\n").next())
                .and_then(|v| v.trim().parse().ok())
                .expect("a number");
            assert_eq!(declared, body.len(), "the length the body has: {raw:?}");
            assert_eq!(body, "hello", "{raw:?}");
        }
    }
}
