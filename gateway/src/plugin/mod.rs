//! The wasmtime plugin host: one engine, compiled components cached by content hash,
//! instances with per-plugin limits, the host side of the `weir:plugin` imports, and
//! the chain runner the pipeline calls at its filter points.
//!
//! Loading (compile, version check, `phases`, and `init` with each route's config)
//! happens off the request path; a request only instantiates (request isolation) and
//! calls. A plugin failure never takes the gateway down: it becomes a [`PluginFailure`]
//! that the failure policy turns into a 5xx or a skipped plugin.

mod bindings;
mod chain;
mod compile;
mod engine;
mod exports;
mod inspect;
mod instance;
mod message;
mod output;
mod preinit;
mod state;
mod sync_io;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

pub use crate::reply::LocalReply;
pub use chain::{ChainRun, Flow, RequestParts};
pub use compile::WIT_VERSION;
pub use inspect::Inspection;
pub use instance::{Instance, PluginFailure};
pub use state::PluginMetrics;

use crate::config::{Isolation, PluginSettings, PluginUse};
use crate::kv::KvStore;
use crate::telemetry::metrics::PluginSeries;
use bindings::{Plugin, types};
use exports::Exports;
use state::{HostState, OutboundClient, PluginContext};

/// The kinds of plugin failure, as counted in `weir_plugin_failures_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The guest trapped (including a Rust panic, which aborts).
    Trap,
    /// A call ran past its CPU deadline.
    Timeout,
    /// The guest hit its memory limit.
    Memory,
    /// Anything else: instantiation failed, a malformed result.
    Error,
}

impl FailureKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Trap => "trap",
            FailureKind::Timeout => "timeout",
            FailureKind::Memory => "memory",
            FailureKind::Error => "error",
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

/// The phases a plugin implements.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// `on-request-headers`.
    pub request_headers: bool,
    /// `on-request-body`.
    pub request_body: bool,
    /// `on-response-headers`.
    pub response_headers: bool,
    /// `on-response-body`.
    pub response_body: bool,
    /// `on-log`.
    pub log: bool,
}

impl Phases {
    fn from_wit(list: &[types::Phase]) -> Phases {
        let mut phases = Phases::default();
        for phase in list {
            match phase {
                types::Phase::RequestHeaders => phases.request_headers = true,
                types::Phase::RequestBody => phases.request_body = true,
                types::Phase::ResponseHeaders => phases.response_headers = true,
                types::Phase::ResponseBody => phases.response_body = true,
                types::Phase::Log => phases.log = true,
            }
        }
        phases
    }

    /// The phases in both.
    fn intersection(self, other: Phases) -> Phases {
        Phases {
            request_headers: self.request_headers && other.request_headers,
            request_body: self.request_body && other.request_body,
            response_headers: self.response_headers && other.response_headers,
            response_body: self.response_body && other.response_body,
            log: self.log && other.log,
        }
    }

    /// The phase names, for display.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.request_headers, "request-headers"),
            (self.request_body, "request-body"),
            (self.response_headers, "response-headers"),
            (self.response_body, "response-body"),
            (self.log, "log"),
        ]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect()
    }
}

/// Calls and failures of one loaded plugin (also exported as the plugin's Prometheus
/// series).
#[derive(Debug)]
pub struct PluginStats {
    /// Phase calls made.
    pub calls: AtomicU64,
    failures: [AtomicU64; 4],
    series: PluginSeries,
}

impl PluginStats {
    fn new(plugin: &str) -> PluginStats {
        PluginStats {
            calls: AtomicU64::new(0),
            failures: Default::default(),
            series: PluginSeries::new(plugin),
        }
    }

    pub(crate) fn failed(&self, kind: FailureKind) {
        self.failures[kind as usize].fetch_add(1, Ordering::Relaxed);
        self.series.failures[kind as usize].inc();
    }

    /// Failures of `kind` so far.
    pub fn failures(&self, kind: FailureKind) -> u64 {
        self.failures[kind as usize].load(Ordering::Relaxed)
    }
}

