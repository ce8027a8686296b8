//! Config round-trips: a generated configuration written out as TOML text is read back
//! by [`Config::parse`] as exactly what was written (names, order, addresses, durations,
//! sizes, policies and every plugin's config as JSON), whichever of TOML's equivalent
//! spellings the text uses, and again after the text goes through `toml::Value` and is
//! printed by the `toml` crate. The writer here is the test's own: it shares no code with
//! the loader.

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use serde_json::Value as Json;

use super::{Config, Isolation, OnError, RouteUpstream};

#[path = "roundtrip_writer.rs"]
mod writer;
use writer::write;

/// A configuration as the generator means it.
#[derive(Debug, Clone)]
struct Spec {
    workers: Option<usize>,
    shutdown_grace_ms: u64,
    access_log: bool,
    via: String,
    max_headers: usize,
    idle_timeout_ms: u64,
    max_request_body_kib: Option<u64>,
    kv_entries: u64,
    kv_kib: u64,
    plugin_timeout_ms: Option<u64>,
    plugin_on_error: Option<OnError>,
    plugin_max_reuse: Option<u32>,
    upstreams: Vec<UpstreamSpec>,
    routes: Vec<RouteSpec>,
}

#[derive(Debug, Clone)]
struct UpstreamSpec {
    /// Endpoint ports on 127.0.0.1, each with its weight if written.
    endpoints: Vec<(u16, Option<u32>)>,
    connect_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct RouteSpec {
    path_prefix: Option<String>,
    methods: Vec<&'static str>,
    target: Target,
    plugins: Vec<PluginSpec>,
    max_request_body_kib: Option<u64>,
}

#[derive(Debug, Clone)]
enum Target {
    /// An index into the upstreams.
    Single(usize),
    /// Indexes and weights.
    Split(Vec<(usize, u32)>),
    /// Status and body.
    Respond(u16, String),
}

#[derive(Debug, Clone)]
struct PluginSpec {
    name: String,
    /// A JSON object: what the plugin must receive.
    config: Json,
    timeout_ms: Option<u64>,
    isolation: Option<Isolation>,
    memory_mib: Option<u64>,
    max_reuse: Option<u32>,
}

/// How the text is spelled: each choice is an equivalent way of writing the same config.
#[derive(Debug, Clone, Copy)]
struct Style {
    /// `[[route]]` headers, or one `route = [ {...}, ... ]` array of inline tables.
    inline_routes: bool,
    /// `[[route.plugins]]` sub-tables, or an inline array on the route.
    inline_plugins: bool,
    /// Durations as `"1500ms"`, or as `"1s 500ms"` / `"2s"` where they allow it.
    compound_durations: bool,
    /// Sizes as `"64KiB"`, or as a plain number of bytes.
    sizes_as_bytes: bool,
    /// Plugin configs as inline tables, or as dotted keys (`config.a.b = 1`).
    dotted_plugin_config: bool,
}

const METHODS: [&str; 5] = ["GET", "POST", "PUT", "DELETE", "PATCH"];

fn json_leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        any::<i64>().prop_map(Json::from),
        any::<bool>().prop_map(Json::from),
        // Finite floats only (TOML's nan and inf have no JSON form), and short binary
        // fractions, which every float parser reads back exactly.
        (-1_000_000_000i64..1_000_000_000).prop_map(|n| Json::from(n as f64 / 64.0)),
        ".{0,12}".prop_map(Json::from),
    ]
}

/// Keys any TOML key may be (quoted when needed), except `*_env`, which the loader
/// resolves from the environment on purpose.
fn json_key() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z][a-z0-9_-]{0,8}", ".{0,8}"]
        .prop_filter("`_env` keys are resolved", |k| !k.ends_with("_env"))
}

fn json_object() -> impl Strategy<Value = Json> {
    let value = json_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            // TOML arrays may mix types (TOML 1.0), so any list is fine.
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::Array),
            prop::collection::btree_map(json_key(), inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    });
    prop::collection::btree_map(json_key(), value, 0..5)
        .prop_map(|m| Json::Object(m.into_iter().collect()))
}

