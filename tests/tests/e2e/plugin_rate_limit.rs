//! The `rate-limit` plugin end to end: its real `.wasm` in a real gateway in front of a real upstream.
//!
//! Windows are aligned to the Unix epoch, so a test that needs all its requests in one
//! window first steps clear of the current window's end (same clock as the gateway's).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use weir_tests::first_party::{config, get_with, plugin_dir, refusal};
use weir_tests::{Reply, TestGateway, TestUpstream};

const DAY: Duration = Duration::from_secs(86_400);

/// A gateway whose one route uses rate-limit with `limit` (a TOML inline table) and the
/// plugin entry's `extra` settings (e.g. `isolation = "worker", `).
fn gateway(up: &TestUpstream, extra: &str, limit: &str) -> TestGateway {
    TestGateway::start(&config(
        up,
        &format!("{{ name = \"rate-limit\", {extra}config = {limit} }}"),
    ))
}

/// If less than `margin` is left of the current `window` (epoch-aligned), sleeps into
/// the next one.
async fn clear_of_window_end(window: Duration, margin: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let window_ms = window.as_millis();
    let left = window_ms - now.as_millis() % window_ms;
    if left < margin.as_millis() {
        let left = u64::try_from(left).unwrap();
        tokio::time::sleep(Duration::from_millis(left + 20)).await;
    }
}

/// A numeric header of `reply`.
fn number(reply: &Reply, name: &str) -> u64 {
    let value = reply
        .header(name)
        .unwrap_or_else(|| panic!("no `{name}` on {} {:?}", reply.status, reply.headers));
    value
        .parse()
        .unwrap_or_else(|_| panic!("`{name}: {value}` is not a number"))
}

