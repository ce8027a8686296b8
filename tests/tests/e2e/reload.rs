//! Live reload: plugin files and the config file changed under a running gateway,
//! through the file watcher, `POST /admin/reload` and SIGHUP. The plugin is the
//! `swap` test guest built twice (`swap-a`, `swap-b`): every response says which
//! version ran its request phase and which its response phase (`x-swap: a/a`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use weir_tests::client::{self, Reply};
use weir_tests::gateway::{TestGateway, WeirProcess, fresh_dir, with_test_listeners};
use weir_tests::load;
use weir_tests::{TestUpstream, guest_wasm, weir_bin};

/// A directory with `plugins/swap.wasm` (version a) and `weir.toml` routing `/` to
/// `up` through it with `plugin_config`; returns (plugins dir, config file).
fn setup(up: &TestUpstream, plugin_config: &str, extra: &str) -> (PathBuf, PathBuf) {
    let plugins = swap_plugins();
    let config = plugins.with_file_name("weir.toml");
    std::fs::write(&config, swap_config(up, &plugins, plugin_config, extra)).expect("config");
    (plugins, config)
}

/// A fresh `plugins/` directory holding version a as `swap.wasm`.
fn swap_plugins() -> PathBuf {
    let plugins = fresh_dir().join("plugins");
    std::fs::create_dir_all(&plugins).expect("plugins dir");
    std::fs::copy(guest_wasm!("swap_a"), plugins.join("swap.wasm")).expect("copy plugin");
    plugins
}

fn swap_config(up: &TestUpstream, plugins: &Path, plugin_config: &str, extra: &str) -> String {
    with_test_listeners(&format!(
        r#"
[plugins]
dir = "{plugins}"
cache_dir = "{cache}"
[reload]
debounce = "50ms"
[[upstream]]
name = "up"
endpoints = ["{up}"]
{extra}
[[route]]
name = "swapped"
match = {{ path_prefix = "/" }}
upstream = "up"
plugins = [{{ name = "swap", config = {plugin_config} }}]
"#,
        plugins = plugins.display(),
        cache = weir_tests::gateway::compile_cache().display(),
        up = up.addr,
    ))
}

/// Replaces `dest` with `src`: in place (truncate and write, as `cp` does) or by
/// writing a temporary file and renaming it over (as deploy tools do).
fn replace(src: &Path, dest: &Path, atomically: bool) {
    if atomically {
        let tmp = dest.with_extension("wasm.tmp");
        std::fs::copy(src, &tmp).expect("write temp plugin");
        std::fs::rename(&tmp, dest).expect("rename plugin");
    } else {
        std::fs::copy(src, dest).expect("copy plugin");
    }
}

