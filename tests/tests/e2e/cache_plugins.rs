//! Plugins steering the response cache (WIT 0.1.6): a request phase appends parts to the
//! cache key or keeps the cache out of the request, a response-headers phase keeps a
//! response from being stored. The probe guest (`mode = "cache"`) does each on a header,
//! in front of a counting origin ([`Origin`]), through a real gateway.

use std::time::Duration;

use weir_tests::client::Reply;
use weir_tests::first_party::request;
use weir_tests::origin::Origin;
use weir_tests::{TestGateway, guest_wasm};

/// Routes with the probe in `cache` mode: `plain` (`/plain`, no `cache`), `lenient`
/// (`/allow`, cached, the plugin skipped when it fails) and `steered` (everything else,
/// cached).
fn gateway(origin: &Origin) -> TestGateway {
    let dir = weir_tests::gateway::plugin_dir(&[(guest_wasm!("probe"), "probe")]);
    let probe = "plugins = [{ name = \"probe\", config = { mode = \"cache\" } }]";
    let lenient =
        "plugins = [{ name = \"probe\", config = { mode = \"cache\" }, on_error = \"allow\" }]";
    let cache = "cache = { ttl_default = \"60s\" }";
    TestGateway::start(&format!(
        "[plugins]\ndir = \"{dir}/plugins\"\ncache_dir = \"{compiled}\"\n\
         [[upstream]]\nname = \"origin\"\nendpoints = [\"{addr}\"]\n\
         [[route]]\nname = \"plain\"\nmatch = {{ path_prefix = \"/plain\" }}\nupstream = \"origin\"\n{probe}\n\
         [[route]]\nname = \"lenient\"\nmatch = {{ path_prefix = \"/allow\" }}\nupstream = \"origin\"\n{cache}\n{lenient}\n\
         [[route]]\nname = \"steered\"\nupstream = \"origin\"\n{cache}\n{probe}\n",
        dir = dir.display(),
        compiled = weir_tests::gateway::compile_cache().display(),
        addr = origin.addr,
    ))
}

/// A GET of `path` with `headers`: what the cache said, and the body.
async fn fetch(gw: &TestGateway, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let reply = request("GET", &gw.url(path), headers).await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    (cache_says(&reply), reply.text())
}

fn cache_says(reply: &Reply) -> String {
    reply.header("x-cache").unwrap_or_else(|| "-".into())
}

fn said(outcome: &str, body: String) -> (String, String) {
    (outcome.to_owned(), body)
}

#[tokio::test]
async fn a_plugins_key_part_keeps_entries_apart() {
    let origin = Origin::start();
    let gw = gateway(&origin);
    let path = "/report?cc=max-age%3D60";
    let first = |n| format!("{path} #{n}");
    let acme = [("x-cache-part", "tenant acme")];
    let globex = [("x-cache-part", "tenant globex")];
    assert_eq!(fetch(&gw, path, &acme).await, said("MISS", first(1)));
    assert_eq!(fetch(&gw, path, &globex).await, said("MISS", first(2)));
    // Each later request is a hit on its own part's entry, with that entry's body.
    assert_eq!(fetch(&gw, path, &acme).await, said("HIT", first(1)));
    assert_eq!(fetch(&gw, path, &globex).await, said("HIT", first(2)));
    // Without a part, a third entry.
    assert_eq!(fetch(&gw, path, &[]).await, said("MISS", first(3)));
    assert_eq!(fetch(&gw, path, &[]).await, said("HIT", first(3)));
    assert_eq!(origin.requests(), 3);
    // The parts are in the keys, after the URL (which purging by key matches).
    let keys = gw.admin_json("/admin/cache").await["keys"].clone();
    let url = format!("steered:{}{path}", gw.addr);
    for key in [
        format!("{url} +11:tenant acme"),
        format!("{url} +13:tenant globex"),
        url.clone(),
    ] {
        assert!(
            keys.as_array().unwrap().iter().any(|k| k == &key),
            "{key} in {keys}"
        );
    }
    // A part of a call that failed (the plugin skipped: on_error = "allow") is dropped
    // with it: the request shares the entry of requests without a part.
    let lenient = "/allow/r?cc=max-age%3D60";
    let failing = [("x-cache-part", "dropped"), ("x-then-fail", "1")];
    assert_eq!(
        fetch(&gw, lenient, &failing).await,
        said("MISS", format!("{lenient} #1"))
    );
    assert_eq!(
        fetch(&gw, lenient, &[]).await,
        said("HIT", format!("{lenient} #1"))
    );
    assert_eq!(origin.requests(), 4);
}

#[tokio::test]
async fn a_request_a_plugin_keeps_out_is_neither_served_nor_stored() {
    let origin = Origin::start();
    let gw = gateway(&origin);
    let out = [("x-keep-out", "1")];
    // Nothing stored: every request reaches the origin, and says MISS.
    let path = "/mine?cc=max-age%3D60";
    for n in 1..=3 {
        assert_eq!(
            fetch(&gw, path, &out).await,
            said("MISS", format!("{path} #{n}"))
        );
    }
    assert_eq!(origin.requests(), 3);
    assert_eq!(
        fetch(&gw, path, &[]).await,
        said("MISS", format!("{path} #4")),
        "no entry was left behind"
    );
    // Nor served: a stored entry is passed over, and stays for the others.
    assert_eq!(
        fetch(&gw, path, &out).await,
        said("MISS", format!("{path} #5"))
    );
    assert_eq!(
        fetch(&gw, path, &[]).await,
        said("HIT", format!("{path} #4"))
    );
    assert_eq!(origin.requests(), 5);
    // A route without `cache` ignores the calls: no error, no x-cache.
    let plain = "/plain/x?cc=max-age%3D60";
    let steer = [("x-keep-out", "1"), ("x-cache-part", "p")];
    assert_eq!(
        fetch(&gw, plain, &steer).await,
        said("-", format!("{plain} #1"))
    );
    assert_eq!(
        fetch(&gw, plain, &steer).await,
        said("-", format!("{plain} #2"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_response_a_plugin_keeps_out_is_not_stored_and_its_waiters_ask_for_themselves() {
    let origin = Origin::start();
    let gw = gateway(&origin);
    // The origin marks it personal; the plugin's response phase keeps it out, whatever
    // its Cache-Control says.
    let path = "/me?cc=max-age%3D60&personal=1";
    assert_eq!(
        fetch(&gw, path, &[]).await,
        said("MISS", format!("{path} #1"))
    );
    assert_eq!(
        fetch(&gw, path, &[]).await,
        said("MISS", format!("{path} #2"))
    );
    assert_eq!(origin.requests(), 2);
    assert_eq!(gw.admin_json("/admin/cache").await["entries"], 0);
    // Concurrent misses wait for one leader; its response is not stored, so they each
    // go to the origin and all get an answer.
    origin.set_delay(Duration::from_millis(300));
    let coalesced = "/us?cc=max-age%3D60&personal=1";
    let replies = weir_tests::client::get_concurrently(&gw.url(coalesced), 10).await;
    for reply in &replies {
        assert_eq!(reply.status, 200);
        assert_eq!(cache_says(reply), "MISS");
        assert!(
            reply.text().starts_with(&format!("{coalesced} #")),
            "{}",
            reply.text()
        );
    }
    assert_eq!(origin.requests(), 12);
    // The same without the mark is stored once and shared.
    let shared = "/all?cc=max-age%3D60";
    let replies = weir_tests::client::get_concurrently(&gw.url(shared), 10).await;
    assert!(replies.iter().all(|r| r.text() == format!("{shared} #1")));
    assert_eq!(origin.requests(), 13);
}
