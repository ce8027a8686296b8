//! Project automation, run as `cargo xtask <command>`.
//!
//! - `cargo xtask test [ARGS...]`: makes sure the machine has what the suite needs (the
//!   `wasm32-wasip2` Rust target), then runs `cargo test --workspace [ARGS...]` and the
//!   native unit tests of the first-party plugins (`plugins/`, a workspace of its own). This is
//!   the README's test command and what `.ci/run` runs.
//! - `cargo xtask setup`: only the preparation step.

use std::process::{Command, ExitCode};

const WASM_TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let result = match args.next().as_deref() {
        Some("test") => setup().and_then(|()| test(args.collect())),
        Some("setup") => setup(),
        _ => {
            eprintln!("usage: cargo xtask test [cargo test args...] | cargo xtask setup");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Installs the wasm target when rustup lacks it (machines set `RUSTUP_AUTO_INSTALL=0`, so
/// `rust-toolchain.toml` alone does not install it).
fn setup() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let list = String::from_utf8_lossy(&installed.stdout);
    if list.lines().any(|line| line.trim() == WASM_TARGET) {
        return Ok(());
    }
    eprintln!("xtask: installing the {WASM_TARGET} target");
    run(Command::new("rustup").args(["target", "add", WASM_TARGET]))
}

fn test(extra: Vec<String>) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(Command::new(&cargo)
        .args(["test", "--workspace"])
        .args(&extra))?;
    run(Command::new(&cargo).args([
        "test",
        "--workspace",
        "--manifest-path",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/Cargo.toml"),
    ]))
}

fn run(command: &mut Command) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("cannot run {command:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{command:?} failed with {status}"))
    }
}
