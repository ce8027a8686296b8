//! Plugins end to end: a real `.wasm` (tests/guests/probe, built by build.rs) loaded by
//! a real gateway, driven over real sockets, in front of a real upstream.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use weir_gateway::Config;
use weir_gateway::plugin::FailureKind;
use weir_tests::gateway::with_test_listeners;
use weir_tests::{TestGateway, TestUpstream, closed_addr, get, guest_wasm};

/// A fresh directory holding `plugins/probe.wasm` and `plugins/probe-local.wasm` (and
/// room for a compile cache).
fn plugin_dir() -> PathBuf {
    weir_tests::gateway::plugin_dir(&[
        (guest_wasm!("probe"), "probe"),
        (guest_wasm!("probe_local"), "probe-local"),
    ])
}

/// The probe as a plugin called on a fiber (it imports `http-call`), and the same
/// source called directly (`probe-local` imports nothing that can wait).
const PROBES: [&str; 2] = ["probe", "probe-local"];

/// The config of `routes` to `up` with the plugins in `dir`, compiled through the
/// tests' shared cache.
fn config(dir: &Path, up: &TestUpstream, routes: &str) -> String {
    config_cached_in(dir, weir_tests::gateway::compile_cache(), up, routes)
}

/// [`config`] with its own compile cache, for the tests of the cache.
fn config_cached_in(dir: &Path, cache: &Path, up: &TestUpstream, routes: &str) -> String {
    format!(
        "[plugins]\ndir = \"{}/plugins\"\ncache_dir = \"{}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n{routes}",
        dir.display(),
        cache.display(),
        up.addr
    )
}

fn gateway(up: &TestUpstream, routes: &str) -> TestGateway {
    TestGateway::start(&config(&plugin_dir(), up, routes))
}

fn route(name: &str, prefix: &str, plugins: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"{prefix}\" }}\nplugins = [{plugins}]\n"
    )
}

#[tokio::test]
async fn allowed_requests_pass_through_the_plugin() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route("r", "/", "{ name = \"probe\", config = { tag = \"a\" } }"),
    );
    let reply = get(&gw.url("/hello")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "/hello");
    assert_eq!(up.last().headers["x-chain"], "a");
    assert_eq!(reply.header("x-chain-response").as_deref(), Some("a"));
}

#[tokio::test]
async fn a_plugin_can_deny_with_a_local_response() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route(
            "r",
            "/",
            "{ name = \"probe\", config = { mode = \"deny\", tag = \"gate\" } }",
        ),
    );
    let reply = get(&gw.url("/secret")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-denied-by").as_deref(), Some("gate"));
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(reply.text(), r#"{"error":"denied","tag":"gate"}"#);
    assert!(up.seen().is_empty(), "the upstream must not be called");
}

#[tokio::test]
async fn plugins_edit_headers_both_ways_and_the_path() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route(
            "r",
            "/",
            "{ name = \"probe\", config = { mode = \"edit\", path = \"/rewritten?x=1\" } }",
        ),
    );
    let client = weir_tests::h1_client();
    let req = http::Request::get(gw.url("/original"))
        .header("x-remove-me", "1")
        .header("x-keep", "2")
        .body(weir_tests::client::empty())
        .unwrap();
    let reply = weir_tests::send(&client, req).await;
    assert_eq!(reply.status, 200);
    let seen = up.last();
    assert_eq!(seen.target, "/rewritten?x=1");
    assert_eq!(seen.headers["x-added"], "yes");
    assert_eq!(
        seen.headers["x-read-back"], "yes",
        "a read sees the edits before it"
    );
    assert_eq!(seen.headers["x-keep"], "2");
    assert!(!seen.headers.contains_key("x-remove-me"));
    assert_eq!(reply.header("x-resp-added").as_deref(), Some("yes"));
    assert!(
        reply.header("x-upstream").is_none(),
        "the response phase removed it"
    );
    assert!(
        !seen.headers.contains_key("x-bad-value"),
        "invalid edits are refused"
    );
    // Response phases see the request as the request phases left it.
    assert_eq!(
        reply.header("x-seen-path").as_deref(),
        Some("/rewritten?x=1")
    );
    assert_eq!(reply.header("x-seen-added").as_deref(), Some("yes"));
}

/// A request phase in one crossing (WIT 0.1.8): the headers the plugin reads come with
/// the call, as the earlier plugins left them; reads see the phase's own edits; the
/// edits are made when the call returns, and one the SDK refused is an error at once,
/// logged and counted by the gateway as if the gateway had refused it.
#[tokio::test]
async fn a_request_phase_gets_the_headers_it_reads_with_the_call() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route(
            "r",
            "/",
            "{ name = \"probe\", config = { mode = \"edit\" } }, \
             { name = \"probe\", config = { mode = \"reads\" } }",
        ),
    );
    let client = weir_tests::h1_client();
    let req = http::Request::get(gw.url("/"))
        .header("x-multi", "a")
        .header("x-read", "r")
        .header("x-multi", "b")
        .header("x-other", "o")
        .body(weir_tests::client::empty())
        .unwrap();
    let reply = weir_tests::send(&client, req).await;
    assert_eq!(reply.status, 200);
    let seen = up.last();
    // Before its edits: the two sent, one asked for, the first plugin's edit. After:
    // each as edited, and all of the request's fields with the edits made (the
    // client's and the gateway's, less `x-other`, plus the first plugin's three).
    let reads = seen.headers["x-reads"].to_str().unwrap().to_owned();
    let (before, after) = reads.split_once(" / ").unwrap();
    assert_eq!(before, "r|a,b|o|yes");
    let after: Vec<&str> = after.split('|').collect();
    assert_eq!(after[..3], ["changed", "a,b,c", "-"]);
    assert!(after[3].parse::<usize>().unwrap() >= 7, "{reads}");
    assert_eq!(seen.headers["x-read"], "changed");
    let multi: Vec<&str> = seen
        .headers
        .get_all("x-multi")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(multi, ["a", "b", "c"]);
    assert!(!seen.headers.contains_key("x-other"));
    assert!(!seen.headers.contains_key("x-bad"));
    assert_eq!(seen.headers["x-received"], "recent");
    assert_eq!(reply.header("x-reads-refused").as_deref(), Some("true"));
    // Three refusals: the `edit` probe's two and the `x-bad` above, each counted.
    let refused = gw
        .metric("weir_plugin_refusals_total{plugin=\"probe\",reason=\"edit\"}")
        .await;
    assert_eq!(refused, 3.0);
}

#[tokio::test]
async fn request_phases_run_in_order_and_response_phases_in_reverse() {
    let up = TestUpstream::start("up");
    let chain = "{ name = \"probe\", config = { tag = \"a\" } }, { name = \"probe\", config = { tag = \"b\" } }, { name = \"probe\", config = { tag = \"c\" } }";
    let gw = gateway(&up, &route("r", "/", chain));
    let reply = get(&gw.url("/")).await;
    assert_eq!(up.last().headers["x-chain"], "a,b,c");
    assert_eq!(reply.header("x-chain-response").as_deref(), Some("c,b,a"));
}

