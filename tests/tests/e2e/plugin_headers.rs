//! The `headers` plugin end to end: its real `.wasm` in a real gateway in front of a real upstream.

use weir_tests::first_party::{config, get_with, refusal};
use weir_tests::{TestGateway, TestUpstream};

#[tokio::test]
async fn headers_and_prefixes_are_transformed_both_ways() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(
        &up,
        "{ name = \"headers\", config = { strip_prefix = \"/api\", add_prefix = \"/v2\", \
           request = { set = { x-env = \"prod\" }, add = { x-tag = \"gw\" }, remove = [\"x-debug\"] }, \
           response = { set = { x-frame-options = \"DENY\" }, remove = [\"x-upstream\"] } } }",
    ));
    let reply = get_with(
        &gw.url("/api/users/7?expand=1"),
        &[("x-env", "dev"), ("x-tag", "client"), ("x-debug", "1")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = up.last();
    assert_eq!(seen.target, "/v2/users/7?expand=1");
    assert_eq!(seen.headers["x-env"], "prod");
    let tags: Vec<_> = seen.headers.get_all("x-tag").iter().collect();
    assert_eq!(tags, ["client", "gw"]);
    assert!(!seen.headers.contains_key("x-debug"));
    assert_eq!(reply.header("x-frame-options").as_deref(), Some("DENY"));
    assert_eq!(reply.header("x-upstream"), None);
}

#[tokio::test]
async fn header_edits_cost_no_call_and_path_transforms_one() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(
        &up,
        "{ name = \"headers\", config = { request = { set = { x-env = \"prod\" } } } }, \
         { name = \"headers\", config = { response = { set = { x-frame-options = \"DENY\" } } } }, \
         { name = \"headers\", config = { add_prefix = \"/v1\" } }",
    ));
    for _ in 0..3 {
        let reply = get_with(&gw.url("/users"), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(up.last().headers["x-env"], "prod");
        assert_eq!(up.last().target, "/v1/users");
        assert_eq!(reply.header("x-frame-options").as_deref(), Some("DENY"));
    }
    // Header edits are declared once and made by the gateway: those entries have no
    // phase; only the path transform is called, once per request.
    let routes = gw.admin_json("/admin/routes").await;
    let plugins = &routes["routes"][0]["plugins"];
    assert_eq!(plugins[0]["phases"], serde_json::json!([]));
    assert_eq!(plugins[1]["phases"], serde_json::json!([]));
    assert_eq!(plugins[2]["phases"], serde_json::json!(["request-headers"]));
    let calls = gw.snapshot().chains[0][0]
        .plugin
        .stats
        .calls
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(calls, 3);
}

#[tokio::test]
async fn the_regex_rewrite_applies_with_capture_groups() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(
        &up,
        "{ name = \"headers\", config = { rewrite = { pattern = \"^/u/([0-9]+)$\", replacement = \"/users/$1/profile\" } } }",
    ));
    get_with(&gw.url("/u/42?x=1"), &[]).await;
    assert_eq!(up.last().target, "/users/42/profile?x=1");
    get_with(&gw.url("/u/abc"), &[]).await;
    assert_eq!(up.last().target, "/u/abc", "no match, no rewrite");
}

#[test]
fn bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        (
            "{ rewrite = { pattern = \"([a-z\", replacement = \"/\" } }",
            "`rewrite.pattern`",
        ),
        (
            "{ request = { set = { \"bad name\" = \"x\" } } }",
            "`request.set`",
        ),
        ("{ strip_prefix = \"api\" }", "`strip_prefix`"),
        (
            "{ rewrite = { pattern = \"^/\" } }",
            "missing field `replacement`",
        ),
        ("{ requests = {} }", "unknown field `requests`"),
    ] {
        let message = refusal(&up, "headers", plugin_config);
        assert!(
            message.contains("plugin `headers` refused its config") && message.contains(expected),
            "{message}"
        );
    }
}
