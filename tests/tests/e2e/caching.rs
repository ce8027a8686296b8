//! The response cache (`cache` on a route, `[cache]`): RFC 9111's shared-cache rules,
//! `Age` and `x-cache` on what it serves, variants, revalidation with a `304`, stale
//! answers when the upstream fails, coalesced misses, bodies stored while they stream
//! (and large ones not at all) and shared with coalesced misses as they stream,
//! clients' conditions and ranges answered from entries, purges through the admin API,
//! the metrics, and reloads that change a route's cache. Against a real origin ([`Origin`]) through real
//! gateways: in this process, and the `weir` binary for the admin token.

use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use weir_tests::client::{self, Reply};
use weir_tests::first_party::request;
use weir_tests::gateway::{with_test_listeners, write_config};
use weir_tests::origin::{self, Origin};
use weir_tests::{TestGateway, WeirProcess, get, weir_bin};

/// A route `cached` (its `cache` table is `cache`) and an uncached route `plain`, both
/// to `origin`.
fn config(origin: &Origin, cache: &str) -> String {
    format!(
        "[[upstream]]\nname = \"origin\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"plain\"\nmatch = {{ path_prefix = \"/plain\" }}\nupstream = \"origin\"\n\
         [[route]]\nname = \"cached\"\nupstream = \"origin\"\ncache = {cache}\n",
        origin.addr
    )
}

fn cache_says(reply: &Reply) -> String {
    reply.header("x-cache").unwrap_or_else(|| "-".into())
}

/// GETs `path` twice and says what the cache said each time.
async fn twice(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let first = request("GET", &gw.url(path), headers).await;
    let second = request("GET", &gw.url(path), headers).await;
    assert_eq!(
        (first.status.as_u16(), second.status.as_u16()),
        (200, 200),
        "{path}"
    );
    (cache_says(&first), cache_says(&second))
}

#[tokio::test]
async fn a_fresh_response_is_served_from_the_cache_with_age_and_hit() {
    let origin = Origin::start();
    // Its own route name: the metrics are the process's, shared with the other tests.
    let text = config(&origin, "{ ttl_default = \"60s\" }").replace("\"cached\"", "\"fresh\"");
    let gw = TestGateway::start(&text);
    let path = "/r?cc=max-age%3D300";
    let first = get(&gw.url(path)).await;
    assert_eq!(
        (first.status.as_u16(), cache_says(&first)),
        (200, "MISS".into())
    );
    assert_eq!(first.text(), format!("{path} #1"));
    let second = get(&gw.url(path)).await;
    assert_eq!(cache_says(&second), "HIT");
    assert_eq!(second.text(), first.text(), "the stored body");
    assert_eq!(
        second.header("cache-control").as_deref(),
        Some("max-age=300")
    );
    let age: u64 = second.header("age").expect("Age on a hit").parse().unwrap();
    assert!(age < 300, "{age}");
    assert_eq!(second.header("via").as_deref(), Some("1.1 weir"));
    // A HEAD is answered from the GET's entry, without a body.
    let head = request("HEAD", &gw.url(path), &[]).await;
    assert_eq!((cache_says(&head), head.body.len()), ("HIT".into(), 0));
    assert_eq!(origin.requests(), 1);
    // A response without freshness of its own gets the route's ttl_default.
    assert_eq!(twice(&gw, "/ttl", &[]).await, ("MISS".into(), "HIT".into()));
    // A route without `cache` is untouched: no header, every request upstream.
    let before = origin.requests();
    let plain = get(&gw.url("/plain/x?cc=max-age%3D300")).await;
    let again = get(&gw.url("/plain/x?cc=max-age%3D300")).await;
    assert_eq!(
        (plain.header("x-cache"), again.header("x-cache")),
        (None, None)
    );
    assert_eq!(origin.requests(), before + 2);
    assert_eq!(
        gw.metric("weir_cache_hits_total{route=\"fresh\"}").await,
        3.0
    );
    assert_eq!(
        gw.metric("weir_cache_misses_total{route=\"fresh\"}").await,
        2.0
    );
    assert!(gw.metric("weir_cache_bytes").await > 0.0);
}

