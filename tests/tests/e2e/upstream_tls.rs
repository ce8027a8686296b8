//! TLS to upstreams: endpoints verified against a CA file, SNI from `server_name` or
//! the endpoint's host (none for an IP address), a client certificate for mutual TLS,
//! HTTP/2 by ALPN, health checks over the same TLS, and a failed handshake answered
//! with 502 and logged with its reason. Every certificate is made at test time.

use std::path::Path;
use std::time::{Duration, Instant};

use http::Version;
use weir_tests::certs::{TestCa, TestCert};
use weir_tests::client::{get, get_owned, h2_exchange};
use weir_tests::gateway::fresh_dir;
use weir_tests::{ProtoOptions, ProtoUpstream, TestGateway, WeirProcess, weir_bin};

/// A gateway routing `/` to one upstream `secure` with `tls` and `extra` settings.
fn route_to(endpoint: &str, tls: &str, extra: &str) -> String {
    format!(
        r#"[[upstream]]
name = "secure"
endpoints = ["{endpoint}"]
tls = {tls}
{extra}

[[route]]
name = "all"
match = {{ path_prefix = "/" }}
upstream = "secure"
"#
    )
}

fn tls_upstream(cert: TestCert) -> ProtoUpstream {
    ProtoUpstream::start(ProtoOptions {
        tls: Some(cert),
        ..ProtoOptions::default()
    })
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test]
async fn a_test_ca_verifies_the_endpoint_named_by_server_name() {
    let dir = fresh_dir();
    let ca = TestCa::new("Upstream CA");
    let upstream = tls_upstream(ca.server(&["users.internal"]));
    let ca_file = ca.write(&dir, "upstream-ca");
    let gw = TestGateway::start(&route_to(
        &upstream.addr.to_string(),
        &format!(
            r#"{{ ca = "{}", server_name = "users.internal" }}"#,
            path(&ca_file)
        ),
        r#"health = { path = "/healthz", interval = "100ms" }"#,
    ));

    let reply = get(&gw.url("/hello")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), "HTTP/1.1");
    let accepted = upstream.accepted();
    assert!(!accepted.is_empty());
    for conn in &accepted {
        assert_eq!(conn.sni.as_deref(), Some("users.internal"));
        assert_eq!(conn.alpn.as_deref(), Some(&b"http/1.1"[..]));
    }
    // Health checks go over the same TLS.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !upstream.seen().iter().any(|s| s.uri == "/healthz") {
        assert!(
            Instant::now() < deadline,
            "no health check over TLS within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(upstream.handshake_failures(), 0);

    let doc = gw.admin_json("/admin/upstreams").await;
    let cluster = &doc["upstreams"][0];
    assert_eq!(cluster["protocol"], "http1");
    assert_eq!(cluster["tls"]["server_name"], "users.internal");
    assert_eq!(cluster["tls"]["ca"], path(&ca_file));
    assert!(cluster["tls"]["client_cert"].is_null());
}

#[tokio::test]
async fn sni_is_the_endpoints_host_and_none_for_an_ip_address() {
    let dir = fresh_dir();
    let ca = TestCa::new("Upstream CA");
    // One certificate for both: a DNS name and an IP SAN.
    let upstream = tls_upstream(ca.server(&["localhost", "127.0.0.1"]));
    let ca_file = path(&ca.write(&dir, "ca"));
    let port = upstream.addr.port();
    let gw = TestGateway::start(&format!(
        r#"[[upstream]]
name = "by-name"
endpoints = ["localhost:{port}"]
tls = {{ ca = "{ca_file}" }}

[[upstream]]
name = "by-ip"
endpoints = ["127.0.0.1:{port}"]
tls = {{ ca = "{ca_file}" }}

[[route]]
name = "by-name"
match = {{ path_prefix = "/name" }}
upstream = "by-name"

[[route]]
name = "by-ip"
match = {{ path_prefix = "/ip" }}
upstream = "by-ip"
"#
    ));
    assert_eq!(get(&gw.url("/name")).await.status, 200);
    assert_eq!(
        upstream.accepted().pop().expect("conn").sni.as_deref(),
        Some("localhost")
    );
    assert_eq!(get(&gw.url("/ip")).await.status, 200);
    assert_eq!(upstream.accepted().pop().expect("conn").sni, None);
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_502_logged_with_its_reason() {
    let dir = fresh_dir();
    let upstream = tls_upstream(TestCa::new("Somebody else").server(&["users.internal"]));
    let ours = TestCa::new("Our CA").write(&dir, "ca");
    let weir = WeirProcess::with_config(
        weir_bin!(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
            route_to(
                &upstream.addr.to_string(),
                &format!(
                    r#"{{ ca = "{}", server_name = "users.internal" }}"#,
                    path(&ours)
                ),
                r#"retries = { attempts = 1, on = ["connect-failure"] }"#,
            )
        ),
    );
    let reply = get(&format!("http://{}/", weir.addr)).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("TLS"), "{}", reply.text());
    // Retried as a connect failure: two handshakes, both refused by the gateway.
    assert_eq!(upstream.connections(), 2);
    assert!(upstream.seen().is_empty());

    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = weir.log.recv_timeout(left) else {
            panic!("no log line with the handshake failure; got {lines:#?}");
        };
        if line.contains("TLS handshake failed") {
            assert!(line.contains("UnknownIssuer"), "{line}");
            break;
        }
        lines.push(line);
    }
}

