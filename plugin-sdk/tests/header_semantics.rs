//! The SDK's native headers pass the shared table of header-edit cases
//! (`header-semantics.json`), as the gateway's do.

use std::collections::BTreeMap;

use weir_plugin_sdk::{EditError, Request};

#[derive(serde::Deserialize)]
struct Table {
    cases: Vec<Case>,
}

#[derive(serde::Deserialize)]
struct Case {
    name: String,
    start: Vec<(String, String)>,
    edits: Vec<(String, String, String, String)>,
    end: Vec<(String, String)>,
}

/// For each name (lower-case), its values in order.
fn by_name(fields: impl IntoIterator<Item = (String, Vec<u8>)>) -> BTreeMap<String, Vec<Vec<u8>>> {
    let mut map: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for (name, value) in fields {
        map.entry(name.to_ascii_lowercase())
            .or_default()
            .push(value);
    }
    map
}

fn outcome(result: Result<(), EditError>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(EditError::InvalidName(_)) => "invalid-name",
        Err(EditError::InvalidValue(_)) => "invalid-value",
        Err(_) => "other",
    }
}

#[test]
fn native_headers_pass_the_shared_table() {
    let table: Table = serde_json::from_str(include_str!("header-semantics.json")).unwrap();
    assert!(table.cases.len() >= 9);
    for case in table.cases {
        let mut request = Request::new("GET", "/");
        for (name, value) in &case.start {
            request = request.with_header(name, value);
        }
        for (op, name, value, expected) in &case.edits {
            let result = match op.as_str() {
                "set" => request.headers.set(name, value),
                "append" => request.headers.append(name, value),
                "remove" => request.headers.remove(name),
                other => panic!("unknown op {other}"),
            };
            assert_eq!(
                outcome(result),
                expected,
                "{}: {op} {name:?} {value:?}",
                case.name
            );
            // Queued response edits follow the same rules.
            let queued = match op.as_str() {
                "set" => request.response_headers.set(name, value),
                "append" => request.response_headers.append(name, value),
                _ => request.response_headers.remove(name),
            };
            assert_eq!(
                outcome(queued),
                expected,
                "{} (queued): {op} {name:?}",
                case.name
            );
        }
        let end = by_name(case.end.into_iter().map(|(n, v)| (n, v.into_bytes())));
        assert_eq!(by_name(request.headers.all()), end, "{}", case.name);
    }
}