#[tokio::test]
async fn a_local_response_runs_the_response_phases_of_earlier_plugins_only() {
    let up = TestUpstream::start("up");
    let chain = "{ name = \"probe\", config = { tag = \"a\" } }, { name = \"probe\", config = { mode = \"deny\", tag = \"d\" } }, { name = \"probe\", config = { tag = \"c\" } }";
    let gw = gateway(&up, &route("r", "/", chain));
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-chain-response").as_deref(), Some("a"));
    assert!(up.seen().is_empty());
}

fn values(reply: &weir_tests::Reply, name: &str) -> Vec<String> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn response_edits_queued_by_request_phases_apply_in_the_response_phases_place() {
    let up = TestUpstream::start("up");
    let chain = "{ name = \"probe\", config = { mode = \"queue\", tag = \"a\" } }, { name = \"probe\", config = { mode = \"queue\", tag = \"b\" } }";
    let gw = gateway(&up, &route("r", "/", chain));
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
    // Reverse chain order: b's edits, b's response phase, a's edits, a's response phase.
    assert_eq!(values(&reply, "x-queued"), ["b", "a"]);
    assert_eq!(values(&reply, "x-queued-set"), ["a"]);
    assert_eq!(
        values(&reply, "x-queued-default"),
        ["b"],
        "the first applied stays"
    );
    assert_eq!(reply.header("x-seen-queued-b").as_deref(), Some("b"));
    assert_eq!(reply.header("x-seen-queued-a").as_deref(), Some("a"));
    assert!(reply.header("x-upstream").is_none(), "queued removal");
    assert!(
        !up.last().headers.contains_key("x-queued"),
        "queued edits are for the response only"
    );
}

#[tokio::test]
async fn queued_edits_reach_a_later_plugins_local_response_but_not_the_answering_plugins() {
    let up = TestUpstream::start("up");
    let chain = "{ name = \"probe\", config = { mode = \"queue\", tag = \"a\" } }, { name = \"probe-local\", config = { mode = \"queue-deny\", tag = \"d\" } }";
    let gw = gateway(&up, &route("r", "/", chain));
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-denied-by").as_deref(), Some("d"));
    assert_eq!(values(&reply, "x-queued"), ["a"]);
    assert_eq!(values(&reply, "x-queued-set"), ["a"]);
    assert!(up.seen().is_empty());
}

#[tokio::test]
async fn declared_edits_are_made_at_the_plugins_place_without_a_call() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    std::fs::copy(guest_wasm!("headers"), dir.join("plugins/headers.wasm")).unwrap();
    let headers = "{ name = \"headers\", config = { request = { set = { x-chain = \"h\" } }, response = { set = { x-chain-response = \"h\" } } } }";
    let chain = format!(
        "{{ name = \"probe\", config = {{ tag = \"a\" }} }}, {headers}, {{ name = \"probe\", config = {{ tag = \"c\" }} }}"
    );
    let denied_after =
        format!("{headers}, {{ name = \"probe\", config = {{ mode = \"deny\", tag = \"d\" }} }}");
    let denied_before =
        format!("{{ name = \"probe\", config = {{ mode = \"deny\", tag = \"d\" }} }}, {headers}");
    let routes = route("chain", "/chain", &chain)
        + &route("after", "/after", &denied_after)
        + &route("before", "/before", &denied_before);
    let gw = TestGateway::start(&config(&dir, &up, &routes));

    let reply = get(&gw.url("/chain")).await;
    assert_eq!(reply.status, 200);
    // In chain order: a, then the declared set replaces it, then c appends.
    assert_eq!(up.last().headers["x-chain"], "h,c");
    // In reverse: c, then the declared set, then a appends.
    assert_eq!(reply.header("x-chain-response").as_deref(), Some("h,a"));
    let entry = &gw.snapshot().chains[0][1];
    assert_eq!(
        entry.phases,
        Default::default(),
        "header edits only: no phase"
    );
    assert_eq!(
        entry
            .plugin
            .stats
            .calls
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "never called per request"
    );

    // Like queued edits: a later plugin's local response gets them, and a plugin that
    // was not reached makes none.
    let reply = get(&gw.url("/after")).await;
    assert_eq!(reply.status, 403);
    assert_eq!(reply.header("x-chain-response").as_deref(), Some("h"));
    let reply = get(&gw.url("/before")).await;
    assert_eq!(reply.status, 403);
    assert!(reply.header("x-chain-response").is_none());
    assert_eq!(up.seen().len(), 1);
}

#[tokio::test]
async fn an_upstream_failure_runs_the_response_phases_and_applies_queued_edits() {
    let up = TestUpstream::start("up");
    let chain = "{ name = \"probe\", config = { tag = \"a\" } }, { name = \"probe\", config = { mode = \"queue\", tag = \"b\" } }";
    let text = config(&plugin_dir(), &up, &route("r", "/", chain))
        .replace(&up.addr.to_string(), &closed_addr());
    let gw = TestGateway::start(&text);
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    assert!(reply.text().contains("upstream connection failed"));
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(values(&reply, "x-queued"), ["b"]);
    assert_eq!(reply.header("x-seen-queued-b").as_deref(), Some("b"));
    assert_eq!(reply.header("x-chain-response").as_deref(), Some("a"));
}

#[tokio::test]
async fn edits_queued_by_a_failed_call_are_dropped() {
    let up = TestUpstream::start("up");
    for probe in PROBES {
        let chain = format!(
            "{{ name = \"probe\", config = {{ mode = \"queue\", tag = \"a\" }} }}, \
             {{ name = \"{probe}\", config = {{ mode = \"queue-trap\", tag = \"t\" }}, on_error = \"allow\" }}"
        );
        let gw = gateway(&up, &route("r", "/", &chain));
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200, "{probe}: {}", reply.text());
        assert_eq!(values(&reply, "x-queued"), ["a"], "{probe}");
        assert_eq!(values(&reply, "x-queued-set"), ["a"], "{probe}");
    }
}

/// Routes for each failing mode of `probe` (a name in [`PROBES`]), plus a healthy one,
/// all denying on error.
fn failure_routes(probe: &str, extra: &str) -> String {
    [
        route("trap", "/trap", &format!("{{ name = \"{probe}\", config = {{ mode = \"trap\" }}{extra} }}")),
        route("panic", "/panic", &format!("{{ name = \"{probe}\", config = {{ mode = \"panic\" }}{extra} }}")),
        route("loop", "/loop", &format!("{{ name = \"{probe}\", config = {{ mode = \"loop\" }}, timeout = \"20ms\"{extra} }}")),
        route("oom", "/oom", &format!("{{ name = \"{probe}\", config = {{ mode = \"oom\" }}, memory_limit = \"8MiB\"{extra} }}")),
        route("sleep", "/sleep", &format!("{{ name = \"{probe}\", config = {{ mode = \"sleep\" }}{extra} }}")),
        route("fine", "/", &format!("{{ name = \"{probe}\", config = {{ tag = \"ok\" }} }}")),
    ]
    .concat()
}

