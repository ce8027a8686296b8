//! `weir plugin inspect`: what the gateway sees in a `.wasm` file.

use std::fmt::Write as _;
use std::path::Path;

use super::{PluginError, PluginHost, compile, imports_waiting};

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
    /// Its imports that can wait (`http-call`, WASI files or sockets): with any, each
    /// call runs on a fiber, a stack switch per call; without, calls are direct.
    pub waiting_imports: Vec<String>,
    /// How its core modules were linked, which sets what a fresh instance costs.
    pub linking: Linking,
    /// Whether it is pre-initialised with an empty config (when it loads).
    pub preinit: Option<Preinitialised>,
    /// Whether its request-headers phase is one call (`on-request`, since WIT 0.1.8),
    /// when it loads and has that phase.
    pub one_crossing: Option<bool>,
}

/// Whether a plugin configured with an empty config (`{}`, what a route's entry
/// without `config` gives it) starts its instances from a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preinitialised {
    /// Yes.
    Yes,
    /// No, and why: every fresh instance runs `init`.
    No(String),
    /// Unknown: `init` refused the empty config, with this message.
    Refused(String),
}

/// How a component's core modules were linked. A module that exports its memory can only
/// reach host functions that take or return memory through a shim table filled after it
/// is instantiated (the toolchain's `wasm-component-ld` 0.5.21 does this for every such
/// import); one that imports its memory calls them directly and needs the shim only for
/// its allocator. Each shimmed import costs every fresh instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Linking {
    /// Whether a core module imports its linear memory.
    pub memory_imported: bool,
    /// Imports called through a shim table.
    pub shimmed: u64,
}

