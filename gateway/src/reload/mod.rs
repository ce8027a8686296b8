//! Live changes to a running gateway. The config file, the plugins directory and the TLS
//! certificate, key and CA files are re-read when a file changes (see [`watch`]), on
//! SIGHUP and on `POST /admin/reload`; a whole new [`Snapshot`] (routes, clusters, plugin
//! chains, the TLS server config) is built off the request path and swapped atomically.
//! Requests in flight finish on the snapshot they started with; new requests (and new
//! TLS handshakes) see the new one; open TLS connections keep their certificates.
//!
//! A reload reads everything afresh and hands it to the [planner](plan), which decides
//! from what was read alone (nothing is remembered between reloads, so a config waiting
//! for a plugin file applies as soon as the file arrives). What fails leaves the last
//! good state serving:
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
//! The parts: [`config_file`] reads the config, [`build`] reads the plugin files and
//! builds chains (also for `weir check` and startup), [`plan`] decides, [`report`]
//! turns the decision into the admin API's report, log lines and metrics.

mod build;
mod config_file;
mod control;
mod endpoints;
mod plan;
pub mod records;
mod report;
mod watch;

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

pub use control::Control;
pub(crate) use control::{ReloadQueue, Trigger};
pub use endpoints::{EndpointsChange, EndpointsFileRecord, EndpointsResult};
pub use records::{Failure, PastFailure, PluginRecord, Status};
pub use report::{ConfigResult, PluginChange, PluginResult, ReloadReport, TlsResult};

use crate::config::Config;
use crate::plugin::{ChainEntry, PluginError, PluginHost};
use crate::snapshot::{ChainMismatch, Snapshot};
use crate::telemetry::metrics;
use crate::upstream::HealthChecks;
use build::{Configs, Loaded};
use config_file::ConfigRead;
use plan::{Candidate, File, Input, Side, Uses, Version};

/// The plugin host (if any route uses plugins) and one plugin chain per route.
pub type LoadedPlugins = (Option<Arc<PluginHost>>, Vec<Arc<[ChainEntry]>>);

/// Loads every plugin `config` names and configures each route's use of it: what
/// `weir check` validates. One chain per route, or every problem found.
pub fn check_plugins(config: &Config) -> Result<LoadedPlugins, Vec<PluginError>> {
    let host = if Uses::of(config).names().is_empty() {
        None
    } else {
        let host = PluginHost::with_kv(config.plugins.cache_dir.clone(), &config.kv)
            .map_err(|e| vec![e])?;
        Some(Arc::new(host))
    };
    let (chains, _) = crate::plugin::block_on(build::build_config(host.as_deref(), config))?;
    Ok((host, chains))
}

/// Why the first snapshot could not be built.
#[derive(Debug)]
pub enum StartFailure {
    /// Plugins named by routes could not be loaded or configured.
    Plugins(Vec<PluginError>),
    /// The chains built do not match the routes (a bug, reported rather than served).
    Chains(ChainMismatch),
}

/// The state only the reload thread changes: the config in force, the plugin host and
/// what each plugin file last gave.
pub(crate) struct Reloader {
    config: Arc<Config>,
    /// The text the config in force was parsed from (`None`: no config file).
    config_text: Option<String>,
    config_loaded_at: SystemTime,
    /// Why the config file's current text (or its TLS files) is refused, if it is.
    config_error: Option<Failure>,
    /// TLS files a refused config text names, watched besides the config's own.
    watch_extra: Vec<PathBuf>,
    workers: usize,
    host: Option<Arc<PluginHost>>,
    records: std::collections::BTreeMap<String, PluginRecord>,
    /// Plugin versions that failed to load, by name and version: loading depends on
    /// the bytes alone, so they are not compiled again.
    failed: HashMap<(String, Version), PluginError>,
    /// Whether the first snapshot is built (loads after it count as reloads).
    started: bool,
    /// The active health checks of the snapshot's clusters; they stop with the reloader.
    health: HealthChecks,
    /// What each upstream's endpoints file gave, by upstream.
    endpoint_files: std::collections::BTreeMap<String, EndpointsFileRecord>,
}

