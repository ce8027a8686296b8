//! How a plugin fails: loading and configuring it ([`PluginError`]), and the kinds of
//! failure a call can end in ([`FailureKind`]).

use super::compile::WIT_VERSION;
use std::path::PathBuf;

/// The kinds of plugin failure, as counted in `weir_plugin_failures_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (including a Rust panic, which aborts).
    Trap,
    /// A call ran past its CPU deadline.
    Timeout,
    /// The guest hit its memory limit.
    Memory,
    /// Anything else: instantiation failed, a malformed result, a local response
    /// over `max_body_bytes`.
    Error,
    /// Not a call's failure: the call was not made because the route's plugin is
    /// suspended after failures that wasted too much time (counted as a refusal,
    /// `weir_plugin_refusals_total{reason="suspended"}`, not as a failure).
    Suspended,
}

impl FailureKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Error => "error",
            FailureKind::Suspended => "suspended",
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a plugin could not be loaded or configured.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PluginError {
    /// The plugin engine could not be created.
    #[error("cannot create the plugin engine: {0}")]
    Engine(String),
    /// The file could not be read.
    #[error("plugin `{name}`: cannot read {}: {reason}", path.display())]
    Read {
        /// Plugin name.
        name: String,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// It is not a valid component.
    #[error("plugin `{name}`: not a loadable WebAssembly component: {reason}")]
    Compile {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
    /// It targets another `weir:plugin` version, or none.
    #[error(
        "plugin `{name}` was built for weir:plugin {found}, but this gateway supports weir:plugin {WIT_VERSION} (0.1.x)"
    )]
    Version {
        /// Plugin name.
        name: String,
        /// What it was built for.
        found: String,
    },
    /// It does not fit the host's imports or exports.
    #[error("plugin `{name}`: {reason}")]
    Link {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Its configuration on a route was refused by the plugin.
    #[error("route `{route}`: plugin `{name}` refused its config: {reason}")]
    Config {
        /// Route name.
        route: String,
        /// Plugin name.
        name: String,
        /// The plugin's message.
        reason: String,
    },
}
