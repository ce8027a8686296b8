//! The `jwt-auth` plugin end to end: its real `.wasm` in a real gateway in front of a real upstream.
//!
//! Tokens are signed by `jwt_tokens` with the RustCrypto crates the plugin verifies
//! with. A small HTTP server in the test serves the JWKS for `jwks_url` and counts its
//! fetches.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use weir_tests::first_party::{config, get_with, plugin_dir, refusal};
use weir_tests::{Reply, TestGateway, TestUpstream};

use crate::jwt_tokens::*;

/// A gateway whose one route uses jwt-auth with `plugin_config` (a TOML inline table)
/// and `extra` keys in the plugin entry.
fn gateway(up: &TestUpstream, plugin_config: &str, extra: &str) -> TestGateway {
    TestGateway::start(&config(
        up,
        &format!("{{ name = \"jwt-auth\", config = {plugin_config}{extra} }}"),
    ))
}

async fn with_token(gw: &TestGateway, token: &str) -> Reply {
    get_with(
        &gw.url("/api"),
        &[("authorization", &format!("Bearer {token}"))],
    )
    .await
}

/// Asserts a 401 `invalid_token` refusal whose description is `why`.
fn assert_invalid(reply: &Reply, why: &str) {
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert_eq!(
        reply.header("www-authenticate").as_deref(),
        Some(format!(r#"Bearer error="invalid_token", error_description="{why}""#).as_str())
    );
    let body: Value = serde_json::from_slice(&reply.body).expect("a JSON body");
    assert_eq!(body["error"], "invalid_token");
    assert_eq!(body["error_description"], why);
}

const HS_CONFIG: &str = "{ secret = \"an-e2e-test-secret-of-at-least-32-bytes\", issuer = \"https://idp.test\", \
     audience = \"api\", leeway_seconds = 5, claims_to_headers = { sub = \"x-user-id\", admin = \"x-admin\" } }";

#[tokio::test]
async fn hs256_a_valid_token_reaches_the_upstream_with_its_claims() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, HS_CONFIG, "");
    let token = hs256(&claims());
    let reply = get_with(
        &gw.url("/api"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("x-user-id", "spoofed-admin"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    assert_eq!(seen.target, "/api");
    let values: Vec<_> = seen.headers.get_all("x-user-id").iter().collect();
    assert_eq!(values, ["user-42"], "the client's copy is replaced");
    assert_eq!(seen.headers["x-admin"], "true");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {token}").as_str()
    );
}

#[tokio::test]
async fn hs256_missing_expired_and_foreign_tokens_get_401() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, HS_CONFIG, "");

    let reply = get_with(&gw.url("/api"), &[]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
    let reply = get_with(&gw.url("/api"), &[("authorization", "Basic dXNlcjpwdw==")]).await;
    assert_eq!(reply.status, 401);
    assert_eq!(reply.header("www-authenticate").as_deref(), Some("Bearer"));
    // Two token headers, even with a valid token first, are refused: which one counts
    // would be a guess.
    let bearer = format!("Bearer {}", hs256(&claims()));
    let reply = get_with(
        &gw.url("/api"),
        &[("authorization", &bearer), ("authorization", "Bearer x")],
    )
    .await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert!(
        reply.text().contains("several token headers"),
        "{}",
        reply.text()
    );

    let expired = hs256(&claims_with(json!({"exp": now() - 60})));
    assert_invalid(&with_token(&gw, &expired).await, "the token has expired");
    let early = hs256(&claims_with(json!({"nbf": now() + 600})));
    assert_invalid(&with_token(&gw, &early).await, "the token is not valid yet");
    let other_audience = hs256(&claims_with(json!({"aud": ["web", "mobile"]})));
    assert_invalid(
        &with_token(&gw, &other_audience).await,
        "the token's audience is not accepted",
    );
    let other_issuer = hs256(&claims_with(json!({"iss": "https://evil.test"})));
    assert_invalid(
        &with_token(&gw, &other_issuer).await,
        "the token's issuer is not accepted",
    );
    let tampered = {
        let token = hs256(&claims());
        let (input, signature) = token.rsplit_once('.').expect("three parts");
        let (header, _) = input.split_once('.').expect("three parts");
        let forged = B64.encode(claims_with(json!({"sub": "root"})).to_string());
        format!("{header}.{forged}.{signature}")
    };
    assert_invalid(
        &with_token(&gw, &tampered).await,
        "the token's signature is invalid",
    );
    let unsigned = format!(
        "{}.",
        signing_input(&json!({"alg": "none", "typ": "JWT"}), &claims())
    );
    assert_invalid(
        &with_token(&gw, &unsigned).await,
        "unsigned tokens (alg none) are not accepted",
    );
    assert_invalid(
        &with_token(&gw, "not.a.jwt").await,
        "the token header is not base64url",
    );
    assert_eq!(up.seen().len(), 0, "nothing reached the upstream");

    // Still working after all that.
    assert_eq!(with_token(&gw, &hs256(&claims())).await.status, 200);
}

#[tokio::test]
async fn rs256_and_es256_with_inline_jwks() {
    let up = TestUpstream::start("up");
    // RS256: the JWKS as JSON text.
    let jwks =
        json!({"keys": [{"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": RSA_N, "e": "AQAB"}]});
    let gw = gateway(
        &up,
        &format!(
            "{{ jwks = '{jwks}', algorithms = [\"RS256\"], claims_to_headers = {{ sub = \"x-user-id\" }} }}"
        ),
        "",
    );
    let reply = with_token(&gw, &rs256("rsa-1", &claims())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().headers["x-user-id"], "user-42");
    assert_invalid(
        &with_token(&gw, &rs256("rsa-2", &claims())).await,
        "the token's signing key is unknown",
    );
    assert_invalid(
        &with_token(&gw, &hs256(&claims())).await,
        "the token's algorithm HS256 is not accepted",
    );
    drop(gw);

    // ES256: the JWKS as a TOML table.
    let key = p256_key(None);
    let jwk = p256_jwk(&key, "ec-1");
    let gw = gateway(
        &up,
        &format!(
            "{{ jwks = {{ keys = [{{ kty = \"EC\", crv = \"P-256\", kid = \"ec-1\", x = {}, y = {} }}] }}, \
             claims_to_headers = {{ sub = \"x-user-id\" }} }}",
            jwk["x"], jwk["y"]
        ),
        "",
    );
    let reply = with_token(
        &gw,
        &es256(&key, "ec-1", &claims_with(json!({"sub": "ec-user"}))),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().headers["x-user-id"], "ec-user");
    let stranger = p256_key(Some(0x22));
    assert_invalid(
        &with_token(&gw, &es256(&stranger, "ec-1", &claims())).await,
        "the token's signature is invalid",
    );
}

/// A JWKS endpoint: serves `body` at any path, counting requests.
#[derive(Debug, Clone)]
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<String>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    /// Starts on a free loopback port, on the test's runtime.
    async fn start(keys: &[Value]) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let server = JwksServer {
            addr: listener.local_addr().expect("addr"),
            body: Arc::new(Mutex::new(String::new())),
            hits: Arc::new(AtomicUsize::new(0)),
        };
        server.serve(keys);
        let shared = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = shared.clone();
                let service = service_fn(move |_request: hyper::Request<Incoming>| {
                    shared.hits.fetch_add(1, Ordering::SeqCst);
                    let body = shared.body.lock().expect("lock").clone();
                    async move {
                        Ok::<_, Infallible>(
                            hyper::Response::builder()
                                .header("content-type", "application/json")
                                .body(Full::new(Bytes::from(body)))
                                .expect("a valid response"),
                        )
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        server
    }

    /// Serves a set of `keys` from now on.
    fn serve(&self, keys: &[Value]) {
        *self.body.lock().expect("lock") = json!({ "keys": keys }).to_string();
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn jwks_url_is_fetched_once_cached_and_refetched_for_a_new_kid() {
    let (k1, k2, k3) = (p256_key(None), p256_key(Some(0x11)), p256_key(Some(0x33)));
    let idp = JwksServer::start(&[p256_jwk(&k1, "k1")]).await;
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &format!(
            "{{ jwks_url = \"http://{}/.well-known/jwks.json\", algorithms = [\"ES256\"], \
             claims_to_headers = {{ sub = \"x-user-id\" }} }}",
            idp.addr
        ),
        &format!(", allowed_hosts = [\"{}\"]", idp.addr),
    );
    assert_eq!(idp.hits(), 0, "nothing is fetched before the first request");

    let reply = with_token(&gw, &es256(&k1, "k1", &claims())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().headers["x-user-id"], "user-42");
    assert_eq!(idp.hits(), 1);
    // Cached in the gateway's key-value store: later requests (fresh instances) reuse it.
    for sub in ["a", "b", "c"] {
        let reply = with_token(&gw, &es256(&k1, "k1", &claims_with(json!({"sub": sub})))).await;
        assert_eq!(reply.status, 200);
        assert_eq!(up.last().headers["x-user-id"], sub);
    }
    assert_eq!(idp.hits(), 1);

    // The IdP rotates in k2: the first k2 token makes the plugin fetch again.
    idp.serve(&[p256_jwk(&k1, "k1"), p256_jwk(&k2, "k2")]);
    let reply = with_token(&gw, &es256(&k2, "k2", &claims())).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(idp.hits(), 2);
    // Refetches are rate-limited: an unknown kid right after does not fetch.
    idp.serve(&[
        p256_jwk(&k1, "k1"),
        p256_jwk(&k2, "k2"),
        p256_jwk(&k3, "k3"),
    ]);
    assert_invalid(
        &with_token(&gw, &es256(&k3, "k3", &claims())).await,
        "the token's signing key is unknown",
    );
    assert_eq!(idp.hits(), 2);
    // Known keys still work.
    assert_eq!(
        with_token(&gw, &es256(&k1, "k1", &claims())).await.status,
        200
    );
    assert_eq!(idp.hits(), 2);
}

#[tokio::test]
async fn an_unreachable_jwks_url_answers_503() {
    // A port that was free a moment ago: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr");
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &format!("{{ jwks_url = \"http://{closed}/jwks\", jwks_timeout_ms = 2000 }}"),
        &format!(", allowed_hosts = [\"{closed}\"]"),
    );
    let reply = with_token(&gw, &es256(&p256_key(None), "k1", &claims())).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    assert_eq!(reply.header("retry-after").as_deref(), Some("10"));
    assert_eq!(up.seen().len(), 0);
    // A missing token is still a 401, not a fetch.
    assert_eq!(get_with(&gw.url("/"), &[]).await.status, 401);
}

#[test]
fn bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        (
            "{ secret = \"an-e2e-test-secret-of-at-least-32-bytes\", algorithms = [\"HS256\", \"XS999\"] }",
            "`algorithms`: unknown algorithm \"XS999\"",
        ),
        (
            "{ algorithms = [\"HS256\"] }",
            "`secret`: required by HS256",
        ),
        (
            "{ secret = \"an-e2e-test-secret-of-at-least-32-bytes\", algorithms = [\"RS256\"] }",
            "`jwks` or `jwks_url`: required by RS256",
        ),
        (
            "{ jwks = '{\"keys\": [{\"kty\": \"RSA\"}' }",
            "`jwks`: not JSON",
        ),
        (
            "{ jwks = { keys = [{ kty = \"EC\", crv = \"P-256\", x = \"AA\", y = \"AA\" }] } }",
            "`jwks`: key 0: `x` and `y` must be 32 bytes each",
        ),
        (
            "{ secret = \"short\" }",
            "`secret`: HS256 needs a secret of at least 32 bytes",
        ),
        (
            "{ secret = \"an-e2e-test-secret-of-at-least-32-bytes\", audiense = \"api\" }",
            "unknown field `audiense`",
        ),
    ] {
        let message = refusal(&up, "jwt-auth", plugin_config);
        assert!(
            message.contains("plugin `jwt-auth` refused its config") && message.contains(expected),
            "{plugin_config}: {message}"
        );
    }
}