impl Reloader {
    /// Loads `config`'s plugins and builds the first snapshot; every problem is
    /// reported together and stops the start.
    pub(crate) fn start(
        config: Config,
        workers: usize,
    ) -> Result<(Reloader, Snapshot), StartFailure> {
        metrics::init_reloads();
        let config_text = config
            .source
            .is_file()
            .then(|| std::fs::read_to_string(&config.source).ok())
            .flatten();
        let mut reloader = Reloader {
            config: Arc::new(config),
            config_text,
            config_loaded_at: SystemTime::now(),
            config_error: None,
            watch_extra: Vec::new(),
            workers,
            host: None,
            records: Default::default(),
            failed: HashMap::new(),
            started: false,
            health: HealthChecks::new(),
            endpoint_files: Default::default(),
        };
        endpoints::follow(&reloader.config, &mut reloader.endpoint_files);
        let config = reloader.config.clone();
        let input = Input {
            candidate: Candidate::New(Uses::of(&config)),
            ..Input::default()
        };
        let configs = Configs {
            candidate: Some(&config),
            in_force: None,
        };
        let (built, loaded) =
            crate::plugin::block_on(reloader.build(input, &configs, &config, None));
        let Some(chains) = built.chains else {
            return Err(StartFailure::Plugins(built.plan.errors()));
        };
        // The plugin records, as a reload would leave them (nothing counted yet).
        let _ = reloader.settle(&ConfigRead::Unchanged, &built.plan, &loaded);
        reloader.started = true;
        let snapshot =
            Snapshot::new(config, workers, chains, None).map_err(StartFailure::Chains)?;
        crate::plugin::block_on(snapshot.resolve_names());
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
            endpoint_files: self.endpoint_files.clone(),
            last_reload: None,
        }
    }

    /// Builds the shared handle around the first snapshot.
    pub(crate) fn control(&self, snapshot: Snapshot) -> (Arc<Control>, ReloadQueue) {
        Control::new(snapshot, self.status())
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
                        if let (Some(next), Some(host)) = (&next, &self.host) {
                            host.set_kv_limits(&next.config.kv);
                        }
                        let mut status = self.status();
                        status.last_reload = Some((SystemTime::now(), report.clone()));
                        control.publish(next, status);
                        if let Some(watcher) = &mut watcher {
                            watcher.follow(&self.config, self.watch_extra());
                        }
                        for trigger in batch {
                            if let Some(reply) = trigger.reply {
                                let _ = reply.send(report.clone());
                            }
                        }
                    }
                });
            })
    }

    /// One reload: re-read the config file, the endpoints files and every plugin file
    /// the config in force or the file names, plan, and return the new snapshot if
    /// requests see a change.
    pub(crate) async fn reload(&mut self, previous: &Snapshot) -> (ReloadReport, Option<Snapshot>) {
        // New endpoint lists change the config in force (not its text); a new config
        // text, if it applies, read the files afresh itself.
        let (refreshed, endpoint_changes) =
            endpoints::refresh(&self.config, &mut self.endpoint_files);
        let endpoints_changed = refreshed.is_some();
        if let Some(config) = refreshed {
            self.config = Arc::new(config);
        }
        let read = config_file::read(&self.config, self.config_text.as_deref());
        let (candidate, candidate_config) = match &read {
            ConfigRead::NoFile => (Candidate::NoFile, None),
            ConfigRead::Unchanged => (Candidate::Unchanged, None),
            ConfigRead::Invalid { message, .. } => (Candidate::Invalid(message.clone()), None),
            ConfigRead::New { config, .. } => (Candidate::New(Uses::of(config)), Some(&**config)),
        };
        let in_force = self.config.clone();
        let input = Input {
            serving: self
                .records
                .iter()
                .filter_map(|(name, r)| Some((name.clone(), r.current.as_ref()?.version.clone())))
                .collect(),
            in_force: Some(Uses::of(&in_force)),
            candidate,
            files: Default::default(),
        };
        let configs = Configs {
            candidate: candidate_config,
            in_force: Some(&in_force),
        };
        let (built, loaded) = self.build(input, &configs, &in_force, Some(previous)).await;
        let next = match (&built.plan.serve, built.chains) {
            (Some((side, _)), Some(chains)) if built.plan.swaps() => {
                // The planner serves the candidate only when there is one.
                let config = match (side, candidate_config) {
                    (Side::Candidate, Some(candidate)) => Arc::new(candidate.clone()),
                    _ => in_force.clone(),
                };
                match Snapshot::new(config, self.workers, chains, Some(previous)) {
                    Ok(next) => {
                        next.resolve_names().await;
                        Some(next)
                    }
                    Err(e) => {
                        tracing::error!("reload abandoned, nothing changes: {e}");
                        return (ReloadReport::default(), None);
                    }
                }
            }
            // Only endpoint lists changed: the routes and chains serving stay.
            _ if endpoints_changed => {
                match Snapshot::new(
                    in_force.clone(),
                    self.workers,
                    previous.chains.clone(),
                    Some(previous),
                ) {
                    Ok(next) => {
                        next.resolve_names().await;
                        Some(next)
                    }
                    Err(e) => {
                        tracing::error!("new endpoints not applied: {e}");
                        None
                    }
                }
            }
            _ => None,
        };
        let mut report = self.settle(&read, &built.plan, &loaded);
        report.swapped |= next.is_some();
        report.endpoints = endpoint_changes;
        if let (Some(next), ConfigRead::New { text, .. }) = (&next, &read)
            && built
                .plan
                .serve
                .as_ref()
                .is_some_and(|(side, _)| *side == Side::Candidate)
        {
            self.config = next.config.clone();
            self.config_text = Some(text.clone());
        }
        endpoints::follow(&self.config, &mut self.endpoint_files);
        if self.failed.len() > MAX_FAILED {
            self.failed.clear();
        }
        let Some(next) = next else {
            return (report, None);
        };
        forget_removed_endpoints(previous, &next);
        self.health.watch(&next.clusters);
        (report, Some(next))
    }

    /// Reads the plugin files the configs name (the in-force config's and the
    /// candidate's), completes `input` with them and builds. Returns what was built and
    /// every plugin version it could choose from.
    async fn build(
        &mut self,
        mut input: Input,
        configs: &Configs<'_>,
        dir_of: &Config,
        previous: Option<&Snapshot>,
    ) -> (build::Built, Loaded) {
        let candidate = match &input.candidate {
            Candidate::New(uses) => Some(uses),
            _ => None,
        };
        let mut names: Vec<String> = Vec::new();
        for uses in input.in_force.iter().chain(candidate) {
            for name in uses.names() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_owned());
                }
            }
        }
        let mut loaded: Loaded = self
            .records
            .iter()
            .filter_map(|(name, r)| {
                let current = r.current.clone()?;
                Some(((name.clone(), current.version.clone()), current))
            })
            .collect();
        if !names.is_empty() {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            input.files = match self.host(dir_of) {
                Ok(host) => {
                    build::read_plugins(
                        &host,
                        &dir_of.plugins.dir,
                        &names,
                        &mut loaded,
                        &mut self.failed,
                    )
                    .await
                }
                Err(e) => names
                    .iter()
                    .map(|name| ((*name).to_owned(), File::Missing(e.clone())))
                    .collect(),
            };
        }
        let built = build::build(self.host.as_deref(), &input, configs, &loaded, previous).await;
        (built, loaded)
    }

    /// The plugin host, created when the first route names a plugin.
    fn host(&mut self, config: &Config) -> Result<Arc<PluginHost>, PluginError> {
        if let Some(host) = &self.host {
            return Ok(host.clone());
        }
        let host = Arc::new(PluginHost::with_kv(
            config.plugins.cache_dir.clone(),
            &config.kv,
        )?);
        self.host = Some(host.clone());
        Ok(host)
    }
}

/// Versions that failed to load kept at most; past it the memory starts over.
const MAX_FAILED: usize = 64;

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("config", &self.config.source)
            .finish_non_exhaustive()
    }
}

/// Drops the health series of endpoints `previous` had and `next` does not.
fn forget_removed_endpoints(previous: &Snapshot, next: &Snapshot) {
    let endpoints = |s: &Snapshot| -> std::collections::HashSet<(String, String)> {
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
