//! Endpoints from a file (`endpoints_file`): the gateway follows a JSON list that
//! something else rewrites (atomically, as kubelet and deploy tools do, or in place),
//! under load without a failed request; endpoints that stay keep their pooled
//! connections; a malformed or missing file keeps the list serving and shows in
//! `/admin/upstreams`; and a bad file at startup is a config error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use http_body_util::BodyExt;
use serde_json::Value;
use weir_gateway::Config;
use weir_tests::client::{self, empty, h1_client, send};
use weir_tests::gateway::{TestGateway, fresh_dir, with_test_listeners};
use weir_tests::{TestUpstream, poll};

const LIMIT: Duration = Duration::from_secs(15);

/// A config file routing `/` to upstream `disc`, whose endpoints are in
/// `endpoints.json` beside it (holding `initial`); `extra` goes into the upstream.
/// Returns (config file, endpoints file).
fn setup(initial: &str, extra: &str) -> (PathBuf, PathBuf) {
    let dir = fresh_dir();
    let endpoints = dir.join("endpoints.json");
    std::fs::write(&endpoints, initial).expect("endpoints file");
    let config = dir.join("weir.toml");
    let text = with_test_listeners(&format!(
        "[reload]\ndebounce = \"50ms\"\n\
         [[upstream]]\nname = \"disc\"\nendpoints_file = \"{}\"\n{extra}\n\
         [[route]]\nname = \"all\"\nupstream = \"disc\"\n",
        endpoints.display()
    ));
    std::fs::write(&config, text).expect("config");
    (config, endpoints)
}

/// A JSON list of `upstreams`' addresses.
fn list(upstreams: &[&TestUpstream]) -> String {
    let entries: Vec<String> = upstreams
        .iter()
        .map(|u| format!("\"{}\"", u.addr))
        .collect();
    format!("[{}]", entries.join(", "))
}

/// Writes a temporary file and renames it over `path` (kubelet, consul-template).
fn replace_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// The upstream `disc` as `/admin/upstreams` shows it.
async fn admin_view(gw: &TestGateway) -> Value {
    let doc = gw.admin_json("/admin/upstreams").await;
    doc["upstreams"][0].clone()
}