/// A compiled, version-checked plugin, ready to instantiate.
pub struct LoadedPlugin {
    /// Its name (`NAME.wasm`).
    pub name: String,
    /// The SHA-256 of the file: the plugin's version.
    pub version: String,
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The `weir:plugin` version it was built for.
    pub wit_version: String,
    /// The phases it implements.
    pub phases: Phases,
    /// Whether the compiled artifact came from the disk cache.
    pub from_cache: bool,
    /// Call and failure counts, shared by every version of the plugin.
    pub stats: Arc<PluginStats>,
    /// The plugin as loaded (no route's `init` has run in it).
    image: Arc<Image>,
    /// The file's bytes, for pre-initialised images.
    bytes: Arc<[u8]>,
}

/// A component ready to instantiate: linked, with its handler's functions located.
pub(crate) struct Image {
    pre: wasmtime::component::InstancePre<HostState>,
    exports: Exports,
    /// Whether a route's `init` already ran in this image (a snapshot).
    preinitialised: bool,
    /// Whether the plugin imports a function that can wait (`http-call`, or WASI beyond
    /// clocks, randomness, stdio and streams), so that it must run on a fiber. Others
    /// are instantiated and called synchronously, saving a stack switch per call.
    on_fiber: bool,
    /// The edits the snapshot's `init` declared (`host.declare-edits`).
    declared: Option<Arc<message::DeclaredEdits>>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("preinitialised", &self.preinitialised)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("phases", &self.phases)
            .finish_non_exhaustive()
    }
}

/// Whether `component` imports a function that can wait: anything but the plugin
/// imports other than `http-client`, and WASI's clocks, randomness, command-line
/// interfaces and `wasi:io` (whose waiting functions `sync_io` replaces).
fn imports_waiting(engine: &Engine, component: &wasmtime::component::Component) -> bool {
    component.component_type().imports(engine).any(|(name, _)| {
        let interface = name.split('@').next().unwrap_or(name);
        let at_once = matches!(
            interface,
            "weir:plugin/types"
                | "weir:plugin/host"
                | "weir:plugin/kv"
                | "weir:plugin/metrics"
                | "wasi:io/error"
                | "wasi:io/poll"
                | "wasi:io/streams"
        ) || ["wasi:cli/", "wasi:clocks/", "wasi:random/"]
            .iter()
            .any(|prefix| interface.starts_with(prefix));
        !at_once
    })
}

/// With `isolation = "worker"`, an instance serves at most this many requests.
const MAX_REUSE: u32 = 10_000;
/// With `isolation = "worker"`, at most this many idle instances are kept per entry.
const MAX_IDLE_INSTANCES: usize = 64;

/// One entry of a route's plugin chain: a loaded plugin with that route's config and
/// limits.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// The plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// Its limits and failure policy on this route.
    pub settings: PluginSettings,
    /// The route's use of the plugin as configured (a reload keeps an entry whose use
    /// and plugin version did not change, with its idle instances).
    pub usage: PluginUse,
    /// The phases called on this route: what the plugin asked for after `init` with
    /// the route's config (a subset of the plugin's phases).
    pub phases: Phases,
    ctx: Arc<PluginContext>,
    /// The header edits this route's `init` declared, made by the gateway at the
    /// plugin's place without a call.
    pub(crate) declared: Option<Arc<message::DeclaredEdits>>,
    /// What instances start from: a snapshot taken after this route's `init` when one
    /// could be taken, else the plugin as loaded.
    image: Arc<Image>,
    idle: Arc<std::sync::Mutex<Vec<Instance>>>,
}

