//! Pre-initialised images: when a route configures a plugin, the gateway runs the
//! plugin's `init` once with that route's config and snapshots the instance's memory
//! (wasmtime-wizer), so every later instance starts with the config already parsed and
//! its keys already loaded. Expensive setup is paid once per (plugin version, route
//! config), not once per request, in both isolation modes.
//!
//! The trade-off: everything `init` leaves in memory is shared by every instance's
//! starting state, including hash-map seeds, so a plugin should not keep secrets it
//! derives per instance there. State held outside linear memory cannot be captured: an
//! `init` that used WASI (printing, clocks, randomness, the environment: std's
//! `HashMap` seeds itself from `wasi:random/insecure-seed`) holds handles a snapshot
//! would lose, so such a plugin is not pre-initialised and instead runs `init` in each
//! fresh instance, as without a snapshot. That is said loudly: a warning naming the
//! WASI interfaces `init` called, once per (plugin version, route config), and the
//! reason is kept for `weir check` and `weir plugin inspect` ([`fallback`]).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::Store;
use wasmtime::component::{Instance as ComponentInstance, Lift, WasmList};
use wasmtime_wizer::{ComponentInstanceState, Wizer};

use super::instance::load_budget;
use super::state::{HostState, PluginContext};
use super::wasi_calls;
use super::{Image, Instance, LoadedPlugin, PluginHost};
use crate::config::PluginSettings;

/// What pre-initialising a plugin for one route came to.
pub(crate) enum Preinit {
    /// A snapshot taken after a successful `init`.
    Ready(Image),
    /// `init` refused the config (or failed): the route cannot use the plugin.
    Refused(String),
    /// No snapshot can be taken; `init` accepted the config as far as it ran.
    Unavailable(String),
}

/// (plugin version, hash of the route config) → why it was not pre-initialised.
type Fallbacks = HashMap<(String, u64), Arc<str>>;

/// Why configurations were not pre-initialised: read by `weir check` and `weir plugin
/// inspect`, and it keeps the warning to one per (version, config). Bounded: past
/// [`MAX_FALLBACKS`] it starts over.
static FALLBACKS: Mutex<Option<Fallbacks>> = Mutex::new(None);
const MAX_FALLBACKS: usize = 1024;

fn fallback_key(version: &str, config_json: &str) -> (String, u64) {
    let mut hasher = std::hash::DefaultHasher::new();
    config_json.hash(&mut hasher);
    (version.to_owned(), hasher.finish())
}

/// Why plugin `version` with route config `config_json` is not pre-initialised, if a
/// pre-initialisation of it fell back.
pub(crate) fn fallback(version: &str, config_json: &str) -> Option<Arc<str>> {
    let fallbacks = FALLBACKS.lock().unwrap_or_else(PoisonError::into_inner);
    fallbacks
        .as_ref()?
        .get(&fallback_key(version, config_json))
        .cloned()
}

/// Records why `plugin` with `ctx`'s config is not pre-initialised, and warns the first
/// time.
fn fell_back(plugin: &LoadedPlugin, ctx: &PluginContext, why: String) -> Preinit {
    let key = fallback_key(&plugin.version, &ctx.config_json);
    let mut fallbacks = FALLBACKS.lock().unwrap_or_else(PoisonError::into_inner);
    let fallbacks = fallbacks.get_or_insert_with(HashMap::new);
    if fallbacks.get(&key).is_none_or(|known| **known != *why) {
        tracing::warn!(
            plugin = %plugin.name,
            version = ctx.short_version(),
            "plugin not pre-initialised, its `init` runs in every fresh instance: {why}"
        );
        if fallbacks.len() >= MAX_FALLBACKS {
            fallbacks.clear();
        }
        fallbacks.insert(key, Arc::from(why.as_str()));
    }
    Preinit::Unavailable(why)
}

/// Why an `init` that called the WASI interfaces `called` (none known: a call this
/// thread did not see) cannot be snapshotted, with what to do instead.
fn wasi_reason(called: &[&str]) -> String {
    let what = match called {
        [] => "made a WASI call".to_owned(),
        _ => format!("called {}", called.join(", ")),
    };
    let mut why = format!("`init` (the plugin's `new`) {what}, whose state a snapshot cannot keep");
    if called.is_empty() || called.iter().any(|c| c.starts_with("wasi:random/")) {
        why.push_str(
            " (std's HashMap and HashSet seed themselves from wasi:random: keep a BTreeMap, \
             or a HashMap with a fixed-seed hasher, in the plugin value)",
        );
    }
    why
}

/// Runs `init` in an instrumented instance of `plugin` with the route's context, and
/// snapshots it into a new image.
pub(crate) async fn preinit(
    host: &PluginHost,
    plugin: &LoadedPlugin,
    ctx: Arc<PluginContext>,
    settings: &PluginSettings,
) -> Preinit {
    let context = ctx.clone();
    match snapshot(host, plugin, ctx, settings).await {
        Preinit::Unavailable(why) => fell_back(plugin, &context, why),
        done => done,
    }
}

