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
    let cached = cache_dir
        .filter(|dir| trusted(dir))
        .map(|dir| dir.join(format!("{sha256}-{:016x}.cwasm", engine_hash(engine))));
    if let Some(path) = &cached
        && path.is_file()
        && trusted(path)
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

/// Whether `path` may be used as the compile cache (or an artifact in it), warning when
/// not: then the plugin is compiled instead.
fn trusted(path: &Path) -> bool {
    let Some(why) = untrusted(path) else {
        return true;
    };
    tracing::warn!(
        path = %path.display(),
        problem = %why,
        "plugin compile cache not used: compiling instead"
    );
    false
}

/// Why `path` (the cache directory or a file in it) cannot be trusted to hold only what
/// this gateway wrote: it is a symbolic link, it belongs to another user than the one
/// the gateway runs as, or its group or others may write it. `None` when it can be
/// trusted, or does not exist yet.
pub(crate) fn untrusted(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => return Some(format!("cannot read its metadata: {e}")),
    };
    let me = rustix::process::geteuid().as_raw();
    if meta.file_type().is_symlink() {
        Some("it is a symbolic link".to_owned())
    } else if meta.uid() != me {
        Some(format!(
            "it belongs to user {} but the gateway runs as user {me}",
            meta.uid()
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "its group or other users may write it (mode {:o})",
            meta.mode() & 0o777
        ))
    } else {
        None
    }
}

/// Loads a compiled artifact from the cache directory.
#[allow(unsafe_code)]
fn load_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime requires that a deserialized artifact was produced by wasmtime's
    // own serialization for a compatible engine and not tampered with. Files in the
    // cache are written only by `store_cached` below (from `Component::serialize`), named by the SHA-256 of the source
    // and the engine's compatibility hash, and wasmtime itself checks the header (engine
    // version and settings) before using it. `compile` only gets here when neither the
    // directory nor the file is a link, another user's, or writable by anyone else
    // (`untrusted`), so only this user could have put it there.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Writes the artifact atomically (temp file + rename); a failure only costs the cache.
fn store_cached(path: &PathBuf, compiled: &[u8]) {
    let Some(dir) = path.parent() else { return };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    // Only this user may read or write what it caches.
    let written = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| {
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?
                .write_all(compiled)
        })
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
    fn a_cache_others_may_write_or_a_link_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("weir-cache-trust-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let set = |p: &Path, mode: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        set(&dir, 0o700);
        assert_eq!(untrusted(&dir), None);
        assert_eq!(untrusted(&dir.join("absent.cwasm")), None);
        set(&dir, 0o777);
        assert!(untrusted(&dir).unwrap().contains("mode 777"));
        set(&dir, 0o700);
        let file = dir.join("a.cwasm");
        std::fs::write(&file, b"x").unwrap();
        set(&file, 0o666);
        assert!(untrusted(&file).unwrap().contains("may write it"));
        set(&file, 0o600);
        assert_eq!(untrusted(&file), None);
        let link = dir.join("b.cwasm");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(untrusted(&link).unwrap().contains("symbolic link"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn semver_compatibility() {
        assert!(compatible("0.1.0"));
        assert!(compatible("0.1.7"));
        assert!(compatible("0.1.8"));
        assert!(!compatible("0.2.0"));
        assert!(!compatible("1.0.0"));
    }
}