fn isolation() -> impl Strategy<Value = Isolation> {
    prop_oneof![Just(Isolation::Request), Just(Isolation::Worker)]
}

fn plugin() -> impl Strategy<Value = PluginSpec> {
    (
        "[a-z][a-z0-9_-]{0,10}",
        json_object(),
        prop::option::of(1u64..5_000),
        prop::option::of(isolation()),
        prop::option::of(1u64..64),
        prop::option::of(1u32..=u32::MAX),
    )
        .prop_map(
            |(name, config, timeout_ms, isolation, memory_mib, max_reuse)| PluginSpec {
                name,
                config,
                timeout_ms,
                isolation,
                memory_mib,
                max_reuse,
            },
        )
}

fn upstream() -> impl Strategy<Value = UpstreamSpec> {
    (
        // Distinct ports: the loader refuses an endpoint listed twice.
        prop::collection::btree_map(1u16..=u16::MAX, prop::option::of(1u32..=1000), 1..4)
            .prop_map(|m| m.into_iter().collect::<Vec<_>>()),
        prop::option::of(1u64..100_000),
    )
        .prop_map(|(endpoints, connect_timeout_ms)| UpstreamSpec {
            endpoints,
            connect_timeout_ms,
        })
}

fn route(upstreams: usize) -> impl Strategy<Value = RouteSpec> {
    let target = prop_oneof![
        (0..upstreams).prop_map(Target::Single),
        // Each upstream at most once: the loader asks for one entry per upstream.
        (
            prop::sample::subsequence((0..upstreams).collect::<Vec<_>>(), 1..=upstreams),
            prop::collection::vec(1u32..=1000, upstreams),
        )
            .prop_map(|(chosen, weights)| Target::Split(chosen.into_iter().zip(weights).collect())),
        // 204 and 304 have no body (the loader refuses one).
        (200u16..=599, ".{0,20}").prop_map(|(s, b)| {
            let body = if matches!(s, 204 | 304) {
                String::new()
            } else {
                b
            };
            Target::Respond(s, body)
        }),
    ];
    (
        // Normalised paths only (no dot segments): the loader refuses the others.
        prop::option::of("(/[a-z0-9_~-][a-z0-9._~-]{0,5}){1,3}"),
        prop::sample::subsequence(METHODS.to_vec(), 0..=3),
        target,
        prop::collection::vec(plugin(), 0..4),
        prop::option::of(1u64..1_000_000),
    )
        .prop_map(
            |(path_prefix, methods, target, plugins, max_request_body_kib)| RouteSpec {
                path_prefix,
                methods,
                target,
                plugins,
                max_request_body_kib,
            },
        )
}

fn spec() -> impl Strategy<Value = Spec> {
    let server = (
        prop::option::of(1usize..64),
        0u64..600_000,
        any::<bool>(),
        "[a-z][a-z0-9.-]{0,10}",
        1usize..1000,
        1u64..3_600_000,
        prop::option::of(1u64..1_000_000),
    );
    let kv_and_plugins = (
        1u64..10_000_000,
        1u64..1_000_000,
        prop::option::of(1u64..10_000),
        prop::option::of(prop_oneof![Just(OnError::Deny), Just(OnError::Allow)]),
        prop::option::of(1u32..=u32::MAX),
    );
    (
        server,
        kv_and_plugins,
        prop::collection::vec(upstream(), 1..4),
    )
        .prop_flat_map(|(server, kv_and_plugins, upstreams)| {
            let n = upstreams.len();
            (
                Just(server),
                Just(kv_and_plugins),
                Just(upstreams),
                prop::collection::vec(route(n), 1..6),
            )
        })
        .prop_map(|(server, kv, upstreams, routes)| Spec {
            workers: server.0,
            shutdown_grace_ms: server.1,
            access_log: server.2,
            via: server.3,
            max_headers: server.4,
            idle_timeout_ms: server.5,
            max_request_body_kib: server.6,
            kv_entries: kv.0,
            kv_kib: kv.1,
            plugin_timeout_ms: kv.2,
            plugin_on_error: kv.3,
            plugin_max_reuse: kv.4,
            upstreams,
            routes,
        })
}

