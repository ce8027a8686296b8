//! Test support for Weir's black-box tests: real upstream servers, gateways started
//! in-process or as the real `weir` binary, and small HTTP clients. Everything binds
//! 127.0.0.1 on port 0 and is stopped when dropped.

pub mod certs;
pub mod client;
pub mod first_party;
pub mod gateway;
pub mod load;
pub mod poll;
pub mod proto_upstream;
pub mod upstream;

pub use client::{Reply, get, h1_client, h2_client, raw_request, send};
pub use gateway::{TestGateway, WeirProcess};
pub use proto_upstream::{ProtoOptions, ProtoUpstream};
pub use upstream::{Seen, TestUpstream, closed_addr};

/// Path of the real `weir` binary built for these tests (usable in integration tests,
/// where Cargo defines `CARGO_BIN_EXE_*`).
#[macro_export]
macro_rules! weir_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_weir-under-test"))
    };
}

/// Path of a test guest `.wasm` built by `build.rs` (e.g. `guest!("probe")`).
#[macro_export]
macro_rules! guest_wasm {
    ("probe") => {
        ::std::path::Path::new(env!("GUEST_PROBE"))
    };
    ("probe_local") => {
        ::std::path::Path::new(env!("GUEST_PROBE_LOCAL"))
    };
    ("minor") => {
        ::std::path::Path::new(env!("GUEST_MINOR"))
    };
    ("older") => {
        ::std::path::Path::new(env!("GUEST_OLDER"))
    };
    ("future") => {
        ::std::path::Path::new(env!("GUEST_FUTURE"))
    };
    ("bodies") => {
        ::std::path::Path::new(env!("GUEST_BODIES"))
    };
    ("swap_a") => {
        ::std::path::Path::new(env!("GUEST_SWAP_A"))
    };
    ("swap_b") => {
        ::std::path::Path::new(env!("GUEST_SWAP_B"))
    };
    ("request_id") => {
        ::std::path::Path::new(env!("GUEST_REQUEST_ID"))
    };
    ("api_key") => {
        ::std::path::Path::new(env!("GUEST_API_KEY"))
    };
    ("cors") => {
        ::std::path::Path::new(env!("GUEST_CORS"))
    };
    ("headers") => {
        ::std::path::Path::new(env!("GUEST_HEADERS"))
    };
    ("ip_filter") => {
        ::std::path::Path::new(env!("GUEST_IP_FILTER"))
    };
    ("jwt_auth") => {
        ::std::path::Path::new(env!("GUEST_JWT_AUTH"))
    };
    ("rate_limit") => {
        ::std::path::Path::new(env!("GUEST_RATE_LIMIT"))
    };
    ("hello_plugin") => {
        ::std::path::Path::new(env!("GUEST_HELLO_PLUGIN"))
    };
}