impl ChainEntry {
    /// An instance for one request: fresh with request isolation; with worker
    /// isolation, a reused one when an idle one exists.
    pub async fn instantiate(&self) -> Result<Instance, PluginFailure> {
        if self.settings.isolation == Isolation::Worker {
            let reused = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            if let Some(mut instance) = reused {
                instance.reset_for_request();
                return Ok(instance);
            }
        }
        // Boxed for the same reason as a fiber call: instantiation's future is large.
        Box::pin(Instance::new(
            &self.image,
            self.ctx.clone(),
            self.settings.memory_limit,
            self.settings.timeout,
        ))
        .await
    }

    /// Hands back an instance after a request it served without failing. Request
    /// isolation drops it; worker isolation keeps it for reuse up to a bound.
    pub(crate) fn release(&self, instance: Instance) {
        if self.settings.isolation != Isolation::Worker || instance.uses >= MAX_REUSE {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }

    /// Whether instances start from a snapshot taken after this route's `init`.
    pub fn preinitialised(&self) -> bool {
        self.image.preinitialised
    }

    /// What the plugin reported through the metrics import.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.ctx.metrics
    }
}

/// The engine, the linker with the host imports, and the services plugins share.
pub struct PluginHost {
    engine: Engine,
    /// The epoch tick, fitted to the shortest timeout configured.
    tick: engine::Tick,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    kv: Arc<KvStore>,
    http: OutboundClient,
    metrics: std::sync::Mutex<HashMap<String, Arc<PluginMetrics>>>,
    /// Pre-initialised images by (plugin version, config): routes that configure a
    /// plugin the same way share one snapshot, and a reload that flips back to a known
    /// version and config reuses it.
    snapshots: std::sync::Mutex<Recent<(String, String), Image>>,
    /// Loaded plugins by (name, version): a reload of a file whose bytes are known swaps
    /// without compiling.
    loaded: std::sync::Mutex<Recent<(String, String), LoadedPlugin>>,
    /// Call and failure counts by plugin name, kept across versions.
    stats: std::sync::Mutex<HashMap<String, Arc<PluginStats>>>,
    /// Run every plugin on a fiber, as if each could wait (for benchmarks that compare).
    always_on_fiber: bool,
}

/// Values kept for reuse: all those still in use elsewhere, plus at most
/// [`Recent::SPARE`] unused ones, the most recently inserted.
struct Recent<K, V> {
    entries: HashMap<K, (u64, Arc<V>)>,
    inserted: u64,
}

impl<K, V> Default for Recent<K, V> {
    fn default() -> Self {
        Recent {
            entries: HashMap::new(),
            inserted: 0,
        }
    }
}

impl<K: std::hash::Hash + Eq, V> Recent<K, V> {
    /// Unused values kept beyond those in use.
    const SPARE: usize = 8;

    fn get(&self, key: &K) -> Option<Arc<V>> {
        self.entries.get(key).map(|(_, v)| v.clone())
    }

    fn insert(&mut self, key: K, value: Arc<V>) {
        self.inserted += 1;
        self.entries.insert(key, (self.inserted, value));
        let mut unused: Vec<u64> = self
            .entries
            .values()
            .filter(|(_, v)| Arc::strong_count(v) == 1)
            .map(|(seq, _)| *seq)
            .collect();
        if unused.len() > Self::SPARE {
            unused.sort_unstable();
            let cutoff = unused[unused.len() - Self::SPARE];
            self.entries
                .retain(|_, (seq, v)| Arc::strong_count(v) > 1 || *seq >= cutoff);
        }
    }
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

impl PluginHost {
    /// Creates the engine (with its epoch ticker) and links the host imports.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<PluginHost, PluginError> {
        let (engine, tick) =
            engine::new_engine().map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        sync_io::add_to_linker(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        Plugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        Ok(PluginHost {
            engine,
            tick,
            linker,
            cache_dir,
            kv: Arc::default(),
            http: state::outbound_client(),
            metrics: std::sync::Mutex::default(),
            snapshots: std::sync::Mutex::default(),
            loaded: std::sync::Mutex::default(),
            stats: std::sync::Mutex::default(),
            always_on_fiber: false,
        })
    }

