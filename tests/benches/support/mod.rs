//! What the plugin benches share: the gateway's allocator, building a chain of
//! configured plugins, and one request's request-headers pass through the chain runner
//! the pipeline uses.

use std::future::Future;
use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use criterion::Bencher;

use http::HeaderMap;
use http::uri::PathAndQuery;
use weir_gateway::config::{Isolation, PluginSettings, PluginUse};
use weir_gateway::plugin::{ChainEntry, ChainRun, Flow, PluginHost, RequestParts};

/// The allocator the `weir` binary uses, so allocation costs are the gateway's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Inputs made (and outputs dropped) outside the clock at a time, as with criterion's
/// `BatchSize::SmallInput`.
const BATCH: u64 = 64;

/// Times `routine` on inputs from `setup` with every iteration inside one `block_on`.
/// The gateway calls plugins from a task that is already running, so entering the
/// runtime for each request (about 0.15 µs here, as `iter_batched` with `block_on` per
/// iteration did) is the harness's cost, not the plugin's. Inputs are made and outputs
/// dropped outside the timed batches.
pub(crate) fn iter_in_task<I, O, F>(
    b: &mut Bencher<'_>,
    rt: &tokio::runtime::Runtime,
    mut setup: impl FnMut() -> I,
    mut routine: impl FnMut(I) -> F,
) where
    F: Future<Output = O>,
{
    b.iter_custom(|iters| {
        rt.block_on(async {
            let mut timed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let batch = left.min(BATCH);
                let inputs: Vec<I> = (0..batch).map(|_| setup()).collect();
                let mut outputs = Vec::with_capacity(inputs.len());
                let start = Instant::now();
                for input in inputs {
                    outputs.push(routine(input).await);
                }
                timed += start.elapsed();
                drop(std::hint::black_box(outputs));
                left -= batch;
            }
            timed
        })
    });
}

/// The route name every bench request carries: the pipeline hands the chain a clone
/// of the route's name, not a new string.
static ROUTE: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("bench"));

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
            route: ROUTE.clone(),
        })
        .await;
    assert!(
        matches!(flow, Flow::Continue(())),
        "the bench request must pass"
    );
}
