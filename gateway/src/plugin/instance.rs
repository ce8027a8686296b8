//! One plugin instance: a store with the plugin's limits, instantiated from the
//! pre-linked component, and its phase calls, each under the CPU deadline. Failures are
//! classified (trap, timeout, memory, error) for the failure policy and the counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use super::bindings::{Plugin, types};
use super::engine::deadline_ticks;
use super::output::{GuestOutput, Stream};
use super::state::{HostState, MemoryLimit, PluginContext};
use super::{FailureKind, LoadedPlugin};

/// A plugin failure during one call.
#[derive(Debug, thiserror::Error)]
#[error("plugin `{plugin}` ({kind}): {message}")]
pub struct PluginFailure {
    /// The plugin's name.
    pub plugin: String,
    /// What kind of failure.
    pub kind: FailureKind,
    /// Details for the log (never sent to clients).
    pub message: String,
}

/// A live instance, used for the phases of one request (or, with worker isolation, of
/// several). It cannot be entered again after a failure.
pub struct Instance {
    store: Store<HostState>,
    bindings: Plugin,
    timeout: Duration,
    ctx: Arc<PluginContext>,
    /// Requests served (worker isolation recycles an instance after a bound).
    pub(crate) uses: u32,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("plugin", &self.ctx.name)
            .finish_non_exhaustive()
    }
}

impl Instance {
    /// Instantiates `plugin` for the route entry `ctx`, with its memory cap and deadline.
    pub(crate) async fn new(
        plugin: &LoadedPlugin,
        ctx: Arc<PluginContext>,
        memory_limit: u64,
        timeout: Duration,
    ) -> Result<Instance, PluginFailure> {
        let state = HostState {
            wasi: wasmtime_wasi::WasiCtx::builder()
                .stdout(GuestOutput {
                    ctx: ctx.clone(),
                    stream: Stream::Stdout,
                })
                .stderr(GuestOutput {
                    ctx: ctx.clone(),
                    stream: Stream::Stderr,
                })
                .build(),
            table: wasmtime::component::ResourceTable::new(),
            limits: MemoryLimit {
                max_bytes: usize::try_from(memory_limit).unwrap_or(usize::MAX),
                exhausted: false,
            },
            ctx: ctx.clone(),
            outbound_calls: 0,
            call_started: Instant::now(),
            waited: Duration::ZERO,
        };
        let mut store = Store::new(plugin.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        let budget = timeout;
        // The deadline measures the guest's own time: time spent waiting in host calls
        // (an outbound request) is given back.
        store.epoch_deadline_callback(move |ctx| {
            let state = ctx.data();
            let used = state.call_started.elapsed().saturating_sub(state.waited);
            if used >= budget {
                return Err(Trap::Interrupt.into());
            }
            let left = budget - used;
            Ok(UpdateDeadline::Continue(deadline_ticks(left).max(1)))
        });
        store.set_epoch_deadline(deadline_ticks(timeout));
        let bindings = match plugin.pre.instantiate_async(&mut store).await {
            Ok(bindings) => bindings,
            Err(e) => {
                let kind = classify(&e, store.data());
                return Err(PluginFailure {
                    plugin: ctx.name.clone(),
                    kind,
                    message: format!("instantiation failed: {e:#}"),
                });
            }
        };
        Ok(Instance {
            store,
            bindings,
            timeout,
            ctx,
            uses: 0,
        })
    }

    /// Prepares a reused instance for a new request.
    pub(crate) fn reset_for_request(&mut self) {
        self.store.data_mut().outbound_calls = 0;
        self.uses += 1;
    }

    fn begin(&mut self) {
        let state = self.store.data_mut();
        state.call_started = Instant::now();
        state.waited = Duration::ZERO;
        self.store.set_epoch_deadline(deadline_ticks(self.timeout));
    }

    fn failure(&self, phase: &str, error: &wasmtime::Error) -> PluginFailure {
        PluginFailure {
            plugin: self.ctx.name.clone(),
            kind: classify(error, self.store.data()),
            message: format!("{phase}: {error:#}"),
        }
    }

    /// Calls `init`: the plugin checks its configuration.
    pub async fn init(&mut self) -> Result<Result<(), String>, PluginFailure> {
        self.begin();
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_init(&mut self.store)
            .await;
        result.map_err(|e| self.failure("init", &e))
    }

    /// Calls `phases`.
    pub async fn phases(&mut self) -> Result<Vec<types::Phase>, PluginFailure> {
        self.begin();
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_phases(&mut self.store)
            .await;
        result.map_err(|e| self.failure("phases", &e))
    }

    /// Calls `on-request-headers`.
    pub async fn on_request_headers(
        &mut self,
        request: &types::RequestHead,
    ) -> Result<types::RequestAction, PluginFailure> {
        self.begin();
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_on_request_headers(&mut self.store, request)
            .await;
        result.map_err(|e| self.failure("on-request-headers", &e))
    }

    /// Calls `on-response-headers`.
    pub async fn on_response_headers(
        &mut self,
        request: &types::RequestHead,
        response: &types::ResponseHead,
    ) -> Result<types::ResponseAction, PluginFailure> {
        self.begin();
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_on_response_headers(&mut self.store, request, response)
            .await;
        result.map_err(|e| self.failure("on-response-headers", &e))
    }
}

impl Instance {
    /// Calls `on-request-body`.
    pub async fn on_request_body(
        &mut self,
        request: &types::RequestHead,
        body: &[u8],
    ) -> Result<types::BodyAction, PluginFailure> {
        self.begin();
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_on_request_body(&mut self.store, request, body)
            .await;
        result.map_err(|e| self.failure("on-request-body", &e))
    }

    /// Calls `on-response-body`.
    pub async fn on_response_body(
        &mut self,
        request: &types::RequestHead,
        response: &types::ResponseHead,
        body: &[u8],
    ) -> Result<types::BodyAction, PluginFailure> {
        self.begin();
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_on_response_body(&mut self.store, request, response, body)
            .await;
        result.map_err(|e| self.failure("on-response-body", &e))
    }

    /// Calls `on-log`.
    pub async fn on_log(
        &mut self,
        request: &types::RequestHead,
        response: &types::ResponseHead,
    ) -> Result<(), PluginFailure> {
        self.begin();
        let result = self
            .bindings
            .weir_plugin_handler()
            .call_on_log(&mut self.store, request, response)
            .await;
        result.map_err(|e| self.failure("on-log", &e))
    }
}

/// What kind of failure an error from a call is.
fn classify(error: &wasmtime::Error, state: &HostState) -> FailureKind {
    if state.limits.exhausted {
        return FailureKind::Memory;
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => FailureKind::Timeout,
        Some(_) => FailureKind::Trap,
        None => FailureKind::Error,
    }
}