    /// The wasmtime engine every plugin runs on, so that a benchmark can measure
    /// wasmtime's own cost for a component beside a plugin's.
    #[doc(hidden)]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs every plugin on a fiber, as plugins that import `http-call` are, so that a
    /// benchmark can compare the two ways of calling a plugin.
    #[doc(hidden)]
    pub fn always_on_fiber(mut self) -> PluginHost {
        self.always_on_fiber = true;
        self
    }

    /// The counts of plugin `name`, created on first use.
    fn stats(&self, name: &str) -> Arc<PluginStats> {
        self.stats
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(PluginStats::new(name)))
            .clone()
    }

    /// Reads, compiles (or loads from the cache), version-checks and links `path` as
    /// plugin `name`, then asks it for its phases.
    pub async fn load(&self, name: &str, path: &Path) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = std::fs::read(path).map_err(|e| PluginError::Read {
            name: name.to_owned(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        self.load_bytes(name, path, bytes).await
    }

    /// [`PluginHost::load`] of bytes already read from `path`. Bytes loaded before (by
    /// their SHA-256) come back from memory without compiling.
    pub async fn load_bytes(
        &self,
        name: &str,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let key = (name.to_owned(), version_of(&bytes));
        let known = self
            .loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key);
        if let Some(plugin) = known
            && plugin.path == path
        {
            return Ok(plugin);
        }
        let plugin = Arc::new(self.load_new(name, path, bytes).await?);
        self.loaded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(key, plugin.clone());
        Ok(plugin)
    }

    async fn load_new(
        &self,
        name: &str,
        path: &Path,
        bytes: Vec<u8>,
    ) -> Result<LoadedPlugin, PluginError> {
        let compiled = compile::compile(&self.engine, name, &bytes, self.cache_dir.as_deref())?;
        let wit_version = compile::plugin_wit_version(&self.engine, &compiled.component)
            .ok_or_else(|| PluginError::Version {
                name: name.to_owned(),
                found: "no version (it does not export weir:plugin/handler)".to_owned(),
            })?;
        if !compile::compatible(&wit_version) {
            return Err(PluginError::Version {
                name: name.to_owned(),
                found: wit_version,
            });
        }
        let image = self.link(name, &compiled.component, false)?;
        let mut plugin = LoadedPlugin {
            name: name.to_owned(),
            version: compiled.sha256,
            path: path.to_owned(),
            wit_version,
            phases: Phases::default(),
            from_cache: compiled.from_cache,
            stats: self.stats(name),
            image: Arc::new(image),
            bytes: Arc::from(bytes),
        };
        let probe = self.context(&plugin, "{}", &[], 0);
        let mut instance = Instance::new(
            &plugin.image,
            probe,
            PluginSettings::default().memory_limit,
            PluginSettings::default().timeout,
        )
        .await
        .map_err(|e| PluginError::Link {
            name: name.to_owned(),
            reason: e.to_string(),
        })?;
        let link_failure = |e: PluginFailure| PluginError::Link {
            name: name.to_owned(),
            reason: e.to_string(),
        };
        instance.check_exports().map_err(link_failure)?;
        let phases = instance.phases().await.map_err(link_failure)?;
        plugin.phases = Phases::from_wit(&phases);
        Ok(plugin)
    }

    /// Compiles (or loads from the cache) and links `bytes` as an image of plugin `name`.
    fn image(&self, name: &str, bytes: &[u8], preinitialised: bool) -> Result<Image, PluginError> {
        let compiled = compile::compile(&self.engine, name, bytes, self.cache_dir.as_deref())?;
        self.link(name, &compiled.component, preinitialised)
    }

    fn link(
        &self,
        name: &str,
        component: &wasmtime::component::Component,
        preinitialised: bool,
    ) -> Result<Image, PluginError> {
        let pre = self
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Link {
                name: name.to_owned(),
                reason: format!("{e:#}"),
            })?;
        let exports = Exports::new(component).map_err(|reason| PluginError::Link {
            name: name.to_owned(),
            reason,
        })?;
        let on_fiber = self.always_on_fiber || imports_waiting(&self.engine, component);
        Ok(Image {
            pre,
            exports,
            preinitialised,
            on_fiber,
            declared: None,
        })
    }

