//! Routes with `respond`: a fixed answer with no upstream, which still passes the
//! route's plugins (an auth plugin can refuse first, response phases edit it).

use weir_tests::first_party::{plugin_dir, request};
use weir_tests::{TestGateway, TestUpstream, get, raw_request};

/// `deny-admin` answers `/admin` itself, `status-json` answers `/status` with JSON
/// through the `headers` plugin, and everything else goes to `up`.
fn config(up: &TestUpstream) -> String {
    let dir = plugin_dir();
    format!(
        "[plugins]\ndir = \"{dir}/plugins\"\ncache_dir = \"{cache}\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"deny-admin\"\nmatch = {{ path_prefix = \"/admin\" }}\n\
         respond = {{ status = 403, body = \"no admin from outside\\n\" }}\n\
         [[route]]\nname = \"status-json\"\nmatch = {{ path = \"/status\" }}\n\
         respond = {{ status = 200, body = '{{\"ok\":true}}', content_type = \"application/json\" }}\n\
         plugins = [{{ name = \"api-key\", config = {{ consumers = {{ ops = \"k1\" }} }} }}, \
                    {{ name = \"headers\", config = {{ response = {{ set = {{ x-served-by = \"edge\" }} }} }} }}]\n\
         [[route]]\nname = \"empty\"\nmatch = {{ path = \"/gone\" }}\nrespond = {{ status = 410 }}\n\
         [[route]]\nname = \"rest\"\nupstream = \"up\"\n",
        up.addr,
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
    )
}

#[tokio::test]
async fn a_route_with_respond_answers_itself_and_sends_nothing_upstream() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up));

    let denied = get(&gw.url("/admin/users")).await;
    assert_eq!(denied.status, 403);
    assert_eq!(denied.text(), "no admin from outside\n");
    assert_eq!(
        denied.header("content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(denied.header("content-length").as_deref(), Some("22"));
    assert_eq!(denied.header("via").as_deref(), Some("1.1 weir"));

    // HEAD gets the head alone; an empty `respond` has no body and no content type.
    let head = request("HEAD", &gw.url("/admin"), &[]).await;
    assert_eq!((head.status.as_u16(), head.body.len()), (403, 0));
    let gone = get(&gw.url("/gone")).await;
    assert_eq!((gone.status.as_u16(), gone.body.len()), (410, 0));
    assert_eq!(gone.header("content-type"), None);

    // A request with a body is answered too, and the connection stays usable.
    let reply = raw_request(
        gw.addr,
        "POST /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello\
         GET /elsewhere HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 403 "), "{reply}");
    assert!(
        reply.contains("x-upstream: up"),
        "the next request went on: {reply}"
    );

    assert_eq!(up.seen().len(), 1, "only /elsewhere reached the upstream");
    let series = |route: &str, status: u16| {
        format!("weir_requests_total{{route=\"{route}\",status=\"{status}\"}}")
    };
    assert_eq!(gw.metric(&series("deny-admin", 403)).await, 3.0);
    assert_eq!(gw.metric(&series("empty", 410)).await, 1.0);
}

#[tokio::test]
async fn a_direct_answer_passes_the_routes_plugins_both_ways() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up));

    // The api-key plugin runs first: without a key the fixed answer is not given.
    let refused = get(&gw.url("/status")).await;
    assert_eq!(refused.status, 401, "{}", refused.text());

    for client in [weir_tests::h1_client(), weir_tests::h2_client()] {
        let req = http::Request::get(gw.url("/status"))
            .header("x-api-key", "k1")
            .body(weir_tests::client::empty())
            .unwrap();
        let ok = weir_tests::send(&client, req).await;
        assert_eq!(ok.status, 200);
        assert_eq!(ok.text(), "{\"ok\":true}");
        assert_eq!(
            ok.header("content-type").as_deref(),
            Some("application/json")
        );
        // The headers plugin's response phase edited the answer.
        assert_eq!(ok.header("x-served-by").as_deref(), Some("edge"));
    }
    assert!(up.seen().is_empty(), "{:?}", up.seen());
}

#[tokio::test]
async fn the_admin_api_shows_a_routes_fixed_answer() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&config(&up));
    let routes = gw.admin_json("/admin/routes").await;
    let deny = routes["routes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == "deny-admin"))
        .unwrap_or_else(|| panic!("deny-admin in {routes}"));
    assert_eq!(deny["upstream"], serde_json::Value::Null);
    assert_eq!(deny["respond"]["status"], 403);
    assert_eq!(deny["respond"]["body_bytes"], 22);
}
