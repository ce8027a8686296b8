//! The key-value store's per-plugin bounds (`[kv]`), end to end: a plugin that fills
//! the store is refused at the bound and sees the refusal, the refusal is counted, and
//! `rate-limit` keyed by a client-chosen header cannot grow the store past it.

use weir_tests::{TestGateway, TestUpstream, get, guest_wasm};

fn route(name: &str, plugin: &str, config: &str) -> String {
    format!(
        "[[route]]\nname = \"{name}\"\nupstream = \"up\"\nmatch = {{ path_prefix = \"/{name}\" }}\nplugins = [{{ name = \"{plugin}\", config = {config} }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_filling_the_store_is_refused_at_its_bound_and_others_are_not() {
    let up = TestUpstream::start("up");
    let dir = weir_tests::gateway::plugin_dir(&[
        (guest_wasm!("probe"), "kv-filler"),
        (guest_wasm!("probe"), "kv-neighbour"),
    ]);
    let gw = TestGateway::start(&format!(
        "[kv]\nmax_entries = 1000\nmax_bytes = \"1MiB\"\n[plugins]\ndir = \"{}/plugins\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n{}{}",
        dir.display(),
        up.addr,
        route("fill", "kv-filler", "{ mode = \"kv-fill\", tag = \"a\" }"),
        route("count", "kv-neighbour", "{ mode = \"count\" }"),
    ));
    assert_eq!(get(&gw.url("/fill")).await.status, 200);
    let seen = up.last();
    assert_eq!(seen.headers["x-kv-written"], "1000");
    assert_eq!(
        seen.headers["x-kv-refused"],
        "the plugin's key-value store is full"
    );
    assert_eq!(
        seen.headers["x-kv-first"], "100",
        "what it holds stays readable"
    );
    let series = |name: &str| format!("{name}{{plugin=\"kv-filler\"}}");
    assert_eq!(gw.metric(&series("weir_kv_entries")).await, 1000.0);
    let bytes = gw.metric(&series("weir_kv_bytes")).await;
    assert!((200_000.0..=1_048_576.0).contains(&bytes), "{bytes}");
    assert_eq!(
        gw.metric("weir_plugin_refusals_total{plugin=\"kv-filler\",reason=\"kv_full\"}")
            .await,
        1.0
    );
    // Another plugin has its own bound: it still counts.
    assert_eq!(get(&gw.url("/count")).await.status, 200);
    assert_eq!(up.last().headers["x-count"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_keyed_by_a_client_header_cannot_grow_the_store_past_its_bound() {
    let up = TestUpstream::start("up");
    let dir = weir_tests::gateway::plugin_dir(&[(guest_wasm!("rate_limit"), "bounded-limit")]);
    let gw = TestGateway::start(&format!(
        "[kv]\nmax_entries = 200\n[plugins]\ndir = \"{}/plugins\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n{}",
        dir.display(),
        up.addr,
        route(
            "api",
            "bounded-limit",
            "{ requests = 5, window = \"1m\", key = \"header:x-client\" }"
        ),
    ));
    // The limit counts per minute of the clock: stay inside one.
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 60;
    if second > 40 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second)).await;
    }
    let client = weir_tests::h1_client();
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..600 {
        let req = http::Request::get(gw.url("/api"))
            .header("x-client", format!("client-{i}"))
            .body(weir_tests::client::empty())
            .unwrap();
        let reply = weir_tests::send(&client, req).await;
        *statuses.entry(reply.status.as_u16()).or_insert(0) += 1;
    }
    // One counter per client fits for the first 200; the rest cannot be counted, so
    // they are refused rather than admitted without a limit.
    assert_eq!(statuses.get(&200), Some(&200), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&400), "{statuses:?}");
    let entries = gw.metric("weir_kv_entries{plugin=\"bounded-limit\"}").await;
    assert_eq!(entries, 200.0);
    assert_eq!(
        gw.metric("weir_plugin_store_full_total{plugin=\"bounded-limit\"}")
            .await,
        400.0
    );
    // A client with a counter is still counted to its limit.
    let mut admitted = 0;
    for _ in 0..10 {
        let req = http::Request::get(gw.url("/api"))
            .header("x-client", "client-7")
            .body(weir_tests::client::empty())
            .unwrap();
        if weir_tests::send(&client, req).await.status == 200 {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 4, "5 a minute, one already used");
}

#[test]
fn bounds_out_of_range_are_refused_with_their_place() {
    let err = weir_gateway::Config::parse(
        std::path::Path::new("weir.toml"),
        "[kv]\nmax_entries = 0\nmax_bytes = \"10B\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    assert_eq!(err.diagnostics().len(), 2, "{text}");
    assert!(
        text.contains("kv.max_entries") && text.contains("must be from 1"),
        "{text}"
    );
    assert!(
        text.contains("kv.max_bytes") && text.contains("not 10 B"),
        "{text}"
    );
}
