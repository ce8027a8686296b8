//! What the first-party plugins cost per request, without the network: each one's
//! request and response phases through the same chain runner the pipeline uses, under
//! worker and request isolation, and the `examples/api` chain (request-id, api-key,
//! rate-limit, headers) as a whole. `jwt-auth` is measured with a new token on every
//! request (full signature verification) and with one token repeated (the plugin's
//! verified-token cache).
//!
//! Run: `cargo bench -p weir-tests --bench first_party`

#[path = "../tests/e2e/jwt_tokens.rs"]
mod jwt_tokens;

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, StatusCode};
use support::{Use, chain, iter_in_task, request_phase};
use weir_gateway::config::Isolation;
use weir_gateway::plugin::{ChainEntry, ChainRun, PluginHost};

/// One request through the chain's request-headers and response-headers phases, with
/// the request's and the upstream response's headers (made before the clock starts,
/// as hyper makes them in the gateway); they are handed back so that freeing them is
/// not measured.
async fn run(
    chain: &Arc<[ChainEntry]>,
    (mut headers, mut response): (HeaderMap, HeaderMap),
) -> (HeaderMap, HeaderMap) {
    let mut pass = ChainRun::new(chain.clone());
    request_phase(&mut pass, &mut headers).await;
    // As the gateway does: skipped when no passed plugin edits responses.
    if pass.edits_responses() {
        let mut status = StatusCode::OK;
        pass.response_headers(&mut status, &mut response).await;
    }
    (headers, response)
}

/// The upstream's response headers.
fn upstream_response() -> HeaderMap {
    let mut response = HeaderMap::new();
    response.insert("content-type", "application/json".parse().unwrap());
    response.insert("content-length", "42".parse().unwrap());
    response
}

fn mode(isolation: Isolation) -> &'static str {
    match isolation {
        Isolation::Worker => "worker",
        Isolation::Request => "request",
    }
}

fn request_headers(extra: &[(&str, &str)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let common = [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-forwarded-for", "203.0.113.7"),
    ];
    for (name, value) in common.iter().chain(extra) {
        headers.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    headers
}

/// A rate limit that never refuses during a bench run, so every call does the full
/// admission work.
fn rate_limit_config() -> String {
    r#"{"requests": 1000000000, "window": "1h", "key": "ip"}"#.to_owned()
}

/// Benches one request through `plugins` under each isolation mode.
fn measure(
    c: &mut Criterion,
    host: &PluginHost,
    rt: &tokio::runtime::Runtime,
    label: &str,
    plugins: &[Use<'_>],
    headers: &HeaderMap,
) {
    for isolation in [Isolation::Worker, Isolation::Request] {
        let chain = chain(host, plugins, isolation);
        c.bench_function(&format!("{label}, isolation={}", mode(isolation)), |b| {
            iter_in_task(
                b,
                rt,
                || (headers.clone(), upstream_response()),
                |h| run(&chain, h),
            );
        });
    }
}

fn bench(c: &mut Criterion) {
    let host = PluginHost::new(None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // jwt-auth: RS256 and ES256 with an inline JWKS.
    let es_key = jwt_tokens::p256_key(None);
    let rsa_jwk =
        serde_json::json!({"kty": "RSA", "kid": "rsa-1", "n": jwt_tokens::RSA_N, "e": "AQAB"});
    let jwt = |alg: &str, jwk: serde_json::Value| Use {
        wasm: env!("GUEST_JWT_AUTH"),
        name: "jwt-auth",
        config: serde_json::json!({
            "jwks": {"keys": [jwk]},
            "algorithms": [alg],
            "issuer": "https://idp.test",
            "audience": "api",
            "claims_to_headers": {"sub": "x-user-id"},
        })
        .to_string(),
    };
    let serial = AtomicU64::new(0);
    let fresh_claims = || {
        let mut claims = jwt_tokens::claims();
        claims["jti"] = serial.fetch_add(1, Ordering::Relaxed).into();
        claims
    };
    type Sign<'a> = Box<dyn Fn() -> String + 'a>;
    let signers: [(&str, Use<'_>, Sign<'_>); 2] = [
        (
            "RS256",
            jwt("RS256", rsa_jwk),
            Box::new(|| jwt_tokens::rs256("rsa-1", &fresh_claims())),
        ),
        (
            "ES256",
            jwt("ES256", jwt_tokens::p256_jwk(&es_key, "ec-1")),
            Box::new(|| jwt_tokens::es256(&es_key, "ec-1", &fresh_claims())),
        ),
    ];
    let bearer = |token: String| request_headers(&[("authorization", &format!("Bearer {token}"))]);
    for (alg, plugin, sign) in &signers {
        let repeated = bearer(sign());
        measure(
            c,
            &host,
            &rt,
            &format!("jwt-auth {alg}, repeated token"),
            std::slice::from_ref(plugin),
            &repeated,
        );
        for isolation in [Isolation::Worker, Isolation::Request] {
            let chain = chain(&host, std::slice::from_ref(plugin), isolation);
            let mut group = c.benchmark_group("jwt-auth, a new token per request");
            group
                .sample_size(20)
                .measurement_time(Duration::from_secs(5));
            group.bench_function(format!("{alg}, isolation={}", mode(isolation)), |b| {
                iter_in_task(
                    b,
                    &rt,
                    || (bearer(sign()), upstream_response()),
                    |h| run(&chain, h),
                );
            });
            group.finish();
        }
    }

    let plain = request_headers(&[]);
    // The one-plugin case of DESIGN's per-request target: a header-only plugin that
    // must be called (it makes an id per request).
    measure(
        c,
        &host,
        &rt,
        "request-id",
        &[Use {
            wasm: env!("GUEST_REQUEST_ID"),
            name: "request-id",
            config: "{}".to_owned(),
        }],
        &plain,
    );
    measure(
        c,
        &host,
        &rt,
        "rate-limit",
        &[Use {
            wasm: env!("GUEST_RATE_LIMIT"),
            name: "rate-limit",
            config: rate_limit_config(),
        }],
        &plain,
    );

    let with_key = request_headers(&[("x-api-key", "key-of-alice-0001")]);
    measure(
        c,
        &host,
        &rt,
        "examples/api chain (request-id, api-key, rate-limit, headers)",
        &[
            Use {
                wasm: env!("GUEST_REQUEST_ID"),
                name: "request-id",
                config: "{}".to_owned(),
            },
            Use {
                wasm: env!("GUEST_API_KEY"),
                name: "api-key",
                config:
                    r#"{"consumers": {"alice": "key-of-alice-0001", "bob": "key-of-bob-0002"}}"#
                        .to_owned(),
            },
            Use {
                wasm: env!("GUEST_RATE_LIMIT"),
                name: "rate-limit",
                config: r#"{"requests": 1000000000, "window": "1h", "key": "consumer"}"#.to_owned(),
            },
            Use {
                wasm: env!("GUEST_HEADERS"),
                name: "headers",
                config:
                    r#"{"strip_prefix": "/api", "request": {"set": {"x-forwarded-prefix": "/api"}},
                            "response": {"set": {"x-content-type-options": "nosniff"}}}"#
                        .to_owned(),
            },
        ],
        &with_key,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
