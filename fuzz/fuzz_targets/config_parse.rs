//! Any text as `weir.toml` (see `weir_fuzz::config_parse`).
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &str| weir_fuzz::config_parse(text));
