//! One plugin instance: a store with the plugin's limits, instantiated from the
//! pre-linked component, and its phase calls, each under the CPU deadline. Failures are
//! classified (trap, timeout, memory, error) for the failure policy and the counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use wasmtime::component::{
    ComponentExportIndex, ComponentNamedList, Lift, Lower, Resource, TypedFunc,
};

use super::bindings::types;
use super::engine::deadline_ticks;
use super::exports::{Exports, LogFn, RequestHeadersFn, ResponseHeadersFn};
use super::message::{RequestView, ResponseView, request_handle, response_handle};
use super::state::{HostState, MemoryLimit, PluginContext};
use super::{FailureKind, Image};

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
    instance: wasmtime::component::Instance,
    exports: Exports,
    /// The header and log phases, type-checked on first use and kept (an instance
    /// reused under worker isolation checks them once).
    request_headers: Option<RequestHeadersFn>,
    response_headers: Option<ResponseHeadersFn>,
    log: Option<LogFn>,
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
        image: &Image,
        ctx: Arc<PluginContext>,
        memory_limit: u64,
        timeout: Duration,
    ) -> Result<Instance, PluginFailure> {
        let state = HostState {
            wasi: None,
            table: wasmtime::component::ResourceTable::new(),
            limits: MemoryLimit {
                max_bytes: usize::try_from(memory_limit).unwrap_or(usize::MAX),
                exhausted: false,
            },
            ctx: ctx.clone(),
            outbound_calls: 0,
            call_started: Instant::now(),
            waited: Duration::ZERO,
            request: None,
            response: None,
        };
        let mut store = Store::new(image.pre.engine(), state);
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
        let instance = match image.pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
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
            instance,
            exports: image.exports,
            request_headers: None,
            response_headers: None,
            log: None,
            timeout,
            ctx,
            uses: 0,
        })
    }

    /// The store and the component instance, for taking a snapshot of its state.
    pub(crate) fn parts(&mut self) -> (&mut Store<HostState>, wasmtime::component::Instance) {
        (&mut self.store, self.instance)
    }

    /// Whether the guest has made a WASI call (its WASI context exists).
    pub(crate) fn used_wasi(&self) -> bool {
        self.store.data().wasi.is_some()
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

    /// Records the call that just ended in `weir_plugin_call_duration_seconds` (phase by
    /// its index in `PHASE_NAMES`).
    fn observe(&self, phase: usize) {
        let took = self.store.data().call_started.elapsed();
        self.ctx.series.durations[phase].observe(took.as_secs_f64());
    }

    fn failure(&self, phase: &str, error: &wasmtime::Error) -> PluginFailure {
        PluginFailure {
            plugin: self.ctx.name.clone(),
            kind: classify(error, self.store.data()),
            message: format!("{phase}: {error:#}"),
        }
    }

    /// Type-checks the export at `index` as a function of these types.
    fn func<P, R>(&mut self, index: ComponentExportIndex) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        self.instance
            .get_typed_func::<P, R>(&mut self.store, &index)
    }

    /// Calls `init`: the plugin checks its configuration.
    pub async fn init(&mut self) -> Result<Result<(), String>, PluginFailure> {
        self.begin();
        let result = match self.func::<(), (Result<(), String>,)>(self.exports.init) {
            Ok(f) => f.call_async(&mut self.store, ()).await.map(|(r,)| r),
            Err(e) => Err(e),
        };
        result.map_err(|e| self.failure("init", &e))
    }

    /// Calls `phases`.
    pub async fn phases(&mut self) -> Result<Vec<types::Phase>, PluginFailure> {
        self.begin();
        let result = match self.func::<(), (Vec<types::Phase>,)>(self.exports.phases) {
            Ok(f) => f.call_async(&mut self.store, ()).await.map(|(r,)| r),
            Err(e) => Err(e),
        };
        result.map_err(|e| self.failure("phases", &e))
    }

    /// Type-checks every phase function, so a plugin whose exports do not match the
    /// ABI is refused at load rather than failing its first request.
    pub(crate) fn check_exports(&mut self) -> Result<(), PluginFailure> {
        let e = self.exports;
        let checked = (|| {
            let _: RequestHeadersFn = self.func(e.on_request_headers)?;
            let _: ResponseHeadersFn = self.func(e.on_response_headers)?;
            let _: LogFn = self.func(e.on_log)?;
            self.func::<(Resource<types::Request>, &[u8]), (types::BodyAction,)>(
                e.on_request_body,
            )?;
            self.func::<(
                Resource<types::Request>,
                Resource<types::Response>,
                &[u8],
            ), (types::BodyAction,)>(e.on_response_body)?;
            wasmtime::Result::Ok(())
        })();
        checked.map_err(|error| self.failure("exports", &error))
    }

    /// Lends the messages to the store for a call.
    fn lend(&mut self, request: &mut Option<RequestView>, response: &mut Option<ResponseView>) {
        let data = self.store.data_mut();
        data.request = request.take();
        data.response = response.take();
    }

    /// Takes the messages back after a call (whether it succeeded or not).
    fn reclaim(&mut self, request: &mut Option<RequestView>, response: &mut Option<ResponseView>) {
        let data = self.store.data_mut();
        *request = data.request.take();
        *response = data.response.take();
    }

    /// Calls `on-request-headers` with the request lent to the store.
    pub(crate) async fn on_request_headers(
        &mut self,
        request: &mut Option<RequestView>,
    ) -> Result<types::Action, PluginFailure> {
        self.begin();
        self.lend(request, &mut None);
        let func = match self.request_headers {
            Some(f) => Ok(f),
            None => self.func(self.exports.on_request_headers),
        };
        let result = match func {
            Ok(f) => {
                self.request_headers = Some(f);
                f.call_async(&mut self.store, (request_handle(),))
                    .await
                    .map(|(r,)| r)
            }
            Err(e) => Err(e),
        };
        self.reclaim(request, &mut None);
        self.observe(0);
        result.map_err(|e| self.failure("on-request-headers", &e))
    }

    /// Calls `on-request-body` with the request lent to the store.
    pub(crate) async fn on_request_body(
        &mut self,
        request: &mut Option<RequestView>,
        body: &[u8],
    ) -> Result<types::BodyAction, PluginFailure> {
        self.begin();
        self.lend(request, &mut None);
        let result = match self.func::<(Resource<types::Request>, &[u8]), (types::BodyAction,)>(
            self.exports.on_request_body,
        ) {
            Ok(f) => f
                .call_async(&mut self.store, (request_handle(), body))
                .await
                .map(|(r,)| r),
            Err(e) => Err(e),
        };
        self.reclaim(request, &mut None);
        self.observe(1);
        result.map_err(|e| self.failure("on-request-body", &e))
    }

    /// Calls `on-response-headers` with both messages lent to the store.
    pub(crate) async fn on_response_headers(
        &mut self,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
    ) -> Result<types::Action, PluginFailure> {
        self.begin();
        self.lend(request, response);
        let func = match self.response_headers {
            Some(f) => Ok(f),
            None => self.func(self.exports.on_response_headers),
        };
        let result = match func {
            Ok(f) => {
                self.response_headers = Some(f);
                f.call_async(&mut self.store, (request_handle(), response_handle()))
                    .await
                    .map(|(r,)| r)
            }
            Err(e) => Err(e),
        };
        self.reclaim(request, response);
        self.observe(2);
        result.map_err(|e| self.failure("on-response-headers", &e))
    }

    /// Calls `on-response-body` with both messages lent to the store.
    pub(crate) async fn on_response_body(
        &mut self,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
        body: &[u8],
    ) -> Result<types::BodyAction, PluginFailure> {
        self.begin();
        self.lend(request, response);
        let result = match self.func::<
            (Resource<types::Request>, Resource<types::Response>, &[u8]),
            (types::BodyAction,),
        >(self.exports.on_response_body)
        {
            Ok(f) => f
                .call_async(&mut self.store, (request_handle(), response_handle(), body))
                .await
                .map(|(r,)| r),
            Err(e) => Err(e),
        };
        self.reclaim(request, response);
        self.observe(3);
        result.map_err(|e| self.failure("on-response-body", &e))
    }

    /// Calls `on-log` with both messages lent to the store (read-only).
    pub(crate) async fn on_log(
        &mut self,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
    ) -> Result<(), PluginFailure> {
        self.begin();
        self.lend(request, response);
        let func = match self.log {
            Some(f) => Ok(f),
            None => self.func(self.exports.on_log),
        };
        let result = match func {
            Ok(f) => {
                self.log = Some(f);
                f.call_async(&mut self.store, (request_handle(), response_handle()))
                    .await
            }
            Err(e) => Err(e),
        };
        self.reclaim(request, response);
        self.observe(4);
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