fn style() -> impl Strategy<Value = Style> {
    any::<[bool; 5]>().prop_map(|b| Style {
        inline_routes: b[0],
        inline_plugins: b[1],
        compound_durations: b[2],
        sizes_as_bytes: b[3],
        dotted_plugin_config: b[4],
    })
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap()
}

/// Everything the spec says, read back from the loaded config.
fn check(spec: &Spec, config: &Config) -> Result<(), TestCaseError> {
    let server = &config.server;
    prop_assert_eq!(server.workers, spec.workers);
    prop_assert_eq!(ms(server.shutdown_grace), spec.shutdown_grace_ms);
    prop_assert_eq!(server.access_log, spec.access_log);
    prop_assert_eq!(&server.via, &spec.via);
    prop_assert_eq!(server.limits.max_headers, spec.max_headers);
    prop_assert_eq!(ms(server.limits.idle_timeout), spec.idle_timeout_ms);
    prop_assert_eq!(
        server.limits.max_request_body,
        spec.max_request_body_kib.map(|k| k * 1024)
    );
    prop_assert_eq!(config.kv.bounds.max_entries, spec.kv_entries);
    prop_assert_eq!(config.kv.bounds.max_bytes, spec.kv_kib * 1024);
    let defaults = &config.plugins.defaults;
    prop_assert_eq!(ms(defaults.timeout), spec.plugin_timeout_ms.unwrap_or(50));
    prop_assert_eq!(
        defaults.on_error,
        spec.plugin_on_error.unwrap_or(OnError::Deny)
    );
    prop_assert_eq!(defaults.max_reuse, spec.plugin_max_reuse.unwrap_or(10_000));

    prop_assert_eq!(config.upstreams.len(), spec.upstreams.len());
    for (i, (u, want)) in config.upstreams.iter().zip(&spec.upstreams).enumerate() {
        prop_assert_eq!(&u.name, &format!("u{i}"));
        let endpoints: Vec<(String, u32)> = u
            .endpoints
            .iter()
            .map(|e| (e.authority.to_string(), e.weight))
            .collect();
        let wanted: Vec<(String, u32)> = want
            .endpoints
            .iter()
            .map(|(port, w)| (format!("127.0.0.1:{port}"), w.unwrap_or(1)))
            .collect();
        prop_assert_eq!(endpoints, wanted);
        prop_assert_eq!(
            ms(u.timeouts.connect),
            want.connect_timeout_ms.unwrap_or(5000)
        );
    }

    prop_assert_eq!(config.routes.len(), spec.routes.len());
    for (i, (r, want)) in config.routes.iter().zip(&spec.routes).enumerate() {
        prop_assert_eq!(&r.name, &format!("r{i}"));
        prop_assert_eq!(
            r.path.clone(),
            want.path_prefix.clone().map(super::PathPattern::Prefix)
        );
        let methods: Vec<String> = r.methods.iter().map(ToString::to_string).collect();
        prop_assert_eq!(methods, want.methods.clone());
        match (&r.upstream, &want.target) {
            (RouteUpstream::Single(got), Target::Single(u)) => prop_assert_eq!(got, u),
            (RouteUpstream::Split(got), Target::Split(entries)) => {
                let got: Vec<(usize, u32)> = got.iter().map(|t| (t.upstream, t.weight)).collect();
                prop_assert_eq!(&got, entries);
            }
            (RouteUpstream::Respond(got), Target::Respond(status, body)) => {
                prop_assert_eq!(got.status.as_u16(), *status);
                prop_assert_eq!(&got.body[..], body.as_bytes());
            }
            (got, want) => prop_assert!(false, "route r{i}: {got:?}, wanted {want:?}"),
        }
        prop_assert_eq!(
            r.max_request_body,
            want.max_request_body_kib
                .or(spec.max_request_body_kib)
                .map(|k| k * 1024)
        );
        prop_assert_eq!(r.plugins.len(), want.plugins.len());
        for (p, wp) in r.plugins.iter().zip(&want.plugins) {
            prop_assert_eq!(&p.name, &wp.name);
            let received: Json = serde_json::from_str(&p.config_json).unwrap();
            prop_assert_eq!(&received, &wp.config);
            let timeout = wp.timeout_ms.or(spec.plugin_timeout_ms).unwrap_or(50);
            prop_assert_eq!(ms(p.settings.timeout), timeout);
            prop_assert_eq!(
                p.settings.isolation,
                wp.isolation.unwrap_or(defaults.isolation)
            );
            prop_assert_eq!(
                p.settings.memory_limit,
                wp.memory_mib.map_or(defaults.memory_limit, |m| m << 20)
            );
            prop_assert_eq!(
                p.settings.max_reuse,
                wp.max_reuse.unwrap_or(defaults.max_reuse)
            );
        }
    }
    Ok(())
}

