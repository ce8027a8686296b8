//! The first-party plugins (`plugins/`) end to end: the real `.wasm` each crate builds,
//! loaded by a real gateway in front of a real upstream.

use std::path::PathBuf;

use weir_tests::{TestGateway, TestUpstream, guest_wasm};

/// A fresh plugins directory holding the first-party plugins under their contract names.
fn plugin_dir() -> PathBuf {
    weir_tests::gateway::plugin_dir(&[(guest_wasm!("request_id"), "request-id")])
}

/// A config with one route `/` to `up` using `plugins`.
fn config(up: &TestUpstream, plugins: &str) -> String {
    let dir = plugin_dir();
    format!(
        "[plugins]\ndir = \"{}/plugins\"\ncache_dir = \"{}/cache\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"r\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/\" }}\nplugins = [{plugins}]\n",
        dir.display(),
        dir.display(),
        up.addr
    )
}

async fn get_with(url: &str, headers: &[(&str, &str)]) -> weir_tests::Reply {
    let mut req = http::Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    weir_tests::send(
        &weir_tests::h1_client(),
        req.body(weir_tests::client::empty()).unwrap(),
    )
    .await
}

fn is_uuid_v7(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.iter().map(|p| p.len()).eq([8, 4, 4, 4, 12])
        && id.chars().all(|c| c == '-' || c.is_ascii_hexdigit())
        && parts[2].starts_with('7')
}

#[tokio::test]
async fn request_id_generates_keeps_and_echoes_ids() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up, "{ name = \"request-id\" }"));

    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 200);
    let sent = up.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_uuid_v7(&sent), "{sent}");
    assert_eq!(reply.header("x-request-id").as_deref(), Some(sent.as_str()));

    let reply = get_with(&gw.url("/"), &[("x-request-id", "client-id-42")]).await;
    assert_eq!(up.last().headers["x-request-id"], "client-id-42");
    assert_eq!(
        reply.header("x-request-id").as_deref(),
        Some("client-id-42")
    );

    let reply = get_with(&gw.url("/"), &[("x-request-id", "not valid, has spaces")]).await;
    let replaced = up.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_uuid_v7(&replaced), "{replaced}");
    assert_ne!(replaced, sent, "every request gets its own id");
    assert_eq!(
        reply.header("x-request-id").as_deref(),
        Some(replaced.as_str())
    );
}

#[tokio::test]
async fn request_id_uses_the_configured_header() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(
        &up,
        "{ name = \"request-id\", config = { header = \"X-Correlation-Id\" } }",
    ));
    let reply = get_with(&gw.url("/"), &[]).await;
    let seen = up.last();
    assert!(!seen.headers.contains_key("x-request-id"));
    let id = seen.headers["x-correlation-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_uuid_v7(&id), "{id}");
    assert_eq!(
        reply.header("x-correlation-id").as_deref(),
        Some(id.as_str())
    );
}

#[test]
fn request_id_bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        ("{ header = \"bad header\" }", "`header`"),
        ("{ heder = \"x-id\" }", "unknown field `heder`"),
    ] {
        let text = weir_tests::gateway::with_test_listeners(&config(
            &up,
            &format!("{{ name = \"request-id\", config = {plugin_config} }}"),
        ));
        let config = weir_gateway::Config::parse(std::path::Path::new("test.toml"), &text)
            .expect("the config itself is valid");
        let message = match weir_gateway::Gateway::start(config) {
            Ok(_) => panic!("the gateway started"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.contains("plugin `request-id` refused its config")
                && message.contains(expected),
            "{message}"
        );
    }
}
