//! TLS at the edge: the certificate chosen by SNI, HTTP/1.1 and h2 by ALPN, mutual TLS
//! and the `x-forwarded-client-cert` header, `[server.tls]` config errors, and
//! certificates replaced under a running gateway. Every certificate is made at test
//! time with rcgen; no key material is checked in. The client is tokio-rustls with a
//! hyper client connection; it accepts any server certificate and the tests check the
//! leaf the gateway presented themselves. One test runs the real `weir` binary.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Version};
use http_body_util::BodyExt;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use weir_gateway::Config;
use weir_tests::certs::{TestCa, TestCert};
use weir_tests::client::{self, ClientBody, Reply};
use weir_tests::gateway::{fresh_dir, plugin_dir, with_test_listeners};
use weir_tests::{TestGateway, TestUpstream, WeirProcess, guest_wasm, weir_bin};

// ---------------------------------------------------------------------------------------
// Certificates

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------
// A TLS client

/// Accepts whatever certificate the server presents (signatures are still checked):
/// the tests compare the presented leaf with the one they expect.
#[derive(Debug)]
struct AnyServerCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// How a test client connects.
#[derive(Clone, Copy)]
struct Dial<'a> {
    /// The SNI to send; `None` sends none.
    sni: Option<&'a str>,
    /// ALPN protocols to offer.
    alpn: &'a [&'a str],
    /// A client certificate to present.
    identity: Option<&'a TestCert>,
}

impl<'a> Dial<'a> {
    /// Sends SNI `name`, offers h2 and http/1.1, presents no certificate.
    fn sni(name: &'a str) -> Dial<'a> {
        Dial {
            sni: Some(name),
            alpn: &["h2", "http/1.1"],
            identity: None,
        }
    }

    /// As [`Dial::sni`], without SNI.
    fn no_sni() -> Dial<'a> {
        Dial {
            sni: None,
            ..Dial::sni("")
        }
    }
}

/// The sending half of an HTTP connection over TLS.
enum Sender {
    H1(http1::SendRequest<ClientBody>),
    H2(http2::SendRequest<ClientBody>),
}

/// An open TLS connection to the gateway.
struct TlsConn {
    sender: Sender,
    /// The leaf certificate the gateway presented.
    leaf: Vec<u8>,
    /// The protocol ALPN chose.
    alpn: Option<String>,
}

/// Connects to `addr` and completes the client's side of the TLS handshake as `dial`
/// says. Errors are strings: tests assert on refusals.
async fn tls_stream(addr: SocketAddr, dial: Dial<'_>) -> Result<TlsStream<TcpStream>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCertificate(provider)));
    let mut config = match dial.identity {
        Some(leaf) => {
            let (chain, key) = leaf.der();
            builder
                .with_client_auth_cert(chain, key)
                .expect("client identity")
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = dial.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = match dial.sni {
        Some(name) => ServerName::try_from(name.to_owned()).expect("server name"),
        // An IP address as the server name: rustls sends no SNI.
        None => ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into()),
    };
    let handshake = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("handshake: {e}"))
    };
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| "handshake: no answer within 10 s".to_owned())?
}

/// Why the gateway refused `dial`'s handshake. TLS 1.3 clients finish their side
/// before the server has checked their certificate, so the server's alert can arrive
/// only on the first read: this sends a request and reads, and panics if a response
/// comes back instead.
async fn refusal(addr: SocketAddr, dial: Dial<'_>) -> String {
    let dial = Dial {
        alpn: &["http/1.1"],
        ..dial
    };
    let mut stream = match tls_stream(addr, dial).await {
        Ok(stream) => stream,
        Err(e) => return e,
    };
    let request = b"GET / HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n";
    if let Err(e) = stream.write_all(request).await {
        return e.to_string();
    }
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
    match read.await {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(_)) => panic!("not refused: {}", String::from_utf8_lossy(&answer)),
        Err(_) => panic!("neither refused nor answered within 10 s"),
    }
}

