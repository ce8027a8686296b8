//! The runnable configs under `examples/` that use the first-party plugins, run as
//! written except for their addresses: listeners on port 0, the upstream a test one,
//! the plugins directory the tests' build.

use std::path::Path;

use weir_tests::first_party::{get_with, plugin_dir, request};
use weir_tests::{TestGateway, TestUpstream};

/// Starts `examples/NAME/weir.toml` in front of `up`.
fn start_example(name: &str, up: &TestUpstream) -> TestGateway {
    start_example_at(name, &up.addr.to_string())
}

/// Starts `examples/NAME/weir.toml` with `upstream` (a `host:port`) where the example
/// expects its service (127.0.0.1:9000).
fn start_example_at(name: &str, upstream: &str) -> TestGateway {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name)
        .join("weir.toml");
    let text = std::fs::read_to_string(&path).expect("the example exists");
    let dir = plugin_dir();
    let text = text
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace("127.0.0.1:9000", upstream)
        .replace(
            "dir = \"target/weir-plugins\"",
            &format!(
                "dir = \"{}/plugins\"\ncache_dir = \"{}\"",
                dir.display(),
                weir_tests::gateway::compile_cache().display()
            ),
        );
    assert!(text.contains(upstream), "{name}: upstream not replaced");
    TestGateway::start(&text)
}

