//! What `rate-limit` costs per request with the key-value store in memory and in Redis
//! (a real `redis-server` on loopback, started here): one request at a time (the round
//! trip's latency), and 64 requests in flight on one worker (Redis calls pipelined on
//! the one connection while their plugins wait on their fibers), both through the chain
//! runner the pipeline uses, worker isolation.
//!
//! Run: `cargo bench -p weir-tests --bench kv_backends` (needs `redis-server`, which
//! `cargo xtask setup` installs).

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderMap;
use support::{Use, chain, iter_in_task, request_phase};
use weir_gateway::config::{Isolation, KvBackend, KvSettings, RedisSettings};
use weir_gateway::plugin::{ChainEntry, ChainRun, PluginHost};
use weir_tests::RedisServer;

/// Requests in flight at once in the concurrent rows.
const IN_FLIGHT: usize = 64;

/// One request's request phase through `chain`.
async fn request(chain: Arc<[ChainEntry]>, mut headers: HeaderMap) -> HeaderMap {
    let mut pass = ChainRun::new(chain);
    request_phase(&mut pass, &mut headers).await;
    headers
}

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", "api.example.com".parse().unwrap());
    headers.insert("user-agent", "bench/1.0".parse().unwrap());
    headers
}

fn rate_limit(host: &PluginHost) -> Arc<[ChainEntry]> {
    chain(
        host,
        &[Use {
            wasm: env!("GUEST_RATE_LIMIT"),
            name: "rate-limit",
            // Never refuses during a run, so every request does the full work.
            config: r#"{"requests": 1000000000, "window": "1h", "key": "ip"}"#.to_owned(),
        }],
        Isolation::Worker,
    )
}

fn bench(c: &mut Criterion) {
    let redis = RedisServer::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let memory = PluginHost::new(None).unwrap();
    let remote = PluginHost::with_kv(
        None,
        &KvSettings {
            backend: KvBackend::Redis(RedisSettings::new(redis.url())),
            timeout: Duration::from_secs(1),
            ..KvSettings::default()
        },
    )
    .unwrap();
    for (label, host) in [("memory", &memory), ("redis", &remote)] {
        let chain = rate_limit(host);
        // The first request connects (Redis) and warms the instance.
        rt.block_on(request(chain.clone(), headers()));
        c.bench_function(&format!("rate-limit, kv={label}, one at a time"), |b| {
            iter_in_task(b, &rt, headers, |h| request(chain.clone(), h));
        });
        c.bench_function(
            &format!("rate-limit, kv={label}, {IN_FLIGHT} in flight (time per request)"),
            |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut timed = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let batch = left.min(IN_FLIGHT as u64) as usize;
                            let inputs: Vec<HeaderMap> = (0..batch).map(|_| headers()).collect();
                            let start = Instant::now();
                            let requests = inputs.into_iter().map(|h| request(chain.clone(), h));
                            let done = futures_util::future::join_all(requests).await;
                            timed += start.elapsed();
                            drop(std::hint::black_box(done));
                            left -= batch as u64;
                        }
                        timed
                    })
                });
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