/// Connects to `addr` over TLS as `dial` says and starts HTTP/2 or HTTP/1.1 on it, as
/// ALPN chose.
async fn connect(addr: SocketAddr, dial: Dial<'_>) -> Result<TlsConn, String> {
    let stream = tls_stream(addr, dial).await?;
    let session = stream.get_ref().1;
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no server certificate")?;
    let alpn = session
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let io = TokioIo::new(stream);
    let sender = if alpn.as_deref() == Some("h2") {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Sender::H2(sender)
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        Sender::H1(sender)
    };
    Ok(TlsConn { sender, leaf, alpn })
}

impl TlsConn {
    /// `GET path` with `Host: host` and extra `headers`; the response, body collected.
    async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Reply, String> {
        let exchange = async {
            let response = match &mut self.sender {
                Sender::H1(sender) => {
                    let mut req = Request::get(path).header("host", host);
                    for (name, value) in headers {
                        req = req.header(*name, *value);
                    }
                    let req = req.body(client::empty()).expect("request");
                    sender.ready().await.map_err(|e| e.to_string())?;
                    sender.send_request(req).await.map_err(|e| e.to_string())?
                }
                Sender::H2(sender) => {
                    let mut req =
                        Request::get(format!("https://{host}{path}")).version(Version::HTTP_2);
                    for (name, value) in headers {
                        req = req.header(*name, *value);
                    }
                    let req = req.body(client::empty()).expect("request");
                    sender.ready().await.map_err(|e| e.to_string())?;
                    sender.send_request(req).await.map_err(|e| e.to_string())?
                }
            };
            let version = response.version();
            let (parts, body) = response.into_parts();
            let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
            let mut headers = parts.headers;
            // Tests read the version the gateway answered with as a pseudo-header.
            headers.insert(
                "x-test-version",
                format!("{version:?}").parse().expect("header value"),
            );
            Ok(Reply {
                status: parts.status,
                headers,
                body,
            })
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "no response within 10 s".to_owned())?
    }
}

/// Connects and sends one `GET /` for `host`.
async fn get_once(addr: SocketAddr, dial: Dial<'_>, host: &str) -> Result<Reply, String> {
    connect(addr, dial).await?.get(host, "/", &[]).await
}

// ---------------------------------------------------------------------------------------
// Gateways

/// A gateway config with `[server.tls]` = `tls` and one route to `up` (with `route`
/// appended to it).
fn config(up: &TestUpstream, tls: &str, route: &str) -> String {
    with_test_listeners(&format!(
        "[server.tls]\n{tls}\n\
         [reload]\ndebounce = \"50ms\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n{route}\n",
        up.addr
    ))
}