#[tokio::test]
async fn a_client_certificate_is_presented_to_an_endpoint_that_requires_one() {
    let dir = fresh_dir();
    let server_ca = TestCa::new("Upstream CA");
    let client_ca = TestCa::new("Gateway clients CA");
    let upstream = ProtoUpstream::start(ProtoOptions {
        tls: Some(server_ca.server(&["users.internal"])),
        client_ca: Some(client_ca.pem.clone()),
        ..ProtoOptions::default()
    });
    let ca_file = path(&server_ca.write(&dir, "upstream-ca"));
    let (cert, key) = client_ca.client("weir-gateway").write(&dir, "client");
    let addr = upstream.addr;
    let gw = TestGateway::start(&format!(
        r#"[[upstream]]
name = "with-cert"
endpoints = ["{addr}"]
tls = {{ ca = "{ca_file}", server_name = "users.internal", cert = "{}", key = "{}" }}

[[upstream]]
name = "without-cert"
endpoints = ["{addr}"]
tls = {{ ca = "{ca_file}", server_name = "users.internal" }}

[[route]]
name = "with"
match = {{ path_prefix = "/with" }}
upstream = "with-cert"

[[route]]
name = "without"
match = {{ path_prefix = "/without" }}
upstream = "without-cert"
"#,
        path(&cert),
        path(&key)
    ));

    let reply = get(&gw.url("/with")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(upstream.accepted().iter().all(|c| c.client_cert));

    let reply = get(&gw.url("/without")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        upstream.seen().len(),
        1,
        "only the request with a certificate got through"
    );
    // TLS 1.3 refuses the missing certificate after the client's side of the handshake
    // is done, so the request was written: the default policy tries a GET once more.
    assert_eq!(upstream.handshake_failures(), 2);
}

#[tokio::test]
async fn http2_over_tls_by_alpn_carries_grpc_trailers() {
    let dir = fresh_dir();
    let ca = TestCa::new("Upstream CA");
    let upstream = ProtoUpstream::start(ProtoOptions {
        tls: Some(ca.server(&["users.internal"])),
        http2_only: true,
        ..ProtoOptions::default()
    });
    let ca_file = ca.write(&dir, "ca");
    let gw = TestGateway::start(&route_to(
        &upstream.addr.to_string(),
        &format!(
            r#"{{ ca = "{}", server_name = "users.internal" }}"#,
            path(&ca_file)
        ),
        r#"protocol = "http2""#,
    ));

    let statuses: Vec<u16> =
        futures_util::future::join_all((0..10).map(|_| get_owned(gw.url("/"))))
            .await
            .iter()
            .map(|r| r.status.as_u16())
            .collect();
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    assert_eq!(get(&gw.url("/")).await.text(), "HTTP/2.0");
    assert!(upstream.connections() <= 2, "{}", upstream.connections());
    let accepted = upstream.accepted();
    assert!(
        accepted
            .iter()
            .all(|c| c.alpn.as_deref() == Some(&b"h2"[..]))
    );
    let seen = upstream.seen().pop().expect("a request");
    assert_eq!(seen.version, Version::HTTP_2);
    assert!(seen.uri.starts_with("https://"), "{}", seen.uri);

    // gRPC trailers through TLS on the upstream side too.
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-client-trailer", http::HeaderValue::from_static("tls"));
    let req = http::Request::post(gw.url("/grpc/unary"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(weir_tests::client::with_trailers(
            &b"\0\0\0\0\0"[..],
            trailers,
        ))
        .expect("request");
    let io = tokio::net::TcpStream::connect(gw.addr)
        .await
        .expect("connect");
    let reply = h2_exchange(io, req).await;
    let trailers = reply.trailers.expect("response trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-echo-trailer"], "tls");
}

#[tokio::test]
async fn a_replaced_ca_file_is_picked_up_without_a_restart() {
    let dir = fresh_dir();
    let upstream_ca = TestCa::new("Upstream CA");
    let upstream = tls_upstream(upstream_ca.server(&["users.internal"]));
    // At first the gateway trusts another CA: handshakes fail.
    let ca_file = TestCa::new("Stale CA").write(&dir, "ca");
    let config = dir.join("weir.toml");
    std::fs::write(
        &config,
        weir_tests::gateway::with_test_listeners(&route_to(
            &upstream.addr.to_string(),
            &format!(
                r#"{{ ca = "{}", server_name = "users.internal" }}"#,
                path(&ca_file)
            ),
            "",
        )),
    )
    .expect("write config");
    let gw = TestGateway::from_file(&config);
    assert_eq!(get(&gw.url("/")).await.status, 502);

    // The right CA is renamed into place, as deploy tools do.
    let tmp = dir.join(".ca.pem.tmp");
    std::fs::write(&tmp, &upstream_ca.pem).expect("write CA");
    std::fs::rename(&tmp, &ca_file).expect("rename CA");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = get(&gw.url("/")).await.status;
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} 10 s after the CA changed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
