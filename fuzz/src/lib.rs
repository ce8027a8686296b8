//! The checks the fuzz targets run, one function per target. The main workspace
//! compiles this file too (`gateway/tests/fuzz_checks.rs`) and runs it over fixed
//! inputs, so CI builds and exercises what the fuzzer runs, on stable and without
//! libFuzzer.

use http::header::{self, HeaderMap};
use weir_gateway::path::{SlashPolicy, lenient_reading, normalize};
use weir_gateway::plugin::fuzzing;

/// Any text as `weir.toml`: parsing and validating never panics, and every error names
/// at least one problem.
pub fn config_parse(text: &str) {
    if let Err(e) = weir_gateway::Config::parse(std::path::Path::new("fuzz.toml"), text) {
        assert!(!e.to_string().is_empty(), "an error names its problem");
    }
}

/// Any request path, under each `escaped_slashes` policy: normalising never panics, and
/// what it accepts is idempotent, absolute and free of dot segments; the lenient
/// reading of a normalised path never panics either.
pub fn path_normalize(path: &str) {
    for policy in [SlashPolicy::Keep, SlashPolicy::Reject, SlashPolicy::Decode] {
        let Ok(normalised) = normalize(path, policy) else {
            continue;
        };
        assert!(normalised.starts_with('/'), "{path:?} -> {normalised:?}");
        assert!(
            !normalised.split('/').any(|s| s == "." || s == ".."),
            "{path:?} -> {normalised:?}"
        );
        let again = normalize(&normalised, policy).expect("a normalised path is accepted");
        assert_eq!(again, normalised, "idempotent for {path:?}");
        let _ = lenient_reading(&normalised);
    }
}

/// Any status, headers and body a guest can return as a local answer, and any header a
/// guest can set: what the gateway keeps is a valid response head with no framing,
/// `host` or hop-by-hop field, and every refused header is counted.
pub fn local_head(status: u16, headers: Vec<(String, Vec<u8>)>, body: Vec<u8>) {
    let offered = headers.len();
    let (reply, refused) = fuzzing::local_head(status, headers.clone(), body);
    let kept: usize = reply
        .headers
        .keys()
        .map(|k| reply.headers.get_all(k).iter().count())
        .sum();
    assert!(kept + refused >= offered, "every header kept or counted");
    for forbidden in [
        header::CONTENT_LENGTH,
        header::HOST,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        header::TRAILER,
    ] {
        assert!(!reply.headers.contains_key(&forbidden), "{forbidden} kept");
    }
    assert!((100..=999).contains(&reply.status.as_u16()));

    let mut map = HeaderMap::new();
    for (name, value) in headers {
        if fuzzing::set_header(&mut map, &name, &value) {
            let lower = name.to_ascii_lowercase();
            assert!(
                lower != "content-length" && lower != "host",
                "{name} accepted"
            );
        }
    }
}
