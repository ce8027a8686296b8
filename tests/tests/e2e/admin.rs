//! The admin API: routes, upstreams and plugins as JSON, method and path errors, and
//! the bearer token that guards it.

use http::Request;
use weir_tests::client::{self, Reply};
use weir_tests::gateway::{WeirProcess, write_config};
use weir_tests::{TestGateway, TestUpstream, guest_wasm, weir_bin};

fn config(up: &TestUpstream, other: &str) -> String {
    let dir = weir_tests::gateway::plugin_dir(&[(guest_wasm!("swap_a"), "swap")]);
    format!(
        r#"
[plugins]
dir = "{dir}/plugins"
cache_dir = "{cache}"
[[upstream]]
name = "users"
endpoints = ["{up}", "{other}"]
[[route]]
name = "api"
match = {{ host = "*.example.com", path_prefix = "/api", methods = ["GET", "POST"] }}
upstream = "users"
plugins = [{{ name = "swap", config = {{}}, isolation = "worker" }}]
[[route]]
name = "rest"
match = {{ path_prefix = "/" }}
upstream = "users"
"#,
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
        up = up.addr,
    )
}

async fn admin(gw: &TestGateway, method: &str, path: &str, token: Option<&str>) -> Reply {
    let mut req = Request::builder().method(method).uri(gw.admin_url(path));
    if let Some(token) = token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    client::send(
        &client::h1_client(),
        req.body(client::empty()).expect("request"),
    )
    .await
}

fn json(reply: &Reply) -> serde_json::Value {
    serde_json::from_slice(&reply.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", reply.text()))
}

#[tokio::test]
async fn routes_upstreams_and_plugins_are_described() {
    let up = TestUpstream::start("up");
    let other = TestUpstream::start("other");
    let gw = TestGateway::start(&config(&up, &other.addr.to_string()));
    for _ in 0..3 {
        let req = Request::get(gw.url("/api/x"))
            .header("host", "a.example.com")
            .body(client::empty())
            .expect("request");
        assert_eq!(client::send(&client::h1_client(), req).await.status, 200);
    }

    let routes = json(&admin(&gw, "GET", "/admin/routes", None).await);
    let api = &routes["routes"][0];
    assert_eq!(api["name"], "api", "{routes:#}");
    assert_eq!(api["match"]["host"], "*.example.com", "{routes:#}");
    assert_eq!(api["match"]["path_prefix"], "/api", "{routes:#}");
    assert_eq!(api["match"]["methods"], serde_json::json!(["GET", "POST"]));
    assert_eq!(api["upstream"], "users");
    assert_eq!(api["plugins"][0]["name"], "swap");
    assert_eq!(api["plugins"][0]["isolation"], "worker");
    assert_eq!(routes["routes"][1]["plugins"], serde_json::json!([]));

    let upstreams = json(&admin(&gw, "GET", "/admin/upstreams", None).await);
    let users = &upstreams["upstreams"][0];
    assert_eq!(users["name"], "users", "{upstreams:#}");
    assert_eq!(users["endpoints"][0]["address"], up.addr.to_string());
    assert_eq!(users["endpoints"][1]["address"], other.addr.to_string());
    assert_eq!(users["endpoints"][1]["healthy"], true);

    let plugins = json(&admin(&gw, "GET", "/admin/plugins", None).await);
    let swap = &plugins["plugins"][0];
    assert_eq!(swap["name"], "swap", "{plugins:#}");
    assert_eq!(
        swap["version"],
        weir_gateway::plugin::version_of(&std::fs::read(guest_wasm!("swap_a")).unwrap())
    );
    assert_eq!(swap["wit_version"], "0.1.8");
    assert_eq!(
        swap["phases"],
        serde_json::json!(["request-headers", "response-headers"])
    );
    assert_eq!(swap["file"], "present");
    assert_eq!(swap["routes"], serde_json::json!(["api"]));
    assert_eq!(
        swap["calls"], 6,
        "three requests, two phases each: {swap:#}"
    );
    assert_eq!(swap["failures"]["trap"], 0);
    assert!(swap["last_error"].is_null());
    assert!(
        swap["loaded_at"]
            .as_str()
            .unwrap_or_default()
            .ends_with('Z')
    );
    assert!(
        swap["path"]
            .as_str()
            .unwrap_or_default()
            .ends_with("swap.wasm")
    );
}

#[tokio::test]
async fn wrong_methods_and_paths_are_refused() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up, "127.0.0.1:9"));
    let reply = admin(&gw, "POST", "/admin/routes", None).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow").as_deref(), Some("GET"));
    let reply = admin(&gw, "GET", "/admin/reload", None).await;
    assert_eq!(reply.status, 405);
    assert_eq!(reply.header("allow").as_deref(), Some("POST"));
    let reply = admin(&gw, "GET", "/admin/nothing", None).await;
    assert_eq!(reply.status, 404);
    assert_eq!(json(&reply)["error"], "not found");
    let reply = admin(&gw, "GET", "/readyz", None).await;
    assert_eq!(
        (reply.status.as_u16(), json(&reply)["status"].clone()),
        (200, "ready".into())
    );
}

