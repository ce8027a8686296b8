//! Any local answer or header a guest can hand the gateway (see `weir_fuzz::local_head`).
#![no_main]

libfuzzer_sys::fuzz_target!(|input: (u16, Vec<(String, Vec<u8>)>, Vec<u8>)| {
    let (status, headers, body) = input;
    weir_fuzz::local_head(status, headers, body);
});
