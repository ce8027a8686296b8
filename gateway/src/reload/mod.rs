//! Live changes to a running gateway. The config file, the plugins directory and the TLS
//! certificate, key and CA files are re-read when a file changes (see [`watch`]), on
//! SIGHUP and on `POST /admin/reload`; a whole new [`Snapshot`] (routes, clusters, plugin
//! chains, the TLS server config) is built off the request path and swapped atomically.
//! Requests in flight finish on the snapshot they started with; new requests (and new
//! TLS handshakes) see the new one; open TLS connections keep their certificates.
//!
//! What fails leaves the last good state serving:
//! - a plugin file that does not compile, targets another `weir:plugin` version, or
//!   whose new version refuses a route's config: the plugin's previous version stays;
//! - a config file that does not parse or validate, or names a plugin that cannot be
//!   loaded or configured: the previous config stays (plugin updates still apply);
//! - TLS files that do not load (a file missing or unparsable, a key that is not its
//!   certificate's): the previous certificates keep serving;
//! - a plugin file removed while routes still name it: the version loaded last keeps
//!   serving them (a file deleted mid-deploy never turns into failed requests) until
//!   the file is back or no route names it; `/admin/plugins` shows the file as missing.
//!
//! Every outcome is logged, counted (`weir_plugin_reloads_total{result}`,
//! `weir_config_reloads_total{result}`) and kept for the admin API.

pub mod records;
mod watch;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use records::{Failure, PluginRecord, Status};

use crate::config::{Config, tls_files_named_in};
use crate::plugin::{ChainEntry, LoadedPlugin, PluginError, PluginHost};
use crate::snapshot::{SharedSnapshot, Snapshot};
use crate::telemetry::metrics;
use crate::tls::FileDigest;
use crate::upstream::HealthChecks;

/// What one reload did, as `POST /admin/reload` returns it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadReport {
    /// What happened to the config file: `applied`, `unchanged`, `refused`, or `none`
    /// (the gateway runs without a config file).
    pub config: &'static str,
    /// Why the config file was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config_error: Option<String>,
    /// Plugin files that changed: loaded, refused or missing.
    pub plugins: Vec<PluginChange>,
    /// What happened to the TLS certificates: `reloaded` (new handshakes use the new
    /// files) or `refused` (the previous certificates keep serving); absent when they
    /// did not change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<&'static str>,
    /// Settings that changed in the file but only take effect after a restart.
    pub restart_required: Vec<String>,
    /// Whether requests now see a new snapshot.
    pub swapped: bool,
}

impl ReloadReport {
    /// Whether nothing was refused.
    pub fn ok(&self) -> bool {
        self.config_error.is_none() && self.plugins.iter().all(|p| p.result != "error")
    }

    fn plugin(&mut self, change: PluginChange) {
        self.plugins.retain(|p| p.name != change.name);
        self.plugins.push(change);
    }
}

/// One plugin's change in a reload.
#[derive(Debug, Clone, Serialize)]
pub struct PluginChange {
    /// The plugin.
    pub name: String,
    /// `loaded` (a new version serves), `error` (refused; the previous version, if
    /// any, serves) or `missing` (the file is gone; the last loaded version serves).
    pub result: &'static str,
    /// The version (SHA-256 of the file) concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Why it was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request for a reload, with where to send its report.
#[derive(Debug)]
pub(crate) struct Trigger {
    cause: &'static str,
    reply: Option<oneshot::Sender<ReloadReport>>,
}

/// The handle the rest of the gateway uses: the live snapshot, the reload status for
/// the admin API, and a way to ask for a reload.
#[derive(Debug)]
pub struct Control {
    snapshot: SharedSnapshot,
    status: Mutex<Status>,
    triggers: mpsc::UnboundedSender<Trigger>,
    draining: AtomicBool,
}

impl Control {
    /// The snapshot requests currently read.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    pub(crate) fn shared_snapshot(&self) -> SharedSnapshot {
        self.snapshot.clone()
    }

    /// The config and plugin status (what loaded, when, and the last errors).
    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Asks for a reload without waiting for it.
    pub fn request_reload(&self, cause: &'static str) {
        let _ = self.triggers.send(Trigger { cause, reply: None });
    }

