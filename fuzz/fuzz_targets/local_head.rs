//! Any status, headers and body a guest can return as a local answer, and any header a
//! guest can set: what the gateway keeps is a valid response head with no framing,
//! `host` or hop-by-hop field, and every refused header is counted.
#![no_main]

use http::header::{self, HeaderMap};
use libfuzzer_sys::fuzz_target;
use weir_gateway::plugin::fuzzing;

fuzz_target!(|input: (u16, Vec<(String, Vec<u8>)>, Vec<u8>)| {
    let (status, headers, body) = input;
    let offered = headers.len();
    let (reply, refused) = fuzzing::local_head(status, headers.clone(), body);
    let kept: usize = reply.headers.keys().map(|k| reply.headers.get_all(k).iter().count()).sum();
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
            assert!(lower != "content-length" && lower != "host", "{name} accepted");
        }
    }
});
