//! The one place a reload's plan becomes words: the report `POST /admin/reload`
//! returns, the log lines, the `weir_*_reloads_total` counts and the records the admin
//! API shows.
//!
//! Every reload reports what it found, so asking again never replays an old answer; a
//! refusal is logged and counted once, when it first appears, not on every reload that
//! finds it still standing.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::Serialize;

use super::Reloader;
use super::build::Loaded;
use super::config_file::ConfigRead;
use super::plan::{ConfigOutcome, Plan, PluginOutcome};
use super::records::Failure;
use crate::config::tls_files_named_in;
use crate::telemetry::metrics;

/// What one reload did, as `POST /admin/reload` returns it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// What happened to the config file.
    pub config: ConfigResult,
    /// Why the config file (or the TLS files it names) was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// Plugins whose file brought news: a version loaded, refused or missing.
    pub plugins: Vec<PluginChange>,
    /// What happened to the TLS certificates; absent when they did not change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsResult>,
    /// Settings that changed in the file but only take effect after a restart.
    pub restart_required: Vec<String>,
    /// Upstreams whose endpoints file brought news: a new list applied, or refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<super::EndpointsChange>,
    /// Whether requests now see a new snapshot.
    pub swapped: bool,
}

impl ReloadReport {
    /// Whether nothing was refused.
    pub fn ok(&self) -> bool {
        self.config_error.is_none()
            && self.plugins.iter().all(|p| p.result != PluginResult::Error)
            && self
                .endpoints
                .iter()
                .all(|e| e.result != super::EndpointsResult::Refused)
    }
}

/// What happened to the config file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigResult {
    /// Its new contents serve.
    Applied,
    /// It holds the config in force.
    #[default]
    Unchanged,
    /// Its new contents were refused; the config in force keeps serving.
    Refused,
    /// The gateway runs without a config file.
    None,
}

/// What happened to the TLS certificates the config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsResult {
    /// New handshakes use the new files.
    Reloaded,
    /// The new files were refused; the previous certificates keep serving.
    Refused,
}

/// One plugin's news in a reload.
#[derive(Debug, Clone, Serialize)]
pub struct PluginChange {
    /// The plugin.
    pub name: String,
    /// What happened.
    pub result: PluginResult,
    /// The version (SHA-256 of the file) concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it was refused or is missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What happened to one plugin file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginResult {
    /// A new version serves.
    Loaded,
    /// The file's version was refused; the previous version, if any, serves.
    Error,
    /// The file is gone; the version loaded last serves.
    Missing,
}

fn short(version: &str) -> &str {
    version.get(..12).unwrap_or(version)
}

impl Reloader {
    /// Records what `plan` did (the config and plugin records, the TLS files to watch),
    /// logs and counts what is new, and returns the report. `read` is the config file
    /// as the plan saw it; `loaded` holds every version the plan can choose.
    pub(super) fn settle(
        &mut self,
        read: &ConfigRead,
        plan: &Plan,
        loaded: &Loaded,
    ) -> ReloadReport {
        let mut report = ReloadReport::default();
        self.settle_config(read, plan, &mut report);
        self.settle_plugins(plan, loaded, &mut report);
        report.swapped = plan.swaps();
        report
    }

