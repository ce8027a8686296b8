//! The `ip-filter` plugin end to end: its real `.wasm` in a real gateway in front of a real upstream.

use weir_tests::first_party::{config, get_with, refusal};
use weir_tests::{TestGateway, TestUpstream};

/// A gateway whose one route uses ip-filter with `filter` (a TOML inline table).
fn gateway(up: &TestUpstream, filter: &str) -> TestGateway {
    TestGateway::start(&config(
        up,
        &format!("{{ name = \"ip-filter\", config = {filter} }}"),
    ))
}

#[tokio::test]
async fn an_allowed_client_reaches_the_upstream() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, "{ allow = [\"127.0.0.0/8\", \"::1\"] }");
    let reply = get_with(&gw.url("/hello"), &[]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().target, "/hello");
}

#[tokio::test]
async fn a_client_outside_the_allow_list_gets_403() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, "{ allow = [\"10.0.0.0/8\", \"2001:db8::/32\"] }");
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.text(), r#"{"error":"forbidden"}"#);
    assert_eq!(up.seen().len(), 0, "nothing reached the upstream");
}

#[tokio::test]
async fn deny_wins_over_allow() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        "{ allow = [\"127.0.0.0/8\"], deny = [\"127.0.0.1/32\"] }",
    );
    assert_eq!(get_with(&gw.url("/"), &[]).await.status, 403);
    let gw = gateway(&up, "{ deny = [\"192.0.2.0/24\"] }");
    assert_eq!(get_with(&gw.url("/"), &[]).await.status, 200);
}

#[test]
fn bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        ("{ allow = [\"10.0.0.0/33\"] }", "`allow[0]`"),
        ("{ deny = [\"1.2.3.4\", \"not-an-ip\"] }", "`deny[1]`"),
        ("{}", "`allow` and `deny` are both empty"),
        ("{ alow = [\"10.0.0.0/8\"] }", "unknown field `alow`"),
    ] {
        let message = refusal(&up, "ip-filter", plugin_config);
        assert!(
            message.contains("plugin `ip-filter` refused its config") && message.contains(expected),
            "{message}"
        );
    }
}

#[tokio::test]
async fn ipv6_clients_are_matched_against_ipv6_blocks() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("skipped: this machine has no IPv6 loopback");
        return;
    }
    let up = TestUpstream::start("up");
    let on_ipv6 = |filter: &str| {
        let text = config(
            &up,
            &format!("{{ name = \"ip-filter\", config = {filter} }}"),
        );
        TestGateway::start(&format!(
            "[server]\nlisten = \"[::1]:0\"\nworkers = 1\nshutdown_grace = \"5s\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n{text}"
        ))
    };
    let allowed = on_ipv6("{ allow = [\"::1/128\"] }");
    assert!(allowed.url("/").starts_with("http://[::1]:"));
    assert_eq!(get_with(&allowed.url("/"), &[]).await.status, 200);
    let v4_only = on_ipv6("{ allow = [\"127.0.0.0/8\"] }");
    assert_eq!(
        get_with(&v4_only.url("/"), &[]).await.status,
        403,
        "::1 is not 127.0.0.1"
    );
    let denied = on_ipv6("{ deny = [\"::/0\"] }");
    assert_eq!(get_with(&denied.url("/"), &[]).await.status, 403);
}
