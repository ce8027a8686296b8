//! Reads the `weir:plugin` version from `wit/plugin.wit` for [`WIT_VERSION`].

#[path = "wit_version.rs"]
mod wit_version;

fn main() {
    let manifest_dir =
        std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    wit_version::emit(&manifest_dir);
}
