//! Builds the test guests (`tests/guests/`, a workspace of its own), the first-party
//! plugins (`plugins/`) and the example plugin for `wasm32-wasip2` once, so that plain
//! `cargo test` has real `.wasm` plugins, and exposes their paths as `GUEST_<NAME>`
//! environment variables at compile time. Cargo's own freshness checks
//! keep rebuilds to what changed.

#[path = "../xtask/src/guest_build.rs"]
mod guest_build;

use std::path::PathBuf;

const GUESTS: &[&str] = &[
    "probe",
    "probe_local",
    "future",
    "bodies",
    "minor",
    "older",
    "swap_a",
    "swap_b",
];

/// Workspaces to build: (directory under the repository root, target subdirectory,
/// the `.wasm` files it produces).
const WORKSPACES: &[(&str, &str, &[&str])] = &[
    ("tests/guests", "guests", GUESTS),
    ("examples/hello-plugin", "example-guests", &["hello_plugin"]),
    (
        "plugins",
        "plugins",
        &[
            "api_key",
            "cors",
            "headers",
            "ip_filter",
            "jwt_auth",
            "rate_limit",
            "request_id",
        ],
    ),
];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned();
    for watched in [
        "tests/guests",
        "examples/hello-plugin/src",
        "examples/hello-plugin/Cargo.toml",
        "plugin-sdk",
        "plugins/Cargo.toml",
        "plugins/api-key",
        "plugins/cors",
        "plugins/headers",
        "plugins/ip-filter",
        "plugins/jwt-auth",
        "plugins/rate-limit",
        "plugins/request-id",
        "wit",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // Rebuild with the component linker once `cargo xtask setup` installs it.
    guest_build::watch_tools(&root);
    for (dir, target, outputs) in WORKSPACES {
        // A separate target directory: the outer cargo holds the lock on the main one.
        let target_dir = root.join("target").join(target);
        let status = guest_build::cargo_build(&root, &root.join(dir), &target_dir)
            .status()
            .expect("cannot run cargo to build the test guests");
        assert!(
            status.success(),
            "building {dir} for wasm32-wasip2 failed (is the target installed? `cargo xtask test` adds it)"
        );
        for output in *outputs {
            let wasm = target_dir
                .join("wasm32-wasip2")
                .join("release")
                .join(format!("{output}.wasm"));
            assert!(wasm.is_file(), "{} was not built", wasm.display());
            println!(
                "cargo:rustc-env=GUEST_{}={}",
                output.to_ascii_uppercase().replace('-', "_"),
                wasm.display()
            );
        }
    }
}