    /// Reloads and returns the report; `None` if the gateway is shutting down.
    pub async fn reload(&self, cause: &'static str) -> Option<ReloadReport> {
        let (reply, report) = oneshot::channel();
        self.triggers
            .send(Trigger {
                cause,
                reply: Some(reply),
            })
            .ok()?;
        report.await.ok()
    }

    /// Marks the gateway as shutting down (`/readyz` answers 503 from then on).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether the gateway is shutting down.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// The state only the reload thread changes: the config in force, the plugin host and
/// what each plugin file last gave.
pub(crate) struct Reloader {
    config: Arc<Config>,
    /// The text the config in force was parsed from (`None`: no config file).
    config_text: Option<String>,
    /// The last config text refused, so the same broken file is not reported again.
    refused_text: Option<String>,
    /// The TLS files that text names and their digest at the refusal: when they change,
    /// the text is tried again (a certificate copied in after the config naming it).
    refused_files: (Vec<PathBuf>, [u8; 32]),
    /// The digest of the last TLS files refused, likewise.
    refused_tls: Option<[u8; 32]>,
    config_loaded_at: SystemTime,
    config_error: Option<Failure>,
    workers: usize,
    host: Option<Arc<PluginHost>>,
    records: std::collections::BTreeMap<String, PluginRecord>,
    /// The active health checks of the snapshot's clusters; they stop with the reloader.
    health: HealthChecks,
}

/// The plugin versions a reload works with.
struct Versions {
    chosen: HashMap<String, Arc<LoadedPlugin>>,
    /// Plugins whose version is new in this reload.
    fresh: HashSet<String>,
}

impl Reloader {
    /// Loads `config`'s plugins and builds the first snapshot; every problem is
    /// reported together and stops the start.
    pub(crate) fn start(
        config: Config,
        workers: usize,
    ) -> Result<(Reloader, Snapshot), Vec<PluginError>> {
        metrics::init_reloads();
        let config_text = config
            .source
            .is_file()
            .then(|| std::fs::read_to_string(&config.source).ok())
            .flatten();
        let mut reloader = Reloader {
            config: Arc::new(config),
            config_text,
            refused_text: None,
            refused_files: Default::default(),
            refused_tls: None,
            config_loaded_at: SystemTime::now(),
            config_error: None,
            workers,
            host: None,
            records: Default::default(),
            health: HealthChecks::new(),
        };
        let config = reloader.config.clone();
        let chains = crate::plugin::block_on(async {
            let mut report = ReloadReport::default();
            let versions = reloader.versions(&config, &mut report).await?;
            let Some(host) = reloader.host.clone() else {
                return Ok::<_, Vec<PluginError>>(Vec::new());
            };
            let chains = chains(&host, &config, &versions.chosen, None)
                .await
                .map_err(|errors| errors.into_iter().map(|(_, e)| e).collect::<Vec<_>>())?;
            reloader.commit_versions(&versions, &mut report, false);
            Ok(chains)
        })?;
        let snapshot = Snapshot::build(config, workers, chains);
        reloader.health.watch(&snapshot.clusters);
        Ok((reloader, snapshot))
    }

    /// The status as the admin API shows it.
    pub(crate) fn status(&self) -> Status {
        Status {
            config_source: self.config.source.clone(),
            config_loaded_at: self.config_loaded_at,
            config_error: self.config_error.clone(),
            plugins: self.records.clone(),
            last_reload: None,
        }
    }

    /// Builds the shared handle around the first snapshot.
    pub(crate) fn control(&self, snapshot: Snapshot) -> (Arc<Control>, ReloadQueue) {
        let (triggers, queue) = mpsc::unbounded_channel();
        let control = Arc::new(Control {
            snapshot: Arc::new(arc_swap::ArcSwap::from_pointee(snapshot)),
            status: Mutex::new(self.status()),
            triggers,
            draining: AtomicBool::new(false),
        });
        (control, ReloadQueue(queue))
    }