fn failures(gw: &TestGateway, route: usize, kind: FailureKind) -> u64 {
    gw.snapshot().chains[route][0].plugin.stats.failures(kind)
}

#[tokio::test]
async fn failing_plugins_are_contained_and_counted() {
    for probe in PROBES {
        failures_are_contained(probe).await;
    }
}

async fn failures_are_contained(probe: &str) {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, &failure_routes(probe, ""));
    for (path, status, body) in [
        ("/trap", 500, "plugin failure"),
        ("/panic", 500, "plugin failure"),
        ("/loop", 503, "plugin timeout"),
        ("/oom", 500, "plugin failure"),
        // A plugin may not wait (here, sleep): it would stall every request of the worker.
        ("/sleep", 500, "plugin failure"),
    ] {
        let started = Instant::now();
        let reply = get(&gw.url(path)).await;
        assert_eq!(reply.status, status, "{probe} {path}: {}", reply.text());
        assert!(
            reply.text().contains(body),
            "{probe} {path}: {}",
            reply.text()
        );
        assert!(!reply.text().contains("unreachable"), "no internals leak");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
        // The gateway and the other routes are unaffected.
        let fine = get(&gw.url("/fine")).await;
        assert_eq!(fine.status, 200, "after {path}");
        assert_eq!(up.last().headers["x-chain"], "ok");
    }
    assert!(
        up.seen().iter().all(|s| s.target == "/fine"),
        "failed requests never reached the upstream"
    );
    // The same plugin is loaded once; each route counts in its shared stats.
    assert!(
        failures(&gw, 0, FailureKind::Trap) >= 2,
        "trap and panic are traps"
    );
    assert_eq!(failures(&gw, 2, FailureKind::Timeout), 1);
    assert_eq!(failures(&gw, 3, FailureKind::Memory), 1);
    assert_eq!(failures(&gw, 4, FailureKind::Error), 1, "{probe} sleeping");
}

#[tokio::test]
async fn on_error_allow_skips_the_failing_plugin() {
    let up = TestUpstream::start("up");
    for probe in PROBES {
        let gw = gateway(&up, &failure_routes(probe, ", on_error = \"allow\""));
        for path in ["/trap", "/panic", "/loop", "/oom", "/sleep"] {
            let reply = get(&gw.url(path)).await;
            assert_eq!(reply.status, 200, "{probe} {path}: {}", reply.text());
            assert_eq!(reply.text(), path, "forwarded without the plugin");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_value_store_is_shared_and_atomic() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route(
            "r",
            "/",
            "{ name = \"probe\", config = { mode = \"count\" } }",
        ),
    );
    for expected in 1..=3 {
        get(&gw.url("/")).await;
        assert_eq!(up.last().headers["x-count"], expected.to_string().as_str());
    }
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move { get(&url).await.status }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    let mut counts: Vec<u64> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-count"].to_str().unwrap().parse().unwrap())
        .collect();
    counts.sort_unstable();
    assert_eq!(
        counts,
        (1..=43).collect::<Vec<u64>>(),
        "every increment seen exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_isolation_gives_each_request_a_fresh_instance() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route(
            "r",
            "/",
            "{ name = \"probe\", config = { mode = \"state\" }, isolation = \"request\" }",
        ),
    );
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let url = gw.url("/");
        tasks.push(tokio::spawn(async move { get(&url).await.status }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert!(
        up.seen().iter().all(|s| s.headers["x-state-before"] == "0"),
        "a request saw state left by another"
    );
}

/// Load-time calls (instantiation, `init`) are not held to a request's timeout: the
/// gateway gives them a load budget (2 s), so a config that takes a while to build
/// loads on a busy machine, and one whose `init` never returns is still refused.
#[tokio::test]
async fn init_gets_a_load_budget_longer_than_the_request_timeout() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route(
            "slow",
            "/",
            "{ name = \"probe\", config = { mode = \"init-slow\", tag = \"s\" }, timeout = \"5ms\" }",
        ),
    );
    assert!(gw.snapshot().chains[0][0].preinitialised());
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
        assert_eq!(up.last().headers["x-chain"], "s");
    }

    let started = Instant::now();
    let message = start_error(&config(
        &plugin_dir(),
        &up,
        &route(
            "endless",
            "/",
            "{ name = \"probe\", config = { mode = \"init-loop\" }, timeout = \"5ms\" }",
        ),
    ));
    assert!(message.contains("route `endless`"), "{message}");
    assert!(message.contains("(timeout)"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "an endless init is cut: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn init_runs_once_per_route_config_not_per_request() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &(route(
            "once",
            "/once",
            "{ name = \"probe\", config = { mode = \"init-count\" } }",
        ) + &route(
            "same-config",
            "/again",
            "{ name = \"probe\", config = { mode = \"init-count\" } }",
        ) + &route(
            "worker",
            "/worker",
            "{ name = \"probe\", config = { mode = \"init-count\", tag = \"w\" }, isolation = \"worker\" }",
        )),
    );
    let chains = &gw.snapshot().chains;
    assert!(chains.iter().all(|chain| chain[0].preinitialised()));
    for path in ["/once", "/once", "/once", "/again", "/worker", "/worker"] {
        assert_eq!(get(&gw.url(path)).await.status, 200);
    }
    // `init` ran once per distinct config (two here: routes configured alike share a
    // snapshot), when the snapshot was taken; fresh instances start from it (request
    // isolation) and so do new worker instances.
    let seen: Vec<String> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-inits"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(seen, ["2"; 6]);
}

#[tokio::test]
async fn a_plugin_whose_init_uses_wasi_is_initialised_per_instance() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &route(
            "r",
            "/",
            "{ name = \"probe\", config = { mode = \"init-print\" }, isolation = \"request\" }",
        ),
    );
    assert!(!gw.snapshot().chains[0][0].preinitialised());
    for _ in 0..3 {
        let reply = get(&gw.url("/")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.header("x-declared").as_deref(),
            Some("init-print"),
            "edits declared by an init that is not in a snapshot"
        );
    }
    let seen: Vec<i64> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-inits"].to_str().unwrap().parse().unwrap())
        .collect();
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "every fresh instance runs init: {seen:?}"
    );
}