/// Polls `url` until `done` holds for a response; the time it took, or a panic
/// naming `what` after `limit`.
async fn until(url: &str, what: &str, limit: Duration, done: impl Fn(&Reply) -> bool) -> Duration {
    let started = Instant::now();
    loop {
        let reply = client::get(url).await;
        if done(&reply) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not seen within {limit:?}; last reply {} {:?} {}",
            reply.status,
            reply.headers,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn swap_header(reply: &Reply) -> String {
    reply.header("x-swap").unwrap_or_default()
}

async fn admin_json(gw: &TestGateway, path: &str) -> serde_json::Value {
    let reply = client::get(&gw.admin_url(path)).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    serde_json::from_slice(&reply.body).expect("admin JSON")
}

/// `/admin/plugins` once it shows a refused config (panics after 10 s).
async fn config_refusal_shown(gw: &TestGateway) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let doc = admin_json(gw, "/admin/plugins").await;
        if !doc["config"]["last_error"].is_null() {
            return doc;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{doc:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(gw: &TestGateway, series: &str) -> f64 {
    let text = client::get(&gw.admin_url("/metrics")).await.text();
    text.lines()
        .find_map(|l| l.strip_prefix(series).map(str::trim))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugin_swapped_20_times_under_load_loses_no_request() {
    let up = TestUpstream::start("up");
    let (plugins, config) = setup(&up, "{}", "");
    let gw = TestGateway::from_file(&config);
    let url = gw.url("/swap");
    assert_eq!(swap_header(&client::get(&url).await), "a/a");

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load::until_stopped(
        url.clone(),
        4,
        20_000,
        stop.clone(),
        "x-swap",
    ));
    let target = plugins.join("swap.wasm");
    let mut latencies = Vec::new();
    for i in 0..20 {
        let (src, want) = if i % 2 == 0 {
            (guest_wasm!("swap_b"), "b/b")
        } else {
            (guest_wasm!("swap_a"), "a/a")
        };
        replace(src, &target, i % 4 >= 2);
        latencies.push(
            until(&url, "the new version", Duration::from_secs(10), |r| {
                swap_header(r) == want
            })
            .await,
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let tally = load.await.expect("load");

    latencies.sort();
    eprintln!(
        "swap latency (file written -> new version serving): median {:?}, max {:?}; {} requests, {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
        tally.ok,
        tally.by_header
    );
    assert!(
        tally.failed.is_empty(),
        "failed requests: {:?}",
        tally.failed
    );
    assert!(
        tally.ok >= 1000,
        "too little load to mean anything: {}",
        tally.ok
    );
    for version in tally.by_header.keys() {
        assert!(
            version == "a/a" || version == "b/b",
            "a response mixed versions or lost its header: {version:?} ({:?})",
            tally.by_header
        );
    }
    assert!(
        tally.by_header.len() == 2,
        "both versions served: {:?}",
        tally.by_header
    );
    assert!(metric(&gw, "weir_plugin_reloads_total{result=\"success\"}").await >= 20.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broken_plugin_file_leaves_the_previous_version_serving() {
    let up = TestUpstream::start("up");
    let (plugins, config) = setup(&up, "{}", "");
    let gw = TestGateway::from_file(&config);
    let url = gw.url("/");
    let errors_before = metric(&gw, "weir_plugin_reloads_total{result=\"error\"}").await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(load::until_stopped(
        url.clone(),
        2,
        5_000,
        stop.clone(),
        "x-swap",
    ));
    std::fs::write(
        plugins.join("swap.wasm"),
        b"\0asm\x0d\0\x01\0 this is not a component",
    )
    .expect("write broken plugin");
    let started = Instant::now();
    let plugin = loop {
        let doc = admin_json(&gw, "/admin/plugins").await;
        let plugin = doc["plugins"][0].clone();
        if !plugin["last_error"].is_null() {
            break plugin;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no error shown: {doc:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = load.await.expect("load");
    assert!(
        tally.failed.is_empty(),
        "failed requests: {:?}",
        tally.failed
    );
    assert_eq!(tally.by_header.keys().collect::<Vec<_>>(), ["a/a"]);

    let message = plugin["last_error"]["message"].as_str().expect("message");
    assert!(message.contains("swap"), "{message}");
    assert_eq!(
        plugin["version"],
        weir_gateway::plugin::version_of(&std::fs::read(guest_wasm!("swap_a")).unwrap()),
        "the old version still serves: {plugin:#}"
    );
    assert!(
        metric(&gw, "weir_plugin_reloads_total{result=\"error\"}").await > errors_before,
        "the refusal is counted"
    );

    // A good file afterwards loads and clears the error.
    std::fs::copy(guest_wasm!("swap_b"), plugins.join("swap.wasm")).expect("copy");
    until(&url, "version b", Duration::from_secs(10), |r| {
        swap_header(r) == "b/b"
    })
    .await;
    let doc = admin_json(&gw, "/admin/plugins").await;
    assert!(doc["plugins"][0]["last_error"].is_null(), "{doc:#}");
}

/// Writes `bytes` to `dest` through a temporary file renamed over it, so that no reload
/// reads it half-written.
fn write_atomically(dest: &Path, bytes: &[u8]) {
    let tmp = dest.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes).expect("write temp plugin");
    std::fs::rename(&tmp, dest).expect("rename plugin");
}

/// `/admin/plugins` once plugin 0 satisfies `done` (panics after 10 s).
async fn plugin_shown(
    gw: &TestGateway,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let doc = admin_json(gw, "/admin/plugins").await;
        if done(&doc["plugins"][0]) {
            return doc["plugins"][0].clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: not shown within 10 s: {doc:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Garbage dropped into the watched plugins directory shows as `last_error`; once a
/// good version loads, `last_error` is null and the refusal is kept only as history,
/// under `previous_error` with when it was cleared. The same when the file goes back to
/// the version serving.
#[tokio::test]
async fn a_refusal_is_cleared_once_a_good_version_loads_and_kept_as_history() {
    let up = TestUpstream::start("up");
    let (plugins, config) = setup(&up, "{}", "");
    let gw = TestGateway::from_file(&config);
    let plugin = admin_json(&gw, "/admin/plugins").await["plugins"][0].clone();
    assert!(plugin["last_error"].is_null(), "{plugin:#}");
    assert!(plugin["previous_error"].is_null(), "{plugin:#}");

    let garbage = b"\0asm garbage, not a component".to_vec();
    let garbage_version = weir_gateway::plugin::version_of(&garbage);
    write_atomically(&plugins.join("swap.wasm"), &garbage);
    let refused = plugin_shown(&gw, "the refusal", |p| !p["last_error"].is_null()).await;
    let error = refused["last_error"].clone();
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("plugin `swap`: not a loadable"),
        "{refused:#}"
    );
    assert_eq!(error["version"], garbage_version.as_str(), "{refused:#}");

    let b = std::fs::read(guest_wasm!("swap_b")).expect("read b");
    let b_version = weir_gateway::plugin::version_of(&b);
    write_atomically(&plugins.join("swap.wasm"), &b);
    let loaded = plugin_shown(&gw, "version b", |p| p["version"] == b_version.as_str()).await;
    assert!(loaded["last_error"].is_null(), "{loaded:#}");
    let history = &loaded["previous_error"];
    assert_eq!(history["message"], error["message"], "{loaded:#}");
    assert_eq!(history["version"], error["version"], "{loaded:#}");
    assert_eq!(history["at"], error["at"], "{loaded:#}");
    assert!(history["cleared_at"].is_string(), "{loaded:#}");
    assert_eq!(swap_header(&client::get(&gw.url("/")).await), "b/b");

    // Garbage again, then the serving version's bytes again: cleared the same way.
    let other = b"\0asm other garbage".to_vec();
    write_atomically(&plugins.join("swap.wasm"), &other);
    plugin_shown(&gw, "the second refusal", |p| !p["last_error"].is_null()).await;
    write_atomically(&plugins.join("swap.wasm"), &b);
    let restored = plugin_shown(&gw, "the refusal cleared", |p| p["last_error"].is_null()).await;
    assert_eq!(restored["version"], b_version.as_str(), "{restored:#}");
    assert_eq!(
        restored["previous_error"]["version"],
        weir_gateway::plugin::version_of(&other).as_str(),
        "{restored:#}"
    );
}

#[tokio::test]
async fn new_version_refusing_the_route_config_is_not_swapped_in() {
    let up = TestUpstream::start("up");
    let (plugins, config) = setup(&up, "{ refuse = \"b\" }", "");
    let gw = TestGateway::from_file(&config);
    std::fs::copy(guest_wasm!("swap_b"), plugins.join("swap.wasm")).expect("copy");
    let report = gw.reload().await;
    assert_eq!(report.0, 422, "{}", report.1);
    assert_eq!(report.1["plugins"][0]["result"], "error", "{}", report.1);
    let error = report.1["plugins"][0]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("version b refuses this config on purpose") && error.contains("swapped"),
        "{error}"
    );
    assert_eq!(swap_header(&client::get(&gw.url("/")).await), "a/a");
    let doc = admin_json(&gw, "/admin/plugins").await;
    assert!(
        doc["plugins"][0]["last_error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("refuses"),
        "{doc:#}"
    );
}

#[tokio::test]
async fn removed_plugin_file_keeps_its_last_version_serving() {
    let up = TestUpstream::start("up");
    let (plugins, config) = setup(&up, "{}", "");
    let gw = TestGateway::from_file(&config);
    std::fs::remove_file(plugins.join("swap.wasm")).expect("remove");
    let started = Instant::now();
    loop {
        let doc = admin_json(&gw, "/admin/plugins").await;
        if doc["plugins"][0]["file"] == "missing" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{doc:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(swap_header(&client::get(&gw.url("/")).await), "a/a");
    std::fs::copy(guest_wasm!("swap_b"), plugins.join("swap.wasm")).expect("copy");
    until(&gw.url("/"), "version b", Duration::from_secs(10), |r| {
        swap_header(r) == "b/b"
    })
    .await;
}

fn two_routes(up: &TestUpstream, plugins: &Path) -> String {
    swap_config(
        up,
        plugins,
        "{}",
        "[[route]]\nname = \"added\"\nmatch = { path_prefix = \"/added\" }\nupstream = \"up\"\n\
         plugins = [{ name = \"swap\", config = { refuse = \"nobody\" } }]\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_edits_apply_live_and_a_broken_config_is_refused() {
    let up = TestUpstream::start("up");
    let (plugins, config) = setup(&up, "{}", "");
    let gw = TestGateway::from_file(&config);
    let added = gw.url("/added/x");
    assert_eq!(
        client::get(&added).await.header("x-swap").as_deref(),
        Some("a/a")
    );
    let before = gw.snapshot().config.routes.len();

    // Add a route in front of the catch-all.
    std::fs::write(&config, two_routes(&up, &plugins)).expect("write config");
    let took = until(&added, "the added route", Duration::from_secs(10), |_| {
        gw.snapshot().config.routes.len() == before + 1
    })
    .await;
    eprintln!("config edit -> new route serving: {took:?}");
    let reply = client::get(&added).await;
    assert_eq!(reply.status, 200);
    assert_eq!(gw.snapshot().config.routes[0].name, "added");

    // A broken config is refused; the last good one keeps serving.
    let errors_before = metric(&gw, "weir_config_reloads_total{result=\"error\"}").await;
    std::fs::write(
        &config,
        "[[route]]\nname = \"broken\"\nupstream = \"nowhere\"\n",
    )
    .expect("write broken config");
    let doc = config_refusal_shown(&gw).await;
    let message = doc["config"]["last_error"]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("nowhere"), "{message}");
    assert_eq!(gw.snapshot().config.routes[0].name, "added");
    assert_eq!(client::get(&added).await.status, 200);
    assert!(metric(&gw, "weir_config_reloads_total{result=\"error\"}").await > errors_before);

    // A config naming a plugin that does not exist is refused whole.
    std::fs::write(
        &config,
        two_routes(&up, &plugins).replace(
            "name = \"swap\", config = { refuse",
            "name = \"nope\", config = { refuse",
        ),
    )
    .expect("write config");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report:#}");
    assert_eq!(report["config"], "refused", "{report:#}");
    assert!(
        report["config_error"]
            .as_str()
            .unwrap_or_default()
            .contains("nope"),
        "{report:#}"
    );
    assert_eq!(
        client::get(&added).await.header("x-swap").as_deref(),
        Some("a/a")
    );
}

#[tokio::test]
async fn settings_that_need_a_restart_are_reported_and_kept() {
    let up = TestUpstream::start("up");
    let plugins = swap_plugins();
    let dir = plugins.parent().expect("fresh dir").to_owned();
    let config = dir.join("weir.toml");
    let text = swap_config(&up, &plugins, "{}", "").replace("debounce = \"50ms\"", "watch = false");
    std::fs::write(&config, &text).expect("config");
    let gw = TestGateway::from_file(&config);
    let edited = text.replace(
        "listen = \"127.0.0.1:0\"\nworkers = 2",
        "listen = \"127.0.0.1:1\"\nworkers = 2",
    );
    assert_ne!(edited, text);
    std::fs::write(&config, edited).expect("config");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["config"], "applied", "{report:#}");
    let restart = report["restart_required"].to_string();
    assert!(restart.contains("server.listen"), "{report:#}");
    assert_eq!(
        client::get(&gw.url("/")).await.status,
        200,
        "still on the old address"
    );
    // With watching off, nothing happens until asked.
    std::fs::write(
        &config,
        two_routes(&up, &plugins).replace("debounce = \"50ms\"", "watch = false"),
    )
    .expect("config");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.snapshot().config.routes.len(), 1);
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report:#}");
    assert!(
        report["swapped"].as_bool().unwrap_or_default(),
        "{report:#}"
    );
    assert_eq!(gw.snapshot().config.routes.len(), 2);
    // Nothing changed: nothing swapped.
    let (status, report) = gw.reload().await;
    assert_eq!(
        (status, report["config"].as_str()),
        (200, Some("unchanged"))
    );
    assert!(!report["swapped"].as_bool().unwrap_or(true), "{report:#}");
}

#[tokio::test]
async fn configmap_style_symlink_swap_is_picked_up() {
    let up = TestUpstream::start("up");
    let plugins = swap_plugins();
    let dir = plugins.parent().expect("fresh dir").to_owned();
    // What the kubelet does: the real files live in a timestamped directory, `..data`
    // points at it, and `weir.toml` points into `..data`.
    let mount = dir.join("config");
    std::fs::create_dir_all(mount.join("..2026_01")).expect("dir");
    std::fs::write(
        mount.join("..2026_01/weir.toml"),
        swap_config(&up, &plugins, "{}", ""),
    )
    .expect("config");
    std::os::unix::fs::symlink("..2026_01", mount.join("..data")).expect("symlink");
    std::os::unix::fs::symlink("..data/weir.toml", mount.join("weir.toml")).expect("symlink");
    let gw = TestGateway::from_file(&mount.join("weir.toml"));
    assert_eq!(gw.snapshot().config.routes.len(), 1);

    std::fs::create_dir_all(mount.join("..2026_02")).expect("dir");
    std::fs::write(mount.join("..2026_02/weir.toml"), two_routes(&up, &plugins)).expect("config");
    std::os::unix::fs::symlink("..2026_02", mount.join("..data_tmp")).expect("symlink");
    std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("swap");
    until(
        &gw.url("/added"),
        "the ConfigMap update",
        Duration::from_secs(10),
        |_| gw.snapshot().config.routes.len() == 2,
    )
    .await;
}

#[tokio::test]
async fn sighup_reloads_the_real_binary() {
    let up = TestUpstream::start("up");
    let plugins = swap_plugins();
    let dir = plugins.parent().expect("fresh dir").to_owned();
    let config = dir.join("weir.toml");
    let text = swap_config(&up, &plugins, "{}", "").replace("debounce = \"50ms\"", "watch = false");
    std::fs::write(&config, &text).expect("config");
    let weir = WeirProcess::spawn(weir_bin!(), &["run", "--config", config.to_str().unwrap()]);
    let url = format!("http://{}/", weir.addr);
    assert_eq!(swap_header(&client::get(&url).await), "a/a");
    std::fs::copy(guest_wasm!("swap_b"), plugins.join("swap.wasm")).expect("copy");
    weir.signal("HUP");
    until(
        &url,
        "version b after SIGHUP",
        Duration::from_secs(10),
        |r| swap_header(r) == "b/b",
    )
    .await;
}

/// [`swap_config`] plus a route `/late` whose plugin, `late`, has no file yet.
fn with_late_route(up: &TestUpstream, plugins: &Path, extra: &str) -> String {
    swap_config(
        up,
        plugins,
        "{}",
        &format!(
            "{extra}\n[[route]]\nname = \"late\"\nmatch = {{ path_prefix = \"/late\" }}\n\
             upstream = \"up\"\nplugins = [{{ name = \"late\" }}]\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn config_waiting_for_its_plugin_file_applies_when_the_file_arrives() {
    let up = TestUpstream::start("up");
    let (plugins, config) = setup(&up, "{}", "");
    let gw = TestGateway::from_file(&config);

    // 1. A route naming a plugin whose file is not there yet: refused, old config serves.
    std::fs::write(&config, with_late_route(&up, &plugins, "")).expect("write config");
    let doc = config_refusal_shown(&gw).await;
    let message = doc["config"]["last_error"]["message"].to_string();
    assert!(message.contains("late.wasm"), "{doc:#}");
    assert_eq!(gw.snapshot().config.routes.len(), 1);

    // 2. The file arrives: the waiting config applies without touching it.
    replace(guest_wasm!("swap_b"), &plugins.join("late.wasm"), true);
    until(
        &gw.url("/late"),
        "the route waiting for late.wasm",
        Duration::from_secs(10),
        |_| gw.snapshot().config.routes.len() == 2,
    )
    .await;
    let reply = client::get(&gw.url("/late/x")).await;
    assert_eq!(
        (reply.status.as_u16(), swap_header(&reply)),
        (200, "b/b".to_owned())
    );

    // 3. A reload now re-reads everything: no stale refusal.
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["config"], "unchanged", "{report:#}");
    assert!(report.get("config_error").is_none(), "{report:#}");
    let doc = admin_json(&gw, "/admin/plugins").await;
    assert!(doc["config"]["last_error"].is_null(), "{doc:#}");
}

#[tokio::test]
async fn admin_reload_re_reads_everything_and_never_replays_a_refusal() {
    let up = TestUpstream::start("up");
    let plugins = swap_plugins();
    let config = plugins.with_file_name("weir.toml");
    let unwatched = |text: String| text.replace("debounce = \"50ms\"", "watch = false");
    std::fs::write(&config, unwatched(swap_config(&up, &plugins, "{}", ""))).expect("config");
    let gw = TestGateway::from_file(&config);

    std::fs::write(&config, unwatched(with_late_route(&up, &plugins, ""))).expect("config");
    let (status, report) = gw.reload().await;
    assert_eq!(
        (status, &report["config"]),
        (422, &serde_json::json!("refused")),
        "{report:#}"
    );
    assert!(
        report["config_error"].to_string().contains("late.wasm"),
        "{report:#}"
    );
    // Asked again with nothing changed: refused again, for the same reason.
    let (status, again) = gw.reload().await;
    assert_eq!(
        (status, &again["config"]),
        (422, &serde_json::json!("refused")),
        "{again:#}"
    );

    std::fs::copy(guest_wasm!("swap_b"), plugins.join("late.wasm")).expect("copy");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["config"], "applied", "{report:#}");
    assert!(
        report["swapped"].as_bool().unwrap_or_default(),
        "{report:#}"
    );
    assert_eq!(swap_header(&client::get(&gw.url("/late/x")).await), "b/b");
    assert_eq!(swap_header(&client::get(&gw.url("/")).await), "a/a");
}

#[tokio::test]
async fn version_refused_by_a_route_config_applies_once_the_config_allows_it() {
    let up = TestUpstream::start("up");
    let plugins = swap_plugins();
    let config = plugins.with_file_name("weir.toml");
    let text = |plugin_config: &str| {
        swap_config(&up, &plugins, plugin_config, "")
            .replace("debounce = \"50ms\"", "watch = false")
    };
    std::fs::write(&config, text("{ refuse = \"b\" }")).expect("config");
    let gw = TestGateway::from_file(&config);

    std::fs::copy(guest_wasm!("swap_b"), plugins.join("swap.wasm")).expect("copy");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report:#}");
    assert_eq!(report["plugins"][0]["result"], "error", "{report:#}");
    assert_eq!(swap_header(&client::get(&gw.url("/")).await), "a/a");

    // The config changes so that b accepts it: both apply, b serves.
    std::fs::write(&config, text("{ refuse = \"nobody\" }")).expect("config");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report:#}");
    assert_eq!(report["config"], "applied", "{report:#}");
    assert_eq!(report["plugins"][0]["result"], "loaded", "{report:#}");
    assert_eq!(swap_header(&client::get(&gw.url("/")).await), "b/b");
    let doc = admin_json(&gw, "/admin/plugins").await;
    assert!(doc["plugins"][0]["last_error"].is_null(), "{doc:#}");
}