    /// Serves reload requests on its own thread until `shutdown`; requests that queue up
    /// while a reload runs are answered together by the next one.
    pub(crate) fn spawn(
        mut self,
        control: Arc<Control>,
        ReloadQueue(mut queue): ReloadQueue,
        shutdown: CancellationToken,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        // Watching starts before this returns: a change made as soon as the gateway
        // is up is not missed.
        let watcher = self
            .config
            .reload
            .watch
            .then(|| watch::start(&self.config, control.triggers.clone()))
            .flatten();
        std::thread::Builder::new()
            .name("weir-reload".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the reload thread: live reload is off");
                        return;
                    }
                };
                runtime.block_on(async move {
                    let mut watcher = watcher;
                    loop {
                        let first = tokio::select! {
                            () = shutdown.cancelled() => break,
                            trigger = queue.recv() => match trigger {
                                Some(trigger) => trigger,
                                None => break,
                            },
                        };
                        let mut batch = vec![first];
                        while let Ok(more) = queue.try_recv() {
                            batch.push(more);
                        }
                        let causes: BTreeSet<&str> = batch.iter().map(|t| t.cause).collect();
                        tracing::debug!(?causes, "reloading");
                        let previous = control.snapshot();
                        let (report, next) = self.reload(&previous).await;
                        if let Some(next) = next {
                            control.snapshot.store(Arc::new(next));
                        }
                        if let Some(watcher) = &mut watcher {
                            watcher.follow(&self.config, &self.refused_files.0);
                        }
                        let mut status = self.status();
                        status.last_reload = Some((SystemTime::now(), report.clone()));
                        *control.status.lock().unwrap_or_else(PoisonError::into_inner) = status;
                        for trigger in batch {
                            if let Some(reply) = trigger.reply {
                                let _ = reply.send(report.clone());
                            }
                        }
                    }
                });
            })
    }

    /// One reload: re-read the config file and every plugin file it names, build what
    /// changed, and return the new snapshot if anything did.
    pub(crate) async fn reload(&mut self, previous: &Snapshot) -> (ReloadReport, Option<Snapshot>) {
        let mut report = ReloadReport::default();
        let mut candidate = self.read_config(&mut report);
        // The config file as it was, re-read because the TLS files it names changed.
        let mut certificates_only = false;
        if candidate.is_none() {
            candidate = self.read_certificates(&mut report);
            certificates_only = candidate.is_some();
        }
        let mut config = match &candidate {
            Some((config, _)) => Arc::new(config.clone()),
            None => self.config.clone(),
        };
        let mut applying_candidate = candidate.is_some();
        let mut chains_built = None;
        let mut versions = None;
        // At most: the candidate config, then (if the candidate was refused) the
        // config in force; each after blaming new plugin versions first.
        for _ in 0..4 {
            let mut found = match versions.take() {
                Some(v) => v,
                None => match self.versions(&config, &mut report).await {
                    Ok(v) => v,
                    Err(errors) if applying_candidate => {
                        self.refuse_config(&candidate, &errors, &mut report);
                        applying_candidate = false;
                        config = self.config.clone();
                        continue;
                    }
                    Err(errors) => {
                        // Cannot happen for the config in force (every plugin it names
                        // has a loaded version); keep serving as is.
                        tracing::error!("reload abandoned: {}", join(&errors));
                        break;
                    }
                },
            };
            let Some(host) = self.host.clone() else {
                chains_built = Some(Vec::new());
                versions = Some(found);
                break;
            };
            match chains(&host, &config, &found.chosen, Some(previous)).await {
                Ok(built) => {
                    chains_built = Some(built);
                    versions = Some(found);
                    break;
                }
                Err(errors) => {
                    let blamed: Vec<(String, String)> = errors
                        .iter()
                        .filter(|(name, _)| found.fresh.contains(name))
                        .map(|(name, e)| (name.clone(), e.to_string()))
                        .collect();
                    if !blamed.is_empty() {
                        for (name, error) in blamed {
                            self.refuse_version(&mut found, &name, &error, &mut report);
                        }
                        versions = Some(found);
                        continue;
                    }
                    let errors: Vec<PluginError> = errors.into_iter().map(|(_, e)| e).collect();
                    if applying_candidate {
                        self.refuse_config(&candidate, &errors, &mut report);
                        applying_candidate = false;
                        config = self.config.clone();
                        continue;
                    }
                    tracing::error!("reload abandoned: {}", join(&errors));
                    break;
                }
            }
        }
        let (Some(chains), Some(versions)) = (chains_built, versions) else {
            return (report, None);
        };
        let swapped_config = applying_candidate;
        if let Some((applied, text)) = candidate.filter(|_| swapped_config) {
            if self.config.tls_fingerprint() != applied.tls_fingerprint() {
                tracing::info!("TLS certificates reloaded: new handshakes use them");
                report.tls = Some("reloaded");
            }
            metrics::config_reloaded(true);
            self.config = config.clone();
            self.refused_tls = None;
            if certificates_only {
                // A refusal of the file's newer text still stands.
                if self.refused_text.is_none() {
                    self.config_error = None;
                }
            } else {
                tracing::info!(config = %applied.source.display(), "config reloaded");
                self.config_text = Some(text);
                self.refused_text = None;
                self.refused_files = Default::default();
                self.config_loaded_at = SystemTime::now();
                self.config_error = None;
                report.config = "applied";
            }
        }
        let fresh = self.commit_versions(&versions, &mut report, true);
        let names: HashSet<&str> = plugin_names(&self.config).into_iter().collect();
        self.records.retain(|name, _| names.contains(name.as_str()));
        if !swapped_config && fresh == 0 {
            return (report, None);
        }
        report.swapped = true;
        let next = Snapshot::build_after(config, self.workers, chains, Some(previous));
        forget_removed_endpoints(previous, &next);
        self.health.watch(&next.clusters);
        (report, Some(next))
    }

    /// The config file's new contents, parsed and validated; `None` when there is no
    /// file, it did not change, or it was refused (recorded in `report`).
    fn read_config(&mut self, report: &mut ReloadReport) -> Option<(Config, String)> {
        report.config = "unchanged";
        let Some(current) = &self.config_text else {
            report.config = "none";
            return None;
        };
        let source = self.config.source.clone();
        let text = match std::fs::read_to_string(&source) {
            Ok(text) => text,
            Err(e) => {
                let message = format!("cannot read {}: {e}", source.display());
                self.config_refused(message, None, report);
                return None;
            }
        };
        if text == *current {
            return None;
        }
        if self.refused_text.as_deref() == Some(text.as_str())
            && FileDigest::of_files(self.refused_files.0.iter().map(PathBuf::as_path))
                == self.refused_files.1
        {
            report.config = "refused";
            report.config_error = self.config_error.as_ref().map(|f| f.message.clone());
            return None;
        }
        let mut config = match Config::parse(&source, &text) {
            Ok(config) => config.with_overrides(self.config.overrides),
            Err(e) => {
                self.config_refused(e.to_string(), Some(text), report);
                return None;
            }
        };
        report.restart_required = keep_running(&self.config, &mut config);
        for setting in &report.restart_required {
            tracing::warn!("config change needs a restart to take effect: {setting}");
        }
        if let Some(problem) = config.admin.exposure_problem() {
            self.config_refused(problem, Some(text), report);
            return None;
        }
        Some((config, text))
    }

    /// The config in force, re-read because a TLS file it names (the listener's or an
    /// upstream's) changed; `None` when it has no TLS (or no config file), the files did
    /// not change, or the new files were refused (recorded in `report`; the previous
    /// certificates keep serving).
    fn read_certificates(&mut self, report: &mut ReloadReport) -> Option<(Config, String)> {
        let text = self.config_text.clone()?;
        let now = self.config.current_tls_fingerprint();
        if now == self.config.tls_fingerprint() {
            return None;
        }
        if self.refused_tls == Some(now) {
            report.tls = Some("refused");
            report.config_error = self.config_error.as_ref().map(|f| f.message.clone());
            return None;
        }
        let mut config = match Config::parse(&self.config.source, &text) {
            Ok(config) => config.with_overrides(self.config.overrides),
            Err(e) => {
                let message = e.to_string();
                tracing::error!(config = %self.config.source.display(), "new TLS certificates refused, the previous ones keep serving: {message}");
                metrics::config_reloaded(false);
                report.tls = Some("refused");
                report.config_error = Some(message.clone());
                self.config_error = Some(Failure::now(message, None));
                self.refused_tls = Some(now);
                return None;
            }
        };
        if self.config.server.tls.is_some() && config.server.tls.is_none() {
            // The file dropped `[server.tls]` (which needs a restart, reported when the
            // file changed): it no longer says which files to serve.
            self.refused_tls = Some(now);
            return None;
        }
        // Settings that need a restart were reported when the file changed.
        let _ = keep_running(&self.config, &mut config);
        Some((config, text))
    }

    fn config_refused(&mut self, message: String, text: Option<String>, report: &mut ReloadReport) {
        tracing::error!(config = %self.config.source.display(), "config refused, the previous one keeps serving: {message}");
        metrics::config_reloaded(false);
        report.config = "refused";
        report.config_error = Some(message.clone());
        self.config_error = Some(Failure::now(message, None));
        let files = text.as_deref().map(tls_files_named_in).unwrap_or_default();
        let digest = FileDigest::of_files(files.iter().map(PathBuf::as_path));
        self.refused_files = (files, digest);
        self.refused_text = text;
    }

    fn refuse_config(
        &mut self,
        candidate: &Option<(Config, String)>,
        errors: &[PluginError],
        report: &mut ReloadReport,
    ) {
        let text = candidate.as_ref().map(|(_, text)| text.clone());
        self.config_refused(join(errors), text, report);
    }

    /// The plugin host, created when the first route names a plugin.
    fn host(&mut self, config: &Config) -> Result<Arc<PluginHost>, PluginError> {
        if let Some(host) = &self.host {
            return Ok(host.clone());
        }
        let host = Arc::new(PluginHost::new(config.plugins.cache_dir.clone())?);
        self.host = Some(host.clone());
        Ok(host)
    }

    /// The version of every plugin `config` names: the file's, when it is new and
    /// loads; else the one loaded before. Errors for plugins that have neither.
    async fn versions(
        &mut self,
        config: &Config,
        report: &mut ReloadReport,
    ) -> Result<Versions, Vec<PluginError>> {
        let mut versions = Versions {
            chosen: HashMap::new(),
            fresh: HashSet::new(),
        };
        let names = plugin_names(config);
        if names.is_empty() {
            return Ok(versions);
        }
        let host = self.host(config).map_err(|e| vec![e])?;
        let mut unresolved = Vec::new();
        for name in names {
            let path = config.plugins.dir.join(format!("{name}.wasm"));
            let record = self.records.entry(name.to_owned()).or_default();
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) => {
                    let error = PluginError::Read {
                        name: name.to_owned(),
                        path: path.clone(),
                        reason: e.to_string(),
                    };
                    match &record.current {
                        Some(current) => {
                            if record.file_present {
                                tracing::warn!(plugin = name, path = %path.display(), "plugin file is gone; the routes naming it keep its last loaded version");
                                report.plugin(PluginChange {
                                    name: name.to_owned(),
                                    result: "missing",
                                    version: Some(current.version.clone()),
                                    error: Some(error.to_string()),
                                });
                            }
                            record.file_present = false;
                            versions.chosen.insert(name.to_owned(), current.clone());
                        }
                        None => unresolved.push(error),
                    }
                    continue;
                }
            };
            record.file_present = true;
            let version = crate::plugin::version_of(&bytes);
            if let Some(current) = &record.current
                && current.version == version
            {
                versions.chosen.insert(name.to_owned(), current.clone());
                continue;
            }
            if let Some(failed) = &record.last_error
                && failed.version.as_deref() == Some(version.as_str())
            {
                // The same bytes failed before: not loaded (nor reported) again.
                match &record.current {
                    Some(current) => {
                        versions.chosen.insert(name.to_owned(), current.clone());
                    }
                    None => unresolved.push(PluginError::Link {
                        name: name.to_owned(),
                        reason: failed.message.clone(),
                    }),
                }
                continue;
            }
            match host.load_bytes(name, &path, bytes).await {
                Ok(plugin) => {
                    versions.chosen.insert(name.to_owned(), plugin);
                    versions.fresh.insert(name.to_owned());
                }
                Err(error) => {
                    plugin_refused(record, name, &version, &error.to_string(), report);
                    match &record.current {
                        Some(current) => {
                            versions.chosen.insert(name.to_owned(), current.clone());
                        }
                        None => unresolved.push(error),
                    }
                }
            }
        }
        if unresolved.is_empty() {
            Ok(versions)
        } else {
            Err(unresolved)
        }
    }

    /// A new version of `name` was refused while configuring routes: back to the
    /// previous one.
    fn refuse_version(
        &mut self,
        versions: &mut Versions,
        name: &str,
        error: &str,
        report: &mut ReloadReport,
    ) {
        versions.fresh.remove(name);
        let record = self.records.entry(name.to_owned()).or_default();
        let version = versions
            .chosen
            .get(name)
            .map(|p| p.version.clone())
            .unwrap_or_default();
        plugin_refused(record, name, &version, error, report);
        match &record.current {
            Some(current) => {
                versions.chosen.insert(name.to_owned(), current.clone());
            }
            None => {
                versions.chosen.remove(name);
            }
        }
    }

    /// Records the new versions that now serve (counting them as reloads if `reload`);
    /// returns how many there are.
    fn commit_versions(
        &mut self,
        versions: &Versions,
        report: &mut ReloadReport,
        reload: bool,
    ) -> usize {
        let mut count = 0;
        for name in &versions.fresh {
            let Some(plugin) = versions.chosen.get(name) else {
                continue;
            };
            let record = self.records.entry(name.clone()).or_default();
            let was = record.current.as_ref().map(|p| p.version[..12].to_owned());
            record.current = Some(plugin.clone());
            record.loaded_at = Some(SystemTime::now());
            record.file_present = true;
            record.last_error = None;
            count += 1;
            if reload {
                metrics::plugin_reloaded(true);
            }
            tracing::info!(plugin = %name, version = &plugin.version[..12], previous = was.as_deref().unwrap_or("-"), "plugin loaded");
            report.plugin(PluginChange {
                name: name.clone(),
                result: "loaded",
                version: Some(plugin.version.clone()),
                error: None,
            });
        }
        count
    }
}

