//! How the repository builds its `wasm32-wasip2` guests (the first-party plugins, the test
//! guests, the example plugin). Shared by xtask and by the build scripts of `gateway/`
//! and `tests/` (through `#[path]`), so that every guest build uses the same flags and
//! the same target directory ([`target_dir`]), and none rebuilds what another built.
//!
//! Guests are linked with a newer `wasm-component-ld` and an imported memory when
//! `cargo xtask setup` has installed that linker under `target/tools`. The
//! toolchain's own linker (0.5.21 with Rust 1.95) routes every import that touches
//! memory through a shim module, which costs each fresh instance
//! (`isolation = "request"`) ~0.75 µs more. Without the tool, guests build with the
//! toolchain's linker and work the same.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The guests' target.
pub(crate) const TARGET: &str = "wasm32-wasip2";

/// The one target directory of every guest workspace (`plugins/`, `tests/guests/`,
/// `examples/hello-plugin/`): they share their dependencies (`wit-bindgen` and its
/// macro's crates, serde), which then compile once, not once per workspace. Builds
/// take turns on it (cargo's lock), which they did anyway: each is run to completion.
pub(crate) fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("wasm")
}

/// Where `cargo xtask setup` installs tools, under the repository `root`.
pub(crate) fn tools_dir(root: &Path) -> PathBuf {
    root.join("target").join("tools")
}

/// Where `cargo xtask setup` installs the component linker.
pub(crate) fn linker_path(root: &Path) -> PathBuf {
    tools_dir(root).join("bin").join("wasm-component-ld")
}

/// For a build script: reruns it when tools are installed, so guests built before the
/// linker was there are linked again with it. (It watches the tools directory, made here
/// if missing: a watched path that does not exist would rerun the script every build.)
#[allow(
    dead_code,
    reason = "for the build scripts; xtask installs, it does not watch"
)]
pub(crate) fn watch_tools(root: &Path) {
    let tools = tools_dir(root);
    // If it cannot be made, the watch below reruns the script each build: slower, not wrong.
    let _ = std::fs::create_dir_all(&tools);
    println!("cargo:rerun-if-changed={}", tools.display());
}

/// `cargo build --release --target wasm32-wasip2 --target-dir TARGET_DIR` in the
/// workspace `dir`: without the outer build's flags (they are for the host target), and
/// with the installed component linker and an imported memory when there is one.
pub(crate) fn cargo_build(root: &Path, dir: &Path, target_dir: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(dir)
        .args(["build", "--release", "--target", TARGET, "--target-dir"])
        .arg(target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS");
    let linker = linker_path(root);
    if linker.is_file() {
        command
            .env("CARGO_TARGET_WASM32_WASIP2_LINKER", linker)
            .env(
                "CARGO_TARGET_WASM32_WASIP2_RUSTFLAGS",
                "-C link-arg=--import-memory",
            );
    }
    command
}