/// A plugin whose `new` builds a std `HashMap` (which seeds itself from `wasi:random`)
/// cannot be snapshotted, and says so loudly: `weir check` names the import under the
/// route's plugin, the log warns once per (plugin version, config), and requests are
/// served with `init` run in each fresh instance.
#[tokio::test]
async fn a_plugin_whose_init_seeds_a_hashmap_says_it_is_not_preinitialised_and_why() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let routes = [
        route(
            "seeded",
            "/seeded",
            "{ name = \"probe\", config = { mode = \"init-hashmap\" } }",
        ),
        route(
            "same",
            "/same",
            "{ name = \"probe\", config = { mode = \"init-hashmap\" } }",
        ),
        route(
            "printing",
            "/printing",
            "{ name = \"probe\", config = { mode = \"init-print\" } }",
        ),
        route(
            "plain",
            "/",
            "{ name = \"probe\", config = { mode = \"state\" } }",
        ),
    ]
    .concat();
    let text = with_test_listeners(&config(&dir, &up, &routes));
    let path = weir_tests::gateway::write_config(&text);
    let out = std::process::Command::new(weir_tests::weir_bin!())
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Each route's lines: its own, its plugin's, then what the plugin says.
    let said = |name: &str| -> String {
        let mut lines = stdout
            .lines()
            .skip_while(|l| !l.starts_with(&format!("  {name}  ")));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no route {name}: {stdout}"));
        let rest: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
        format!("{first}\n{}", rest.join("\n"))
    };
    for name in ["seeded", "same"] {
        let lines = said(name);
        assert!(
            lines.contains("NOT pre-initialised, so `init` runs in every fresh instance: `init` (the plugin's `new`) called wasi:random/"),
            "{lines}"
        );
        assert!(lines.contains("BTreeMap"), "{lines}");
    }
    let printing = said("printing");
    assert!(printing.contains("NOT pre-initialised"), "{printing}");
    assert!(printing.contains("called wasi:cli/stdout"), "{printing}");
    assert!(!said("plain").contains("pre-initialised"), "{stdout}");
    // One warning per (version, config): two configs fell back.
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("plugin not pre-initialised"))
        .collect();
    assert_eq!(warnings.len(), 2, "{stderr}");
    assert!(
        warnings.iter().any(|w| w.contains("wasi:random/")),
        "{stderr}"
    );

    let gw = TestGateway::start(&config(&dir, &up, &routes));
    let entry = &gw.snapshot().chains[0][0];
    assert!(!entry.preinitialised());
    let why = entry.not_preinitialised_because().unwrap();
    assert!(why.contains("wasi:random/"), "{why}");
    assert_eq!(
        gw.snapshot().chains[3][0].not_preinitialised_because(),
        None
    );
    for path in ["/seeded", "/same", "/seeded"] {
        assert_eq!(get(&gw.url(path)).await.status, 200);
    }
}

/// A gateway with one worker (so one idle instance per route) and route `r` on `/`
/// with `plugins`.
fn one_worker(up: &TestUpstream, plugins: &str) -> TestGateway {
    TestGateway::start(&config(
        &plugin_dir(),
        up,
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n{}",
            route("r", "/", plugins)
        ),
    ))
}

fn start_error(text: &str) -> String {
    let config =
        Config::parse(Path::new("test.toml"), &with_test_listeners(text)).expect("valid config");
    match weir_gateway::Gateway::start(config) {
        Ok(_) => panic!("the gateway started"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_config_the_plugin_refuses_stops_startup_with_the_plugins_message() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let message = start_error(&config(
        &dir,
        &up,
        &route(
            "guarded",
            "/",
            "{ name = \"probe\", config = { mode = \"bad-config\" } }",
        ),
    ));
    assert!(message.contains("route `guarded`"), "{message}");
    assert!(message.contains("plugin `probe`"), "{message}");
    assert!(message.contains("refused on purpose"), "{message}");
}

#[test]
fn an_invalid_declared_edit_refuses_the_config() {
    let up = TestUpstream::start("up");
    for probe in PROBES {
        let message = start_error(&config(
            &plugin_dir(),
            &up,
            &route(
                "declared",
                "/",
                &format!("{{ name = \"{probe}\", config = {{ mode = \"declare-bad\" }} }}"),
            ),
        ));
        assert!(message.contains("route `declared`"), "{message}");
        assert!(
            message.contains("refused a declared header edit: invalid name \"bad name\""),
            "{message}"
        );
    }
}

#[test]
fn missing_and_invalid_plugin_files_are_reported_together() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    std::fs::write(dir.join("plugins/garbage.wasm"), b"not wasm at all").unwrap();
    let routes = [
        route("a", "/a", "{ name = \"absent\" }"),
        route("b", "/b", "{ name = \"garbage\" }"),
    ]
    .concat();
    let message = start_error(&config(&dir, &up, &routes));
    assert!(message.starts_with("2 plugin errors"), "{message}");
    assert!(
        message.contains("plugin `absent`: cannot read"),
        "{message}"
    );
    assert!(message.contains("absent.wasm"), "{message}");
    assert!(
        message.contains("plugin `garbage`: not a loadable WebAssembly component"),
        "{message}"
    );
}

#[test]
fn a_missing_file_and_a_refused_config_are_reported_together() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let routes = [
        route("a", "/a", "{ name = \"absent\" }"),
        route(
            "guarded",
            "/",
            "{ name = \"probe\", config = { mode = \"bad-config\" } }",
        ),
    ]
    .concat();
    let message = start_error(&config(&dir, &up, &routes));
    assert!(message.starts_with("2 plugin errors"), "{message}");
    assert!(message.contains("absent.wasm"), "{message}");
    assert!(message.contains("refused on purpose"), "{message}");
}

#[test]
fn a_restart_loads_the_compiled_plugin_from_the_cache() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let routes = route("r", "/", "{ name = \"probe\" }");
    let text = config_cached_in(&dir, &dir.join("cache"), &up, &routes);
    let first = TestGateway::start(&text);
    assert!(!first.snapshot().chains[0][0].plugin.from_cache);
    drop(first);
    let second = TestGateway::start(&text);
    let plugin = &second.snapshot().chains[0][0].plugin;
    assert!(plugin.from_cache, "the second start compiled again");
    assert_eq!(
        plugin.version.len(),
        64,
        "the version is the file's SHA-256"
    );
    assert_eq!(plugin.wit_version, "0.1.8");
}

