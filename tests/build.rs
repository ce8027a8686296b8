//! Builds the test guests (`tests/guests/`, a workspace of its own), the first-party
//! plugins (`plugins/`) and the example plugin for `wasm32-wasip2` once, so that plain
//! `cargo test` has real `.wasm` plugins. Which guests there are is read from the
//! directories (every crate under `tests/guests/` and `plugins/`), never listed by hand.
//! Their paths reach the tests as `GUEST_<NAME>` environment variables and as the table
//! in `$OUT_DIR/guests.rs` that `guest_wasm!` looks names up in. Cargo's own freshness
//! checks keep rebuilds to what changed.

#[path = "../xtask/src/guest_build.rs"]
mod guest_build;

use std::path::{Path, PathBuf};

/// Workspaces to build: (directory under the repository root, target subdirectory).
const WORKSPACES: &[&str] = &["tests/guests", "examples/hello-plugin", "plugins"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("tests/ is inside the workspace")
        .to_owned();
    println!(
        "cargo:rerun-if-changed={}",
        root.join("plugin-sdk").display()
    );
    // Rebuild with the component linker once `cargo xtask setup` installs it.
    guest_build::watch_tools(&root);
    let mut table = String::from(
        "/// Every guest `build.rs` built: (name, path of its `.wasm`).\n\
         pub const GUESTS: &[(&str, &str)] = &[\n",
    );
    // Not the main target directory: the outer cargo holds its lock.
    let target_dir = guest_build::target_dir(&root);
    for dir in WORKSPACES {
        let crates = crates_in(&root.join(dir));
        // Scanned whole by cargo: a new guest crate counts as a change too.
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
        let status = guest_build::cargo_build(&root, &root.join(dir), &target_dir)
            .status()
            .expect("cannot run cargo to build the test guests");
        assert!(
            status.success(),
            "building {dir} for wasm32-wasip2 failed (is the target installed? `cargo xtask test` adds it)"
        );
        for name in crates {
            let output = name.replace('-', "_");
            let wasm = target_dir
                .join("wasm32-wasip2")
                .join("release")
                .join(format!("{output}.wasm"));
            assert!(wasm.is_file(), "{} was not built", wasm.display());
            println!(
                "cargo:rustc-env=GUEST_{}={}",
                output.to_ascii_uppercase(),
                wasm.display()
            );
            table.push_str(&format!(
                "    ({output:?}, {:?}),\n",
                wasm.display().to_string()
            ));
        }
    }
    table.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("guests.rs"), table).expect("write guests.rs");
}

/// The package names of the workspace at `dir`: the root package if it is one, and
/// every subdirectory with a `Cargo.toml` that names a package.
fn crates_in(dir: &Path) -> Vec<String> {
    let mut dirs = vec![dir.to_owned()];
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .collect();
    entries.sort();
    dirs.extend(entries);
    dirs.into_iter()
        .filter_map(|dir| package_name(&std::fs::read_to_string(dir.join("Cargo.toml")).ok()?))
        .collect()
}

/// The `name` of a manifest's `[package]` table, if it has one.
fn package_name(manifest: &str) -> Option<String> {
    let manifest: toml::Table = toml::from_str(manifest).ok()?;
    Some(manifest.get("package")?.get("name")?.as_str()?.to_owned())
}
