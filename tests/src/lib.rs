//! Test support for Weir's black-box tests: real upstream servers, gateways started
//! in-process or as the real `weir` binary, and small HTTP clients. Everything binds
//! 127.0.0.1 on port 0 and is stopped when dropped.

pub mod certs;
pub mod client;
pub mod first_party;
pub mod gateway;
pub mod json_upstream;
pub mod load;
pub mod origin;
pub mod poll;
pub mod proto_upstream;
pub mod redis;
pub mod upstream;

pub use client::{Reply, get, h1_client, h2_client, raw_request, send};
pub use gateway::{TestGateway, WeirProcess};
pub use json_upstream::JsonUpstream;
pub use proto_upstream::{ProtoOptions, ProtoUpstream};
pub use redis::RedisServer;
pub use upstream::{Seen, TestUpstream, closed_addr};

/// Path of the real `weir` binary built for these tests (usable in integration tests,
/// where Cargo defines `CARGO_BIN_EXE_*`).
#[macro_export]
macro_rules! weir_bin {
    () => {
        ::std::path::Path::new(env!("CARGO_BIN_EXE_weir-under-test"))
    };
}

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// Path of a test guest `.wasm` built by `build.rs`, by crate name with `_` for `-`
/// (e.g. `guest_wasm!("probe")`, `guest_wasm!("rate_limit")`): every crate under
/// `tests/guests/` and `plugins/`, and the example plugin (`hello_plugin`).
#[macro_export]
macro_rules! guest_wasm {
    ($name:expr) => {
        $crate::guest_path($name)
    };
}

/// The `.wasm` of the guest `name` (see [`guest_wasm!`]); panics naming the guests
/// there are when there is none of that name.
pub fn guest_path(name: &str) -> &'static std::path::Path {
    match GUESTS.iter().find(|(guest, _)| *guest == name) {
        Some((_, path)) => std::path::Path::new(path),
        None => {
            let known: Vec<&str> = GUESTS.iter().map(|(guest, _)| *guest).collect();
            panic!("no test guest `{name}`; there are {known:?}")
        }
    }
}

/// A linter the tests run, installed by `cargo xtask setup` in a virtual environment
/// under `target/tools/VENV`: the path in `env_var` (set by `cargo xtask test`, where a
/// missing tool then fails its test), else the installed one, else `name` on `PATH`;
/// `None` when there is none (the test then skips).
pub fn installed_tool(env_var: &str, venv: &str, name: &str) -> Option<std::path::PathBuf> {
    if let Some(path) = std::env::var_os(env_var) {
        return Some(path.into());
    }
    let installed = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools")
        .join(venv)
        .join("bin")
        .join(name);
    if installed.is_file() {
        return Some(installed);
    }
    std::process::Command::new(name)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
        .then(|| name.into())
}
