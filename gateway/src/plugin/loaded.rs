//! A compiled, version-checked plugin ([`LoadedPlugin`]): its phases, its statistics and
//! the linked image instances are made from.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Engine;

use super::bindings::types;
use super::exports::Exports;
use super::state::HostState;
use super::{FailureKind, message};
use crate::telemetry::metrics::PluginSeries;

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
    /// Whether the set holds a phase that runs after `phase` in a request, so that an
    /// instance called in `phase` may be called again for the same request.
    pub(crate) fn any_after(&self, phase: types::Phase) -> bool {
        match phase {
            types::Phase::RequestHeaders => {
                self.request_body || self.response_headers || self.response_body || self.log
            }
            types::Phase::RequestBody => self.response_headers || self.response_body || self.log,
            types::Phase::ResponseHeaders => self.response_body || self.log,
            types::Phase::ResponseBody => self.log,
            types::Phase::Log => false,
        }
    }

    pub(super) fn from_wit(list: &[types::Phase]) -> Phases {
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
    pub(super) fn intersection(self, other: Phases) -> Phases {
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
    pub(super) series: PluginSeries,
}

impl PluginStats {
    pub(super) fn new(plugin: &str) -> PluginStats {
        PluginStats {
            calls: AtomicU64::new(0),
            failures: Default::default(),
            series: PluginSeries::new(plugin),
        }
    }

    /// Counts a failed call (a suspended one is not a call).
    pub(crate) fn failed(&self, kind: FailureKind) {
        if kind == FailureKind::Suspended {
            return;
        }
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
    pub(super) image: Arc<Image>,
    /// The file's bytes, for pre-initialised images.
    pub(super) bytes: Arc<[u8]>,
}

/// A component ready to instantiate: linked, with its handler's functions located.
pub(crate) struct Image {
    pub(super) pre: wasmtime::component::InstancePre<HostState>,
    pub(super) exports: Exports,
    /// Whether a route's `init` already ran in this image (a snapshot).
    pub(super) preinitialised: bool,
    /// Whether the plugin imports a function that can wait (`http-call`, or WASI beyond
    /// clocks, randomness, stdio and streams), so that it must run on a fiber. Others
    /// are instantiated and called synchronously, saving a stack switch per call.
    pub(super) on_fiber: bool,
    /// The edits the snapshot's `init` declared (`host.declare-edits`).
    pub(super) declared: Option<Arc<message::DeclaredEdits>>,
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

/// The imports of `component` that can wait, which put its calls on a fiber: anything
/// but the plugin imports other than `http-client` (and `kv` when `kv_waits`: the store
/// is in Redis), and WASI's clocks, randomness, command-line interfaces and `wasi:io`
/// (whose waiting functions `sync_io` replaces).
pub(crate) fn imports_waiting(
    engine: &Engine,
    component: &wasmtime::component::Component,
    kv_waits: bool,
) -> Vec<String> {
    component
        .component_type()
        .imports(engine)
        .filter(|(name, _)| {
            let interface = name.split('@').next().unwrap_or(name);
            let at_once = (interface == "weir:plugin/kv" && !kv_waits)
                || matches!(
                    interface,
                    "weir:plugin/types"
                        | "weir:plugin/host"
                        | "weir:plugin/metrics"
                        | "wasi:io/error"
                        | "wasi:io/poll"
                        | "wasi:io/streams"
                )
                || ["wasi:cli/", "wasi:clocks/", "wasi:random/"]
                    .iter()
                    .any(|prefix| interface.starts_with(prefix));
            !at_once
        })
        .map(|(name, _)| name.to_owned())
        .collect()
}