async fn snapshot(
    host: &PluginHost,
    plugin: &LoadedPlugin,
    ctx: Arc<PluginContext>,
    settings: &PluginSettings,
) -> Preinit {
    let wizer = Wizer::new();
    let (cx, instrumented) = match wizer.instrument_component(&plugin.bytes) {
        Ok(pair) => pair,
        Err(e) => return Preinit::Unavailable(format!("cannot instrument: {e:#}")),
    };
    let image = match host.image(&plugin.name, &instrumented, false) {
        Ok(image) => image,
        Err(e) => return Preinit::Unavailable(e.to_string()),
    };
    let mut instance = match Instance::new(
        &image,
        ctx,
        settings.memory_limit,
        load_budget(settings.timeout),
    )
    .await
    {
        Ok(instance) => instance,
        Err(e) => return Preinit::Unavailable(e.to_string()),
    };
    let (init, called) = wasi_calls::watch(instance.init()).await;
    let declared = match init {
        Ok(Ok(declared)) => declared,
        Ok(Err(reason)) => return Preinit::Refused(reason),
        Err(failure) => return Preinit::Refused(failure.to_string()),
    };
    if instance.used_wasi() {
        return Preinit::Unavailable(wasi_reason(&called));
    }
    let (store, component) = instance.parts();
    let mut access = Access {
        store,
        instance: component,
        error: None,
    };
    let snapshot = wizer.snapshot_component(&cx, &mut access).await;
    if let Some(error) = access.error {
        return Preinit::Unavailable(format!("cannot read the instance's state: {error}"));
    }
    let bytes = match snapshot {
        Ok(bytes) => bytes,
        Err(e) => return Preinit::Unavailable(format!("cannot snapshot: {e:#}")),
    };
    match host.image(&plugin.name, &bytes, true) {
        Ok(image) => Preinit::Ready(Image { declared, ..image }),
        Err(e) => Preinit::Unavailable(e.to_string()),
    }
}

/// Lets wizer read the instrumented instance's memories and globals through the
/// accessor functions it added. Its interface cannot return errors: the first one is
/// kept here, and the snapshot is discarded when there is one.
struct Access<'a> {
    store: &'a mut Store<HostState>,
    instance: ComponentInstance,
    error: Option<String>,
}

impl Access<'_> {
    async fn call<R, T>(
        &mut self,
        interface: &str,
        func: &str,
        read: impl FnOnce(&Store<HostState>, R) -> T,
    ) -> Option<T>
    where
        R: Lift + Send + Sync + 'static,
    {
        if self.error.is_some() {
            return None;
        }
        // Reading state is not the plugin's time: give it a fresh deadline.
        self.store.set_epoch_deadline(1000);
        let store = &mut *self.store;
        let result: wasmtime::Result<R> = async {
            let (_, outer) = self
                .instance
                .get_export(&mut *store, None, interface)
                .ok_or_else(|| wasmtime::format_err!("no export `{interface}`"))?;
            let (_, inner) = self
                .instance
                .get_export(&mut *store, Some(&outer), func)
                .ok_or_else(|| wasmtime::format_err!("no export `{interface}#{func}`"))?;
            let typed = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *store, inner)?;
            Ok(typed.call_async(&mut *store, ()).await?.0)
        }
        .await;
        match result {
            Ok(value) => Some(read(self.store, value)),
            Err(e) => {
                self.error = Some(format!("{e:#}"));
                None
            }
        }
    }
}

impl ComponentInstanceState for Access<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        let read = |store: &Store<HostState>, list: WasmList<u8>| {
            contents(list.as_le_slice(store));
        };
        self.call(instance, func, read).await;
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func, |_, v: i32| v).await.unwrap_or(0)
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func, |_, v: i64| v).await.unwrap_or(0)
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call(instance, func, |_, v: f32| v.to_bits())
            .await
            .unwrap_or(0)
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call(instance, func, |_, v: f64| v.to_bits())
            .await
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::wasi_reason;

    #[test]
    fn the_reason_names_the_imports_and_what_to_use_for_randomness() {
        let why = wasi_reason(&["wasi:random/insecure-seed"]);
        assert!(
            why.starts_with("`init` (the plugin's `new`) called wasi:random/insecure-seed, whose state a snapshot cannot keep"),
            "{why}"
        );
        assert!(why.contains("BTreeMap"), "{why}");
        let why = wasi_reason(&["wasi:cli/stdout", "wasi:clocks/wall-clock"]);
        assert!(
            why.contains("called wasi:cli/stdout, wasi:clocks/wall-clock,"),
            "{why}"
        );
        assert!(!why.contains("HashMap"), "{why}");
        assert!(wasi_reason(&[]).contains("made a WASI call"));
    }
}
