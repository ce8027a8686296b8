//! The `aggregate` plugin end to end: its real `.wasm` in a real gateway, calling real
//! JSON servers through `http-client.call-all`. The route's upstream is never reached:
//! the plugin answers every request itself.

use std::time::Duration;

use serde_json::{Value, json};
use weir_tests::first_party::{config, get_with, refusal};
use weir_tests::{JsonUpstream, TestGateway, TestUpstream, closed_addr};

/// A gateway whose route runs `aggregate` with `parts` (the inside of the TOML array)
/// and `extra` (more plugin config keys), allowed to reach `allowed` hosts.
fn gateway(up: &TestUpstream, allowed: &[&str], parts: &str, extra: &str) -> TestGateway {
    let allowed: Vec<String> = allowed.iter().map(|h| format!("\"{h}\"")).collect();
    TestGateway::start(&config(
        up,
        &format!(
            "{{ name = \"aggregate\", allowed_hosts = [{}], max_outbound_calls = 8, \
               config = {{ parts = [{parts}] {extra} }} }}",
            allowed.join(", ")
        ),
    ))
}

fn body(reply: &weir_tests::Reply) -> Value {
    serde_json::from_slice(&reply.body).unwrap_or_else(|e| panic!("{e}: {}", reply.text()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_merged_and_chosen_headers_forwarded() {
    let up = TestUpstream::start("up");
    let api = JsonUpstream::start();
    let host = api.addr.to_string();
    let gw = gateway(
        &up,
        &[&host],
        &format!(
            "{{ key = \"user\", url = \"{}\", timeout = \"2s\", required = true }}, \
             {{ key = \"orders\", url = \"{}\", required = false }}",
            api.url("/users{path}"),
            api.url("/orders?{query}"),
        ),
        ", forward_headers = [\"authorization\", \"x-tenant\"]",
    );
    let reply = get_with(
        &gw.url("/7?limit=2"),
        &[
            ("authorization", "Bearer abc"),
            ("x-tenant", "acme"),
            ("cookie", "session=secret"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(reply.header("x-aggregate-missing"), None);
    assert_eq!(
        reply.text(),
        r#"{"user":{"path":"/users/7"},"orders":{"path":"/orders?limit=2"}}"#,
        "keys in config order"
    );
    let seen = api.seen();
    assert_eq!(seen.len(), 2);
    for part in &seen {
        assert_eq!(part.headers["authorization"], "Bearer abc");
        assert_eq!(part.headers["x-tenant"], "acme");
        assert!(!part.headers.contains_key("cookie"), "not forwarded");
    }
    assert_eq!(up.served(), 0, "the route's upstream is never called");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_are_in_flight_at_once() {
    // Each `/together/3` request is held until all three arrived: sent one after the
    // other, the first would wait in vain and hit its timeout (well before the
    // server's own wait ends), and the answer would be a 502.
    let up = TestUpstream::start("up");
    let api = JsonUpstream::start();
    let host = api.addr.to_string();
    let part = |key: &str| {
        format!(
            "{{ key = \"{key}\", url = \"{}\", timeout = \"3s\" }}",
            api.url("/together/3")
        )
    };
    let gw = gateway(
        &up,
        &[&host],
        &[part("a"), part("b"), part("c")].join(", "),
        "",
    );
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let together = json!({ "together": 3 });
    assert_eq!(
        body(&reply),
        json!({ "a": together, "b": together, "c": together })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_part_past_its_timeout_is_null_if_optional_and_a_502_if_required() {
    let up = TestUpstream::start("up");
    let api = JsonUpstream::start();
    let host = api.addr.to_string();
    let parts = |required: bool| {
        format!(
            "{{ key = \"fast\", url = \"{}\" }}, \
             {{ key = \"slow\", url = \"{}\", timeout = \"200ms\", required = {required} }}",
            api.url("/fast"),
            api.url("/slow/3000"),
        )
    };
    let gw = gateway(&up, &[&host], &parts(false), "");
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        body(&reply),
        json!({ "fast": { "path": "/fast" }, "slow": null })
    );
    assert_eq!(reply.header("x-aggregate-missing").as_deref(), Some("slow"));

    let gw = gateway(&up, &[&host], &parts(true), "");
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        body(&reply),
        json!({ "error": "bad gateway", "failed": [{ "key": "slow", "reason": "timeout" }] })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_required_parts_are_named_with_why() {
    let up = TestUpstream::start("up");
    let api = JsonUpstream::start();
    let host = api.addr.to_string();
    let refused = closed_addr();
    let gw = gateway(
        &up,
        &[&host, &refused],
        &format!(
            "{{ key = \"ok\", url = \"{}\" }}, \
             {{ key = \"error\", url = \"{}\" }}, \
             {{ key = \"down\", url = \"http://{refused}/x\" }}, \
             {{ key = \"html\", url = \"{}\" }}, \
             {{ key = \"extra\", url = \"{}\", required = false }}",
            api.url("/ok"),
            api.url("/status/500"),
            api.url("/text"),
            api.url("/status/503"),
        ),
        "",
    );
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        body(&reply),
        json!({ "error": "bad gateway", "failed": [
            { "key": "error", "reason": "status 500" },
            { "key": "down", "reason": "unreachable" },
            { "key": "html", "reason": "not json" },
        ] }),
        "required parts only, in config order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_on_a_host_not_allowed_fails_alone() {
    let up = TestUpstream::start("up");
    let api = JsonUpstream::start();
    let other = JsonUpstream::start();
    let host = api.addr.to_string();
    let parts = |required: bool| {
        format!(
            "{{ key = \"mine\", url = \"{}\" }}, \
             {{ key = \"theirs\", url = \"{}\", required = {required} }}",
            api.url("/mine"),
            other.url("/theirs"),
        )
    };
    let gw = gateway(&up, &[&host], &parts(false), "");
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        body(&reply),
        json!({ "mine": { "path": "/mine" }, "theirs": null })
    );

    let gw = gateway(&up, &[&host], &parts(true), "");
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert_eq!(
        body(&reply)["failed"],
        json!([{ "key": "theirs", "reason": "host not allowed" }])
    );
    assert_eq!(api.seen().len(), 2, "the allowed part went both times");
    assert!(
        other.seen().is_empty(),
        "the refused part never left the gateway"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_past_max_outbound_calls_fail_in_list_order() {
    let up = TestUpstream::start("up");
    let api = JsonUpstream::start();
    let host = api.addr.to_string();
    let gw = TestGateway::start(&config(
        &up,
        &format!(
            "{{ name = \"aggregate\", allowed_hosts = [\"{host}\"], max_outbound_calls = 2, \
               config = {{ parts = [{{ key = \"a\", url = \"{}\" }}, {{ key = \"b\", url = \"{}\" }}, \
               {{ key = \"c\", url = \"{}\", required = false }}] }} }}",
            api.url("/a"),
            api.url("/b"),
            api.url("/c"),
        ),
    ));
    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        body(&reply),
        json!({ "a": { "path": "/a" }, "b": { "path": "/b" }, "c": null })
    );
    let targets: Vec<String> = api.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets.len(), 2);
    assert!(!targets.contains(&"/c".to_owned()), "{targets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_ends_the_parts_calls() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A service that reads each request and never answers, and counts the
    // connections the gateway closes on it.
    let service = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service_addr = service.local_addr().unwrap().to_string();
    let (arrived_tx, arrived) = tokio::sync::watch::channel(0usize);
    let (closed_tx, closed) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = service.accept().await {
            let (arrived_tx, closed_tx) = (arrived_tx.clone(), closed_tx.clone());
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut counted = false;
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) if !counted => {
                            counted = true;
                            arrived_tx.send_modify(|n| *n += 1);
                        }
                        Ok(_) => {}
                    }
                }
                closed_tx.send_modify(|n| *n += 1);
            });
        }
    });
    let up = TestUpstream::start("up");
    // Part timeouts far longer than the test waits: only the client leaving can end
    // the calls in time.
    let gw = gateway(
        &up,
        &[&service_addr],
        &format!(
            "{{ key = \"a\", url = \"http://{service_addr}/a\", timeout = \"30s\" }}, \
             {{ key = \"b\", url = \"http://{service_addr}/b\", timeout = \"30s\" }}"
        ),
        "",
    );
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut arrived = arrived.clone();
    tokio::time::timeout(Duration::from_secs(5), arrived.wait_for(|n| *n == 2))
        .await
        .expect("both parts reached the service")
        .unwrap();
    assert_eq!(*closed.borrow(), 0);
    drop(client);
    let mut closed = closed.clone();
    tokio::time::timeout(Duration::from_secs(5), closed.wait_for(|n| *n == 2))
        .await
        .expect("the gateway closed both part connections once the client left")
        .unwrap();
}

#[test]
fn bad_config_is_refused_naming_the_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        ("{ parts = [] }", "`parts` is empty"),
        (
            "{ parts = [{ key = \"a\", url = \"http://x/\", timeout = \"soon\" }] }",
            "`parts[0]`: `timeout`",
        ),
        (
            "{ parts = [{ key = \"a\", url = \"http://x/\" }], forward_headers = [\"host\"] }",
            "`forward_headers[0]`",
        ),
    ] {
        let message = refusal(&up, "aggregate", plugin_config);
        assert!(
            message.contains("plugin `aggregate` refused its config") && message.contains(expected),
            "{plugin_config}: {message}"
        );
    }
}