#[test]
fn a_compile_cache_others_may_write_is_not_loaded() {
    use std::os::unix::fs::PermissionsExt;
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let cache = dir.join("cache");
    let routes = route("r", "/", "{ name = \"probe\" }");
    let text = config_cached_in(&dir, &cache, &up, &routes);
    drop(TestGateway::start(&text));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let artifacts: Vec<PathBuf> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
        .collect();
    assert!(!artifacts.is_empty(), "the first start cached its compiles");
    let set_all = |mode: u32| {
        for artifact in &artifacts {
            std::fs::set_permissions(artifact, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    for artifact in &artifacts {
        assert_eq!(
            mode(artifact),
            0o600,
            "cached artifacts are the gateway user's alone"
        );
    }

    // Anyone may write the artifacts: they could be anything, so they are compiled afresh.
    set_all(0o666);
    let gw = TestGateway::start(&text);
    assert!(!gw.snapshot().chains[0][0].plugin.from_cache);
    drop(gw);
    set_all(0o600);
    // The same for a cache directory anyone may write.
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
    let gw = TestGateway::start(&text);
    assert!(!gw.snapshot().chains[0][0].plugin.from_cache);
    drop(gw);
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o700)).unwrap();
    let gw = TestGateway::start(&text);
    assert!(
        gw.snapshot().chains[0][0].plugin.from_cache,
        "trusted again"
    );
}

#[tokio::test]
async fn an_instance_whose_call_was_abandoned_is_not_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start("up");
    // The plugin's outbound target: the first connection is held unanswered (the
    // plugin waits in `http-call`), later ones are answered at once.
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut first = true;
        while let Ok((mut conn, _)) = target.accept().await {
            if std::mem::take(&mut first) {
                held.push(conn);
                continue;
            }
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if conn.write_all(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let gw = one_worker(
        &up,
        &format!(
            "{{ name = \"probe\", config = {{ mode = \"fetch-state\", url = \"http://{target_addr}/\" }}, \
                     allowed_hosts = [\"{target_addr}\"], isolation = \"worker\" }}"
        ),
    );
    // A client that goes away while the plugin waits on its outbound call.
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The next request gets an instance whose last call returned: a fresh one.
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    let before: Vec<String> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-state-before"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        before,
        ["0", "0", "0"],
        "an instance abandoned mid-call was reused"
    );
}

/// An instance whose call did not finish cleanly (a trap, a timeout, an error the
/// plugin returned, a failed host call it passed on) never serves another request: the
/// probe's `dirty` mode leaves 7 in instance memory and then ends its call as `x-then`
/// asks, and the next request on the route (one worker, so one idle instance) must find
/// a fresh instance's 0.
#[tokio::test]
async fn an_instance_whose_call_failed_is_not_reused() {
    let up = TestUpstream::start("up");
    let gw = one_worker(
        &up,
        &format!(
            "{{ name = \"probe\", config = {{ mode = \"dirty\", url = \"http://{}/\" }}, timeout = \"20ms\" }}",
            up.addr
        ),
    );
    let state_before = |up: &TestUpstream| {
        up.last().headers["x-state-before"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(get(&gw.url("/")).await.status, 200);
    assert_eq!(state_before(&up), "0", "a fresh instance");
    for (then, status, kind) in [
        ("trap", 500, FailureKind::Trap),
        ("loop", 503, FailureKind::Timeout),
        ("fail", 500, FailureKind::Error),
        ("host", 500, FailureKind::Error),
    ] {
        assert_eq!(get(&gw.url("/")).await.status, 200);
        assert_eq!(
            state_before(&up),
            "7",
            "before {then}: the instance is reused"
        );
        let failures = gw.snapshot().chains[0][0].plugin.stats.failures(kind);
        let failed = weir_tests::first_party::get_with(&gw.url("/"), &[("x-then", then)]).await;
        assert_eq!(failed.status, status, "{then}: {}", failed.text());
        assert_eq!(
            gw.snapshot().chains[0][0].plugin.stats.failures(kind),
            failures + 1,
            "{then} is counted as {kind:?}"
        );
        assert_eq!(get(&gw.url("/")).await.status, 200);
        assert_eq!(
            state_before(&up),
            "0",
            "after {then}, the next request got a fresh instance"
        );
    }
}

#[tokio::test]
async fn worker_isolation_reuses_instances() {
    let up = TestUpstream::start("up");
    let gw = one_worker(
        &up,
        "{ name = \"probe\", config = { mode = \"state\" }, isolation = \"worker\" }",
    );
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    let before: Vec<String> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-state-before"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        before,
        ["0", "7", "7", "7", "7"],
        "the instance was not reused"
    );
}

#[tokio::test]
async fn a_single_phase_plugins_instance_is_handed_back_before_the_upstream_answers() {
    // Eight requests wait on a slow upstream at once. The plugin's one phase ran before
    // each was forwarded, so its instance went back at once and the worker's later
    // requests reused it: one instance served all eight, not one per request in flight.
    let up = TestUpstream::start("up");
    up.set_delay(Duration::from_millis(400));
    let gw = one_worker(
        &up,
        "{ name = \"probe\", config = { mode = \"instance\" } }",
    );
    let url = gw.url("/");
    let requests: Vec<_> = (0..8)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 8);
    let instances: std::collections::BTreeSet<String> = seen
        .iter()
        .map(|s| s.headers["x-instance"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(instances.len(), 1, "instances seen: {instances:?}");
}

#[tokio::test]
async fn concurrent_requests_each_keep_their_own_state_between_phases() {
    // A two-phase plugin keeps its instance until the request's last phase: eight
    // requests in flight at once each get back the secret they sent.
    let up = TestUpstream::start("up");
    up.set_delay(Duration::from_millis(300));
    let gw = one_worker(&up, "{ name = \"probe\", config = { mode = \"secret\" } }");
    let url = gw.url("/");
    let requests: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                let secret = format!("secret-{i}");
                let reply = weir_tests::first_party::get_with(&url, &[("x-secret", &secret)]).await;
                (secret, reply.status, reply.header("x-state-secret"))
            })
        })
        .collect();
    for request in requests {
        let (secret, status, kept) = request.await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(kept.as_deref(), Some(secret.as_str()));
    }
}

