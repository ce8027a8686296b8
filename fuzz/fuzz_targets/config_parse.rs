//! Any text as `weir.toml`: parsing and validating never panics, and every error names
//! at least one problem.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Err(e) = weir_gateway::Config::parse(std::path::Path::new("fuzz.toml"), text) {
        let _ = e.to_string();
    }
});