/// The receiving end of reload requests, handed to [`Reloader::spawn`].
#[derive(Debug)]
pub(crate) struct ReloadQueue(mpsc::UnboundedReceiver<Trigger>);

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config", &self.config.source)
            .finish_non_exhaustive()
    }
}

fn plugin_refused(
    record: &mut PluginRecord,
    name: &str,
    version: &str,
    error: &str,
    report: &mut ReloadReport,
) {
    let short = version.get(..12).unwrap_or(version);
    match &record.current {
        Some(current) => tracing::error!(
            plugin = name,
            version = short,
            "plugin refused; version {} keeps serving: {error}",
            &current.version[..12]
        ),
        None => tracing::error!(plugin = name, version = short, "plugin refused: {error}"),
    }
    metrics::plugin_reloaded(false);
    record.last_error = Some(Failure::now(error.to_string(), Some(version.to_owned())));
    report.plugin(PluginChange {
        name: name.to_owned(),
        result: "error",
        version: Some(version.to_owned()),
        error: Some(error.to_string()),
    });
}

/// Each route's chain for `config` with the plugin versions `chosen`. Entries of
/// `previous` with the same plugin version and use are kept (with their idle
/// instances); the rest are configured (`init`). Errors name the plugin at fault.
async fn chains(
    host: &PluginHost,
    config: &Config,
    chosen: &HashMap<String, Arc<LoadedPlugin>>,
    previous: Option<&Snapshot>,
) -> Result<Vec<Arc<[ChainEntry]>>, Vec<(String, PluginError)>> {
    let mut errors = Vec::new();
    let mut chains = Vec::with_capacity(config.routes.len());
    for route in &config.routes {
        let mut chain = Vec::with_capacity(route.plugins.len());
        for usage in &route.plugins {
            let Some(plugin) = chosen.get(&usage.name) else {
                continue;
            };
            let kept = previous.and_then(|p| {
                p.chains
                    .iter()
                    .flat_map(|c| c.iter())
                    .find(|e| Arc::ptr_eq(&e.plugin, plugin) && e.usage == *usage)
                    .cloned()
            });
            let entry = match kept {
                Some(entry) => Ok(entry),
                None => host.configure(&route.name, plugin.clone(), usage).await,
            };
            match entry {
                Ok(entry) => chain.push(entry),
                Err(e) => errors.push((usage.name.clone(), e)),
            }
        }
        chains.push(Arc::from(chain));
    }
    if errors.is_empty() {
        Ok(chains)
    } else {
        Err(errors)
    }
}