#[tokio::test]
async fn per_request_state_carries_a_secret_between_phases_and_never_to_the_next_request() {
    let up = TestUpstream::start("up");
    let gw = one_worker(&up, "{ name = \"probe\", config = { mode = \"secret\" } }");
    assert_eq!(
        gw.snapshot().chains[0][0].settings.isolation,
        weir_gateway::config::Isolation::Worker,
        "worker isolation is the default"
    );
    let first = weir_tests::first_party::get_with(&gw.url("/"), &[("x-secret", "hunter2")]).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-state-before").as_deref(), Some("[]"));
    assert_eq!(
        first.header("x-state-secret").as_deref(),
        Some("hunter2"),
        "the response phase sees what the request phase kept"
    );
    for n in 2..=4 {
        let next = get(&gw.url("/")).await;
        assert_eq!(next.status, 200);
        assert_eq!(
            next.header("x-state-before").as_deref(),
            Some("[]"),
            "request {n} saw an earlier request's state"
        );
        assert_eq!(next.header("x-state-secret").as_deref(), Some(""));
    }
    let served: Vec<String> = up
        .seen()
        .iter()
        .map(|s| s.headers["x-served"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        served,
        ["1", "2", "3", "4"],
        "the four requests met one instance"
    );
    assert!(
        up.seen()
            .iter()
            .all(|s| !s.headers.contains_key("x-secret"))
    );
}

#[tokio::test]
async fn a_phase_error_fails_the_call_under_the_routes_policy() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &(route(
            "deny",
            "/deny",
            "{ name = \"probe\", config = { mode = \"fail\" } }",
        ) + &route(
            "allow",
            "/allow",
            "{ name = \"probe\", config = { mode = \"fail\" }, on_error = \"allow\" }, \
                 { name = \"probe-local\", config = { tag = \"after\" } }",
        ) + &route(
            "queued",
            "/queued",
            "{ name = \"probe\", config = { mode = \"queue-fail\", tag = \"q\" }, on_error = \"allow\" }",
        )),
    );
    let denied = get(&gw.url("/deny")).await;
    assert_eq!(denied.status, 500, "{}", denied.text());
    assert!(up.seen().is_empty());
    let allowed = get(&gw.url("/allow")).await;
    assert_eq!(allowed.status, 200);
    assert_eq!(
        up.last().headers["x-chain"],
        "after",
        "the failed plugin was skipped and the next one ran"
    );
    let queued = get(&gw.url("/queued")).await;
    assert_eq!(queued.status, 200);
    assert!(
        queued.header("x-queued-set").is_none(),
        "a failed call's queued edits are dropped"
    );
    let snapshot = gw.snapshot();
    let stats = &snapshot.chains[0][0].plugin.stats;
    assert_eq!(stats.failures(FailureKind::Error), 3);
    assert_eq!(stats.failures(FailureKind::Trap), 0);
}

/// `max_reuse` bounds the requests one worker instance serves: the probe's `state`
/// mode reports what an earlier request left in the instance's memory (7) or a fresh
/// instance's 0, so the instance's lifetimes show as runs. The `[plugins]` default
/// applies, and a route's plugin entry overrides it.
#[tokio::test]
async fn worker_instances_are_recycled_after_max_reuse_requests() {
    let up = TestUpstream::start("up");
    let routes = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n{}{}",
        route(
            "default",
            "/default",
            "{ name = \"probe\", config = { mode = \"state\" }, isolation = \"worker\" }"
        ),
        route(
            "override",
            "/override",
            "{ name = \"probe\", config = { mode = \"state\", tag = \"o\" }, max_reuse = 2 }"
        ),
    );
    let text = config(&plugin_dir(), &up, &routes);
    let gw = TestGateway::start(&text.replacen("[plugins]\n", "[plugins]\nmax_reuse = 3\n", 1));
    let settings: Vec<u32> = gw
        .snapshot()
        .chains
        .iter()
        .map(|chain| chain[0].settings.max_reuse)
        .collect();
    assert_eq!(settings, [3, 2]);
    let mut runs = Vec::new();
    for path in ["/default", "/override"] {
        for _ in 0..7 {
            assert_eq!(get(&gw.url(path)).await.status, 200);
        }
        let before: Vec<String> = up
            .seen()
            .iter()
            .skip(runs.len() * 7)
            .map(|s| s.headers["x-state-before"].to_str().unwrap().to_owned())
            .collect();
        runs.push(before);
    }
    assert_eq!(
        runs[0],
        ["0", "7", "7", "0", "7", "7", "0"],
        "max_reuse = 3 from [plugins]: a fresh instance every third request"
    );
    assert_eq!(
        runs[1],
        ["0", "7", "0", "7", "0", "7", "0"],
        "max_reuse = 2 on the route: a fresh instance every second request"
    );
}

#[test]
fn a_plugin_for_another_wit_version_is_refused_naming_both() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    std::fs::copy(guest_wasm!("future"), dir.join("plugins/future.wasm")).unwrap();
    let message = start_error(&config(
        &dir,
        &up,
        &route("r", "/", "{ name = \"future\" }"),
    ));
    assert!(
        message.contains("plugin `future` was built for weir:plugin 0.2.0, but this gateway supports weir:plugin 0.1.8"),
        "{message}"
    );
}

