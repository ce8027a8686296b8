//! The router agrees with a reference matcher on random route tables: tables are written
//! as config text, parsed and compiled as the gateway does, and every request is routed
//! both ways. The reference reads the generated conditions directly, as
//! `docs/configuration.md` describes them, sharing no code with the router.

use std::path::Path;

use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

use super::{PathRules, RequestFacts, RouteTable};
use crate::config;

/// One generated route's conditions.
#[derive(Debug, Clone)]
struct Spec {
    host: Option<&'static str>,
    path: Option<(bool, &'static str)>,
    methods: Vec<&'static str>,
    header: Option<HeaderCondition>,
}

#[derive(Debug, Clone, Copy)]
enum HeaderCondition {
    Exact(&'static str),
    Present(bool),
    Prefix(&'static str),
}

const HOSTS: [&str; 4] = ["a.example", "B.example", "*.example", "*.a.example"];
const PATHS: [&str; 7] = ["/", "/api", "/api/", "/api/v1", "/apix", "/a", "/api/v1/x"];
const METHODS: [&str; 3] = ["GET", "POST", "DELETE"];

fn spec() -> impl Strategy<Value = Spec> {
    let host = prop::option::of(prop::sample::select(HOSTS.to_vec()));
    let path = prop::option::of((any::<bool>(), prop::sample::select(PATHS.to_vec())));
    let methods = prop::sample::subsequence(METHODS.to_vec(), 0..=2);
    let header = prop::option::of(prop::sample::select(vec![
        HeaderCondition::Exact("1"),
        HeaderCondition::Present(true),
        HeaderCondition::Present(false),
        HeaderCondition::Prefix("ab"),
    ]));
    (host, path, methods, header).prop_map(|(host, path, methods, header)| Spec {
        host,
        path,
        methods,
        header,
    })
}

/// The table as an operator would write it.
fn toml(specs: &[Spec]) -> String {
    let mut text = String::from("[[upstream]]\nname = \"u\"\nendpoints = [\"127.0.0.1:1\"]\n");
    for (i, s) in specs.iter().enumerate() {
        let mut conditions = Vec::new();
        if let Some(host) = s.host {
            conditions.push(format!("host = \"{host}\""));
        }
        match s.path {
            Some((true, p)) => conditions.push(format!("path = \"{p}\"")),
            Some((false, p)) => conditions.push(format!("path_prefix = \"{p}\"")),
            None => {}
        }
        if !s.methods.is_empty() {
            let list: Vec<String> = s.methods.iter().map(|m| format!("\"{m}\"")).collect();
            conditions.push(format!("methods = [{}]", list.join(", ")));
        }
        match s.header {
            Some(HeaderCondition::Exact(v)) => {
                conditions.push(format!("headers = {{ x-t = \"{v}\" }}"))
            }
            Some(HeaderCondition::Present(p)) => {
                conditions.push(format!("headers = {{ x-t = {{ present = {p} }} }}"));
            }
            Some(HeaderCondition::Prefix(v)) => {
                conditions.push(format!("headers = {{ x-t = {{ prefix = \"{v}\" }} }}"));
            }
            None => {}
        }
        text.push_str(&format!(
            "[[route]]\nname = \"r{i}\"\nupstream = \"u\"\nmatch = {{ {} }}\n",
            conditions.join(", ")
        ));
    }
    text
}

/// The documented semantics, read straight off the spec.
fn reference(
    specs: &[Spec],
    host: Option<&str>,
    path: &str,
    method: &str,
    header: Option<&str>,
) -> Option<usize> {
    specs.iter().position(|s| {
        let host_ok = match (s.host, host) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(want), Some(host)) => match want.strip_prefix('*') {
                // `*.suffix`: at least one character before the suffix, any case.
                Some(suffix) => {
                    host.len() > suffix.len()
                        && host
                            .to_ascii_lowercase()
                            .ends_with(&suffix.to_ascii_lowercase())
                }
                None => host.eq_ignore_ascii_case(want),
            },
        };
        let path_ok = match s.path {
            None => true,
            Some((true, want)) => path == want,
            Some((false, prefix)) => {
                path == prefix
                    || (path.starts_with(prefix)
                        && (prefix.ends_with('/') || path[prefix.len()..].starts_with('/')))
            }
        };
        let method_ok = s.methods.is_empty() || s.methods.contains(&method);
        let header_ok = match s.header {
            None => true,
            Some(HeaderCondition::Exact(v)) => header == Some(v),
            Some(HeaderCondition::Present(p)) => header.is_some() == p,
            Some(HeaderCondition::Prefix(v)) => header.is_some_and(|h| h.starts_with(v)),
        };
        host_ok && path_ok && method_ok && header_ok
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn the_router_picks_the_first_route_the_reference_picks(
        specs in prop::collection::vec(spec(), 1..7),
        requests in prop::collection::vec((
            prop::option::of(prop::sample::select(vec![
                "a.example", "A.EXAMPLE", "b.example", "x.a.example", "example", "x.example",
            ])),
            prop::sample::select(vec!["/", "/api", "/api/", "/api/v1", "/api/v1/x", "/apix", "/a", "/ab", "/api/v2"]),
            prop::sample::select(METHODS.to_vec()),
            prop::option::of(prop::sample::select(vec!["1", "abc", "x"])),
        ), 1..20),
    ) {
        let text = toml(&specs);
        let config = config::Config::parse(Path::new("t.toml"), &text)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        let table = RouteTable::new(&config.routes, PathRules::default());
        for (host, path, method, header) in requests {
            let mut headers = HeaderMap::new();
            if let Some(value) = header {
                headers.insert("x-t", HeaderValue::from_static(value));
            }
            let method_value = Method::from_bytes(method.as_bytes()).expect("a method");
            let routed = table
                .find(&RequestFacts { host, path, method: &method_value, headers: &headers })
                .map(|r| r.index);
            prop_assert_eq!(
                routed,
                reference(&specs, host, path, method, header),
                "{} {:?} {} x-t={:?}\n{}", method, host, path, header, text
            );
        }
    }
}