#[tokio::test]
async fn the_token_guards_everything_but_the_health_probes() {
    let up = TestUpstream::start("up");
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"WEIR_TEST_ADMIN_TOKEN\"\n{}",
        config(&up, "127.0.0.1:9")
    );
    let weir = WeirProcess::spawn_with_env(
        weir_bin!(),
        &[
            "run",
            "--config",
            write_config(&weir_tests::gateway::with_test_listeners(&text))
                .to_str()
                .unwrap(),
        ],
        &[("WEIR_TEST_ADMIN_TOKEN", "s3cret-token")],
    );
    let http = client::h1_client();
    let get = |path: &str, token: Option<&str>| {
        let mut req = Request::get(format!("http://{}{path}", weir.admin));
        if let Some(token) = token {
            req = req.header("authorization", token.to_owned());
        }
        client::send(&http, req.body(client::empty()).unwrap())
    };
    for path in [
        "/metrics",
        "/admin/routes",
        "/admin/plugins",
        "/admin/upstreams",
    ] {
        let reply = get(path, None).await;
        assert_eq!(reply.status, 401, "{path} without a token");
        assert_eq!(
            reply.header("www-authenticate").as_deref(),
            Some("Bearer realm=\"weir-admin\"")
        );
        assert_eq!(get(path, Some("Bearer wrong")).await.status, 401, "{path}");
        assert_eq!(
            get(path, Some("s3cret-token")).await.status,
            401,
            "{path} no scheme"
        );
        assert_eq!(
            get(path, Some("Bearer s3cret-token")).await.status,
            200,
            "{path}"
        );
        assert_eq!(
            get(path, Some("bearer s3cret-token")).await.status,
            200,
            "{path}"
        );
    }
    let req = Request::post(format!("http://{}/admin/reload", weir.admin))
        .body(client::empty())
        .unwrap();
    assert_eq!(client::send(&client::h1_client(), req).await.status, 401);
    assert_eq!(get("/healthz", None).await.status, 200);
    assert_eq!(get("/readyz", None).await.status, 200);
}

#[tokio::test]
async fn an_exposed_admin_listener_needs_a_token() {
    // Refused at validation, before anything binds.
    let up = TestUpstream::start("up");
    let text = format!(
        "[admin]\nlisten = \"0.0.0.0:0\"\n{}",
        config(&up, "127.0.0.1:9")
    );
    let path = write_config(&weir_tests::gateway::with_test_listeners(&text));
    let out = std::process::Command::new(weir_bin!())
        .args(["check", "--config", path.to_str().unwrap()])
        .output()
        .expect("run weir check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("admin.listen") && stderr.contains("token_env"),
        "{stderr}"
    );

    // So is `--admin-listen` on the command line.
    let plain = write_config(&weir_tests::gateway::with_test_listeners(&config(
        &up,
        "127.0.0.1:9",
    )));
    let out = std::process::Command::new(weir_bin!())
        .args([
            "run",
            "--config",
            plain.to_str().unwrap(),
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .output()
        .expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("token_env"), "{stderr}");

    // A token variable that is not set is an error too.
    let text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\ntoken_env = \"WEIR_TEST_UNSET_TOKEN\"\n{}",
        config(&up, "127.0.0.1:9")
    );
    let path = write_config(&weir_tests::gateway::with_test_listeners(&text));
    let out = std::process::Command::new(weir_bin!())
        .args(["check", "--config", path.to_str().unwrap()])
        .env_remove("WEIR_TEST_UNSET_TOKEN")
        .output()
        .expect("run weir check");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`WEIR_TEST_UNSET_TOKEN` is not set"),
        "{stderr}"
    );
}