    fn settle_config(&mut self, read: &ConfigRead, plan: &Plan, report: &mut ReloadReport) {
        let certificates = read.certificates();
        self.watch_extra = Vec::new();
        match &plan.config {
            ConfigOutcome::NoFile => report.config = ConfigResult::None,
            // The file holds the config in force again: no refusal stands.
            ConfigOutcome::Unchanged => self.config_error = None,
            ConfigOutcome::Applied => {
                let ConfigRead::New {
                    config,
                    restart_required,
                    ..
                } = read
                else {
                    return;
                };
                metrics::config_reloaded(true);
                if self.config.tls_fingerprint() != config.tls_fingerprint() {
                    tracing::info!("TLS certificates reloaded: new handshakes use them");
                    report.tls = Some(TlsResult::Reloaded);
                }
                if !certificates {
                    tracing::info!(config = %config.source.display(), "config reloaded");
                    for setting in restart_required {
                        tracing::warn!("config change needs a restart to take effect: {setting}");
                    }
                    report.config = ConfigResult::Applied;
                    report.restart_required.clone_from(restart_required);
                    self.config_loaded_at = SystemTime::now();
                }
                self.config_error = None;
            }
            ConfigOutcome::Refused(refusal) => {
                let message = refusal.to_string();
                let known = self
                    .config_error
                    .as_ref()
                    .is_some_and(|f| f.message == message);
                if !known {
                    if certificates {
                        tracing::error!(config = %self.config.source.display(), "new TLS certificates refused, the previous ones keep serving: {message}");
                    } else {
                        tracing::error!(config = %self.config.source.display(), "config refused, the previous one keeps serving: {message}");
                    }
                    metrics::config_reloaded(false);
                    self.config_error = Some(Failure::now(message.clone(), None));
                }
                if certificates {
                    report.tls = Some(TlsResult::Refused);
                } else {
                    report.config = ConfigResult::Refused;
                }
                report.config_error = Some(message);
                // The TLS files a refused text names are watched: a certificate copied
                // in after the config naming it retries the config.
                if let Some(text) = read.text() {
                    self.watch_extra = tls_files_named_in(text);
                }
            }
        }
    }

    fn settle_plugins(&mut self, plan: &Plan, loaded: &Loaded, report: &mut ReloadReport) {
        for (name, outcome) in &plan.plugins {
            let record = self.records.entry(name.clone()).or_default();
            match outcome {
                PluginOutcome::Unchanged => {
                    // The file holds the serving version again: no refusal stands.
                    record.file_present = true;
                    record.clear_error();
                }
                PluginOutcome::Loaded { version, previous } => {
                    let Some(plugin) = loaded.get(&(name.clone(), version.clone())) else {
                        continue;
                    };
                    record.current = Some(plugin.clone());
                    record.loaded_at = Some(SystemTime::now());
                    record.file_present = true;
                    record.clear_error();
                    if previous.is_some() || self.started {
                        metrics::plugin_reloaded(true);
                    }
                    tracing::info!(plugin = %name, version = short(version), previous = previous.as_deref().map_or("-", short), "plugin loaded");
                    report.plugins.push(PluginChange {
                        name: name.clone(),
                        result: PluginResult::Loaded,
                        version: Some(version.clone()),
                        error: None,
                    });
                }
                PluginOutcome::Refused {
                    version,
                    error,
                    serving,
                } => {
                    let message = error.to_string();
                    record.file_present = true;
                    let known = record.last_error.as_ref().is_some_and(|f| {
                        f.message == message && f.version.as_deref() == Some(version.as_str())
                    });
                    if !known {
                        tracing::error!(
                            plugin = %name,
                            version = short(version),
                            "plugin refused; version {} keeps serving: {message}",
                            short(serving)
                        );
                        metrics::plugin_reloaded(false);
                        record.last_error =
                            Some(Failure::now(message.clone(), Some(version.clone())));
                    }
                    report.plugins.push(PluginChange {
                        name: name.clone(),
                        result: PluginResult::Error,
                        version: Some(version.clone()),
                        error: Some(message),
                    });
                }
                PluginOutcome::Missing { serving, error } => {
                    if record.file_present {
                        tracing::warn!(plugin = %name, version = short(serving), "plugin file is gone; the routes naming it keep its last loaded version");
                    }
                    record.file_present = false;
                    report.plugins.push(PluginChange {
                        name: name.clone(),
                        result: PluginResult::Missing,
                        version: Some(serving.clone()),
                        error: Some(error.to_string()),
                    });
                }
            }
        }
        if plan.serve.is_some() {
            self.records
                .retain(|name, _| plan.plugins.contains_key(name));
        }
    }

    /// The TLS files a refused config text names, to watch besides the config's own.
    pub(super) fn watch_extra(&self) -> &[PathBuf] {
        &self.watch_extra
    }
}
