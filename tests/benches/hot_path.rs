//! The proxy's per-request work outside the network and the plugins: routing (path
//! normalisation and the first matching route, over a short table and a long one) and
//! header conversion (a client's request head made into the upstream's, and an
//! upstream's response head made into the client's). `plugin_call` measures the
//! plugins' part.
//!
//! Run: `cargo bench -p weir-tests --bench hot_path`

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use weir_gateway::Config;
use weir_gateway::client_trust::ClientTrust;
use weir_gateway::pipeline::forwarding::{self, Hygiene};
use weir_gateway::router::{PathRules, RequestFacts, RouteTable};

/// A config with `extra` routes before the three that the requests below aim at, each
/// with a host, a path prefix and a method, like a table grown by hand.
fn config(extra: usize) -> Config {
    let mut text = String::from("[[upstream]]\nname = \"app\"\nendpoints = [\"127.0.0.1:9\"]\n");
    for i in 0..extra {
        write!(
            text,
            "\n[[route]]\nname = \"r{i}\"\nupstream = \"app\"\n\
             match = {{ host = \"svc{i}.example.com\", path_prefix = \"/v1/svc{i}\", methods = [\"GET\", \"POST\"] }}\n"
        )
        .unwrap();
    }
    text.push_str(
        "\n[[route]]\nname = \"users\"\nupstream = \"app\"\n\
         match = { host = \"api.example.com\", path_prefix = \"/users\", methods = [\"GET\"] }\n\
         \n[[route]]\nname = \"tenant\"\nupstream = \"app\"\n\
         match = { path_prefix = \"/orders\", headers = { x-tenant = \"acme\" } }\n\
         \n[[route]]\nname = \"fallback\"\nupstream = \"app\"\n",
    );
    Config::parse(Path::new("bench.toml"), &text).expect("the bench config parses")
}

/// A browser-like request head, as hyper hands it over.
fn client_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("host", "api.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) bench/1.0"),
        ("accept", "application/json"),
        ("accept-encoding", "gzip, br"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("authorization", "Bearer abc.def.ghi"),
        ("x-tenant", "acme"),
        ("connection", "keep-alive"),
    ] {
        headers.append(name, HeaderValue::from_static(value));
    }
    headers
}

/// An origin's response head.
fn upstream_headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-length", "512"),
        ("date", "Sun, 06 Dec 2026 21:00:00 GMT"),
        ("server", "origin"),
        ("cache-control", "private, max-age=0"),
        ("etag", "\"33a64df551425fcc55e4d42a148795d9f25f89d4\""),
        ("keep-alive", "timeout=5"),
        ("connection", "keep-alive"),
    ] {
        headers.append(name, HeaderValue::from_static(value));
    }
    headers
}

fn routing(c: &mut Criterion) {
    let headers = client_headers();
    let get = Method::GET;
    for extra in [0, 100] {
        let table = RouteTable::new(&config(extra).routes, PathRules::default());
        for (case, host, path, expected) in [
            (
                "host and prefix",
                Some("api.example.com"),
                "/users/7/orders",
                "users",
            ),
            ("header", Some("shop.example.com"), "/orders/42", "tenant"),
            (
                "path to normalise",
                Some("api.example.com"),
                "/users/./7/a/../b",
                "users",
            ),
            (
                "fallback",
                Some("other.example.com"),
                "/anything",
                "fallback",
            ),
        ] {
            // Measure the case named, not a refusal or another route.
            let facts = RequestFacts {
                host,
                path,
                method: &get,
                headers: &headers,
            };
            let (route, _) = table.resolve(facts).expect("the bench request routes");
            assert_eq!(&*route.name, expected, "{case}");
            c.bench_function(&format!("route: {case}, {} routes", extra + 3), |b| {
                b.iter(|| {
                    let found = table.resolve(RequestFacts {
                        host: black_box(host),
                        path: black_box(path),
                        method: &get,
                        headers: &headers,
                    });
                    black_box(found.map(|(route, path)| (route.index, path.len())).ok())
                });
            });
        }
    }
}

fn header_conversion(c: &mut Criterion) {
    let peer = HeaderValue::from_static("203.0.113.7");
    let host = HeaderValue::from_static("api.example.com");
    let via = HeaderValue::from_static("1.1 weir");
    let trust = ClientTrust::new(&[], &[]);
    let hygiene = Hygiene {
        untrusted: Some(&trust),
        peer_ip: &peer,
        scheme: "http",
        host: Some(&host),
        via: &via,
        client_cert: None,
    };
    let request = client_headers();
    c.bench_function("headers: client request to upstream (8 fields)", |b| {
        b.iter_batched_ref(
            || request.clone(),
            |headers| forwarding::upstream_request(headers, black_box(&hygiene)),
            criterion::BatchSize::SmallInput,
        );
    });
    let mut plain = request.clone();
    plain.remove("connection");
    c.bench_function("headers: client request to upstream, no hop-by-hop", |b| {
        b.iter_batched_ref(
            || plain.clone(),
            |headers| forwarding::upstream_request(headers, black_box(&hygiene)),
            criterion::BatchSize::SmallInput,
        );
    });
    let response = upstream_headers();
    c.bench_function("headers: upstream response to client (8 fields)", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |headers| forwarding::client_response(headers, black_box(&via)),
            criterion::BatchSize::SmallInput,
        );
    });
}

criterion_group!(benches, routing, header_conversion);
criterion_main!(benches);
