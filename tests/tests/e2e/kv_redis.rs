//! The key-value store in Redis (`[kv] backend = "redis"`), end to end: real gateways
//! (two `weir` processes where it matters), the real `rate-limit` plugin, a real
//! `redis-server` that the tests stop, freeze and start again.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weir_tests::certs::TestCa;
use weir_tests::first_party::{config, get_with, plugin_dir};
use weir_tests::{RedisServer, Reply, TestGateway, TestUpstream, WeirProcess, get};

const DAY: Duration = Duration::from_secs(86_400);

/// `[kv]` on the Redis at `redis`, with a call deadline generous enough for a busy
/// test machine (the outages below are real, not slowness).
fn kv_table(redis: &RedisServer) -> String {
    format!(
        "[kv]\nbackend = \"redis\"\nurl = \"{}\"\ntimeout = \"500ms\"\n",
        redis.url()
    )
}

/// If less than `margin` is left of the current day (windows are epoch-aligned),
/// sleeps into the next one.
async fn clear_of_window_end(margin: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let left = DAY.as_millis() - now.as_millis() % DAY.as_millis();
    if left < margin.as_millis() {
        tokio::time::sleep(Duration::from_millis(u64::try_from(left).unwrap() + 20)).await;
    }
}

fn remaining(reply: &Reply) -> u64 {
    reply
        .header("ratelimit-remaining")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no RateLimit-Remaining on {}", reply.status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_redis_admit_exactly_the_limit_together() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("up");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n{}{}",
        kv_table(&redis),
        config(
            &up,
            "{ name = \"rate-limit\", config = { requests = 60, window = \"1d\" } }"
        )
    );
    let a = WeirProcess::with_config(weir_tests::weir_bin!(), &text);
    let b = WeirProcess::with_config(weir_tests::weir_bin!(), &text);
    clear_of_window_end(Duration::from_secs(60)).await;

    // 240 concurrent requests, half to each gateway.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..240 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        tasks.spawn(async move { get_with(&format!("http://{addr}/"), &[]).await });
    }
    let (mut passed, mut refused) = (Vec::new(), 0);
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.expect("the request task finished");
        match reply.status.as_u16() {
            200 => passed.push(remaining(&reply)),
            429 => refused += 1,
            other => panic!("unexpected status {other}: {}", reply.text()),
        }
    }
    passed.sort_unstable();
    assert_eq!(
        passed,
        (0..60).collect::<Vec<u64>>(),
        "the two gateways admit the limit once between them, each count once"
    );
    assert_eq!(refused, 180);
    assert_eq!(up.seen().len(), 60);
}

/// Two routes, each with its own rate limit: `/open` fails open (`on_error = "allow"`),
/// `/closed` fails closed (the default, `deny`).
fn open_and_closed(up: &TestUpstream, kv: &str) -> String {
    let dir = plugin_dir();
    format!(
        "{kv}[plugins]\ndir = \"{dir}/plugins\"\ncache_dir = \"{cache}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{up}\"]\n\
         [[route]]\nname = \"open\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/open\" }}\n\
         plugins = [{{ name = \"rate-limit\", on_error = \"allow\", config = {{ requests = 1000000, window = \"1d\" }} }}]\n\
         [[route]]\nname = \"closed\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/closed\" }}\n\
         plugins = [{{ name = \"rate-limit\", config = {{ requests = 1000000, window = \"1d\" }} }}]\n",
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
        up = up.addr,
    )
}

