//! The `api-key` plugin end to end: its real `.wasm` in a real gateway in front of a real upstream.

use weir_tests::first_party::{config, get_with, refusal};
use weir_tests::{TestGateway, TestUpstream, WeirProcess, weir_bin};

const CONSUMERS: &str = "{ name = \"api-key\", config = { query = \"apikey\", \
     consumers = { alice = \"key-alice-0001\", bob = \"key-bob-0002\" } } }";

#[tokio::test]
async fn a_known_key_passes_as_its_consumer_without_the_key() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up, CONSUMERS));
    let reply = get_with(
        &gw.url("/orders"),
        &[("x-api-key", "key-bob-0002"), ("x-consumer", "alice")],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = up.last();
    assert_eq!(
        seen.headers["x-consumer"], "bob",
        "a client cannot choose its consumer"
    );
    assert!(
        !seen.headers.contains_key("x-api-key"),
        "the key stays at the gateway"
    );

    let reply = get_with(&gw.url("/orders?apikey=key-alice-0001&page=2"), &[]).await;
    assert_eq!(reply.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-consumer"], "alice");
    assert_eq!(seen.target, "/orders?page=2");
}

#[tokio::test]
async fn a_missing_or_unknown_key_gets_401_json() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up, CONSUMERS));
    let missing = get_with(&gw.url("/orders"), &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.text(), r#"{"error":"missing API key"}"#);
    assert_eq!(
        missing.header("content-type").as_deref(),
        Some("application/json")
    );
    let unknown = get_with(&gw.url("/orders"), &[("x-api-key", "key-bob-0003")]).await;
    assert_eq!(unknown.status, 401);
    assert_eq!(unknown.text(), r#"{"error":"invalid API key"}"#);
    assert!(up.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn keys_come_from_the_gateways_environment() {
    let up = TestUpstream::start("up");
    let text = weir_tests::gateway::with_test_listeners(&config(
        &up,
        "{ name = \"api-key\", config = { header = \"x-token\", keys_env = \"WEIR_TEST_API_KEYS\" } }",
    ));
    let path = weir_tests::gateway::write_config(&text);
    let weir = WeirProcess::spawn_with_env(
        weir_bin!(),
        &["run", "--config", path.to_str().unwrap()],
        &[("WEIR_TEST_API_KEYS", "carol=env-key-1,dave=env-key-2")],
    );
    let url = format!("http://{}/x", weir.addr);
    let reply = get_with(&url, &[("x-token", "env-key-2")]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().headers["x-consumer"], "dave");
    assert_eq!(
        get_with(&url, &[("x-token", "env-key-3")]).await.status,
        401
    );
}

#[test]
fn an_unset_keys_env_variable_is_a_config_error() {
    let up = TestUpstream::start("up");
    let text = config(
        &up,
        "{ name = \"api-key\", config = { keys_env = \"WEIR_TEST_SURELY_UNSET_3141\" } }",
    );
    let errors = weir_gateway::Config::parse(std::path::Path::new("weir.toml"), &text)
        .expect_err("an unset variable refuses the config")
        .to_string();
    assert!(
        errors.contains("route[0].plugins[0].config.keys_env")
            && errors.contains("environment variable `WEIR_TEST_SURELY_UNSET_3141` is not set"),
        "{errors}"
    );
}

#[test]
fn bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        ("{}", "`consumers` or `keys_env`"),
        ("{ consumers = { a = \"same\", b = \"same\" } }", "same key"),
        (
            "{ consumers = { a = \"k\" }, header = \"x key\" }",
            "`header`",
        ),
        ("{ consumers = { a = 1 } }", "`consumers.a`"),
    ] {
        let message = refusal(&up, "api-key", plugin_config);
        assert!(
            message.contains("plugin `api-key` refused its config") && message.contains(expected),
            "{message}"
        );
    }
}
