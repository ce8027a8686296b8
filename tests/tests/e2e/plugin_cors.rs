//! The `cors` plugin end to end: its real `.wasm` in a real gateway in front of a real upstream.

use weir_tests::first_party::{config, get_with, refusal, request};
use weir_tests::{TestGateway, TestUpstream};

const CONFIG: &str = "{ name = \"cors\", config = { allow_origins = [\"https://app.example\"], \
     allow_headers = [\"x-token\", \"content-type\"], expose_headers = [\"x-total\"], \
     max_age = 600, allow_credentials = true } }";

#[tokio::test]
async fn a_preflight_is_answered_locally_with_204() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up, CONFIG));
    let reply = request(
        "OPTIONS",
        &gw.url("/api/items"),
        &[
            ("origin", "https://app.example"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-token"),
        ],
    )
    .await;
    assert_eq!(reply.status, 204);
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        reply.header("access-control-allow-headers").as_deref(),
        Some("x-token, content-type")
    );
    assert!(
        reply
            .header("access-control-allow-methods")
            .unwrap()
            .contains("PUT")
    );
    assert_eq!(
        reply.header("access-control-max-age").as_deref(),
        Some("600")
    );
    assert_eq!(
        reply.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert!(
        up.seen().is_empty(),
        "the preflight never reached the upstream"
    );
}

#[tokio::test]
async fn an_actual_request_gets_the_cors_response_headers() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up, CONFIG));
    let reply = get_with(&gw.url("/api/items"), &[("origin", "https://app.example")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("access-control-allow-origin").as_deref(),
        Some("https://app.example")
    );
    assert_eq!(
        reply.header("access-control-expose-headers").as_deref(),
        Some("x-total")
    );
    assert_eq!(reply.header("vary").as_deref(), Some("origin"));
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn a_disallowed_origin_gets_no_cors_headers() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up, CONFIG));
    let preflight = request(
        "OPTIONS",
        &gw.url("/api/items"),
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "DELETE"),
        ],
    )
    .await;
    let actual = get_with(&gw.url("/api/items"), &[("origin", "https://evil.example")]).await;
    for reply in [preflight, actual] {
        let cors: Vec<_> = reply
            .headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .collect();
        assert!(cors.is_empty(), "{cors:?}");
    }
}

#[test]
fn bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        ("{ allow_origins = [] }", "`allow_origins`"),
        (
            "{ allow_origins = [\"app.example\"] }",
            "`allow_origins[0]`",
        ),
        (
            "{ allow_origins = [\"*\"], allow_methods = [\"GET\", \"NOT A METHOD\"] }",
            "`allow_methods[1]`",
        ),
        ("{ allow_origins = [\"*\"], max_age = -1 }", "max_age"),
        ("{ allow_origin = [\"*\"] }", "unknown field `allow_origin`"),
    ] {
        let message = refusal(&up, "cors", plugin_config);
        assert!(
            message.contains("plugin `cors` refused its config") && message.contains(expected),
            "{message}"
        );
    }
}