fn addresses(view: &Value) -> Vec<String> {
    view["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| e["address"].as_str().expect("address").to_owned())
        .collect()
}

/// `clients` keep-alive clients sending `GET /` until `stop`, at most `max` each;
/// `sent` counts completed requests. Returns the failures seen.
fn load(
    gw: &TestGateway,
    clients: usize,
    max: usize,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let url = gw.url("/load");
    tokio::spawn(async move {
        let tasks: Vec<_> = (0..clients)
            .map(|_| {
                let (url, stop, sent) = (url.clone(), stop.clone(), sent.clone());
                tokio::spawn(async move {
                    let http = h1_client();
                    let mut failed = Vec::new();
                    for _ in 0..max {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let req = Request::get(&url).body(empty()).expect("request");
                        let reply = tokio::time::timeout(Duration::from_secs(10), async {
                            let response = http.request(req).await.map_err(|e| e.to_string())?;
                            let (parts, body) = response.into_parts();
                            body.collect().await.map_err(|e| e.to_string())?;
                            Ok::<_, String>(parts.status)
                        })
                        .await;
                        match reply {
                            Ok(Ok(status)) if status == 200 => {}
                            Ok(Ok(status)) => failed.push(format!("status {status}")),
                            Ok(Err(e)) => failed.push(e),
                            Err(_) => failed.push("no response within 10 s".to_owned()),
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                    }
                    failed
                })
            })
            .collect();
        let mut failed = Vec::new();
        for task in tasks {
            failed.extend(task.await.expect("load client"));
        }
        failed
    })
}

/// Waits until `sent` has grown by `more` requests.
async fn after_requests(sent: &AtomicUsize, more: usize) {
    let target = sent.load(Ordering::Relaxed) + more;
    poll::until(LIMIT, "load requests", || async {
        sent.load(Ordering::Relaxed) >= target
    })
    .await;
}

#[tokio::test]
async fn rewriting_the_file_under_load_fails_no_request() {
    let (a, b, c) = (
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    );
    let (config, endpoints) = setup(&list(&[&a, &b]), "");
    let gw = TestGateway::from_file(&config);
    const CLIENTS: usize = 4;
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let running = load(&gw, CLIENTS, 5000, stop.clone(), sent.clone());

    poll::until(LIMIT, "a and b serve", || async {
        a.served() > 0 && b.served() > 0
    })
    .await;
    assert_eq!(c.served(), 0);

    // Atomic replace: a leaves, c joins.
    replace_atomically(&endpoints, &list(&[&b, &c]));
    poll::until(LIMIT, "c gets traffic", || async { c.served() > 0 }).await;
    // Requests that picked `a` before the swap may still arrive: at most one per client.
    let a_then = a.served();
    after_requests(&sent, 200).await;
    assert!(
        a.served() <= a_then + CLIENTS,
        "the removed endpoint still gets requests: {} -> {}",
        a_then,
        a.served()
    );
    let (b_then, c_then) = (b.served(), c.served());

    // In-place rewrite: b leaves, a is back with a weight.
    std::fs::write(
        &endpoints,
        format!(
            "[{{\"address\": \"{}\", \"weight\": 2}}, \"{}\"]",
            a.addr, c.addr
        ),
    )
    .expect("rewrite in place");
    let a_back = a.served();
    poll::until(LIMIT, "a gets traffic again", || async {
        a.served() > a_back + CLIENTS
    })
    .await;
    let b_now = b.served();
    after_requests(&sent, 200).await;
    assert!(b.served() <= b_now + CLIENTS, "b still gets requests");
    assert!(b_now >= b_then && c.served() > c_then);

    stop.store(true, Ordering::Relaxed);
    let failed = running.await.expect("load");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    let view = admin_view(&gw).await;
    assert_eq!(addresses(&view), [a.addr.to_string(), c.addr.to_string()]);
    assert_eq!(view["endpoints"][0]["weight"], 2);
    assert!(view["endpoints_file"]["error"].is_null(), "{view}");
}

/// Requests one after another over one client connection: one gateway worker serves
/// them, with one pooled connection per endpoint. Endpoints that stay in the file keep
/// that connection; only a new endpoint is connected to.
#[tokio::test]
async fn endpoints_that_stay_keep_their_pooled_connections() {
    let (a, b, c) = (
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    );
    let (config, endpoints) = setup(&list(&[&a, &b]), "");
    let gw = TestGateway::from_file(&config);
    let client = h1_client();
    let get = || Request::get(gw.url("/seq")).body(empty()).expect("request");
    for _ in 0..10 {
        assert_eq!(send(&client, get()).await.status, 200);
    }
    assert_eq!((a.connections(), b.connections()), (1, 1));

    std::fs::write(&endpoints, list(&[&a, &b, &c])).expect("rewrite in place");
    poll::until(LIMIT, "c gets traffic", || async {
        let reply = send(&client, get()).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        c.served() > 0
    })
    .await;
    for _ in 0..10 {
        assert_eq!(send(&client, get()).await.status, 200);
    }
    assert_eq!(
        (a.connections(), b.connections(), c.connections()),
        (1, 1, 1),
        "a and b were reconnected to"
    );
    assert!(a.served() > 5 && b.served() > 5);
}

#[tokio::test]
async fn a_malformed_or_missing_file_keeps_the_list_and_says_why() {
    let (a, b) = (TestUpstream::start("a"), TestUpstream::start("b"));
    let (config, endpoints) = setup(&list(&[&a]), "");
    let gw = TestGateway::from_file(&config);
    let view = admin_view(&gw).await;
    assert_eq!(
        view["endpoints_file"]["path"],
        endpoints.display().to_string()
    );
    assert!(view["endpoints_file"]["loaded_at"].is_string(), "{view}");
    assert!(view["endpoints_file"]["error"].is_null(), "{view}");

    // Half a list, as a writer caught mid-write leaves it.
    std::fs::write(&endpoints, format!("[\"{}\", ", b.addr)).expect("write");
    poll::until(LIMIT, "the refusal shows", || async {
        admin_view(&gw).await["endpoints_file"]["error"].is_object()
    })
    .await;
    let view = admin_view(&gw).await;
    let message = view["endpoints_file"]["error"]["message"]
        .as_str()
        .expect("message");
    assert!(
        message.contains("endpoints.json") && message.contains("not a JSON array"),
        "{message}"
    );
    assert_eq!(addresses(&view), [a.addr.to_string()], "the list stays");
    let reply = client::get(&gw.url("/still")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-upstream").as_deref(), Some("a"));
    let (status, report) = gw.reload().await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["endpoints"][0]["upstream"], "disc");
    assert_eq!(report["endpoints"][0]["result"], "refused");

    // An entry that breaks a rule, then no file at all: the same.
    std::fs::write(&endpoints, "[\"127.0.0.1:0\"]").expect("write");
    poll::until(LIMIT, "the rule shows", || async {
        admin_view(&gw).await["endpoints_file"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("entry 0") && m.contains("non-zero port"))
    })
    .await;
    std::fs::remove_file(&endpoints).expect("remove");
    poll::until(LIMIT, "the missing file shows", || async {
        admin_view(&gw).await["endpoints_file"]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot read endpoints file"))
    })
    .await;
    assert_eq!(client::get(&gw.url("/still")).await.status, 200);
    assert_eq!(a.served(), 2);

    // A good file again: applied, and the refusal is gone.
    replace_atomically(&endpoints, &list(&[&b]));
    poll::until(LIMIT, "b serves", || async {
        client::get(&gw.url("/now"))
            .await
            .header("x-upstream")
            .as_deref()
            == Some("b")
    })
    .await;
    let view = admin_view(&gw).await;
    assert!(view["endpoints_file"]["error"].is_null(), "{view}");
    assert_eq!(addresses(&view), [b.addr.to_string()]);
}

/// Weights apply as written in the file, and an endpoint failing its health checks
/// stays out of rotation when the file changes around it.
#[tokio::test]
async fn weights_and_health_checks_work_on_file_endpoints() {
    let (a, b, c) = (
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    );
    a.set_health(503);
    let file = format!(
        "[\"{}\", {{\"address\": \"{}\", \"weight\": 3}}, \"{}\"]",
        a.addr, b.addr, c.addr
    );
    let (config, endpoints) = setup(
        &file,
        "health = { path = \"/healthz\", interval = \"100ms\", timeout = \"1s\" }",
    );
    let gw = TestGateway::from_file(&config);
    poll::until(LIMIT, "a is out of rotation", || async {
        admin_view(&gw).await["endpoints"][0]["in_rotation"] == false
    })
    .await;
    let client = h1_client();
    let get = || Request::get(gw.url("/w")).body(empty()).expect("request");
    for _ in 0..400 {
        assert_eq!(send(&client, get()).await.status, 200);
    }
    assert_eq!(a.served(), 0);
    assert_eq!((b.served(), c.served()), (300, 100), "weights 3:1");

    // c leaves; a keeps failing its checks and stays out.
    std::fs::write(
        &endpoints,
        format!(
            "[\"{}\", {{\"address\": \"{}\", \"weight\": 3}}]",
            a.addr, b.addr
        ),
    )
    .expect("rewrite");
    poll::until(LIMIT, "c is gone", || async {
        admin_view(&gw).await["endpoints"].as_array().map(Vec::len) == Some(2)
    })
    .await;
    let view = admin_view(&gw).await;
    assert_eq!(view["endpoints"][0]["healthy"], false, "{view}");
    let before = b.served();
    for _ in 0..50 {
        assert_eq!(send(&client, get()).await.status, 200);
    }
    assert_eq!(a.served(), 0, "the unhealthy endpoint got requests");
    assert_eq!(b.served(), before + 50);
}

#[tokio::test]
async fn a_bad_file_at_startup_is_a_config_error() {
    let dir = fresh_dir();
    let missing = dir.join("nowhere.json");
    let config = |upstream: &str| {
        format!(
            "[[upstream]]\nname = \"disc\"\n{upstream}\n[[route]]\nname = \"r\"\nupstream = \"disc\"\n"
        )
    };
    let error = |text: String| {
        Config::parse(&dir.join("weir.toml"), &text)
            .expect_err("refused")
            .to_string()
    };
    let message = error(config(&format!(
        "endpoints_file = \"{}\"",
        missing.display()
    )));
    assert!(
        message.contains("upstream[0].endpoints_file")
            && message.contains("cannot read endpoints file")
            && message.contains("nowhere.json"),
        "{message}"
    );
    let bad = dir.join("bad.json");
    std::fs::write(&bad, "[\"127.0.0.1:9001\", {\"address\": 9002}]").expect("write");
    let message = error(config(&format!("endpoints_file = \"{}\"", bad.display())));
    assert!(
        message.contains("bad.json") && message.contains("line 1 column"),
        "{message}"
    );
    let good = dir.join("good.json");
    std::fs::write(&good, "[\"127.0.0.1:9001\"]").expect("write");
    let message = error(config(&format!(
        "endpoints = [\"127.0.0.1:9001\"]\nendpoints_file = \"{}\"",
        good.display()
    )));
    assert!(
        message.contains("sets both `endpoints` and `endpoints_file`"),
        "{message}"
    );
    let message = error(config(""));
    assert!(
        message.contains("has no endpoints: set `endpoints` or `endpoints_file`"),
        "{message}"
    );
    let loaded = Config::parse(
        &dir.join("weir.toml"),
        &config(&format!("endpoints_file = \"{}\"", good.display())),
    )
    .expect("a good file loads");
    assert_eq!(loaded.upstreams[0].endpoints.len(), 1);
}
