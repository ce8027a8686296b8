//! Traffic shaping on routes: weighted splits between upstreams, and canaries picked by
//! cookie or header — through a real gateway to real upstreams.

use std::collections::HashMap;

use http::Request;
use weir_tests::client::{empty, h1_client};
use weir_tests::{TestGateway, TestUpstream, send};

fn upstreams(names: &[&str]) -> (Vec<TestUpstream>, String) {
    let servers: Vec<TestUpstream> = names.iter().map(|n| TestUpstream::start(n)).collect();
    let config = servers
        .iter()
        .map(|s| {
            format!(
                "[[upstream]]\nname = \"{}\"\nendpoints = [\"{}\"]\n",
                s.name, s.addr
            )
        })
        .collect();
    (servers, config)
}

#[tokio::test]
async fn a_weighted_split_lands_within_tolerance() {
    let (_servers, mut config) = upstreams(&["shop-v1", "shop-v2"]);
    config.push_str(
        "[[route]]\nname = \"shop\"\n\
         split = [{ upstream = \"shop-v2\", weight = 10 }, { upstream = \"shop-v1\", weight = 90 }]\n",
    );
    let gw = TestGateway::start(&config);

    // 4 keep-alive clients × 500 requests.
    const CLIENTS: usize = 4;
    const EACH: usize = 500;
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let url = gw.url("/item");
        tasks.push(tokio::spawn(async move {
            let client = h1_client();
            let mut counts: HashMap<String, usize> = HashMap::new();
            for _ in 0..EACH {
                let req = Request::get(&url).body(empty()).expect("request");
                let reply = send(&client, req).await;
                assert_eq!(reply.status, 200, "{}", reply.text());
                *counts
                    .entry(reply.header("x-upstream").unwrap_or_default())
                    .or_default() += 1;
            }
            counts
        }));
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for task in tasks {
        for (name, n) in task.await.expect("client task") {
            *counts.entry(name).or_default() += n;
        }
    }
    let total = CLIENTS * EACH;
    let v2 = counts.get("shop-v2").copied().unwrap_or(0);
    let v1 = counts.get("shop-v1").copied().unwrap_or(0);
    assert_eq!(v1 + v2, total, "{counts:?}");
    // Binomial: mean 200, standard deviation sqrt(2000 × 0.1 × 0.9) ≈ 13.4. Seven
    // standard deviations (±94) make a false failure about one in 10^11, and still
    // tell 10 % from 5 % or 15 %.
    assert!(
        (106..=294).contains(&v2),
        "shop-v2 got {v2} of {total}, expected about 200: {counts:?}"
    );

    // The split shows in /admin/routes, and each upstream's exchanges in its metric.
    let routes = gw.admin_json("/admin/routes").await;
    let route = &routes["routes"][0];
    assert_eq!(route["upstream"], serde_json::Value::Null);
    assert_eq!(route["split"][0]["upstream"], "shop-v2");
    assert_eq!(route["split"][0]["weight"], 10);
    assert_eq!(route["split"][1]["upstream"], "shop-v1");
    assert_eq!(route["split"][1]["weight"], 90);
    let observed = gw
        .metric("weir_upstream_request_duration_seconds_count{upstream=\"shop-v2\"}")
        .await;
    assert_eq!(observed as usize, v2);
}

/// The upstream a request with `headers` reached.
async fn reached(gw: &TestGateway, headers: &[(&str, &str)]) -> String {
    let mut req = Request::get(gw.url("/page"));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let reply = send(&h1_client(), req.body(empty()).expect("request")).await;
    reply
        .header("x-upstream")
        .unwrap_or_else(|| reply.status.to_string())
}

#[tokio::test]
async fn canaries_are_routes_matched_by_cookie_or_header_before_the_default() {
    let (_servers, mut config) = upstreams(&["stable", "canary", "beta"]);
    config.push_str(
        "[[route]]\nname = \"canary-cookie\"\nupstream = \"canary\"\nmatch = { cookies = { canary = \"always\" } }\n\
         [[route]]\nname = \"canary-header\"\nupstream = \"canary\"\nmatch = { headers = { x-canary = \"1\" } }\n\
         [[route]]\nname = \"beta-agents\"\nupstream = \"beta\"\nmatch = { headers = { user-agent = { prefix = \"beta/\" }, x-opt-out = { present = false } } }\n\
         [[route]]\nname = \"default\"\nupstream = \"stable\"\n",
    );
    let gw = TestGateway::start(&config);

    assert_eq!(reached(&gw, &[]).await, "stable");
    assert_eq!(reached(&gw, &[("cookie", "canary=always")]).await, "canary");
    assert_eq!(
        reached(&gw, &[("cookie", "session=x; canary=always; theme=dark")]).await,
        "canary"
    );
    assert_eq!(reached(&gw, &[("cookie", "canary=never")]).await, "stable");
    assert_eq!(
        reached(&gw, &[("cookie", "canary=always2")]).await,
        "stable"
    );
    assert_eq!(reached(&gw, &[("x-canary", "1")]).await, "canary");
    assert_eq!(reached(&gw, &[("x-canary", "0")]).await, "stable");
    assert_eq!(reached(&gw, &[("user-agent", "beta/1.2")]).await, "beta");
    assert_eq!(
        reached(&gw, &[("user-agent", "beta/1.2"), ("x-opt-out", "yes")]).await,
        "stable"
    );

    let routes = gw.admin_json("/admin/routes").await;
    assert_eq!(
        routes["routes"][0]["match"]["cookies"]["canary"], "always",
        "{routes}"
    );
    assert_eq!(
        routes["routes"][2]["match"]["headers"]["user-agent"]["prefix"],
        "beta/"
    );
}
