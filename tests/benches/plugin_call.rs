//! What a plugin costs per request, without the network: a header-only plugin's
//! request-headers call with a fresh instance (isolation = "request") and with a reused
//! one (isolation = "worker"), and a three-plugin chain through the same runner the
//! pipeline uses. The plugin imports nothing that can wait, so it is called directly;
//! the "on a fiber" rows call it as a plugin importing `http-call` would be.
//!
//! Run: `cargo bench -p weir-tests --bench plugin_call`

mod support;

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use support::{Use, chain, iter_in_task, request_phase};
use weir_gateway::config::Isolation;
use weir_gateway::plugin::{ChainEntry, ChainRun, PluginHost};

/// `count` probe plugins, each with its own config.
fn entries(host: &PluginHost, isolation: Isolation, count: usize) -> Arc<[ChainEntry]> {
    let plugins: Vec<Use<'_>> = (0..count)
        .map(|i| Use {
            wasm: env!("GUEST_PROBE_LOCAL"),
            name: "probe",
            config: format!(r#"{{"mode":"state","tag":"t{i}"}}"#),
        })
        .collect();
    chain(host, &plugins, isolation)
}

/// One request's request-headers pass; the headers are handed back so that freeing
/// them is not measured.
async fn run_chain(chain: &Arc<[ChainEntry]>, mut headers: HeaderMap) -> HeaderMap {
    let mut pass = ChainRun::new(chain.clone());
    request_phase(&mut pass, &mut headers).await;
    headers
}

fn bench(c: &mut Criterion) {
    let host = PluginHost::new(None).unwrap();
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "bench/1.0"),
        ("accept", "*/*"),
        ("x-forwarded-for", "203.0.113.7"),
        ("authorization", "Bearer abc.def.ghi"),
    ] {
        headers.insert(name, value.parse().unwrap());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    let request = entries(&host, Isolation::Request, 1);
    c.bench_function(
        "one plugin, isolation=request (instantiate + call + drop)",
        |b| {
            iter_in_task(b, &rt, || headers.clone(), |h| run_chain(&request, h));
        },
    );
    c.bench_function("instantiate + drop only (no call)", |b| {
        b.iter(|| rt.block_on(async { drop(request[0].instantiate().await.unwrap()) }));
    });
    // The same for a minimal guest (raw bindings, no SDK, no serde): how much of the
    // cost is the guest's size and structure rather than the host's.
    let minimal = chain(
        &host,
        &[Use {
            wasm: env!("GUEST_MINOR"),
            name: "minor",
            config: r#"{"mode":"state","tag":"t0"}"#.to_owned(),
        }],
        Isolation::Request,
    );
    c.bench_function("instantiate + drop only, minimal guest", |b| {
        b.iter(|| rt.block_on(async { drop(minimal[0].instantiate().await.unwrap()) }));
    });
    let worker = entries(&host, Isolation::Worker, 1);
    c.bench_function("one plugin, isolation=worker (reused instance)", |b| {
        iter_in_task(b, &rt, || headers.clone(), |h| run_chain(&worker, h));
    });
    // How the cost of a call grows with the number of request headers. With the ABI's
    // header resources nothing is copied for headers the plugin does not read (with
    // whole header lists it was ~0.22 us per header); what remains is the copy of the
    // request kept for the plugin's response phase.
    for count in [0usize, 20] {
        let mut many = HeaderMap::new();
        for i in 0..count {
            many.insert(
                http::HeaderName::try_from(format!("x-header-{i}")).unwrap(),
                "a-typical-header-value-of-some-length".parse().unwrap(),
            );
        }
        c.bench_function(
            &format!("one plugin, isolation=worker, {count} headers"),
            |b| {
                iter_in_task(b, &rt, || many.clone(), |h| run_chain(&worker, h));
            },
        );
    }
    // The same plugin run on a fiber, as every plugin was before `sync_io`.
    let fiber_host = PluginHost::new(None).unwrap().always_on_fiber();
    let fiber_worker = entries(&fiber_host, Isolation::Worker, 1);
    c.bench_function("one plugin, isolation=worker, on a fiber", |b| {
        iter_in_task(b, &rt, || headers.clone(), |h| run_chain(&fiber_worker, h));
    });
    let fiber_request = entries(&fiber_host, Isolation::Request, 1);
    c.bench_function("one plugin, isolation=request, on a fiber", |b| {
        iter_in_task(b, &rt, || headers.clone(), |h| run_chain(&fiber_request, h));
    });
    let chain = entries(&host, Isolation::Request, 3);
    c.bench_function("three plugins, isolation=request", |b| {
        iter_in_task(b, &rt, || headers.clone(), |h| run_chain(&chain, h));
    });
}

/// The smallest component wasmtime can run: one core module, no memory, no imports.
const EMPTY_COMPONENT: &str = r#"(component
  (core module $m (func (export "f")))
  (core instance $i (instantiate $m))
  (func (export "f") (canon lift (core func $i "f"))))"#;

/// A component shaped like a Rust guest's memory: 17 pages (a 1 MiB stack, then data
/// and heap), a data segment, and a call that writes a stack page and a heap page.
const MEMORY_COMPONENT: &str = r#"(component
  (core module $m
    (memory (export "memory") 17)
    (data (i32.const 1048576) "static data of a guest")
    (func (export "f")
      (i32.store (i32.const 1048000) (i32.const 7))
      (i32.store (i32.const 1100000) (i32.const 9))))
  (core instance $i (instantiate $m))
  (func (export "f") (canon lift (core func $i "f"))))"#;

/// wasmtime's own cost for a fresh instance on the gateway's engine (same pooling
/// allocator settings), with no WASI, no host imports and none of our code: the floor
/// under `isolation = "request"`.
fn floor(c: &mut Criterion) {
    let host = PluginHost::new(None).unwrap();
    let engine = host.engine();
    let linker = wasmtime::component::Linker::<()>::new(engine);
    for (label, text) in [
        ("empty component", EMPTY_COMPONENT),
        ("17-page memory", MEMORY_COMPONENT),
    ] {
        let bytes = wat::parse_str(text).unwrap();
        let component = wasmtime::component::Component::new(engine, &bytes).unwrap();
        let pre = linker.instantiate_pre(&component).unwrap();
        let export = component.get_export_index(None, "f").unwrap();
        c.bench_function(&format!("floor: {label}, instantiate + call + drop"), |b| {
            b.iter(|| {
                let mut store = wasmtime::Store::new(engine, ());
                store.set_epoch_deadline(u64::MAX / 2);
                let instance = pre.instantiate(&mut store).unwrap();
                let f = instance
                    .get_typed_func::<(), ()>(&mut store, &export)
                    .unwrap();
                f.call(&mut store, ()).unwrap();
            });
        });
    }
}

criterion_group!(benches, bench, floor);
criterion_main!(benches);
