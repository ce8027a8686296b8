//! Endpoints given by DNS name: `localhost:PORT` resolves when the gateway starts and
//! again every `dns_refresh`, and requests keep flowing across refreshes. (Changing what
//! a name resolves to would mean editing the machine's resolver, which a test must not
//! do; the refresh keeping the last good answer is unit-tested in `upstream::dns`.)

use std::time::{Duration, Instant};

use http::Request;
use weir_tests::client::{empty, h1_client};
use weir_tests::{TestGateway, TestUpstream, send};

#[tokio::test]
async fn localhost_endpoints_serve_across_refreshes() {
    let upstream = TestUpstream::start("named");
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"named\"\nendpoints = [\"localhost:{}\"]\ndns_refresh = \"50ms\"\n\
         timeouts = {{ idle = \"20ms\" }}\n\
         [[route]]\nname = \"named\"\nupstream = \"named\"\n",
        upstream.addr.port()
    ));
    let client = h1_client();
    // Over several refresh intervals, with pooled connections expiring quickly so that
    // new ones are made from the refreshed addresses.
    let until = Instant::now() + Duration::from_millis(600);
    let mut answered = 0;
    while Instant::now() < until && answered < 1000 {
        let reply = send(
            &client,
            Request::get(gw.url("/dns")).body(empty()).expect("request"),
        )
        .await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("x-upstream").as_deref(), Some("named"));
        answered += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(answered >= 10, "only {answered} requests answered");
    assert!(upstream.connections() >= 2, "new connections were made");
    // The endpoint keeps its name in the admin API.
    let upstreams = gw.admin_json("/admin/upstreams").await;
    assert_eq!(
        upstreams["upstreams"][0]["endpoints"][0]["address"],
        format!("localhost:{}", upstream.addr.port())
    );
}

#[tokio::test]
async fn a_name_that_does_not_resolve_answers_502_and_the_gateway_serves_on() {
    let upstream = TestUpstream::start("ok");
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"nowhere\"\nendpoints = [\"no-such-host.invalid:80\"]\n\
         [[upstream]]\nname = \"ok\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"nowhere\"\nupstream = \"nowhere\"\nmatch = {{ path_prefix = \"/nowhere\" }}\n\
         [[route]]\nname = \"ok\"\nupstream = \"ok\"\n",
        upstream.addr
    ));
    let client = h1_client();
    let reply = send(
        &client,
        Request::get(gw.url("/nowhere"))
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 502, "{}", reply.text());
    let reply = send(
        &client,
        Request::get(gw.url("/fine"))
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.status, 200);
}