/// Drops the health series of endpoints `previous` had and `next` does not.
fn forget_removed_endpoints(previous: &Snapshot, next: &Snapshot) {
    let endpoints = |s: &Snapshot| -> HashSet<(String, String)> {
        s.config
            .upstreams
            .iter()
            .flat_map(|u| {
                u.endpoints
                    .iter()
                    .map(|e| (u.name.clone(), e.authority.to_string()))
            })
            .collect()
    };
    let kept = endpoints(next);
    for (upstream, endpoint) in endpoints(previous).difference(&kept) {
        metrics::forget_endpoint(upstream, endpoint);
    }
}

/// The plugins `config`'s routes name, each once, in order of first use.
fn plugin_names(config: &Config) -> Vec<&str> {
    let mut seen = HashSet::new();
    config
        .routes
        .iter()
        .flat_map(|r| r.plugins.iter())
        .map(|u| u.name.as_str())
        .filter(|name| seen.insert(*name))
        .collect()
}

/// Puts back in `new` the settings of `running` that cannot change without a restart,
/// and names those the file changed.
fn keep_running(running: &Config, new: &mut Config) -> Vec<String> {
    let settings = [
        (
            "server.listen",
            running.server.listen.to_string(),
            new.server.listen.to_string(),
        ),
        (
            "admin.listen",
            running.admin.listen.to_string(),
            new.admin.listen.to_string(),
        ),
        (
            "server.workers",
            format!("{:?}", running.server.workers),
            format!("{:?}", new.server.workers),
        ),
        (
            "server.shutdown_grace",
            format!("{:?}", running.server.shutdown_grace),
            format!("{:?}", new.server.shutdown_grace),
        ),
        (
            "plugins.dir",
            running.plugins.dir.display().to_string(),
            new.plugins.dir.display().to_string(),
        ),
        (
            "plugins.cache_dir",
            format!("{:?}", running.plugins.cache_dir),
            format!("{:?}", new.plugins.cache_dir),
        ),
        (
            "reload",
            format!("{:?}", running.reload),
            format!("{:?}", new.reload),
        ),
        (
            "server.tls",
            tls_state(running).to_owned(),
            tls_state(new).to_owned(),
        ),
    ];
    let changed = settings
        .into_iter()
        .filter(|(_, old, new)| old != new)
        .map(|(name, old, new)| format!("{name} ({old} -> {new})"))
        .collect();
    new.server.listen = running.server.listen;
    new.admin.listen = running.admin.listen;
    new.server.workers = running.server.workers;
    new.server.shutdown_grace = running.server.shutdown_grace;
    new.plugins.dir.clone_from(&running.plugins.dir);
    new.plugins.cache_dir.clone_from(&running.plugins.cache_dir);
    new.reload = running.reload;
    if running.server.tls.is_some() != new.server.tls.is_some() {
        // Certificates change live; turning TLS on or off changes the listener.
        new.server.tls.clone_from(&running.server.tls);
    }
    changed
}

/// Whether the client listener speaks TLS, for restart messages.
fn tls_state(config: &Config) -> &'static str {
    match config.server.tls {
        Some(_) => "on",
        None => "off",
    }
}

fn join(errors: &[PluginError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