#[tokio::test]
async fn what_a_shared_cache_may_not_store_goes_upstream_every_time() {
    let origin = Origin::start();
    let gw = TestGateway::start(&config(&origin, "{ ttl_default = \"60s\" }"));
    let miss = ("MISS".to_owned(), "MISS".to_owned());
    for path in [
        "/no-store?cc=no-store",
        "/private?cc=private%2C+max-age%3D60",
        "/cookie?cc=max-age%3D60&cookie=session%3D1",
        "/vary-star?cc=max-age%3D60&vary=*",
        "/error?status=500",
        "/partial?status=206",
    ] {
        let expected = if path.starts_with("/error") || path.starts_with("/partial") {
            let first = get(&gw.url(path)).await;
            let second = get(&gw.url(path)).await;
            (cache_says(&first), cache_says(&second))
        } else {
            twice(&gw, path, &[]).await
        };
        assert_eq!(expected, miss, "{path}");
    }
    // A request with Authorization: stored only when the response allows it.
    let auth = [("authorization", "Bearer abc")];
    assert_eq!(twice(&gw, "/auth?cc=max-age%3D60", &auth).await, miss);
    for allowed in [
        "public%2C+max-age%3D60",
        "s-maxage%3D60",
        "must-revalidate%2C+max-age%3D60",
    ] {
        let path = format!("/auth?cc={allowed}");
        let said = twice(&gw, &path, &auth).await;
        assert_eq!(said, ("MISS".into(), "HIT".into()), "{path}");
    }
    // A request that asks not to be answered from the cache, or not stored.
    assert_eq!(twice(&gw, "/nc?cc=max-age%3D60", &[]).await.1, "HIT");
    let no_cache = [("cache-control", "no-cache")];
    let refused = request("GET", &gw.url("/nc?cc=max-age%3D60"), &no_cache).await;
    assert_eq!(cache_says(&refused), "MISS");
    assert_eq!(refused.text(), "/nc?cc=max-age%3D60 #2");
    // Only GET and HEAD are served; a successful POST drops the URL's entry.
    let post = request("POST", &gw.url("/nc?cc=max-age%3D60"), &[]).await;
    assert_eq!(cache_says(&post), "MISS");
    let after = get(&gw.url("/nc?cc=max-age%3D60")).await;
    assert_eq!(cache_says(&after), "MISS", "the POST invalidated it");
    // If-Match and If-Unmodified-Since are left to the upstream, even with an entry.
    for guard in ["if-match", "if-unmodified-since"] {
        let value = if guard == "if-match" {
            "*"
        } else {
            "Sun, 06 Nov 1994 08:49:37 GMT"
        };
        let guarded = request("GET", &gw.url("/nc?cc=max-age%3D60"), &[(guard, value)]).await;
        assert_eq!(cache_says(&guarded), "MISS", "{guard}");
    }
}

#[tokio::test]
async fn vary_and_the_routes_vary_headers_keep_variants_apart() {
    let origin = Origin::start();
    let gw = TestGateway::start(&config(&origin, "{ vary = [\"x-tenant\"] }"));
    let path = "/v?cc=max-age%3D60&vary=accept-language";
    let fr = [("accept-language", "fr")];
    let de = [("accept-language", "de")];
    assert_eq!(twice(&gw, path, &fr).await, ("MISS".into(), "HIT".into()));
    // One entry per URL: another language replaces it, and is then served.
    assert_eq!(twice(&gw, path, &de).await, ("MISS".into(), "HIT".into()));
    // The route's own vary header is part of the key: each tenant its entry.
    let path = "/t?cc=max-age%3D60";
    let a = [("x-tenant", "a")];
    let b = [("x-tenant", "b")];
    assert_eq!(twice(&gw, path, &a).await, ("MISS".into(), "HIT".into()));
    assert_eq!(twice(&gw, path, &b).await, ("MISS".into(), "HIT".into()));
    assert_eq!(cache_says(&request("GET", &gw.url(path), &a).await), "HIT");
    let keys = gw.admin_json("/admin/cache").await["keys"].clone();
    let keys: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k.as_str())
        .collect();
    assert!(
        keys.iter()
            .any(|k| k.ends_with("/t?cc=max-age%3D60 x-tenant=a")),
        "{keys:?}"
    );
}