#[tokio::test]
async fn exactly_the_limit_passes_then_429_with_retry_after_and_ratelimit_headers() {
    let up = TestUpstream::start("up");
    // 3 requests plus a burst of 1 per day.
    let gw = gateway(&up, "", "{ requests = 3, burst = 1, window = \"1d\" }");
    // `new` uses no WASI (no clock): instances start from the pre-initialised snapshot.
    assert!(gw.snapshot().chains[0][0].preinitialised());
    clear_of_window_end(DAY, Duration::from_secs(30)).await;

    for remaining in [3, 2, 1, 0] {
        let reply = get_with(&gw.url("/"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(number(&reply, "ratelimit-limit"), 4);
        assert_eq!(number(&reply, "ratelimit-remaining"), remaining);
        let reset = number(&reply, "ratelimit-reset");
        assert!((1..=86_400).contains(&reset), "{reset}");
        assert!(reply.header("retry-after").is_none());
    }
    for _ in 0..3 {
        let reply = get_with(&gw.url("/"), &[]).await;
        assert_eq!(reply.status, 429);
        assert_eq!(reply.text(), r#"{"error":"rate limit exceeded"}"#);
        assert_eq!(
            reply.header("content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(number(&reply, "ratelimit-limit"), 4);
        assert_eq!(number(&reply, "ratelimit-remaining"), 0);
        let retry_after = number(&reply, "retry-after");
        assert!((1..=86_400).contains(&retry_after), "{retry_after}");
        assert_eq!(number(&reply, "ratelimit-reset"), retry_after);
    }
    assert_eq!(
        up.seen().len(),
        4,
        "refused requests never reach the upstream"
    );
}

/// 200 concurrent requests against a limit of 50: exactly 50 pass, and each got its own
/// `RateLimit-Remaining` (49 down to 0, each once).
async fn exactly_the_limit_passes_under_concurrency(isolation: &str) {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        &format!("isolation = \"{isolation}\", "),
        "{ requests = 50, window = \"1d\" }",
    );
    clear_of_window_end(DAY, Duration::from_secs(60)).await;

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let url = gw.url("/");
        tasks.spawn(async move { get_with(&url, &[]).await });
    }
    let (mut passed, mut refused) = (Vec::new(), 0);
    while let Some(reply) = tasks.join_next().await {
        let reply = reply.expect("the request task finished");
        match reply.status.as_u16() {
            200 => passed.push(number(&reply, "ratelimit-remaining")),
            429 => refused += 1,
            other => panic!("unexpected status {other}: {}", reply.text()),
        }
    }
    passed.sort_unstable();
    assert_eq!(passed, (0..50).collect::<Vec<u64>>(), "{isolation}");
    assert_eq!(refused, 150, "{isolation}");
    assert_eq!(up.seen().len(), 50, "{isolation}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_limit_passes_under_concurrency_with_request_isolation() {
    exactly_the_limit_passes_under_concurrency("request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_the_limit_passes_under_concurrency_with_worker_isolation() {
    exactly_the_limit_passes_under_concurrency("worker").await;
}

#[tokio::test]
async fn a_header_key_gives_each_user_a_bucket_and_others_fall_back_to_the_ip() {
    let up = TestUpstream::start("up");
    let gw = gateway(
        &up,
        "",
        "{ requests = 2, window = \"1d\", key = \"header:x-user\" }",
    );
    clear_of_window_end(DAY, Duration::from_secs(30)).await;

    let status = |headers: &'static [(&'static str, &'static str)]| {
        let url = gw.url("/");
        async move { get_with(&url, headers).await.status.as_u16() }
    };
    for _ in 0..2 {
        assert_eq!(status(&[("x-user", "alice")]).await, 200);
    }
    assert_eq!(status(&[("x-user", "alice")]).await, 429);
    // Bob has his own two.
    assert_eq!(status(&[("x-user", "bob")]).await, 200);
    assert_eq!(status(&[("x-user", "bob")]).await, 200);
    assert_eq!(status(&[("x-user", "bob")]).await, 429);
    // Without the header, the client's IP is the bucket, apart from every user's.
    assert_eq!(status(&[]).await, 200);
    assert_eq!(status(&[]).await, 200);
    assert_eq!(status(&[]).await, 429);
    assert_eq!(status(&[("x-user", "carol")]).await, 200);
}

#[tokio::test]
async fn each_route_has_its_own_limit() {
    let up = TestUpstream::start("up");
    let dir = plugin_dir();
    let limit = "{ name = \"rate-limit\", config = { requests = 1, window = \"1d\" } }";
    let mut toml = format!(
        "[plugins]\ndir = \"{}/plugins\"\ncache_dir = \"{}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n",
        dir.display(),
        weir_tests::gateway::compile_cache().display(),
        up.addr
    );
    for route in ["a", "b"] {
        toml.push_str(&format!(
            "[[route]]\nname = \"{route}\"\nupstream = \"up\"\n\
             match = {{ path_prefix = \"/{route}\" }}\nplugins = [{limit}]\n"
        ));
    }
    let gw = TestGateway::start(&toml);
    clear_of_window_end(DAY, Duration::from_secs(30)).await;

    assert_eq!(get_with(&gw.url("/a"), &[]).await.status, 200);
    assert_eq!(get_with(&gw.url("/a"), &[]).await.status, 429);
    assert_eq!(get_with(&gw.url("/b"), &[]).await.status, 200);
    assert_eq!(get_with(&gw.url("/b"), &[]).await.status, 429);
}

#[tokio::test]
async fn requests_are_admitted_again_after_the_window_resets() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, "", "{ requests = 2, window = \"1s\" }");
    // A slow machine may let a window end fall between the first three requests; then
    // they prove nothing, and the test tries again (a few times at most).
    for _ in 0..5 {
        clear_of_window_end(Duration::from_secs(1), Duration::from_millis(500)).await;
        let mut replies = Vec::new();
        for _ in 0..3 {
            replies.push(get_with(&gw.url("/"), &[]).await);
        }
        let statuses: Vec<u16> = replies.iter().map(|r| r.status.as_u16()).collect();
        if statuses != [200, 200, 429] {
            continue;
        }
        let retry_after = number(&replies[2], "retry-after");
        assert_eq!(retry_after, 1, "a 1s window resets within a second");
        // Generously past the reset: the next window counts from zero.
        tokio::time::sleep(Duration::from_millis(retry_after * 1000 + 500)).await;
        let reply = get_with(&gw.url("/"), &[]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(number(&reply, "ratelimit-remaining"), 1);
        return;
    }
    panic!("no attempt got its three requests into one window");
}

#[test]
fn bad_config_is_refused_naming_plugin_and_key() {
    let up = TestUpstream::start("up");
    for (plugin_config, expected) in [
        ("{ requests = 0, window = \"1s\" }", "`requests`"),
        ("{ requests = 10, window = \"soon\" }", "`window`"),
        ("{ requests = 10, window = \"0s\" }", "`window`"),
        (
            "{ requests = 10, window = \"1m\", key = \"cookie:sid\" }",
            "`key`",
        ),
        (
            "{ requests = 10, window = \"1m\", key = \"header:bad name\" }",
            "`key`",
        ),
        (
            "{ requests = 10, window = \"1m\", limit = 5 }",
            "unknown field `limit`",
        ),
        ("{ window = \"1m\" }", "missing field `requests`"),
    ] {
        let message = refusal(&up, "rate-limit", plugin_config);
        assert!(
            message.contains("plugin `rate-limit` refused its config")
                && message.contains(expected),
            "{plugin_config}: {message}"
        );
    }
}

/// Runs three requests through a route with two rate-limits, `first` then `second`
/// (config tables), and gives the `RateLimit-Remaining` of the two admitted, and the
/// status and `RateLimit-Remaining` of the third.
async fn two_limits(up: &TestUpstream, first: &str, second: &str) -> (Vec<u64>, u16, u64) {
    let gw = TestGateway::start(&config(
        up,
        &format!(
            "{{ name = \"rate-limit\", config = {first} }}, {{ name = \"rate-limit\", config = {second} }}"
        ),
    ));
    clear_of_window_end(DAY, Duration::from_secs(30)).await;
    let mut admitted = Vec::new();
    for _ in 0..2 {
        let reply = get_with(&gw.url("/"), &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        admitted.push(number(&reply, "ratelimit-remaining"));
    }
    let third = get_with(&gw.url("/"), &[]).await;
    (
        admitted,
        third.status.as_u16(),
        number(&third, "ratelimit-remaining"),
    )
}

#[tokio::test]
async fn with_two_limits_a_refusal_keeps_its_own_headers_and_tightest_reports_the_lower() {
    let up = TestUpstream::start("up");
    for mode in ["unless-present", "tightest"] {
        let loose = format!("{{ requests = 100, window = \"1d\", headers = \"{mode}\" }}");
        let tight = format!("{{ requests = 2, window = \"1d\", headers = \"{mode}\" }}");
        // The tight limit later in the chain: its headers are on the response, and its
        // 429 is not given the loose limit's quota.
        assert_eq!(
            two_limits(&up, &loose, &tight).await,
            (vec![1, 0], 429, 0),
            "{mode}"
        );
        // The tight limit first: `tightest` still reports it; `unless-present` reports
        // the later (loose) one while both admit.
        let expected = if mode == "tightest" { [1, 0] } else { [99, 98] };
        assert_eq!(
            two_limits(&up, &tight, &loose).await,
            (expected.to_vec(), 429, 0),
            "{mode}"
        );
    }
}

#[tokio::test]
async fn only_tightest_calls_the_response_phase() {
    let up = TestUpstream::start("up");
    for (mode, response_phase) in [("unless-present", false), ("tightest", true)] {
        let gw = gateway(
            &up,
            "",
            &format!("{{ requests = 5, window = \"1d\", headers = \"{mode}\" }}"),
        );
        let phases = &gw.snapshot().chains[0][0].phases;
        assert!(phases.request_headers, "{mode}");
        assert_eq!(phases.response_headers, response_phase, "{mode}");
    }
}