/// Polls `url` until it answers `status` (panics after 15 s); returns the tries.
async fn until_status(url: &str, status: u16) -> usize {
    let started = Instant::now();
    for tries in 1.. {
        let reply = get(url).await;
        if reply.status == status {
            return tries;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{url} still answers {} ({}), not {status}",
            reply.status,
            reply.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    unreachable!()
}

/// A few requests to each route: `/open` always passes; `/closed` gets `closed`.
async fn both_routes(gw: &TestGateway, closed: u16) {
    for _ in 0..5 {
        let open = get(&gw.url("/open")).await;
        assert_eq!(open.status, 200, "fail open: {}", open.text());
        assert_eq!(get(&gw.url("/closed")).await.status, closed);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_is_slow_or_down_rate_limit_follows_on_error_and_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&open_and_closed(&up, &kv_table(&redis)));
    until_status(&gw.url("/closed"), 200).await;
    both_routes(&gw, 200).await;
    let errors = |kind: &'static str| {
        let gw = &gw;
        async move {
            gw.metric(&format!(
                "weir_kv_errors_total{{kind=\"{kind}\",plugin=\"rate-limit\"}}"
            ))
            .await
        }
    };
    assert_eq!(errors("timeout").await, 0.0);

    // Frozen: every call waits out its deadline, then fails.
    redis.pause();
    both_routes(&gw, 500).await;
    assert!(errors("timeout").await >= 5.0);
    redis.resume();
    until_status(&gw.url("/closed"), 200).await;

    // Down: calls fail (at once, after the first finds it gone).
    redis.stop();
    both_routes(&gw, 500).await;
    assert!(errors("unavailable").await >= 1.0);
    assert_eq!(get(&gw.admin_url("/healthz")).await.status, 200);
    let failures = gw
        .metric("weir_plugin_failures_total{kind=\"error\",plugin=\"rate-limit\"}")
        .await;
    assert!(
        failures >= 10.0,
        "each failed call is a plugin failure: {failures}"
    );

    // Back: the gateway reconnects by itself.
    redis.start_again();
    let tries = until_status(&gw.url("/closed"), 200).await;
    eprintln!("recovered after {tries} tries");
    both_routes(&gw, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starts_and_serves_while_redis_is_unreachable_then_uses_it_when_it_comes() {
    let mut redis = RedisServer::not_started();
    let up = TestUpstream::start("up");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        open_and_closed(&up, &kv_table(&redis))
    );
    let weir = WeirProcess::with_config(weir_tests::weir_bin!(), &text);
    let url = |path: &str| format!("http://{}{path}", weir.addr);
    for _ in 0..3 {
        assert_eq!(get(&url("/open")).await.status, 200);
        assert_eq!(get(&url("/closed")).await.status, 500);
    }
    redis.start_again();
    until_status(&url("/closed"), 200).await;
    assert_eq!(get(&url("/open")).await.status, 200);
}

#[tokio::test]
async fn a_bad_kv_url_is_refused_on_reload_and_the_previous_config_keeps_serving() {
    let redis = RedisServer::start();
    let up = TestUpstream::start("up");
    let good = weir_tests::gateway::with_test_listeners(&open_and_closed(&up, &kv_table(&redis)));
    let path = weir_tests::gateway::write_config(&good);
    let gw = TestGateway::from_file(&path);
    until_status(&gw.url("/closed"), 200).await;

    let bad = good.replace(&redis.url(), "redis://127.0.0.1:99999");
    std::fs::write(&path, &bad).expect("write config");
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report:#}");
    assert_eq!(report["config"], "refused", "{report:#}");
    let message = report["config_error"].as_str().unwrap_or_default();
    assert!(
        message.contains("kv.url") && message.contains("not a valid Redis URL"),
        "{message}"
    );
    assert_eq!(get(&gw.url("/closed")).await.status, 200);
    assert_eq!(get(&gw.url("/open")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_private_ca_and_a_password_from_the_environment() {
    let ca = TestCa::new("redis test CA");
    let dir = weir_tests::gateway::fresh_dir();
    let ca_file = ca.write(&dir, "ca");
    let (cert, key) = ca.server(&["127.0.0.1"]).write(&dir, "redis");
    let redis = RedisServer::start_tls(&cert, &key, &ca_file, "s3cret-pass");
    let tls = redis.tls_addr.expect("a TLS port");
    let up = TestUpstream::start("up");
    let kv = format!(
        "[kv]\nbackend = \"redis\"\nurl = \"rediss://{tls}\"\npassword_env = \"WEIR_TEST_REDIS_PASSWORD\"\n\
         ca = \"{}\"\ntimeout = \"500ms\"\n",
        ca_file.display()
    );
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
        open_and_closed(&up, &kv)
    );
    let path = weir_tests::gateway::write_config(&text);
    let weir = WeirProcess::spawn_with_env(
        weir_tests::weir_bin!(),
        &["run", "--config", path.to_str().expect("UTF-8 path")],
        &[("WEIR_TEST_REDIS_PASSWORD", "s3cret-pass")],
    );
    // `/closed` fails closed: a 200 with a count means the increment went through TLS,
    // authenticated.
    let url = format!("http://{}/closed", weir.addr);
    until_status(&url, 200).await;
    let reply = get(&url).await;
    assert_eq!(reply.status, 200);
    assert!(remaining(&reply) < 999_999, "counted in Redis");
}