/// `examples/jwt`: its config, with its plugins directory and upstream swapped for the
/// test's, accepts the ready-made tokens of its README on the routes they are for.
#[tokio::test]
async fn the_example_config_and_tokens_work() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/jwt");
    let example = std::fs::read_to_string(root.join("weir.toml")).expect("the example config");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("the example README");
    let token = |name: &str| {
        readme
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= token in the README"))
            .to_owned()
    };
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let swaps = [
        ("listen = \"127.0.0.1:8080\"", "listen = \"127.0.0.1:0\""),
        (
            "dir = \"target/weir-plugins\"",
            &format!(
                "dir = \"{}/plugins\"\ncache_dir = \"{}\"",
                dir.display(),
                weir_tests::gateway::compile_cache().display()
            ),
        ),
        ("\"127.0.0.1:9000\"", &format!("\"{}\"", up.addr)),
    ];
    let mut text = example;
    for (from, to) in swaps {
        assert!(text.contains(from), "the example has {from}");
        text = text.replace(from, to);
    }
    let gw = TestGateway::start(&text);

    let (hs, es) = (token("HS256"), token("ES256"));
    let reply = get_with(&gw.url("/"), &[("authorization", &format!("Bearer {hs}"))]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().headers["x-user-id"], "alice");
    let reply = get_with(
        &gw.url("/es"),
        &[("authorization", &format!("Bearer {es}"))],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(up.last().headers["x-user-email"], "alice@example.com");
    let reply = get_with(&gw.url("/"), &[("authorization", &format!("Bearer {es}"))]).await;
    assert_invalid(&reply, "the token's algorithm ES256 is not accepted");
    assert_eq!(get_with(&gw.url("/es"), &[]).await.status, 401);
}
