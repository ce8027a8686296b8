//! What the plugin benches share: the gateway's allocator, building a chain of
//! configured plugins, and one request's request-headers pass through the chain runner
//! the pipeline uses.

use std::path::Path;
use std::sync::Arc;

use http::HeaderMap;
use http::uri::PathAndQuery;
use weir_gateway::config::{Isolation, PluginSettings, PluginUse};
use weir_gateway::plugin::{ChainEntry, ChainRun, Flow, PluginHost, RequestParts};

/// The allocator the `weir` binary uses, so allocation costs are the gateway's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A plugin (its `.wasm`, contract name and JSON config) in a chain.
pub(crate) struct Use<'a> {
    pub(crate) wasm: &'a str,
    pub(crate) name: &'a str,
    pub(crate) config: String,
}

/// The plugins, loaded and configured in order on route `bench`.
pub(crate) fn chain(
    host: &PluginHost,
    plugins: &[Use<'_>],
    isolation: Isolation,
) -> Arc<[ChainEntry]> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut chain = Vec::new();
        for p in plugins {
            let loaded = host.load(p.name, Path::new(p.wasm)).await.unwrap();
            let usage = PluginUse {
                name: p.name.into(),
                config_json: p.config.clone(),
                allowed_hosts: Vec::new(),
                settings: PluginSettings {
                    isolation,
                    ..PluginSettings::default()
                },
            };
            chain.push(host.configure("bench", loaded, &usage).await.unwrap());
        }
        Arc::from(chain)
    })
}

/// Runs the request-headers phases of `pass` on `GET /api/users/7?expand=1` with
/// `headers`; the request must pass.
pub(crate) async fn request_phase(pass: &mut ChainRun, headers: &mut HeaderMap) {
    let mut path = PathAndQuery::from_static("/api/users/7?expand=1");
    let flow = pass
        .request_headers(RequestParts {
            method: &http::Method::GET,
            headers,
            path_and_query: &mut path,
            scheme: "http",
            authority: Some(http::HeaderValue::from_static("api.example.com")),
            client: http::HeaderValue::from_static("203.0.113.7"),
            route: Arc::from("bench"),
        })
        .await;
    assert!(
        matches!(flow, Flow::Continue(())),
        "the bench request must pass"
    );
}
