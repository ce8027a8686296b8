//! `weir plugin new`: writes a ready plugin crate (a manifest, a plugin with one phase,
//! per-request state and a config with defaults, native tests, a README) from the
//! templates in `scaffold/`.

use std::path::{Path, PathBuf};

/// Why a crate could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot name a plugin.
    #[error(
        "`{0}` cannot name a plugin: use lower-case letters, digits and `-`, starting with a letter (routes name it so, and its file is NAME.wasm)"
    )]
    BadName(String),
    /// The directory exists and holds something.
    #[error("{} exists and is not empty; choose another directory", .0.display())]
    NotEmpty(PathBuf),
    /// Writing failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Where the new crate gets `weir-plugin-sdk` from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A directory holding the SDK (a checkout's `plugin-sdk/`, or an unpacked crate).
    Path(PathBuf),
    /// Weir's git repository.
    Git,
}

impl SdkSource {
    /// The SDK of the checkout this binary was built from, when it is still there;
    /// else the git repository.
    pub fn default_for_this_build() -> SdkSource {
        let checkout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk");
        match checkout.join("Cargo.toml").is_file() {
            true => SdkSource::Path(checkout.canonicalize().unwrap_or(checkout)),
            false => SdkSource::Git,
        }
    }

    fn dependency(&self) -> String {
        match self {
            SdkSource::Path(path) => format!(
                "weir-plugin-sdk = {{ path = {} }}",
                toml::Value::String(path.display().to_string())
            ),
            SdkSource::Git => {
                "weir-plugin-sdk = { git = \"https://github.com/weir-gateway/weir\" }".to_owned()
            }
        }
    }
}

const CARGO_TOML: &str = include_str!("scaffold/Cargo.toml.tmpl");
const LIB_RS: &str = include_str!("scaffold/lib.rs.tmpl");
const README: &str = include_str!("scaffold/README.md.tmpl");

/// Whether `name` can name a plugin and a crate alike.
fn valid_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// `tenant-gate` → `TenantGate`.
fn type_name(name: &str) -> String {
    name.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// Writes the crate for plugin `name` into `dir` (created; it must not hold anything)
/// and returns the files written.
pub fn new_plugin(name: &str, dir: &Path, sdk: &SdkSource) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    if dir
        .read_dir()
        .is_ok_and(|mut entries| entries.next().is_some())
    {
        return Err(ScaffoldError::NotEmpty(dir.to_owned()));
    }
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{lib}}", &name.replace('-', "_"))
            .replace("{{type}}", &type_name(name))
            .replace("{{sdk}}", &sdk.dependency())
    };
    let files = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("src/lib.rs", fill(LIB_RS)),
        ("README.md", fill(README)),
        (".gitignore", "/target\n".to_owned()),
    ];
    let mut written = Vec::new();
    for (file, text) in files {
        let path = dir.join(file);
        let parent = path.parent().expect("a file in the crate");
        std::fs::create_dir_all(parent).map_err(|source| ScaffoldError::Write {
            path: parent.to_owned(),
            source,
        })?;
        std::fs::write(&path, text).map_err(|source| ScaffoldError::Write {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_crate_and_type_names() {
        assert!(valid_name("tenant-gate") && valid_name("a1"));
        for bad in ["", "Tenant", "1a", "a_b", "a-", "a--b", "a b", "../x"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(type_name("tenant-gate"), "TenantGate");
        assert_eq!(type_name("x2-y"), "X2Y");
    }

    #[test]
    fn writes_a_crate_and_refuses_a_used_directory() {
        let dir = std::env::temp_dir().join(format!("weir-scaffold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let sdk = SdkSource::Path("/opt/weir/plugin-sdk".into());
        let files = new_plugin("tenant-gate", &dir, &sdk).unwrap();
        assert_eq!(files.len(), 4);
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"tenant-gate\""), "{manifest}");
        assert!(
            manifest.contains("weir-plugin-sdk = { path = \"/opt/weir/plugin-sdk\" }"),
            "{manifest}"
        );
        let lib = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
        assert!(
            lib.contains("impl Plugin for TenantGate") && !lib.contains("{{"),
            "{lib}"
        );
        let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
        assert!(readme.contains("release/tenant_gate.wasm /path/to/plugins/tenant-gate.wasm"));
        assert!(matches!(
            new_plugin("tenant-gate", &dir, &sdk),
            Err(ScaffoldError::NotEmpty(_))
        ));
        assert!(matches!(
            new_plugin("Bad", &dir.join("other"), &sdk),
            Err(ScaffoldError::BadName(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