/// A `certificates` entry for `cert`/`key` serving `names` (none: the default).
fn entry(files: &(PathBuf, PathBuf), names: &[&str]) -> String {
    let names = match names {
        [] => String::new(),
        names => format!(
            ", names = [{}]",
            names
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    format!(
        "{{ cert = \"{}\", key = \"{}\"{names} }}",
        files.0.display(),
        files.1.display()
    )
}

fn certificates(entries: &[String]) -> String {
    format!("certificates = [\n  {},\n]", entries.join(",\n  "))
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `limit`.
async fn eventually<T, F: Future<Output = Option<T>>>(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> F,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(done) = check().await {
            return done;
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(gw: &TestGateway, series: &str) -> f64 {
    let text = client::get(&gw.admin_url("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

// ---------------------------------------------------------------------------------------
// SNI and ALPN

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name_and_the_default_otherwise() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let a = ca.server_named("a", &["a.example"]);
    let b = ca.server_named("b", &["b.example", "*.b.example"]);
    let fallback = ca.server_named("default", &["default.example"]);
    let tls = certificates(&[
        entry(&a.write(&dir, "a"), &["a.example"]),
        entry(&b.write(&dir, "b"), &["b.example", "*.b.example"]),
        entry(&fallback.write(&dir, "default"), &[]),
    ]);
    let gw = TestGateway::start(&config(&up, &tls, ""));

    for (sni, expected, which) in [
        (Some("a.example"), &a, "a"),
        (Some("B.Example"), &b, "b (names are case-insensitive)"),
        (Some("api.b.example"), &b, "b (wildcard)"),
        (
            Some("unknown.example"),
            &fallback,
            "the default (unknown name)",
        ),
        (None, &fallback, "the default (no SNI)"),
    ] {
        let dial = Dial {
            sni,
            ..Dial::no_sni()
        };
        let mut conn = connect(gw.addr, dial).await.expect("handshake");
        assert!(
            conn.leaf == expected.der.as_ref(),
            "SNI {sni:?} should get {which}"
        );
        let reply = conn.get("a.example", "/hello", &[]).await.expect("request");
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.text(), "/hello");
    }
}

#[tokio::test]
async fn without_a_default_an_unknown_name_is_refused_at_the_handshake() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let a = ca.server_named("a", &["a.example"]);
    let tls = certificates(&[entry(&a.write(&dir, "a"), &["a.example"])]);
    let gw = TestGateway::start(&config(&up, &tls, ""));

    assert!(
        get_once(gw.addr, Dial::sni("a.example"), "a.example")
            .await
            .is_ok()
    );
    for dial in [Dial::sni("other.example"), Dial::no_sni()] {
        let why = refusal(gw.addr, dial).await;
        assert!(why.starts_with("handshake: received fatal alert"), "{why}");
    }
    assert_eq!(
        up.seen().len(),
        1,
        "only the good handshake reached the upstream"
    );
}

#[tokio::test]
async fn alpn_chooses_h2_or_http1_and_the_upstream_sees_https() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let a = ca.server_named("a", &["a.example"]);
    let tls = certificates(&[entry(&a.write(&dir, "a"), &[])]);
    let gw = TestGateway::start(&config(&up, &tls, ""));

    for (offered, negotiated, version) in [
        (&["h2", "http/1.1"][..], Some("h2"), "HTTP/2.0"),
        (&["http/1.1"][..], Some("http/1.1"), "HTTP/1.1"),
        (&[][..], None, "HTTP/1.1"),
    ] {
        let dial = Dial {
            alpn: offered,
            ..Dial::sni("a.example")
        };
        let mut conn = connect(gw.addr, dial).await.expect("handshake");
        assert_eq!(conn.alpn.as_deref(), negotiated, "offered {offered:?}");
        // Two requests on one connection: keep-alive / multiplexing over TLS.
        for path in ["/one", "/two"] {
            let reply = conn
                .get("a.example", path, &[("x-forwarded-proto", "http")])
                .await
                .expect("request");
            assert_eq!(reply.status, 200);
            assert_eq!(reply.text(), path);
            assert_eq!(reply.header("x-test-version").as_deref(), Some(version));
            let seen = up.last();
            assert_eq!(
                seen.headers["x-forwarded-proto"], "https",
                "offered {offered:?}"
            );
            assert_eq!(seen.headers["x-forwarded-host"], "a.example");
        }
    }
}

#[tokio::test]
async fn plain_http_is_not_served_on_a_tls_listener() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let tls = certificates(&[entry(
        &ca.server_named("a", &["a.example"]).write(&dir, "a"),
        &[],
    )]);
    let gw = TestGateway::start(&config(&up, &tls, ""));
    let answer = client::raw_request(
        gw.addr,
        "GET / HTTP/1.1\r\nhost: a.example\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert!(!answer.contains("HTTP/1.1 200"), "{answer}");
    assert!(up.seen().is_empty());
}

// ---------------------------------------------------------------------------------------
// Mutual TLS

/// A gateway requiring client certificates from `client_ca`, with the probe plugin in
/// `connection` mode on its route (it reports what plugins see).
fn mtls_gateway(up: &TestUpstream, client_ca: &TestCa) -> TestGateway {
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let server = ca.server_named("a", &["a.example"]).write(&dir, "a");
    let tls = format!(
        "{}\nclient_ca = \"{}\"",
        certificates(&[entry(&server, &[])]),
        client_ca.write(&dir, "clients-ca").display()
    );
    let plugins = plugin_dir(&[(guest_wasm!("probe"), "probe")]);
    let route = "plugins = [{ name = \"probe\", config = { mode = \"connection\" } }]\n";
    let text = format!(
        "{}[plugins]\ndir = \"{}\"\ncache_dir = \"{}\"\n",
        config(up, &tls, route),
        plugins.join("plugins").display(),
        weir_tests::gateway::compile_cache().display()
    );
    TestGateway::start(&text)
}

#[tokio::test]
async fn a_client_certificate_from_the_ca_gets_through_with_its_identity() {
    let up = TestUpstream::start("up");
    let clients = TestCa::new("Weir Test Client CA");
    let gw = mtls_gateway(&up, &clients);
    let alice = clients.client("alice");

    for alpn in [&["h2"][..], &["http/1.1"][..]] {
        let dial = Dial {
            identity: Some(&alice),
            alpn,
            ..Dial::sni("a.example")
        };
        let mut conn = connect(gw.addr, dial).await.expect("handshake");
        let spoofed = [(
            "x-forwarded-client-cert",
            "Hash=forged;Subject=\"CN=admin\"",
        )];
        let reply = conn
            .get("a.example", "/me", &spoofed)
            .await
            .expect("request");
        assert_eq!(reply.status, 200, "{}", reply.text());

        let seen = up.last();
        let xfcc: Vec<_> = seen
            .headers
            .get_all("x-forwarded-client-cert")
            .iter()
            .collect();
        assert_eq!(xfcc.len(), 1, "exactly the gateway's header: {xfcc:?}");
        let expected = format!(
            "Hash={};Subject=\"CN=alice,O=Weir Tests\";URI=spiffe://weir.test/client/alice;\
             DNS=alice.clients.weir.test",
            sha256_hex(&alice.der)
        );
        assert_eq!(xfcc[0].to_str().expect("ascii"), expected);
        // Plugins run after the header is set, and see the scheme as https.
        assert_eq!(seen.headers["x-seen-client-cert"], expected.as_str());
        assert_eq!(seen.headers["x-seen-scheme"], "https");
        assert_eq!(seen.headers["x-seen-authority"], "a.example");
        assert_eq!(seen.headers["x-seen-client"], "127.0.0.1");
        assert_eq!(seen.headers["x-forwarded-proto"], "https");
    }
}

#[tokio::test]
async fn clients_without_a_certificate_from_the_ca_are_refused() {
    let up = TestUpstream::start("up");
    let clients = TestCa::new("Weir Test Client CA");
    let gw = mtls_gateway(&up, &clients);
    let rogue = TestCa::new("Rogue CA").client("mallory");

    let anonymous = refusal(gw.addr, Dial::sni("a.example")).await;
    assert!(anonymous.contains("CertificateRequired"), "{anonymous}");
    let dial = Dial {
        identity: Some(&rogue),
        ..Dial::sni("a.example")
    };
    let untrusted = refusal(gw.addr, dial).await;
    assert!(untrusted.contains("UnknownCA"), "{untrusted}");
    // Over HTTP/2 too (the hyper client's error does not say why).
    let h2 = Dial {
        alpn: &["h2"],
        ..Dial::sni("a.example")
    };
    assert!(get_once(gw.addr, h2, "a.example").await.is_err());
    assert!(up.seen().is_empty(), "no request reached the upstream");

    let good = clients.client("bob");
    let dial = Dial {
        identity: Some(&good),
        ..Dial::sni("a.example")
    };
    let reply = get_once(gw.addr, dial, "a.example")
        .await
        .expect("bob gets in");
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn a_spoofed_client_cert_header_is_removed_without_mtls() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let tls = certificates(&[entry(
        &ca.server_named("a", &["a.example"]).write(&dir, "a"),
        &[],
    )]);
    let gw = TestGateway::start(&config(&up, &tls, ""));
    let spoofed = [("x-forwarded-client-cert", "Hash=forged")];
    let mut conn = connect(gw.addr, Dial::sni("a.example"))
        .await
        .expect("handshake");
    let reply = conn.get("a.example", "/", &spoofed).await.expect("request");
    assert_eq!(reply.status, 200);
    assert!(!up.last().headers.contains_key("x-forwarded-client-cert"));

    // Plain HTTP, too: the header is only ever the gateway's.
    let plain = TestGateway::start(&with_test_listeners(&format!(
        "[[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n",
        up.addr
    )));
    let req = Request::get(plain.url("/"))
        .header("x-forwarded-client-cert", "Hash=forged")
        .body(client::empty())
        .expect("request");
    assert_eq!(client::send(&client::h1_client(), req).await.status, 200);
    assert!(!up.last().headers.contains_key("x-forwarded-client-cert"));
}

// ---------------------------------------------------------------------------------------
// Config errors

fn diagnostics(text: &str) -> Vec<(String, String)> {
    let err = Config::parse(Path::new("weir.toml"), text).expect_err("config must be refused");
    err.diagnostics()
        .iter()
        .map(|d| {
            assert!(d.line > 0, "{d} has a line");
            (d.key.clone(), d.message.clone())
        })
        .collect()
}

#[test]
fn tls_config_errors_name_the_key_and_are_reported_together() {
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let a = ca.server_named("a", &["a.example"]).write(&dir, "a");
    let b = ca.server_named("b", &["b.example"]).write(&dir, "b");
    let missing = (dir.join("missing.pem"), a.1.clone());
    let mismatched = (a.0.clone(), b.1.clone());
    let not_pem = dir.join("notes.txt");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    let text = format!(
        "[server.tls]\n{}\nclient_ca = \"{}\"\n",
        certificates(&[
            entry(&missing, &["a.example"]),
            entry(&mismatched, &["b.example", "A.example"]),
            entry(&b, &[]),
            entry(&a, &[]),
        ]),
        not_pem.display()
    );
    let found = diagnostics(&text);
    let keys: Vec<&str> = found.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.tls.certificates[0].cert",
            "server.tls.certificates[1].key",
            "server.tls.certificates[1].names[1]",
            "server.tls.certificates[3]",
            "server.tls.client_ca",
        ],
        "{found:#?}"
    );
    let message = |i: usize| found[i].1.as_str();
    assert!(
        message(0).contains("missing.pem") && message(0).contains("cannot read"),
        "{}",
        message(0)
    );
    assert!(
        message(1).contains("does not match the certificate"),
        "{}",
        message(1)
    );
    assert!(
        message(2).contains("duplicate server name `a.example`"),
        "{}",
        message(2)
    );
    assert!(
        message(3).contains("two default certificates"),
        "{}",
        message(3)
    );
    assert!(
        message(4).contains("holds no certificate"),
        "{}",
        message(4)
    );
}

#[test]
fn an_empty_certificate_list_and_bad_names_are_errors() {
    let found = diagnostics("[server.tls]\ncertificates = []\n");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].0, "server.tls.certificates");

    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let a = ca.server_named("a", &["a.example"]).write(&dir, "a");
    let text = format!(
        "[server.tls]\n{}\n",
        certificates(&[
            format!(
                "{{ cert = \"{}\", key = \"{}\", names = [] }}",
                a.0.display(),
                a.1.display()
            ),
            entry(&a, &["a.example:443"]),
        ])
    );
    let keys: Vec<String> = diagnostics(&text).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys,
        [
            "server.tls.certificates[0].names",
            "server.tls.certificates[1].names[0]"
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Live reload

/// A config file in a fresh directory, with the certificates in `certs/` beside it:
/// `a` for `a.example`, and the default. Returns (config file, certs dir).
fn reloadable(up: &TestUpstream, a: &TestCert, fallback: &TestCert) -> (PathBuf, PathBuf) {
    let dir = fresh_dir();
    let certs = dir.join("certs");
    std::fs::create_dir_all(&certs).expect("certs dir");
    let tls = certificates(&[
        entry(&a.write(&certs, "a"), &["a.example"]),
        entry(&fallback.write(&certs, "default"), &[]),
    ]);
    let path = dir.join("weir.toml");
    std::fs::write(&path, config(up, &tls, "")).expect("write config");
    (path, certs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificates_serve_new_handshakes_and_open_connections_keep_theirs() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let (old, fallback) = (
        ca.server_named("a-old", &["a.example"]),
        ca.server_named("d", &["d.example"]),
    );
    let (path, certs) = reloadable(&up, &old, &fallback);
    let gw = TestGateway::from_file(&path);

    let mut open = connect(gw.addr, Dial::sni("a.example"))
        .await
        .expect("handshake");
    assert!(open.leaf == old.der.as_ref());

    let new = ca.server_named("a-new", &["a.example"]);
    new.replace(&certs, "a");
    eventually(
        "the new certificate on new handshakes",
        Duration::from_secs(10),
        || async {
            let conn = connect(gw.addr, Dial::sni("a.example")).await.ok()?;
            (conn.leaf == new.der.as_ref()).then_some(())
        },
    )
    .await;

    // The connection opened before keeps its session and still serves requests.
    let reply = open
        .get("a.example", "/still", &[])
        .await
        .expect("old connection");
    assert_eq!(reply.status, 200);
    assert!(open.leaf == old.der.as_ref());
    // The other certificate did not change.
    let other = connect(gw.addr, Dial::sni("x.example"))
        .await
        .expect("handshake");
    assert!(other.leaf == fallback.der.as_ref());
    assert!(metric(&gw, "weir_config_reloads_total{result=\"success\"}").await >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_replacement_is_refused_and_the_old_certificate_keeps_serving() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let (old, fallback) = (
        ca.server_named("a-old", &["a.example"]),
        ca.server_named("d", &["d.example"]),
    );
    let (path, certs) = reloadable(&up, &old, &fallback);
    let gw = TestGateway::from_file(&path);
    let errors_before = metric(&gw, "weir_config_reloads_total{result=\"error\"}").await;

    // A key that is not the certificate's.
    let other = ca.server_named("other", &["a.example"]);
    std::fs::write(certs.join("a-key.pem"), &other.key_pem).expect("write key");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["tls"], "refused", "{report}");
    let error = report["config_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("server.tls.certificates[0].key") && error.contains("does not match"),
        "{error}"
    );
    let status = serde_json::to_string(&gw.reload().await.1).expect("json");
    assert!(
        status.contains("refused"),
        "asking again reports the refusal: {status}"
    );
    assert!(metric(&gw, "weir_config_reloads_total{result=\"error\"}").await > errors_before);

    let conn = connect(gw.addr, Dial::sni("a.example"))
        .await
        .expect("handshake");
    assert!(
        conn.leaf == old.der.as_ref(),
        "the old certificate keeps serving"
    );
    assert_eq!(
        get_once(gw.addr, Dial::sni("a.example"), "a.example")
            .await
            .expect("request")
            .status,
        200
    );

    // Garbage instead of a certificate: refused the same way.
    std::fs::write(certs.join("a.pem"), "-----BEGIN CERTIFICATE-----\n!!\n").expect("write");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report}");
    assert!(
        report["config_error"]
            .as_str()
            .unwrap_or_default()
            .contains("server.tls.certificates[0].cert"),
        "{report}"
    );

    // A good pair again (through the watcher): new handshakes get it.
    let fixed = ca.server_named("a-fixed", &["a.example"]);
    fixed.replace(&certs, "a");
    eventually("the fixed certificate", Duration::from_secs(10), || async {
        let conn = connect(gw.addr, Dial::sni("a.example")).await.ok()?;
        (conn.leaf == fixed.der.as_ref()).then_some(())
    })
    .await;
    eventually(
        "the config error cleared",
        Duration::from_secs(10),
        || async {
            let status = client::get(&gw.admin_url("/admin/plugins")).await;
            let doc: serde_json::Value = serde_json::from_slice(&status.body).ok()?;
            doc["config"]["last_error"].is_null().then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_edit_to_server_tls_applies_to_new_handshakes() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let (a, fallback) = (
        ca.server_named("a", &["a.example"]),
        ca.server_named("d", &["d.example"]),
    );
    let (path, certs) = reloadable(&up, &a, &fallback);
    let gw = TestGateway::from_file(&path);
    assert!(
        connect(gw.addr, Dial::sni("b.example"))
            .await
            .expect("tls")
            .leaf
            == fallback.der.as_ref()
    );

    // A new certificate for b.example, in a directory the config did not name before;
    // the config names it before the files are there.
    let more = path.with_file_name("more");
    std::fs::create_dir_all(&more).expect("dir");
    let b = ca.server_named("b", &["b.example"]);
    let b_files = (more.join("b.pem"), more.join("b-key.pem"));
    let tls = certificates(&[
        entry(
            &(certs.join("a.pem"), certs.join("a-key.pem")),
            &["a.example"],
        ),
        entry(&b_files, &["b.example"]),
        entry(
            &(certs.join("default.pem"), certs.join("default-key.pem")),
            &[],
        ),
    ]);
    std::fs::write(&path, config(&up, &tls, "")).expect("rewrite config");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report}");
    assert!(
        report["config_error"]
            .as_str()
            .unwrap_or_default()
            .contains("server.tls.certificates[1].cert"),
        "{report}"
    );

    // The files arrive: the refused config is tried again (the watcher follows the
    // files it names) and applies.
    b.write(&more, "b");
    eventually(
        "b.example's certificate",
        Duration::from_secs(10),
        || async {
            let conn = connect(gw.addr, Dial::sni("b.example")).await.ok()?;
            (conn.leaf == b.der.as_ref()).then_some(())
        },
    )
    .await;

    // Its directory is watched from now on.
    let b2 = ca.server_named("b2", &["b.example"]);
    b2.replace(&more, "b");
    eventually(
        "b.example's replaced certificate",
        Duration::from_secs(10),
        || async {
            let conn = connect(gw.addr, Dial::sni("b.example")).await.ok()?;
            (conn.leaf == b2.der.as_ref()).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn turning_tls_on_needs_a_restart() {
    let up = TestUpstream::start("up");
    let dir = fresh_dir();
    let path = dir.join("weir.toml");
    let plain = with_test_listeners(&format!(
        "[reload]\nwatch = false\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n",
        up.addr
    ));
    std::fs::write(&path, &plain).expect("write config");
    let gw = TestGateway::from_file(&path);

    let ca = TestCa::new("Weir Test Server CA");
    let a = ca.server_named("a", &["a.example"]).write(&dir, "a");
    let with_tls = format!("{plain}[server.tls]\n{}\n", certificates(&[entry(&a, &[])]));
    std::fs::write(&path, with_tls).expect("rewrite config");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report}");
    let restart = report["restart_required"].to_string();
    assert!(restart.contains("server.tls (off -> on)"), "{report}");
    assert_eq!(
        client::get(&gw.url("/")).await.status,
        200,
        "still plain HTTP"
    );
}

// ---------------------------------------------------------------------------------------
// The real binary

#[tokio::test]
async fn the_weir_binary_checks_and_serves_a_tls_config() {
    let up = TestUpstream::start("up");
    let ca = TestCa::new("Weir Test Server CA");
    let dir = fresh_dir();
    let a = ca.server_named("a", &["a.example"]);
    let clients = TestCa::new("Weir Test Client CA");
    let tls = format!(
        "{}\nclient_ca = \"{}\"",
        certificates(&[
            entry(&a.write(&dir, "a"), &["a.example", "*.a.example"]),
            entry(&ca.server_named("d", &["d.example"]).write(&dir, "d"), &[]),
        ]),
        clients.write(&dir, "clients").display()
    );
    let path = dir.join("weir.toml");
    std::fs::write(&path, config(&up, &tls, "")).expect("write config");

    let check = std::process::Command::new(weir_bin!())
        .args(["check", "--config"])
        .arg(&path)
        .output();
    let check = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || check),
    )
    .await
    .expect("weir check finishes")
    .expect("join")
    .expect("run weir check");
    let summary = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{summary}");
    for line in [
        "TLS 1.3 and 1.2, ALPN h2 and http/1.1".to_owned(),
        format!(
            "certificate {}  a.example, *.a.example",
            dir.join("a.pem").display()
        ),
        format!("certificate {}  default", dir.join("d.pem").display()),
        format!(
            "client certificates required, from {}",
            dir.join("clients.pem").display()
        ),
    ] {
        assert!(summary.contains(&line), "`{line}` in:\n{summary}");
    }

    let weir = WeirProcess::spawn(weir_bin!(), &["run", "--config", &path.to_string_lossy()]);
    let alice = clients.client("alice");
    let dial = Dial {
        identity: Some(&alice),
        ..Dial::sni("www.a.example")
    };
    let mut conn = connect(weir.addr, dial).await.expect("handshake");
    assert!(conn.leaf == a.der.as_ref());
    let reply = conn.get("www.a.example", "/", &[]).await.expect("request");
    assert_eq!(reply.status, 200);
    let xfcc = up.last().headers["x-forwarded-client-cert"].clone();
    assert!(
        xfcc.to_str()
            .expect("ascii")
            .starts_with(&format!("Hash={};", sha256_hex(&alice.der))),
        "{xfcc:?}"
    );
}
