//! The plugin host ([`PluginHost`]): the engine, the linker with the host imports, and
//! loading and configuring plugins off the request path.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use wasmtime::Engine;
use wasmtime::component::{HasSelf, Linker};

use super::bindings::Plugin;
use super::exports::Exports;
use super::instance::load_budget;
use super::kv_host::PluginKv;
use super::state::{HostState, OutboundClient, PluginContext};
use super::{
    ChainEntry, Image, Instance, LoadedPlugin, Phases, PluginError, PluginFailure, PluginMetrics,
    PluginStats, compile, engine, imports_waiting, preinit, state, sync_io,
};
use crate::config::{KvBackend, KvSettings, PluginSettings, PluginUse};
use crate::kv::{Backend, KvStore, RedisNamespace, RedisStore};

/// The engine, the linker with the host imports, and the services plugins share.
pub struct PluginHost {
    pub(super) engine: Engine,
    /// The epoch tick, fitted to the shortest timeout configured.
    tick: engine::Tick,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    /// The key-value store plugins share (its backend is fixed for the host's life).
    kv: Backend,
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
    /// Unused values kept beyond those in use: a reload back to the previous version
    /// or config (a rollback) costs nothing; older ones come from the disk cache or a
    /// fresh pre-initialisation. Each is megabytes of code or memory image, so a
    /// gateway that is sent a new plugin build every minute holds only a few.
    const SPARE: usize = 2;

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
    /// Creates the engine (with its epoch ticker) and links the host imports, with the
    /// key-value store in memory.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<PluginHost, PluginError> {
        PluginHost::with_kv(cache_dir, &KvSettings::default())
    }

    /// [`PluginHost::new`] with the key-value store `kv` configures. With Redis, the
    /// `kv` functions are linked `async` (a plugin that imports them runs on a fiber
    /// and awaits each call); Redis need not be up yet.
    pub fn with_kv(cache_dir: Option<PathBuf>, kv: &KvSettings) -> Result<PluginHost, PluginError> {
        let (engine, tick) =
            engine::new_engine().map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        sync_io::add_to_linker(&mut linker).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        Plugin::add_to_linker::<_, HasSelf<HostState>>(&mut linker, |state| state)
            .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        let kv = match &kv.backend {
            KvBackend::Memory => Backend::Memory(Arc::new(KvStore::new(kv.bounds))),
            KvBackend::Redis(redis) => {
                let store = RedisStore::new(redis, kv.bounds, kv.timeout)
                    .map_err(|e| PluginError::Engine(e.to_string()))?;
                linker.allow_shadowing(true);
                super::bindings::remote_kv::add_to_linker::<_, HasSelf<HostState>>(
                    &mut linker,
                    |state| state,
                )
                .map_err(|e| PluginError::Engine(format!("{e:#}")))?;
                linker.allow_shadowing(false);
                Backend::Redis(Arc::new(store))
            }
        };
        Ok(PluginHost {
            engine,
            tick,
            linker,
            cache_dir,
            kv,
            http: state::outbound_client(),
            metrics: std::sync::Mutex::default(),
            snapshots: std::sync::Mutex::default(),
            loaded: std::sync::Mutex::default(),
            stats: std::sync::Mutex::default(),
            always_on_fiber: false,
        })
    }

    /// Applies `[kv]`'s bounds (and, for Redis, its call deadline) from now on; its
    /// backend stays the one the host was made with.
    pub fn set_kv_limits(&self, kv: &KvSettings) {
        match &self.kv {
            Backend::Memory(store) => store.set_bounds(kv.bounds),
            Backend::Redis(store) => store.set_limits(kv.bounds, kv.timeout),
        }
    }

    /// Whether the `kv` functions wait (the store is in Redis).
    pub(super) fn kv_waits(&self) -> bool {
        matches!(self.kv, Backend::Redis(_))
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
            load_budget(PluginSettings::default().timeout),
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
    pub(super) fn image(
        &self,
        name: &str,
        bytes: &[u8],
        preinitialised: bool,
    ) -> Result<Image, PluginError> {
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
        let on_fiber = self.always_on_fiber
            || !imports_waiting(&self.engine, component, self.kv_waits()).is_empty();
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
            kv: match &self.kv {
                Backend::Memory(store) => PluginKv::Memory {
                    ns: store.namespace(&plugin.name),
                    store: store.clone(),
                },
                Backend::Redis(store) => PluginKv::Redis {
                    ns: Arc::new(RedisNamespace::new(&plugin.name)),
                    store: store.clone(),
                },
            },
            allowed_hosts: allowed_hosts.to_vec(),
            max_outbound_calls,
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
            reads: None,
            image: image.unwrap_or_else(|| plugin.image.clone()),
            phases: plugin.phases,
            plugin,
            settings: usage.settings,
            usage: usage.clone(),
            ctx,
            idle: Arc::default(),
            suspension: Arc::default(),
        };
        // An instance as requests will get it, to run `init` in when no snapshot holds
        // it, and to ask which phases this config needs.
        let mut instance = entry
            .instantiate_for_load()
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
        entry.reads = instance
            .header_reads()
            .await
            .map_err(|e| refused(e.to_string()))?
            .map(|names| parse_reads(&names))
            .transpose()
            .map_err(refused)?;
        instance.set_timeout(entry.settings.timeout);
        entry.release(instance);
        Ok(entry)
    }
}

/// The most header names a plugin may ask to be sent with each request-phase call:
/// the gateway looks each up on every request, outside the plugin's CPU budget.
const MAX_READS: usize = 64;

/// The header names a plugin's `header-reads` gave, checked.
fn parse_reads(names: &[String]) -> Result<Arc<[http::HeaderName]>, String> {
    if names.len() > MAX_READS {
        return Err(format!(
            "`header-reads` names {} headers; at most {MAX_READS} can be sent with each call",
            names.len()
        ));
    }
    names
        .iter()
        .map(|name| {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`header-reads`: {name:?} is not a header name"))
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_reads_are_checked_and_bounded() {
        let names = |n: usize| (0..n).map(|i| format!("x-{i}")).collect::<Vec<_>>();
        let reads = parse_reads(&["X-Request-Id".to_owned()]).unwrap();
        assert_eq!(reads[0].as_str(), "x-request-id");
        assert_eq!(parse_reads(&names(MAX_READS)).unwrap().len(), MAX_READS);
        let e = parse_reads(&names(MAX_READS + 1)).unwrap_err();
        assert!(e.contains("names 65 headers; at most 64"), "{e}");
        let e = parse_reads(&["bad name".to_owned()]).unwrap_err();
        assert_eq!(e, "`header-reads`: \"bad name\" is not a header name");
    }
}