fn parse(text: &str) -> Result<Config, TestCaseError> {
    Config::parse(Path::new("roundtrip.toml"), text)
        .map_err(|e| TestCaseError::fail(format!("{e}\n--- text:\n{text}")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Text written in any of the styles loads as what was written.
    #[test]
    fn written_config_loads_as_written(spec in spec(), style in style()) {
        let text = write(&spec, style);
        check(&spec, &parse(&text)?)?;
    }

    /// The same after the text is read into a `toml::Value` and printed by the `toml`
    /// crate: the loader depends on what a document says, not on how it is laid out.
    #[test]
    fn reprinted_config_loads_the_same(spec in spec(), style in style()) {
        let text = write(&spec, style);
        let value: toml::Value = toml::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n--- text:\n{text}")))?;
        let reprinted = toml::to_string(&value).unwrap();
        check(&spec, &parse(&reprinted)?)?;
    }
}

/// The writer's spellings themselves load (a fixed case, so a failing generator is
/// told apart from a failing loader).
#[test]
fn every_style_of_a_fixed_config_loads() {
    let spec = Spec {
        workers: Some(2),
        shutdown_grace_ms: 1500,
        access_log: true,
        via: "edge-1".to_owned(),
        max_headers: 50,
        idle_timeout_ms: 30_000,
        max_request_body_kib: Some(64),
        kv_entries: 10,
        kv_kib: 128,
        plugin_timeout_ms: Some(20),
        plugin_on_error: Some(OnError::Allow),
        plugin_max_reuse: Some(250),
        upstreams: vec![UpstreamSpec {
            endpoints: vec![(8080, None), (8081, Some(3))],
            connect_timeout_ms: Some(250),
        }],
        routes: vec![RouteSpec {
            path_prefix: Some("/api".to_owned()),
            methods: vec!["GET"],
            target: Target::Single(0),
            plugins: vec![PluginSpec {
                name: "headers".to_owned(),
                config: serde_json::json!({ "set": { "x-a": "1", "a b": [1, 2.5, "q\"\n"] } }),
                timeout_ms: Some(1001),
                isolation: Some(Isolation::Worker),
                memory_mib: Some(8),
                max_reuse: Some(4_000_000_000),
            }],
            max_request_body_kib: None,
        }],
    };
    for bits in 0u8..32 {
        let style = Style {
            inline_routes: bits & 1 != 0,
            inline_plugins: bits & 2 != 0,
            compound_durations: bits & 4 != 0,
            sizes_as_bytes: bits & 8 != 0,
            dotted_plugin_config: bits & 16 != 0,
        };
        let config = parse(&write(&spec, style)).unwrap();
        check(&spec, &config).unwrap();
    }
}
