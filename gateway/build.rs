//! Hands the `weir:plugin` version in `plugin-sdk/wit/plugin.wit` to the crate
//! (`WEIR_WIT_VERSION`), and builds the first-party `request-id` and `api-key` plugins for `wasm32-wasip2` so the
//! quickstart (`weir run` with no config) can embed them and show a plugin acting in
//! the first minute. Installs the wasm target with rustup when it is missing. If the
//! plugins cannot be built (no rustup, offline), the gateway still builds: the embedded
//! plugins are empty and the quickstart runs without its `/private` route, saying why.

#[path = "../xtask/src/guest_build.rs"]
mod guest_build;
#[path = "../plugin-sdk/wit_version.rs"]
mod wit_version;

use std::path::{Path, PathBuf};
use std::process::Command;

use guest_build::TARGET;
/// (crate's output file, the plugin's name).
const EMBEDDED: &[(&str, &str)] = &[("request_id", "request-id"), ("api_key", "api-key")];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir.parent().expect("gateway/ is in the workspace");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    wit_version::emit(&root.join("plugin-sdk"));
    for watched in ["plugin-sdk", "plugins/Cargo.toml", "plugins/Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    // Every plugin crate (the whole workspace is built), but not `plugins/target`.
    for entry in std::fs::read_dir(root.join("plugins"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.path().join("Cargo.toml").is_file() {
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
    }
    // Rebuild with the component linker once `cargo xtask setup` installs it.
    guest_build::watch_tools(root);
    println!("cargo:rerun-if-env-changed=WEIR_SKIP_QUICKSTART_PLUGINS");
    let built = if std::env::var_os("WEIR_SKIP_QUICKSTART_PLUGINS").is_some() {
        Err("WEIR_SKIP_QUICKSTART_PLUGINS is set".to_owned())
    } else {
        build_plugins(root)
    };
    for (file, name) in EMBEDDED {
        let bytes = match &built {
            Ok(dir) => std::fs::read(dir.join(format!("{file}.wasm"))).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        std::fs::write(out.join(format!("{name}.wasm")), bytes).expect("write to OUT_DIR");
    }
    if let Err(why) = built {
        println!(
            "cargo:warning=the quickstart's plugins were not built ({why}); `weir run` without a config will serve without its /private route"
        );
    }
}

/// Builds the plugins workspace (the same command and target directory as the tests'
/// build script, so neither rebuilds what the other built) and returns the directory
/// holding the `.wasm` files.
fn build_plugins(root: &Path) -> Result<PathBuf, String> {
    ensure_target()?;
    let target_dir = guest_build::target_dir(root);
    let status = guest_build::cargo_build(root, &root.join("plugins"), &target_dir)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building plugins/ for {TARGET} failed"));
    }
    Ok(target_dir.join(TARGET).join("release"))
}

/// Adds the wasm target when rustup lacks it (`RUSTUP_AUTO_INSTALL=0` machines).
fn ensure_target() -> Result<(), String> {
    let listed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if String::from_utf8_lossy(&listed.stdout)
        .lines()
        .any(|line| line.trim() == TARGET)
    {
        return Ok(());
    }
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`rustup target add {TARGET}` failed"))
    }
}
