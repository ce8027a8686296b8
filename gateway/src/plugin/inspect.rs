//! `weir plugin inspect`: what the gateway sees in a `.wasm` file.

use std::fmt::Write as _;
use std::path::Path;

use super::{PluginError, PluginHost, compile};

/// A plugin file as the gateway sees it.
#[derive(Debug, Clone)]
pub struct Inspection {
    /// File size in bytes.
    pub size: u64,
    /// SHA-256 of the file (the plugin's version).
    pub sha256: String,
    /// The `weir:plugin` version it was built for, if any.
    pub wit_version: Option<String>,
    /// Whether this gateway can load it.
    pub compatible: bool,
    /// The phases it implements (when it loads).
    pub phases: Vec<&'static str>,
    /// Why it does not load, if it does not.
    pub load_error: Option<String>,
    /// The component's imports.
    pub imports: Vec<String>,
    /// The component's exports.
    pub exports: Vec<String>,
}

impl PluginHost {
    /// Compiles and examines `path` without serving it.
    pub async fn inspect(&self, path: &Path) -> Result<Inspection, PluginError> {
        let name = path
            .file_stem()
            .map_or_else(|| "plugin".to_owned(), |s| s.to_string_lossy().into_owned());
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            name: name.clone(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let compiled = compile::compile(&self.engine, &name, &bytes, None)?;
        let ty = compiled.component.component_type();
        let imports = ty
            .imports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let exports = ty
            .exports(&self.engine)
            .map(|(n, _)| n.to_owned())
            .collect();
        let wit_version = compile::plugin_wit_version(&self.engine, &compiled.component);
        let compatible = wit_version.as_deref().is_some_and(compile::compatible);
        let (phases, load_error) = match self.load(&name, path).await {
            Ok(plugin) => (plugin.phases.names(), None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        Ok(Inspection {
            size: bytes.len() as u64,
            sha256: compiled.sha256,
            wit_version,
            compatible,
            phases,
            load_error,
            imports,
            exports,
        })
    }
}

impl Inspection {
    /// The human-readable report `weir plugin inspect` prints.
    pub fn report(&self, path: &Path) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}", path.display());
        let _ = writeln!(out, "  size        {} bytes", self.size);
        let _ = writeln!(out, "  sha256      {}", self.sha256);
        let _ = writeln!(
            out,
            "  weir:plugin {} ({})",
            self.wit_version.as_deref().unwrap_or("none"),
            if self.compatible {
                format!("compatible with this gateway's {}", compile::WIT_VERSION)
            } else {
                format!(
                    "NOT compatible with this gateway's {}",
                    compile::WIT_VERSION
                )
            }
        );
        let _ = writeln!(
            out,
            "  phases      {}",
            if self.phases.is_empty() {
                "-".to_owned()
            } else {
                self.phases.join(", ")
            }
        );
        if let Some(error) = &self.load_error {
            let _ = writeln!(out, "  load error  {error}");
        }
        let _ = writeln!(out, "  imports");
        for import in &self.imports {
            let _ = writeln!(out, "    {import}");
        }
        let _ = writeln!(out, "  exports");
        for export in &self.exports {
            let _ = writeln!(out, "    {export}");
        }
        out
    }
}