impl Linking {
    /// Reads the core modules of a component's bytes (unparsable bytes read as nothing:
    /// compiling them reports the error).
    pub fn of(bytes: &[u8]) -> Linking {
        use wasmparser::{ExternalKind, Payload, TypeRef};
        let mut linking = Linking::default();
        // Per module: tables it imports (they come first in its table index space) and
        // the sizes of those it defines.
        let mut imported_tables = 0u32;
        let mut defined_tables: Vec<u64> = Vec::new();
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload {
                Ok(Payload::Version { .. }) => {
                    imported_tables = 0;
                    defined_tables.clear();
                }
                Ok(Payload::ImportSection(imports)) => {
                    for import in imports.into_imports().flatten() {
                        match import.ty {
                            TypeRef::Memory(_) => linking.memory_imported = true,
                            TypeRef::Table(_) => imported_tables += 1,
                            _ => {}
                        }
                    }
                }
                Ok(Payload::TableSection(tables)) => {
                    defined_tables.extend(tables.into_iter().flatten().map(|t| t.ty.initial));
                }
                Ok(Payload::ExportSection(exports)) => {
                    // wit-component's shim module exports its table as `$imports`.
                    for export in exports.into_iter().flatten() {
                        if export.name == "$imports" && export.kind == ExternalKind::Table {
                            let defined = export.index.checked_sub(imported_tables);
                            linking.shimmed += defined
                                .and_then(|i| defined_tables.get(i as usize))
                                .copied()
                                .unwrap_or(0);
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        linking
    }
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
        let waiting_imports = imports_waiting(&self.engine, &compiled.component, self.kv_waits());
        let wit_version = compile::plugin_wit_version(&self.engine, &compiled.component);
        let compatible = wit_version.as_deref().is_some_and(compile::compatible);
        let (phases, load_error, preinit, one_crossing) = match self.load(&name, path).await {
            Ok(plugin) => {
                let phases = plugin.phases.names();
                let one_crossing = plugin
                    .phases
                    .request_headers
                    .then(|| plugin.image.exports.one_crossing.is_some());
                let preinit = Some(self.preinit_empty(plugin).await);
                (phases, None, preinit, one_crossing)
            }
            Err(e) => (Vec::new(), Some(e.to_string()), None, None),
        };
        Ok(Inspection {
            linking: Linking::of(&bytes),
            size: bytes.len() as u64,
            sha256: compiled.sha256,
            wit_version,
            compatible,
            phases,
            load_error,
            imports,
            exports,
            waiting_imports,
            preinit,
            one_crossing,
        })
    }

    /// Configures `plugin` with an empty config, as a route would, to see whether its
    /// instances start from a snapshot.
    async fn preinit_empty(&self, plugin: std::sync::Arc<super::LoadedPlugin>) -> Preinitialised {
        let usage = crate::config::PluginUse {
            name: plugin.name.clone(),
            config_json: "{}".to_owned(),
            allowed_hosts: Vec::new(),
            settings: crate::config::PluginSettings::default(),
        };
        match self.configure("inspect", plugin, &usage).await {
            Ok(entry) => entry
                .not_preinitialised_because()
                .map_or(Preinitialised::Yes, Preinitialised::No),
            Err(PluginError::Config { reason, .. }) => Preinitialised::Refused(reason),
            Err(e) => Preinitialised::Refused(e.to_string()),
        }
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
        match self.one_crossing {
            Some(true) => {
                let _ = writeln!(
                    out,
                    "  request     one call a request (`on-request`): the headers it reads come with it, its edits go back with its result"
                );
            }
            Some(false) => {
                let _ = writeln!(
                    out,
                    "  request     a call per header read and edit (`on-request-headers`; rebuild with an SDK for weir:plugin 0.1.8 or later for one call a request)"
                );
            }
            None => {}
        }
        let _ = writeln!(
            out,
            "  linking     memory {}, {} import(s) through a shim{}",
            if self.linking.memory_imported {
                "imported"
            } else {
                "exported"
            },
            self.linking.shimmed,
            if self.linking.memory_imported || self.linking.shimmed <= 1 {
                ""
            } else {
                " (link with wasm-component-ld 0.5.31 and --import-memory for cheaper fresh instances)"
            }
        );
        if self.waiting_imports.is_empty() {
            let _ = writeln!(out, "  calls       directly (no import can wait)");
        } else {
            let _ = writeln!(
                out,
                "  calls       on a fiber, a stack switch per call, because it imports {}",
                self.waiting_imports.join(", ")
            );
        }
        if let Some(error) = &self.load_error {
            let _ = writeln!(out, "  load error  {error}");
        }
        match &self.preinit {
            None => {}
            Some(Preinitialised::Yes) => {
                let _ = writeln!(
                    out,
                    "  preinit     yes: instances start from a snapshot taken after `init` (with an empty config)"
                );
            }
            Some(Preinitialised::No(why)) => {
                let _ = writeln!(
                    out,
                    "  preinit     NO: not pre-initialised, so `init` runs in every fresh instance: {why}"
                );
            }
            Some(Preinitialised::Refused(why)) => {
                let _ = writeln!(
                    out,
                    "  preinit     unknown: `init` refuses an empty config ({why}); `weir check` tells for each route"
                );
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linking_counts_the_shim_and_sees_an_imported_memory() {
        // As the toolchain's linker lays a guest out: the module exports its memory and
        // three imports go through the shim's table.
        let exported = wat::parse_str(
            r#"(component
              (core module $shim (table (export "$imports") 3 3 funcref))
              (core module $main (memory (export "memory") 1))
              (core instance (instantiate $shim))
              (core instance (instantiate $main)))"#,
        )
        .unwrap();
        assert_eq!(
            Linking::of(&exported),
            Linking {
                memory_imported: false,
                shimmed: 3
            }
        );
        // With an imported memory: the memory's module holds a one-entry shim (the
        // allocator), and a fixup imports that table (not counted again).
        let imported = wat::parse_str(
            r#"(component
              (core module $mem
                (memory (export "memory") 1)
                (table (export "$imports") 1 1 funcref))
              (core module $main (import "env" "memory" (memory 1)))
              (core module $fixup (import "" "$imports" (table 1 1 funcref)))
              (core instance $m (instantiate $mem))
              (core instance (instantiate $main (with "env" (instance $m))))
              (core instance (instantiate $fixup (with "" (instance $m)))))"#,
        )
        .unwrap();
        assert_eq!(
            Linking::of(&imported),
            Linking {
                memory_imported: true,
                shimmed: 1
            }
        );
        assert_eq!(Linking::of(b"not wasm"), Linking::default());
    }

    /// An inspection of a plugin that loads, with nothing to say about its preinit or
    /// request phase.
    fn found() -> Inspection {
        Inspection {
            size: 1,
            sha256: "0".repeat(64),
            wit_version: Some(compile::WIT_VERSION.to_owned()),
            compatible: true,
            phases: vec!["request-headers"],
            load_error: None,
            imports: Vec::new(),
            exports: Vec::new(),
            waiting_imports: Vec::new(),
            linking: Linking::default(),
            preinit: None,
            one_crossing: None,
        }
    }

    /// The report's line that starts with `prefix`, if any.
    fn report_line(found: &Inspection, prefix: &str) -> Option<String> {
        found
            .report(Path::new("p.wasm"))
            .lines()
            .find(|l| l.starts_with(prefix))
            .map(str::to_owned)
    }

    #[test]
    fn the_report_says_whether_the_plugin_is_preinitialised_and_why_not() {
        let mut found = Inspection {
            preinit: Some(Preinitialised::No(
                "`init` (the plugin's `new`) called wasi:random/insecure-seed".to_owned(),
            )),
            ..found()
        };
        let line = |found: &Inspection| report_line(found, "  preinit     ");
        assert_eq!(
            line(&found).as_deref(),
            Some(
                "  preinit     NO: not pre-initialised, so `init` runs in every fresh instance: \
                 `init` (the plugin's `new`) called wasi:random/insecure-seed"
            )
        );
        found.preinit = Some(Preinitialised::Refused("`keys` is required".to_owned()));
        assert!(
            line(&found)
                .unwrap()
                .contains("unknown: `init` refuses an empty config (`keys` is required)")
        );
        found.preinit = Some(Preinitialised::Yes);
        assert!(line(&found).unwrap().starts_with("  preinit     yes: "));
        found.preinit = None;
        assert_eq!(line(&found), None);
    }

    #[test]
    fn the_report_says_how_the_request_phase_is_called() {
        let mut found = Inspection {
            wit_version: Some("0.1.4".to_owned()),
            one_crossing: Some(false),
            ..found()
        };
        let line = |found: &Inspection| report_line(found, "  request     ");
        assert!(
            line(&found)
                .unwrap()
                .contains("a call per header read and edit")
        );
        found.one_crossing = Some(true);
        assert!(line(&found).unwrap().contains("one call a request"));
        found.one_crossing = None;
        assert_eq!(line(&found), None);
    }
}