#[tokio::test]
async fn a_stale_entry_is_revalidated_and_a_304_refreshes_it() {
    let origin = Origin::start();
    let gw = TestGateway::start(&config(&origin, "{ ttl_default = \"60s\" }"));
    let path = "/e?cc=max-age%3D2&etag=v1";
    let first = get(&gw.url(path)).await;
    assert_eq!(cache_says(&first), "MISS");
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let revalidated = get(&gw.url(path)).await;
    assert_eq!(origin.requests(), 2);
    let asked = origin.seen().pop().unwrap();
    assert_eq!(asked["if-none-match"], "\"v1\"", "a conditional request");
    assert_eq!(revalidated.status, 200);
    assert_eq!(cache_says(&revalidated), "HIT");
    assert_eq!(
        revalidated.text(),
        first.text(),
        "the stored body, refreshed"
    );
    assert_eq!(revalidated.header("etag").as_deref(), Some("\"v1\""));
    // Fresh again: the next request does not go upstream.
    assert_eq!(cache_says(&get(&gw.url(path)).await), "HIT");
    assert_eq!(origin.requests(), 2);
    // Last-Modified alone is sent back as If-Modified-Since (the origin answers 200).
    let lm = "Sun%2C+06+Nov+1994+08%3A49%3A37+GMT";
    let path = format!("/m?cc=max-age%3D2&lm={lm}");
    get(&gw.url(&path)).await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let refetched = get(&gw.url(&path)).await;
    let asked = origin.seen().pop().unwrap();
    assert_eq!(asked["if-modified-since"], "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(cache_says(&refetched), "MISS");
    assert!(refetched.text().ends_with("#2"), "{}", refetched.text());
}

#[tokio::test]
async fn a_stale_entry_is_served_when_the_upstream_fails_unless_it_must_revalidate() {
    let origin = Origin::start();
    let text = config(&origin, "{ ttl_default = \"60s\" }").replace("\"cached\"", "\"stale\"");
    let gw = TestGateway::start(&text);
    let lenient = "/s?cc=max-age%3D2";
    let strict = "/s?cc=max-age%3D2%2C+must-revalidate";
    let stored = get(&gw.url(lenient)).await;
    get(&gw.url(strict)).await;
    origin.set_failing(true);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    let stale = get(&gw.url(lenient)).await;
    assert_eq!(
        (stale.status.as_u16(), cache_says(&stale)),
        (200, "STALE".into())
    );
    assert_eq!(stale.text(), stored.text());
    let refused = get(&gw.url(strict)).await;
    assert_eq!(
        (refused.status.as_u16(), cache_says(&refused)),
        (503, "MISS".into())
    );
    assert_eq!(
        gw.metric("weir_cache_stale_total{route=\"stale\"}").await,
        1.0
    );
    // Back up: the entry is replaced by a fresh answer.
    origin.set_failing(false);
    let fresh = get(&gw.url(lenient)).await;
    assert_eq!(cache_says(&fresh), "MISS");
    assert!(fresh.text().ends_with("#3"), "{}", fresh.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_misses_for_one_key_make_one_upstream_request() {
    let origin = Origin::start();
    let gw = TestGateway::start(&config(&origin, "{ ttl_default = \"60s\" }"));
    origin.set_delay(Duration::from_millis(500));
    let path = "/hot?cc=max-age%3D60";
    let replies = weir_tests::client::get_concurrently(&gw.url(path), 100).await;
    assert_eq!(origin.requests(), 1, "one upstream request for 100 misses");
    for reply in &replies {
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), format!("{path} #1"));
    }
    let hits = replies.iter().filter(|r| cache_says(r) == "HIT").count();
    assert_eq!(hits, 99, "the waiters are answered by the cache");
    // When the leader's answer may not be stored, the waiters ask for themselves.
    let uncacheable = "/cold?cc=no-store";
    let replies = weir_tests::client::get_concurrently(&gw.url(uncacheable), 10).await;
    assert!(
        replies
            .iter()
            .all(|r| r.status == 200 && cache_says(r) == "MISS")
    );
    assert_eq!(origin.requests(), 11);
}

#[tokio::test]
async fn a_fresh_entry_answers_conditions_and_ranges_without_the_upstream() {
    let origin = Origin::start();
    let text = config(&origin, "{ ttl_default = \"60s\" }").replace("\"cached\"", "\"cond\"");
    let gw = TestGateway::start(&text);
    let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
    let path = "/c?cc=max-age%3D60&etag=v1&lm=Sun%2C+06+Nov+1994+08%3A49%3A37+GMT";
    let full = get(&gw.url(path)).await;
    assert_eq!(cache_says(&full), "MISS");
    let body = full.text();
    let len = body.len();
    // A matching If-None-Match (weak comparison), or If-Modified-Since: 304.
    for headers in [
        &[("if-none-match", "\"v1\"")][..],
        &[("if-none-match", "W/\"v1\", \"v2\"")],
        &[("if-none-match", "*")],
        &[("if-modified-since", "Sun, 06 Nov 1994 08:49:37 GMT")],
    ] {
        let reply = request("GET", &gw.url(path), headers).await;
        assert_eq!(
            (reply.status.as_u16(), cache_says(&reply)),
            (304, "HIT".into()),
            "{headers:?}"
        );
        assert!(reply.body.is_empty(), "{headers:?}");
        assert_eq!(reply.header("etag").as_deref(), Some("\"v1\""));
        assert_eq!(reply.header("last-modified").as_deref(), Some(lm));
        assert_eq!(reply.header("cache-control").as_deref(), Some("max-age=60"));
        assert!(reply.header("age").is_some());
    }
    let head = request("HEAD", &gw.url(path), &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (head.status.as_u16(), cache_says(&head)),
        (304, "HIT".into())
    );
    // Not matching: the stored 200 (If-None-Match wins over If-Modified-Since).
    for headers in [
        &[("if-none-match", "\"v0\"")][..],
        &[("if-none-match", "\"v0\""), ("if-modified-since", lm)],
        &[("if-modified-since", "Sat, 05 Nov 1994 08:49:37 GMT")],
    ] {
        let reply = request("GET", &gw.url(path), headers).await;
        assert_eq!(
            (reply.status.as_u16(), cache_says(&reply)),
            (200, "HIT".into()),
            "{headers:?}"
        );
        assert_eq!(reply.text(), body);
    }
    // One range: 206 with its bytes, in each form.
    for (range, from, to) in [
        ("bytes=0-3", 0, 3),
        ("bytes=3-", 3, len - 1),
        ("bytes=-4", len - 4, len - 1),
        ("bytes=2-100000", 2, len - 1),
    ] {
        let reply = request("GET", &gw.url(path), &[("range", range)]).await;
        assert_eq!(
            (reply.status.as_u16(), cache_says(&reply)),
            (206, "HIT".into()),
            "{range}"
        );
        assert_eq!(reply.text(), body[from..=to], "{range}");
        assert_eq!(
            reply.header("content-range"),
            Some(format!("bytes {from}-{to}/{len}")),
            "{range}"
        );
        assert_eq!(
            reply.header("content-length"),
            Some((to - from + 1).to_string())
        );
    }
    // Past the end: 416 with the length.
    let past = request("GET", &gw.url(path), &[("range", "bytes=100000-")]).await;
    assert_eq!(
        (past.status.as_u16(), cache_says(&past)),
        (416, "HIT".into())
    );
    assert_eq!(past.header("content-range"), Some(format!("bytes */{len}")));
    assert!(past.body.is_empty());
    // If-Range naming another version, several ranges, garbage: the whole 200.
    for headers in [
        &[("range", "bytes=0-3"), ("if-range", "\"v0\"")][..],
        &[
            ("range", "bytes=0-3"),
            ("if-range", "Mon, 07 Nov 1994 08:49:37 GMT"),
        ],
        &[("range", "bytes=0-1,3-4")],
        &[("range", "bytes=oops")],
    ] {
        let reply = request("GET", &gw.url(path), headers).await;
        assert_eq!(
            (reply.status.as_u16(), cache_says(&reply)),
            (200, "HIT".into()),
            "{headers:?}"
        );
        assert_eq!(reply.text(), body, "{headers:?}");
        assert_eq!(reply.header("content-range"), None);
    }
    // If-Range naming the entry: the range.
    for if_range in ["\"v1\"", lm] {
        let reply = request(
            "GET",
            &gw.url(path),
            &[("range", "bytes=0-3"), ("if-range", if_range)],
        )
        .await;
        assert_eq!(
            (reply.status.as_u16(), reply.text()),
            (206, body[..4].to_owned())
        );
    }
    assert_eq!(origin.requests(), 1, "all answered from the entry");
    // A miss with a condition or a range goes upstream as it is, and is not stored.
    let other = "/d?cc=max-age%3D60&etag=v1";
    let ranged = request("GET", &gw.url(other), &[("range", "bytes=0-3")]).await;
    assert_eq!(cache_says(&ranged), "MISS");
    assert_eq!(origin.seen().pop().unwrap()["range"], "bytes=0-3");
    let conditional = request("GET", &gw.url(other), &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (conditional.status.as_u16(), cache_says(&conditional)),
        (304, "MISS".into()),
        "the upstream's own 304"
    );
    assert_eq!(twice(&gw, other, &[]).await, ("MISS".into(), "HIT".into()));
    assert_eq!(origin.requests(), 4);
}

/// Sends GETs of `path` from `n` clients at once; each reports its first chunk on
/// `firsts` and then reads the rest. Their replies: x-cache and the whole body.
fn clients_reading(
    gw: &TestGateway,
    path: &str,
    n: usize,
) -> (
    tokio::sync::mpsc::Receiver<()>,
    Vec<tokio::task::JoinHandle<(String, bytes::Bytes)>>,
) {
    let (firsts, seen) = tokio::sync::mpsc::channel(n);
    let http = client::h1_client();
    let tasks = (0..n)
        .map(|_| {
            let (http, firsts, url) = (http.clone(), firsts.clone(), gw.url(path));
            tokio::spawn(async move {
                let req = Request::get(url).body(client::empty()).unwrap();
                let response = http.request(req).await.expect("response");
                let said = response.headers()["x-cache"].to_str().unwrap().to_owned();
                let mut body = response.into_body();
                let first = body.frame().await.expect("a first frame").expect("data");
                let first = first.into_data().expect("data");
                firsts.send(()).await.unwrap();
                let rest = body.collect().await.expect("the rest").to_bytes();
                (said, [first, rest].concat().into())
            })
        })
        .collect();
    (seen, tasks)
}

/// Waits until `n` clients have had their first chunk (at most 30 s, then fails:
/// the gateway held their first bytes back).
async fn first_chunks(seen: &mut tokio::sync::mpsc::Receiver<()>, n: usize) {
    let all = async {
        for _ in 0..n {
            seen.recv().await.expect("a client's first chunk");
        }
    };
    tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .expect("every client got its first chunk while the upstream held the rest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_misses_read_the_leaders_response_as_it_streams() {
    let origin = Origin::start();
    let gw = TestGateway::start(&config(&origin, "{ ttl_default = \"60s\" }"));
    // The origin sends its first 16 KiB chunk, then holds the rest until the gate opens:
    // the 100 clients must all get the head and that chunk before it does.
    let path = "/gated?size=49152&gate=1&cc=max-age%3D60";
    let (mut seen, tasks) = clients_reading(&gw, path, 100);
    first_chunks(&mut seen, 100).await;
    assert_eq!(origin.requests(), 1, "one upstream request for 100 misses");
    origin.open_gate();
    let whole = origin::sized_body(0, 49152);
    let mut hits = 0;
    for task in tasks {
        let (said, body) = task.await.expect("client task");
        assert_eq!(body, whole, "every client gets the whole body");
        hits += usize::from(said == "HIT");
    }
    assert_eq!(hits, 99, "the waiters are answered by the cache");
    assert_eq!(origin.requests(), 1);
    // And it was stored.
    assert_eq!(cache_says(&get(&gw.url(path)).await), "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalesced_misses_get_whole_bodies_when_the_leaders_outgrows_max_entry_size() {
    let origin = Origin::start();
    let gw = TestGateway::start(&config(
        &origin,
        "{ ttl_default = \"60s\", max_entry_size = \"20KiB\" }",
    ));
    // No Content-Length: the body is found too large at its second chunk, after the
    // waiters joined it.
    let path = "/outgrown?size=81920&chunked=1&gate=1&cc=max-age%3D60";
    let (mut seen, tasks) = clients_reading(&gw, path, 20);
    first_chunks(&mut seen, 20).await;
    assert_eq!(origin.requests(), 1);
    origin.open_gate();
    let whole = origin::sized_body(0, 81920);
    for task in tasks {
        let (_, body) = task.await.expect("client task");
        assert_eq!(body.len(), whole.len());
        assert_eq!(body, whole, "every client gets the whole body");
    }
    assert_eq!(origin.requests(), 1);
    let again = get(&gw.url(path)).await;
    assert_eq!(
        (cache_says(&again), again.body.len()),
        ("MISS".into(), 81920)
    );
}

#[tokio::test]
async fn a_body_is_stored_as_it_streams_and_a_large_one_not_at_all() {
    let origin = Origin::start();
    let gw = TestGateway::start(&config(
        &origin,
        "{ ttl_default = \"60s\", max_entry_size = \"100KiB\" }",
    ));
    // The client gets the first chunk while the origin is still sending the rest (it
    // pauses between chunks): nothing is stored until the body ends.
    let path = "/stream?size=65536&pause=200";
    let response = client::h1_client()
        .request(Request::get(gw.url(path)).body(client::empty()).unwrap())
        .await
        .expect("response");
    assert_eq!(response.headers()["x-cache"], "MISS");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a first frame").expect("data");
    assert!(!first.data_ref().unwrap().is_empty());
    assert_eq!(
        gw.admin_json("/admin/cache").await["entries"],
        0,
        "not stored yet"
    );
    let rest = body.collect().await.expect("the rest").to_bytes();
    assert_eq!(first.data_ref().unwrap().len() + rest.len(), 65536);
    let hit = get(&gw.url(path)).await;
    assert_eq!((cache_says(&hit), hit.body.len()), ("HIT".into(), 65536));
    // Past max_entry_size, declared or found while streaming: streamed, never stored.
    for large in ["/large?size=204800", "/large?size=204800&chunked=1"] {
        let (a, b) = (get(&gw.url(large)).await, get(&gw.url(large)).await);
        assert_eq!((a.body.len(), b.body.len()), (204800, 204800));
        assert_eq!(
            (cache_says(&a), cache_says(&b)),
            ("MISS".into(), "MISS".into()),
            "{large}"
        );
    }
    // Without a declared length but small enough: stored.
    assert_eq!(
        twice(&gw, "/small?size=1000&chunked=1", &[]).await,
        ("MISS".into(), "HIT".into())
    );
}

#[tokio::test]
async fn the_cache_evicts_within_its_memory_and_counts_it() {
    let origin = Origin::start();
    let text = format!(
        "[cache]\nmemory = \"256KiB\"\n{}",
        config(&origin, "{ max_entry_size = \"64KiB\" }")
    );
    let gw = TestGateway::start(&text);
    for i in 0..40 {
        let reply = get(&gw.url(&format!("/big/{i}?size=32768&cc=max-age%3D60"))).await;
        assert_eq!(reply.body.len(), 32768);
    }
    let cache = gw.admin_json("/admin/cache").await;
    assert!(cache["bytes"].as_u64().unwrap() <= 256 * 1024, "{cache}");
    assert!(cache["entries"].as_u64().unwrap() < 40, "{cache}");
    assert!(
        gw.metric("weir_cache_evictions_total{route=\"cached\"}")
            .await
            > 0.0
    );
}

#[tokio::test]
async fn a_reload_that_changes_a_routes_cache_does_not_serve_its_old_entries() {
    let origin = Origin::start();
    let file = write_config(&with_test_listeners(&config(
        &origin,
        "{ ttl_default = \"60s\" }",
    )));
    let gw = TestGateway::from_file(&file);
    assert_eq!(twice(&gw, "/k", &[]).await, ("MISS".into(), "HIT".into()));
    // A reload with the same settings keeps the entries.
    let (status, _) = gw.reload().await;
    assert_eq!(status, 200);
    assert_eq!(cache_says(&get(&gw.url("/k")).await), "HIT");
    let changed = config(&origin, "{ ttl_default = \"30s\" }");
    std::fs::write(&file, with_test_listeners(&changed)).unwrap();
    let (status, report) = gw.reload().await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(twice(&gw, "/k", &[]).await, ("MISS".into(), "HIT".into()));
}

#[tokio::test]
async fn purges_take_a_key_or_a_prefix_with_the_admin_token() {
    let origin = Origin::start();
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"WEIR_TEST_CACHE_TOKEN\"\n\
         [cache]\nheader = \"x-edge-cache\"\n{}",
        config(&origin, "{ ttl_default = \"60s\" }")
    );
    let path = write_config(&with_test_listeners(&text));
    let weir = WeirProcess::spawn_with_env(
        weir_bin!(),
        &["run", "--config", path.to_str().unwrap()],
        &[("WEIR_TEST_CACHE_TOKEN", "purge-token")],
    );
    let url = |p: &str| format!("http://{}{p}", weir.addr);
    for p in ["/p/1", "/p/2", "/q/1"] {
        get(&url(p)).await;
    }
    let said = |r: &Reply| r.header("x-edge-cache").unwrap_or_default();
    assert_eq!(said(&get(&url("/p/1")).await), "HIT");
    assert_eq!(
        get(&url("/p/1")).await.header("x-cache"),
        None,
        "the header is renamed"
    );
    let http = client::h1_client();
    let admin = |method: &str, p: &str, token: Option<&str>| {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{p}", weir.admin));
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        client::send(&http, req.body(client::empty()).unwrap())
    };
    let purge = "/admin/cache/purge?key=cached%3A";
    let host = format!("127.0.0.1%3A{}", weir.addr.port());
    assert_eq!(
        admin("POST", &format!("{purge}{host}/q/1"), None)
            .await
            .status,
        401
    );
    assert_eq!(
        admin("GET", "/admin/cache", Some("wrong")).await.status,
        401
    );
    let listed = admin("GET", "/admin/cache", Some("purge-token")).await;
    let listed: serde_json::Value = serde_json::from_slice(&listed.body).unwrap();
    assert_eq!(listed["entries"], 3, "{listed}");
    let purged = admin("POST", &format!("{purge}{host}/q/1"), Some("purge-token")).await;
    assert_eq!(purged.status, 200, "{}", purged.text());
    assert_eq!(
        purged.text().replace(char::is_whitespace, ""),
        "{\"purged\":1}"
    );
    assert_eq!(said(&get(&url("/q/1")).await), "MISS");
    let prefix = format!("/admin/cache/purge?prefix=cached%3A{host}/p/");
    let purged = admin("POST", &prefix, Some("purge-token")).await;
    assert_eq!(
        purged.text().replace(char::is_whitespace, ""),
        "{\"purged\":2}"
    );
    assert_eq!(said(&get(&url("/p/2")).await), "MISS");
    let bad = admin(
        "POST",
        "/admin/cache/purge?key=a&prefix=b",
        Some("purge-token"),
    )
    .await;
    assert_eq!(bad.status, 400);
    let wrong_method = admin("GET", &prefix, Some("purge-token")).await;
    assert_eq!(wrong_method.status, 405);
}

#[test]
fn cache_settings_are_checked_with_clear_errors() {
    let bad = [
        (
            "[cache]\nmemory = \"10B\"\n",
            "cache.memory",
            "memory must be from 1KiB to 1TiB",
        ),
        (
            "[cache]\nheader = \"bad header\"\n",
            "cache.header",
            "not a header name",
        ),
        (
            "[cache]\nheader = \"connection\"\n",
            "cache.header",
            "not a header name",
        ),
        ("[cache]\nmemori = \"1MiB\"\n", "memori", "memory"),
    ];
    let route = "[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:9\"]\n[[route]]\nname = \"r\"\nupstream = \"u\"\n";
    let routes = [
        (
            "cache = { max_entry_size = \"0B\" }",
            "route[0].cache.max_entry_size",
            "max_entry_size must be",
        ),
        (
            "cache = { max_entry_size = \"2GiB\" }",
            "route[0].cache.max_entry_size",
            "within [cache] memory",
        ),
        (
            "cache = { ttl_default = \"2years\" }",
            "route[0].cache.ttl_default",
            "at most a year",
        ),
        (
            "cache = { ttl_default = \"soon\" }",
            "ttl_default",
            "invalid duration",
        ),
        (
            "cache = { vary = [\"x-a\", \"X-A\"] }",
            "route[0].cache.vary[1]",
            "named twice",
        ),
        (
            "cache = { vary = [\"bad name\"] }",
            "route[0].cache.vary[0]",
            "not a valid header name",
        ),
        ("cache = { ttl = \"1s\" }", "ttl", "ttl_default"),
    ];
    let cases = bad
        .iter()
        .map(|(text, key, says)| (format!("{text}{route}"), *key, *says))
        .chain(
            routes
                .iter()
                .map(|(line, key, says)| (format!("{route}{line}\n"), *key, *says)),
        )
        .chain(std::iter::once((
            "[[route]]\nname = \"r\"\nrespond = { status = 200 }\ncache = {}\n".to_owned(),
            "route[0].cache",
            "no effect on a route that responds itself",
        )));
    for (text, key, says) in cases {
        let error = weir_gateway::Config::parse(std::path::Path::new("weir.toml"), &text)
            .expect_err(&text)
            .to_string();
        assert!(
            error.contains(key) && error.contains(says),
            "{text}\n→ {error}"
        );
    }
    let fine = format!("[cache]\nmemory = \"1GiB\"\nheader = \"\"\n{route}cache = {{}}\n");
    let config = weir_gateway::Config::parse(std::path::Path::new("weir.toml"), &fine).unwrap();
    assert_eq!(config.cache.header, None);
    let route_cache = config.routes[0].cache.as_ref().unwrap();
    assert_eq!(route_cache.ttl_default, Duration::from_secs(60));
    assert_eq!(route_cache.max_entry_size, 1024 * 1024);
}
