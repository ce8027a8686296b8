//! Turning a `.wasm` file into a ready-to-instantiate component: compile once per
//! content hash (off the request path), cache the compiled artifact on disk so a restart
//! skips Cranelift, and check the component speaks a compatible `weir:plugin` version.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::PluginError;

/// The `weir:plugin` version this gateway implements, as `wit/plugin.wit` declares it.
pub const WIT_VERSION: &str = env!("WEIR_WIT_VERSION");

/// A compiled component and where it came from.
pub(crate) struct Compiled {
    pub(crate) component: Component,
    pub(crate) sha256: String,
    pub(crate) from_cache: bool,
}

/// Compiles `bytes`, or loads the artifact a previous compile of the same bytes left in
/// `cache_dir`.
pub(crate) fn compile(
    engine: &Engine,
    name: &str,
    bytes: &[u8],
    cache_dir: Option<&Path>,
) -> Result<Compiled, PluginError> {
    let sha256 = sha256_hex(bytes);
    let cached =
        cache_dir.map(|dir| dir.join(format!("{sha256}-{:016x}.cwasm", engine_hash(engine))));
    if let Some(path) = &cached
        && path.is_file()
        && let Ok(component) = load_cached(engine, path)
    {
        return Ok(Compiled {
            component,
            sha256,
            from_cache: true,
        });
    }
    let component = Component::new(engine, bytes).map_err(|e| PluginError::Compile {
        name: name.to_owned(),
        reason: format!("{e:#}"),
    })?;
    if let Some(path) = &cached
        && let Ok(artifact) = component.serialize()
    {
        store_cached(path, &artifact);
    }
    Ok(Compiled {
        component,
        sha256,
        from_cache: false,
    })
}

fn engine_hash(engine: &Engine) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hasher.finish()
}

/// The SHA-256 of `bytes` in lower-case hex: a plugin's version.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Loads a compiled artifact from the cache directory.
#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that a deserialized artifact was produced by wasmtime's
    // own serialization for a compatible engine and not tampered with. Files in the
    // cache are written only by `store_cached` below (from `Component::serialize`), named by the SHA-256 of the source
    // and the engine's compatibility hash, and wasmtime itself checks the header (engine
    // version and settings) before using it. The cache directory is the operator's.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Writes the artifact atomically (temp file + rename); a failure only costs the cache.
fn store_cached(path: &PathBuf, compiled: &[u8]) {
    let Some(dir) = path.parent() else { return };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&tmp, compiled))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!(path = %path.display(), error = %e, "cannot write the plugin compile cache");
    }
}

/// The `weir:plugin` version a component was built against, from the names of its
/// exports (`weir:plugin/handler@X.Y.Z`).
pub(crate) fn plugin_wit_version(engine: &Engine, component: &Component) -> Option<String> {
    component
        .component_type()
        .exports(engine)
        .find_map(|(name, _)| name.strip_prefix("weir:plugin/handler@").map(str::to_owned))
}

/// Whether a plugin built against `version` can load here: same major, and for 0.x the
/// same minor (semver's rule for 0.x).
pub(crate) fn compatible(version: &str) -> bool {
    let key = |v: &str| {
        let mut parts = v.split('.');
        let major = parts.next().unwrap_or("");
        let minor = parts.next().unwrap_or("");
        if major == "0" {
            format!("0.{minor}")
        } else {
            major.to_owned()
        }
    };
    key(version) == key(WIT_VERSION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn semver_compatibility() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.0.0"));
    }
}
