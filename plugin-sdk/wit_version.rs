//! The `weir:plugin` package version, read from `plugin-sdk/wit/plugin.wit`: the one
//! place it is written. The SDK's and the gateway's build scripts hand it to their
//! crates as the `WEIR_WIT_VERSION` environment variable. (It lives in the SDK's
//! directory so that the packaged SDK carries it.)

use std::path::Path;

/// The `X.Y.Z` of `package weir:plugin@X.Y.Z;` in `wit/plugin.wit` under `root` (the
/// SDK's directory).
fn read(root: &Path) -> String {
    let path = root.join("wit").join("plugin.wit");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines()
        .find_map(|line| {
            line.trim()
                .strip_prefix("package weir:plugin@")?
                .strip_suffix(';')
                .map(str::to_owned)
        })
        .unwrap_or_else(|| {
            panic!(
                "{} declares no `package weir:plugin@X.Y.Z;`",
                path.display()
            )
        })
}

/// Tells cargo the version (`WEIR_WIT_VERSION`) and to run the build script again when
/// the WIT file changes.
pub(crate) fn emit(root: &Path) {
    println!(
        "cargo:rerun-if-changed={}",
        root.join("wit").join("plugin.wit").display()
    );
    println!("cargo:rustc-env=WEIR_WIT_VERSION={}", read(root));
}
