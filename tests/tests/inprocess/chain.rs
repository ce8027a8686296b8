//! The chain runner (`ChainRun`) over real probe plugins: phase order, local answers,
//! failure policies and the edits a plugin may not make.

use std::sync::Arc;

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderValue, StatusCode};
use weir_gateway::config::{Isolation, OnError, PluginSettings, PluginUse};
use weir_gateway::plugin::{ChainEntry, ChainRun, FailureKind, Flow, PluginHost, RequestParts};

/// A probe in `mode` tagged `tag`, with `on_error`.
struct Probe {
    mode: &'static str,
    tag: &'static str,
    on_error: OnError,
}

fn probe(mode: &'static str, tag: &'static str) -> Probe {
    Probe {
        mode,
        tag,
        on_error: OnError::Deny,
    }
}

async fn chain(probes: &[Probe]) -> Arc<[ChainEntry]> {
    let host = PluginHost::new(None).unwrap();
    let loaded = host
        .load("probe", weir_tests::guest_wasm!("probe"))
        .await
        .unwrap();
    let mut entries = Vec::new();
    for p in probes {
        let usage = PluginUse {
            name: "probe".into(),
            config_json: serde_json::json!({ "mode": p.mode, "tag": p.tag }).to_string(),
            allowed_hosts: Vec::new(),
            settings: PluginSettings {
                on_error: p.on_error,
                isolation: Isolation::Worker,
                ..PluginSettings::default()
            },
        };
        entries.push(host.configure("r", loaded.clone(), &usage).await.unwrap());
    }
    Arc::from(entries)
}

/// Runs the request-headers phases on `GET /p` with `headers`.
async fn request(pass: &mut ChainRun, headers: &mut HeaderMap) -> Flow {
    let mut path = PathAndQuery::from_static("/p");
    pass.request_headers(RequestParts {
        method: &http::Method::GET,
        headers,
        path_and_query: &mut path,
        scheme: "http",
        authority: Some(HeaderValue::from_static("example.com")),
        client: HeaderValue::from_static("192.0.2.1"),
        route: Arc::from("r"),
    })
    .await
}

#[tokio::test]
async fn request_phases_run_in_chain_order_and_response_phases_in_reverse() {
    let mut pass = ChainRun::new(chain(&[probe("", "a"), probe("", "b"), probe("", "c")]).await);
    let mut headers = HeaderMap::new();
    assert!(matches!(
        request(&mut pass, &mut headers).await,
        Flow::Continue(())
    ));
    assert_eq!(headers["x-chain"], "a,b,c");
    let (mut status, mut response) = (StatusCode::OK, HeaderMap::new());
    let flow = pass.response_headers(&mut status, &mut response).await;
    assert!(matches!(flow, Flow::Continue(())));
    assert_eq!(response["x-chain-response"], "c,b,a");
}

#[tokio::test]
async fn an_answer_stops_the_request_side_and_only_earlier_plugins_see_it() {
    let probes = [probe("", "a"), probe("deny", "d"), probe("", "c")];
    let mut pass = ChainRun::new(chain(&probes).await);
    let mut headers = HeaderMap::new();
    let Flow::Respond(mut reply) = request(&mut pass, &mut headers).await else {
        panic!("the deny probe answers");
    };
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert_eq!(reply.headers["x-denied-by"], "d");
    assert_eq!(headers["x-chain"], "a", "c is never reached");
    let flow = pass
        .response_headers(&mut reply.status, &mut reply.headers)
        .await;
    assert!(matches!(flow, Flow::Continue(())));
    assert_eq!(
        reply.headers["x-chain-response"], "a",
        "d and c are not called again"
    );
}

#[tokio::test]
async fn a_failure_denies_or_is_skipped_by_the_plugins_policy() {
    let mut pass =
        ChainRun::new(chain(&[probe("", "a"), probe("trap", "t"), probe("", "c")]).await);
    let mut headers = HeaderMap::new();
    let Flow::Deny(failure) = request(&mut pass, &mut headers).await else {
        panic!("on_error = deny stops the request");
    };
    assert_eq!(failure.kind, FailureKind::Trap);
    assert_eq!(headers["x-chain"], "a");

    let skipped = Probe {
        on_error: OnError::Allow,
        ..probe("trap", "t")
    };
    let mut pass = ChainRun::new(chain(&[probe("", "a"), skipped, probe("", "c")]).await);
    let mut headers = HeaderMap::new();
    assert!(matches!(
        request(&mut pass, &mut headers).await,
        Flow::Continue(())
    ));
    assert_eq!(headers["x-chain"], "a,c", "the failed plugin is skipped");
    let (mut status, mut response) = (StatusCode::OK, HeaderMap::new());
    let _ = pass.response_headers(&mut status, &mut response).await;
    assert_eq!(
        response["x-chain-response"], "c,a",
        "and never entered again"
    );
}

#[tokio::test]
async fn a_plugin_cannot_set_a_hop_by_hop_header() {
    let mut pass = ChainRun::new(chain(&[probe("hop-by-hop", "h")]).await);
    let mut headers = HeaderMap::new();
    assert!(matches!(
        request(&mut pass, &mut headers).await,
        Flow::Continue(())
    ));
    assert_eq!(
        headers["x-after-hop"], "yes",
        "the call went on: {headers:?}"
    );
    for name in ["connection", "te", "proxy-authorization"] {
        assert!(!headers.contains_key(name), "{name} was set: {headers:?}");
    }
}