#[tokio::test]
async fn a_plugin_for_a_newer_patch_version_loads() {
    // The guest's WIT must be the gateway's with only the version changed.
    let ours = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../plugin-sdk/wit/plugin.wit"
    ))
    .unwrap();
    let theirs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/guests/minor/wit/plugin.wit"
    ))
    .unwrap();
    assert_eq!(
        theirs,
        ours.replace("package weir:plugin@0.1.8;", "package weir:plugin@0.1.9;"),
        "tests/guests/minor/wit/plugin.wit drifted from wit/plugin.wit"
    );
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    std::fs::copy(guest_wasm!("minor"), dir.join("plugins/minor.wasm")).unwrap();
    let gw = TestGateway::start(&config(&dir, &up, &route("r", "/", "{ name = \"minor\" }")));
    assert_eq!(gw.snapshot().chains[0][0].plugin.wit_version, "0.1.9");
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().headers["x-minor"], "0.1.9");
    assert_eq!(reply.header("x-minor").as_deref(), Some("0.1.9"));
    assert_eq!(
        reply.header("x-minor-declared").as_deref(),
        Some("0.1.9"),
        "a declared edit"
    );
    // A batch (`edit-headers`): each edit made or refused on its own, the first refused
    // reported with its position; `set-if-absent` leaves a field that is there.
    let request = up.last();
    let values = |name: &str| -> Vec<String> {
        request
            .headers
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(values("x-batch"), ["1", "2"]);
    assert_eq!(values("x-batch-result"), ["1 invalid-name bad name"]);
    assert_eq!(values("x-minor"), ["0.1.9"]);
    assert_eq!(reply.header("x-minor").as_deref(), Some("0.1.9"));
    assert_eq!(reply.header("x-batch-response").as_deref(), Some("r"));

    // The one-crossing phase (0.1.8): the gateway called `on-request` with the fields
    // of the headers the plugin reads and the time, and made the edits it returned.
    let reply = weir_tests::first_party::get_with(
        &gw.url("/"),
        &[
            ("x-multi", "a"),
            ("x-read", "r"),
            ("x-multi", "b"),
            ("x-other", "o"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let request = up.last();
    assert_eq!(request.headers["x-given"], "0=r,1=a,1=b");
    assert_eq!(request.headers["x-given-time"], "recent");
    assert_eq!(request.headers["x-returned"], "request");
    let twice: Vec<&str> = request
        .headers
        .get_all("x-returned-twice")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(twice, ["1", "2"]);
    assert_eq!(reply.header("x-returned").as_deref(), Some("response"));
    let reply = get(&gw.url("/")).await;
    assert_eq!(up.last().headers["x-given"], "", "nothing to send");
    assert_eq!(reply.status, 200);

    // A returned edit the gateway refuses fails the call: under `on_error = "deny"`
    // (the default) the client gets a 500 and the upstream nothing.
    let served = up.served();
    let reply = weir_tests::first_party::get_with(&gw.url("/"), &[("x-return-bad", "1")]).await;
    assert_eq!(reply.status, 500);
    assert_eq!(up.served(), served, "the request did not go upstream");
    // So do edits that do not parse (one cut short).
    let reply = weir_tests::first_party::get_with(&gw.url("/"), &[("x-return-cut", "1")]).await;
    assert_eq!(reply.status, 500);
    assert_eq!(up.served(), served, "the request did not go upstream");
    let failures = gw
        .metric("weir_plugin_failures_total{kind=\"error\",plugin=\"minor\"}")
        .await;
    assert_eq!(failures, 2.0);
}

#[tokio::test]
async fn a_plugin_built_for_an_earlier_patch_version_keeps_loading() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    std::fs::copy(guest_wasm!("older"), dir.join("plugins/older.wasm")).unwrap();
    let gw = TestGateway::start(&config(&dir, &up, &route("r", "/", "{ name = \"older\" }")));
    assert_eq!(gw.snapshot().chains[0][0].plugin.wit_version, "0.1.0");
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().headers["x-older"], "0.1.0");
    assert_eq!(reply.header("x-older").as_deref(), Some("0.1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_built_for_0_1_4_keeps_calling_out() {
    // Built before `http-client.call-all` existed: its `http-client@0.1.4` import has
    // `call` only, and must still link to this gateway's grown interface.
    let up = TestUpstream::start("up");
    let target = TestUpstream::start("target");
    let dir = plugin_dir();
    std::fs::copy(
        guest_wasm!("older_http"),
        dir.join("plugins/older-http.wasm"),
    )
    .unwrap();
    let gw = TestGateway::start(&config(
        &dir,
        &up,
        &route(
            "r",
            "/",
            &format!(
                "{{ name = \"older-http\", config = {{ url = \"http://{}/data\" }}, allowed_hosts = [\"{}\"] }}",
                target.addr, target.addr
            ),
        ),
    ));
    assert_eq!(gw.snapshot().chains[0][0].plugin.wit_version, "0.1.4");
    let mut serials = Vec::new();
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
        let seen = up.last();
        assert_eq!(
            seen.headers["x-older-http"], "200 /data",
            "{:?}",
            seen.headers
        );
        serials.push(seen.headers["x-older-serial"].to_str().unwrap().to_owned());
    }
    // `request-serial` (0.1.4) answers inside a phase: never 0, new for each request.
    assert!(!serials.contains(&"0".to_owned()), "{serials:?}");
    assert_ne!(serials[0], serials[1]);
    assert_eq!(target.served(), 2);
}

/// `weir plugin inspect FILE`: whether it succeeded, and what it printed.
fn inspect(file: &std::path::Path) -> (std::process::Output, String) {
    let out = std::process::Command::new(weir_tests::weir_bin!())
        .args(["plugin", "inspect"])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

#[test]
fn plugin_inspect_shows_version_phases_imports_and_hash() {
    let (out, text) = inspect(guest_wasm!("probe"));
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("weir:plugin 0.1.8 (compatible"), "{text}");
    assert!(
        text.contains("phases      request-headers, response-headers"),
        "{text}"
    );
    assert!(text.contains("weir:plugin/kv@0.1.8"), "{text}");
    assert!(text.contains("weir:plugin/handler@0.1.8"), "{text}");
    assert!(text.contains("\n  linking     memory "), "{text}");
    assert!(
        text.contains("\n  request     one call a request (`on-request`)"),
        "{text}"
    );
    // With an empty config the probe's `init` makes no WASI call.
    assert!(text.contains("\n  preinit     yes: "), "{text}");
    let bytes = std::fs::read(guest_wasm!("probe")).unwrap();
    assert!(
        text.contains(&format!("size        {} bytes", bytes.len())),
        "{text}"
    );
    // `http-call` can wait, so the probe runs on a fiber; `probe-local` must not, or
    // the tests that run each mode through both (and the benches) lose their point.
    assert!(
        text.contains("\n  calls       on a fiber, a stack switch per call, because it imports ")
            && text.contains("weir:plugin/http-client@0.1.8"),
        "{text}"
    );
    let (_, text) = inspect(guest_wasm!("probe_local"));
    assert!(
        text.contains("\n  calls       directly (no import can wait)\n"),
        "{text}"
    );

    // Built before the request phase took one call: it gets a call per read and edit.
    let (_, text) = inspect(guest_wasm!("older"));
    assert!(
        text.contains("\n  request     a call per header read and edit (`on-request-headers`;"),
        "{text}"
    );

    let (out, text) = inspect(guest_wasm!("future"));
    assert!(
        !out.status.success(),
        "an incompatible plugin must exit non-zero"
    );
    assert!(text.contains("weir:plugin 0.2.0 (NOT compatible"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_call_reaches_allowed_hosts_only() {
    let up = TestUpstream::start("up");
    let target = TestUpstream::start("target");
    let url = format!("http://{}/data", target.addr);
    let routes = [
        route(
            "allowed",
            "/allowed",
            &format!("{{ name = \"probe\", config = {{ mode = \"fetch\", url = \"{url}\" }}, allowed_hosts = [\"{}\"] }}", target.addr),
        ),
        route("refused", "/refused", &format!("{{ name = \"probe\", config = {{ mode = \"fetch\", url = \"{url}\" }} }}")),
    ]
    .concat();
    let gw = gateway(&up, &routes);
    assert_eq!(get(&gw.url("/allowed")).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-fetch-status"], "200", "{:?}", seen.headers);
    assert_eq!(seen.headers["x-fetch-body"], "/data");
    assert_eq!(target.seen().len(), 1);

    assert_eq!(get(&gw.url("/refused")).await.status, 200);
    let seen = up.last();
    assert!(
        seen.headers["x-fetch-error"]
            .to_str()
            .unwrap()
            .contains("is not in allowed_hosts"),
        "{:?}",
        seen.headers
    );
    assert_eq!(
        target.seen().len(),
        1,
        "the refused call never left the gateway"
    );
}

fn bodies_gateway(up: &TestUpstream, sink: &TestUpstream) -> TestGateway {
    bodies_gateway_to(up, sink, None)
}

/// The bodies guest in front of `up`, or of `endpoint` instead when given.
fn bodies_gateway_to(
    up: &TestUpstream,
    sink: &TestUpstream,
    endpoint: Option<&str>,
) -> TestGateway {
    let dir = plugin_dir();
    std::fs::copy(guest_wasm!("bodies"), dir.join("plugins/bodies.wasm")).unwrap();
    let mut text = config(
        &dir,
        up,
        &route(
            "r",
            "/",
            &format!(
                "{{ name = \"bodies\", config = {{ log_url = \"http://{}/log\" }}, allowed_hosts = [\"{}\"], max_body_bytes = \"1KiB\" }}",
                sink.addr, sink.addr
            ),
        ),
    );
    if let Some(endpoint) = endpoint {
        text = text.replace(&up.addr.to_string(), endpoint);
    }
    TestGateway::start(&text)
}

async fn post(url: &str, body: &str) -> weir_tests::Reply {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(weir_tests::client::full(body.to_owned()))
        .unwrap();
    weir_tests::send(&weir_tests::h1_client(), req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_phases_rewrite_bodies_and_the_log_phase_runs_after_the_response() {
    let up = TestUpstream::start("up");
    let sink = TestUpstream::start("sink");
    let gw = bodies_gateway(&up, &sink);
    let reply = post(&gw.url("/echo"), r#"{"a":1}"#).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = up.last();
    assert_eq!(
        seen.headers["x-body-bytes"], "7",
        "the request-body phase can still edit the request head"
    );
    assert_eq!(
        seen.headers["content-length"],
        r#"{"a":1,"seen_by":"bodies"}"#.len().to_string().as_str()
    );
    assert_eq!(
        reply.text(),
        r#"/ECHO {"A":1,"SEEN_BY":"BODIES"}"#,
        "request rewritten, response upper-cased"
    );
    assert_eq!(
        reply.header("content-length").as_deref(),
        Some(reply.body.len().to_string().as_str())
    );
    assert_eq!(
        reply.header("x-request-body-bytes").as_deref(),
        Some("7"),
        "a request-body phase can queue response edits too"
    );
    // The log phase reports to the sink once the response is written, with what the
    // request-body phase kept in the request's state.
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.seen().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sink.last().target,
        "/log?status=200&path=/echo&request_bytes=7"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_phase_runs_for_an_upstream_failure() {
    let up = TestUpstream::start("up");
    let sink = TestUpstream::start("sink");
    let dead = closed_addr();
    let gw = bodies_gateway_to(&up, &sink, Some(&dead));
    let reply = post(&gw.url("/echo"), r#"{"a":1}"#).await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let deadline = Instant::now() + Duration::from_secs(5);
    while sink.seen().is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        sink.last().target,
        "/log?status=502&path=/echo&request_bytes=7"
    );
}

#[tokio::test]
async fn a_body_phase_can_refuse_and_bodies_past_the_limit_get_413() {
    let up = TestUpstream::start("up");
    let sink = TestUpstream::start("sink");
    let gw = bodies_gateway(&up, &sink);
    let reply = post(&gw.url("/echo"), "not json").await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.text().contains("a JSON object is required"),
        "{}",
        reply.text()
    );
    // A refusal from a body phase still runs the response phases of every plugin that
    // passed the request head, the refusing one included: its queued edits apply.
    assert_eq!(reply.header("x-request-body-bytes").as_deref(), Some("8"));
    let big = format!(r#"{{"pad":"{}"}}"#, "x".repeat(2048));
    let reply = post(&gw.url("/echo"), &big).await;
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(
        up.seen().is_empty(),
        "refused bodies never reach the upstream"
    );
}

#[tokio::test]
async fn the_out_of_tree_example_plugin_works() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    std::fs::copy(guest_wasm!("hello_plugin"), dir.join("plugins/hello.wasm")).unwrap();
    let gw = TestGateway::start(&config(
        &dir,
        &up,
        &route(
            "app",
            "/",
            "{ name = \"hello\", config = { greeting = \"Hello from Weir\" } }",
        ),
    ));
    let reply = get(&gw.url("/hello?name=Ada")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), r#"{"message":"Hello from Weir, Ada!"}"#);
    assert!(up.seen().is_empty());
    let reply = get(&gw.url("/other")).await;
    assert_eq!(reply.text(), "/other");
    assert!(reply.header("x-hello").is_some());
    assert_eq!(
        gw.snapshot().chains[0][0].metrics().counters()["greetings"],
        1
    );
}

#[tokio::test]
async fn guest_output_goes_to_the_log_rate_limited() {
    for probe in PROBES {
        guest_output_is_logged(probe).await;
    }
}

async fn guest_output_is_logged(probe: &str) {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let weir = weir_tests::WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &with_test_listeners(&config(
            &dir,
            &up,
            &route(
                "r",
                "/",
                &format!("{{ name = \"{probe}\", config = {{ mode = \"print\" }} }}"),
            ),
        )),
    );
    assert_eq!(get(&format!("http://{}/", weir.addr)).await.status, 200);
    let deadline = Instant::now() + Duration::from_millis(800);
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match weir.log.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let printed: Vec<&String> = lines
        .iter()
        .filter(|l| {
            l.contains(&format!("\"plugin\":\"{probe}\"")) && l.contains("\"stream\":\"stdout\"")
        })
        .collect();
    assert!(
        printed.iter().any(|l| l.contains("probe line 0")),
        "{probe}: {lines:#?}"
    );
    assert!(
        printed.len() <= 100,
        "{} lines got through the rate limit",
        printed.len()
    );
}

#[tokio::test]
async fn plugin_series_are_exported_on_the_metrics_endpoint() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    std::fs::copy(guest_wasm!("hello_plugin"), dir.join("plugins/hello.wasm")).unwrap();
    let routes = route(
        "trap",
        "/trap",
        "{ name = \"probe\", config = { mode = \"trap\" } }",
    ) + &route(
        "app",
        "/",
        "{ name = \"hello\", config = { greeting = \"Hi\" } }",
    );
    let weir = weir_tests::WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &with_test_listeners(&config(&dir, &up, &routes)),
    );
    let base = format!("http://{}", weir.addr);
    assert_eq!(get(&format!("{base}/hello")).await.status, 200);
    assert_eq!(get(&format!("{base}/hello")).await.status, 200);
    assert_eq!(get(&format!("{base}/trap")).await.status, 500);
    let reply = get(&format!("http://{}/metrics", weir.admin)).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        reply.header("content-type")
    );
    let text = reply.text();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no `{series}` in:\n{text}"))
    };
    assert_eq!(value("weir_plugin_greetings_total{plugin=\"hello\"}"), 2.0);
    assert_eq!(
        value("weir_plugin_failures_total{kind=\"trap\",plugin=\"probe\"}"),
        1.0
    );
    assert_eq!(
        value("weir_plugin_failures_total{kind=\"timeout\",plugin=\"probe\"}"),
        0.0
    );
    // Two requests, each with the request-headers phase; the local answers also ran
    // hello's response phase.
    assert_eq!(
        value(
            "weir_plugin_call_duration_seconds_count{phase=\"request_headers\",plugin=\"hello\"}"
        ),
        2.0
    );
    assert!(
        value("weir_plugin_call_duration_seconds_sum{phase=\"request_headers\",plugin=\"hello\"}")
            > 0.0
    );
    assert!(text.contains("# TYPE weir_plugin_call_duration_seconds histogram"));
}