    fn context(
        &self,
        plugin: &LoadedPlugin,
        config_json: &str,
        allowed_hosts: &[String],
        max_outbound_calls: u32,
    ) -> Arc<PluginContext> {
        let metrics = self
            .metrics
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(plugin.name.clone())
            .or_insert_with(|| Arc::new(PluginMetrics::new(&plugin.name)))
            .clone();
        Arc::new(PluginContext {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            config_json: config_json.to_owned(),
            kv_prefix: format!("{}\u{0}", plugin.name),
            allowed_hosts: allowed_hosts.to_vec(),
            max_outbound_calls,
            kv: self.kv.clone(),
            metrics,
            http: self.http.clone(),
            log_window: std::sync::Mutex::new((std::time::Instant::now(), 0)),
            logs_dropped: AtomicU64::new(0),
            series: plugin.stats.series.clone(),
            tick: self.tick.clone(),
        })
    }

    /// Binds a loaded plugin to a route's use of it, after the plugin accepted the
    /// config (`init`).
    pub async fn configure(
        &self,
        route: &str,
        plugin: Arc<LoadedPlugin>,
        usage: &PluginUse,
    ) -> Result<ChainEntry, PluginError> {
        self.tick.fit(usage.settings.timeout);
        let ctx = self.context(
            &plugin,
            &usage.config_json,
            &usage.allowed_hosts,
            usage.settings.max_outbound_calls,
        );
        let refused = |reason: String| PluginError::Config {
            route: route.to_owned(),
            name: usage.name.clone(),
            reason,
        };
        let key = (plugin.version.clone(), usage.config_json.clone());
        let known = self
            .snapshots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&key);
        let image = match known {
            Some(image) => Some(image),
            None => match preinit::preinit(self, &plugin, ctx.clone(), &usage.settings).await {
                preinit::Preinit::Ready(image) => {
                    let image = Arc::new(image);
                    self.snapshots
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .insert(key, image.clone());
                    Some(image)
                }
                preinit::Preinit::Refused(reason) => return Err(refused(reason)),
                preinit::Preinit::Unavailable(why) => {
                    tracing::debug!(plugin = %plugin.name, route, "not pre-initialised: {why}");
                    None
                }
            },
        };
        let preinitialised = image.is_some();
        let mut entry = ChainEntry {
            declared: image.as_ref().and_then(|image| image.declared.clone()),
            image: image.unwrap_or_else(|| plugin.image.clone()),
            phases: plugin.phases,
            plugin,
            settings: usage.settings,
            usage: usage.clone(),
            ctx,
            idle: Arc::default(),
        };
        // An instance as requests will get it, to run `init` in when no snapshot holds
        // it, and to ask which phases this config needs.
        let mut instance = entry
            .instantiate()
            .await
            .map_err(|e| refused(e.to_string()))?;
        if !preinitialised {
            entry.declared = instance
                .init()
                .await
                .map_err(|e| refused(e.to_string()))?
                .map_err(refused)?;
        }
        let phases = instance
            .phases()
            .await
            .map_err(|e| refused(e.to_string()))?;
        entry.phases = entry.plugin.phases.intersection(Phases::from_wit(&phases));
        entry.release(instance);
        Ok(entry)
    }
}

/// A plugin version: the SHA-256 of its file, in hex.
pub fn version_of(bytes: &[u8]) -> String {
    compile::sha256_hex(bytes)
}

/// Runs `future` to completion on a private single-threaded runtime on another thread,
/// so it works whether or not the caller is inside a tokio runtime (startup, `weir
/// check`, tests).
pub fn block_on<F: std::future::Future + Send>(future: F) -> F::Output
where
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a current-thread runtime can always be built")
                    .block_on(future)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
