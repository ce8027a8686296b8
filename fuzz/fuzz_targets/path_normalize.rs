//! Any request path, under each `escaped_slashes` policy (see `weir_fuzz::path_normalize`).
#![no_main]

libfuzzer_sys::fuzz_target!(|path: &str| weir_fuzz::path_normalize(path));
