//! What the admin API shows about reloads: the config in force and, per plugin, the
//! version serving, when it loaded, and the last error.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::ReloadReport;
use crate::plugin::LoadedPlugin;

/// A refused config file or plugin version.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// What was wrong.
    pub message: String,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// The refused plugin version (SHA-256 of the file), for plugins.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Failure {
    pub(crate) fn now(message: String, version: Option<String>) -> Failure {
        Failure {
            message,
            at: rfc3339(SystemTime::now()),
            version,
        }
    }
}

/// History: a refusal that no longer stands, because a good version of the plugin
/// loaded (or its file holds the serving version again) after it.
#[derive(Debug, Clone, Serialize)]
pub struct PastFailure {
    /// The refusal as it stood.
    #[serde(flatten)]
    pub failure: Failure,
    /// When it stopped standing (RFC 3339, UTC).
    pub cleared_at: String,
}

/// One plugin named by the config.
#[derive(Debug, Clone, Default)]
pub struct PluginRecord {
    /// The version serving (none if it never loaded).
    pub current: Option<Arc<LoadedPlugin>>,
    /// When it loaded.
    pub loaded_at: Option<SystemTime>,
    /// Whether `NAME.wasm` exists (a removed file keeps its last version serving).
    pub file_present: bool,
    /// The refusal of the file's current version: `None` once a good version loads
    /// (or the file holds the serving version again).
    pub last_error: Option<Failure>,
    /// History only: the last refusal that a good version cleared.
    pub previous_error: Option<PastFailure>,
}

impl PluginRecord {
    /// No refusal stands (a good version loaded, or the file holds the serving version
    /// again): a standing one becomes `previous_error`.
    pub(crate) fn clear_error(&mut self) {
        if let Some(failure) = self.last_error.take() {
            self.previous_error = Some(PastFailure {
                failure,
                cleared_at: rfc3339(SystemTime::now()),
            });
        }
    }
}

/// The reload state, as of the last reload.
#[derive(Debug, Clone)]
pub struct Status {
    /// The config file.
    pub config_source: PathBuf,
    /// When the config in force was loaded.
    pub config_loaded_at: SystemTime,
    /// Why the last changed config file was refused (cleared when one applies).
    pub config_error: Option<Failure>,
    /// The plugins the config names.
    pub plugins: BTreeMap<String, PluginRecord>,
    /// What each upstream's endpoints file gave, by upstream.
    pub endpoint_files: BTreeMap<String, super::EndpointsFileRecord>,
    /// The last reload: when, and its report.
    pub last_reload: Option<(SystemTime, ReloadReport)>,
}

/// `time` as RFC 3339 in UTC, to the second.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
