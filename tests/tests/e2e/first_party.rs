//! The first-party plugins (`plugins/`) end to end: the real `.wasm` each crate builds,
//! loaded by a real gateway in front of a real upstream.

use weir_tests::first_party::{config, get_with, refusal};
use weir_tests::{TestGateway, TestUpstream, WeirProcess, closed_addr, weir_bin};

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

    // A client that is no trusted proxy cannot choose its id (strip_client_headers).
    let reply = get_with(&gw.url("/"), &[("x-request-id", "client-id-42")]).await;
    let chosen = up.last().headers["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(is_uuid_v7(&chosen), "{chosen}");
    assert_eq!(
        reply.header("x-request-id").as_deref(),
        Some(chosen.as_str())
    );
    // A trusted proxy's valid id is kept.
    let trusting = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n{}",
        config(&up, "{ name = \"request-id\" }")
    ));
    let reply = get_with(&trusting.url("/"), &[("x-request-id", "client-id-42")]).await;
    assert_eq!(up.last().headers["x-request-id"], "client-id-42");
    assert_eq!(
        reply.header("x-request-id").as_deref(),
        Some("client-id-42")
    );

    let reply = get_with(
        &trusting.url("/"),
        &[("x-request-id", "not valid, has spaces")],
    )
    .await;
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
async fn the_gateways_own_502_carries_the_request_id_and_rate_limit_headers() {
    let up = TestUpstream::start("up");
    let plugins = "{ name = \"request-id\" }, \
                   { name = \"rate-limit\", config = { requests = 5, window = \"1m\" } }";
    let text = config(&up, plugins).replace(&up.addr.to_string(), &closed_addr());
    // Trusted, so that the client's own id is kept.
    let gw = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.1\"]\n{text}"
    ));

    let reply = get_with(&gw.url("/"), &[("x-request-id", "client-id-7")]).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("upstream connection failed"));
    assert_eq!(reply.header("x-request-id").as_deref(), Some("client-id-7"));
    assert_eq!(reply.header("ratelimit-remaining").as_deref(), Some("4"));

    let reply = get_with(&gw.url("/"), &[]).await;
    assert_eq!(reply.status, 502);
    let id = reply.header("x-request-id").unwrap();
    assert!(is_uuid_v7(&id), "{id}");
    assert_eq!(reply.header("ratelimit-remaining").as_deref(), Some("3"));
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

/// Every request gets its own id, whether instances are reused (worker isolation) or
/// every request starts a fresh one from the same pre-initialised snapshot (request
/// isolation): nothing random may be captured in the snapshot. The random part alone
/// (the last 64 bits, the variant's two among them) never repeats either: the time part
/// would tell two ids apart even if every fresh instance drew the same random bits.
#[tokio::test]
async fn request_ids_are_unique_under_both_isolations() {
    let up = TestUpstream::start("up");
    for isolation in ["worker", "request"] {
        let gw = TestGateway::start(&config(
            &up,
            &format!("{{ name = \"request-id\", isolation = \"{isolation}\" }}"),
        ));
        let mut ids = std::collections::HashSet::new();
        let mut random_parts = std::collections::HashSet::new();
        for _ in 0..40 {
            let reply = get_with(&gw.url("/"), &[]).await;
            assert_eq!(reply.status, 200);
            let id = reply.header("x-request-id").unwrap();
            assert!(is_uuid_v7(&id), "{id}");
            assert!(ids.insert(id.clone()), "{isolation}: {id} came twice");
            let random = id[19..].to_owned();
            assert!(
                random_parts.insert(random.clone()),
                "{isolation}: the random part {random} came twice"
            );
        }
    }
}

#[test]
fn request_id_bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        ("{ header = \"bad header\" }", "`header`"),
        ("{ heder = \"x-id\" }", "unknown field `heder`"),
    ] {
        let message = refusal(&up, "request-id", plugin_config);
        assert!(
            message.contains("plugin `request-id` refused its config")
                && message.contains(expected),
            "{message}"
        );
    }
}

/// `WEIR_PERF_MAP=1` (bench/README.md, "Profiling") has the plugin engine write
/// `/tmp/perf-PID.map`, so that `perf report` names plugin code; without it, no file.
#[tokio::test]
async fn weir_perf_map_names_plugin_code_for_perf() {
    let up = TestUpstream::start("up");
    let text = weir_tests::gateway::with_test_listeners(&config(&up, "{ name = \"request-id\" }"));
    let path = weir_tests::gateway::write_config(&text);
    let args = ["run", "--config", path.to_str().unwrap()];
    for (env, wanted) in [("0", false), ("1", true)] {
        let weir = WeirProcess::spawn_with_env(weir_bin!(), &args, &[("WEIR_PERF_MAP", env)]);
        let reply = get_with(&format!("http://{}/", weir.addr), &[]).await;
        assert_eq!(reply.status, 200);
        let map = std::path::PathBuf::from(format!("/tmp/perf-{}.map", weir.pid()));
        let written = std::fs::read_to_string(&map).ok();
        let _ = std::fs::remove_file(&map);
        match written {
            Some(lines) => {
                assert!(wanted, "WEIR_PERF_MAP={env} wrote {}", map.display());
                assert!(
                    lines.lines().any(|l| l.contains("wasm[")),
                    "the map names plugin functions:\n{}",
                    lines.lines().take(5).collect::<Vec<_>>().join("\n")
                );
            }
            None => assert!(!wanted, "WEIR_PERF_MAP={env} wrote no {}", map.display()),
        }
    }
}