#[tokio::test]
async fn the_api_example_authenticates_limits_and_rewrites() {
    let up = TestUpstream::start("app");
    let gw = start_example("api", &up);

    let refused = get_with(&gw.url("/api/orders"), &[]).await;
    assert_eq!(refused.status, 401, "{}", refused.text());
    assert!(refused.header("x-request-id").is_some(), "{refused:?}");
    assert!(up.seen().is_empty());

    let alice = get_with(
        &gw.url("/api/orders?page=2"),
        &[("x-api-key", "alice-key-change-me")],
    )
    .await;
    assert_eq!(alice.status, 200, "{}", alice.text());
    let seen = up.last();
    assert_eq!(seen.target, "/orders?page=2");
    assert_eq!(seen.headers["x-consumer"], "alice");
    assert_eq!(seen.headers["x-forwarded-prefix"], "/api");
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(!seen.headers.contains_key("x-api-key"));
    assert_eq!(
        alice.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert_eq!(alice.header("ratelimit-limit").as_deref(), Some("10"));

    // Bob has his own budget of 10 per minute.
    let mut statuses = Vec::new();
    for _ in 0..12 {
        let reply = get_with(
            &gw.url("/api/orders"),
            &[("x-api-key", "bob-key-change-me")],
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    assert_eq!(statuses[..10], [200; 10], "{statuses:?}");
    assert_eq!(statuses[10..], [429, 429], "{statuses:?}");
}

#[tokio::test]
async fn the_cors_example_answers_preflights() {
    let up = TestUpstream::start("app");
    let gw = start_example("cors", &up);
    let reply = request(
        "OPTIONS",
        &gw.url("/api/items"),
        &[
            ("origin", "http://localhost:3000"),
            ("access-control-request-method", "PUT"),
        ],
    )
    .await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    assert!(up.seen().is_empty());
}

/// `examples/file-discovery`: its config with the endpoints file moved to a temporary
/// copy, fed by the example's own `set-endpoints.sh`.
#[tokio::test]
async fn the_file_discovery_example_follows_its_file() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/file-discovery");
    let shipped = example.join("upstreams/users.json");
    let text = std::fs::read_to_string(example.join("weir.toml")).expect("the example exists");
    assert!(text.contains("endpoints_file = \"examples/file-discovery/upstreams/users.json\""));
    // The shipped list loads as the example names it.
    let as_shipped = text.replace(
        "examples/file-discovery/upstreams/users.json",
        &shipped.display().to_string(),
    );
    weir_gateway::Config::parse(&example.join("weir.toml"), &as_shipped)
        .expect("the example loads");

    let (one, two) = (TestUpstream::start("one"), TestUpstream::start("two"));
    let file = weir_tests::gateway::fresh_dir().join("users.json");
    std::fs::write(&file, format!("[\"{}\"]", one.addr)).expect("endpoints file");
    let text = text
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9901", "127.0.0.1:0")
        .replace(
            "examples/file-discovery/upstreams/users.json",
            &file.display().to_string(),
        );
    let gw = TestGateway::start(&text);
    let reply = weir_tests::get(&gw.url("/")).await;
    assert_eq!(reply.header("x-upstream").as_deref(), Some("one"));

    let script = std::process::Command::new(example.join("set-endpoints.sh"))
        .arg(format!("{}=3", two.addr))
        .env("ENDPOINTS_FILE", &file)
        .output()
        .expect("run set-endpoints.sh");
    assert!(script.status.success(), "{script:?}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("written"),
        format!("[{{\"address\": \"{}\", \"weight\": 3}}]\n", two.addr)
    );
    weir_tests::poll::until(
        std::time::Duration::from_secs(15),
        "the new endpoint serves",
        || async {
            weir_tests::get(&gw.url("/"))
                .await
                .header("x-upstream")
                .as_deref()
                == Some("two")
        },
    )
    .await;
}

/// `examples/caching`: a page is a miss, then a hit the upstream never sees, and a
/// purge by the route's prefix makes it a miss again.
#[tokio::test]
async fn the_caching_example_serves_hits_and_purges() {
    let up = TestUpstream::start("site");
    let gw = start_example("caching", &up);
    let first = get_with(&gw.url("/index.html"), &[("accept-language", "en")]).await;
    assert_eq!(first.header("x-cache").as_deref(), Some("MISS"));
    let second = get_with(&gw.url("/index.html"), &[("accept-language", "en")]).await;
    assert_eq!(second.header("x-cache").as_deref(), Some("HIT"));
    assert!(second.header("age").is_some());
    assert_eq!(second.text(), first.text());
    assert_eq!(up.served(), 1);
    let other = get_with(&gw.url("/index.html"), &[("accept-language", "fr")]).await;
    assert_eq!(
        other.header("x-cache").as_deref(),
        Some("MISS"),
        "one entry per language"
    );
    let assets = get_with(&gw.url("/assets/app.js"), &[]).await;
    assert_eq!(assets.header("x-cache").as_deref(), Some("MISS"));
    let purged = request(
        "POST",
        &gw.admin_url("/admin/cache/purge?prefix=pages%3A"),
        &[],
    )
    .await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(
        purged.text().replace(char::is_whitespace, ""),
        "{\"purged\":2}"
    );
    let again = get_with(&gw.url("/index.html"), &[("accept-language", "en")]).await;
    assert_eq!(again.header("x-cache").as_deref(), Some("MISS"));
    let asset = get_with(&gw.url("/assets/app.js"), &[]).await;
    assert_eq!(
        asset.header("x-cache").as_deref(),
        Some("HIT"),
        "another route's entry stays"
    );
}

/// `examples/aggregate`: `/dashboard` is one JSON object from three parts of a JSON
/// service (the example's file server), the client's `authorization` forwarded to each;
/// with the service gone, the required part fails the answer, naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aggregate_example_merges_its_parts() {
    let services = weir_tests::JsonUpstream::start();
    let gw = start_example_at("aggregate", &services.addr.to_string());
    let reply = get_with(&gw.url("/dashboard"), &[("authorization", "Bearer demo")]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body: serde_json::Value = serde_json::from_slice(&reply.body).expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({
            "user": { "path": "/user.json" },
            "orders": { "path": "/orders.json" },
            "reviews": { "path": "/reviews.json" },
        })
    );
    let seen = services.seen();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.headers["authorization"] == "Bearer demo")
    );
    drop(services);
    let reply = get_with(&gw.url("/dashboard"), &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&reply.body).expect("JSON")["failed"],
        serde_json::json!([{ "key": "user", "reason": "unreachable" }])
    );
}
