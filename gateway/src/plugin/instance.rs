//! One plugin instance: a store with the plugin's limits, instantiated from the
//! pre-linked component, and its phase calls, each under the CPU deadline. Failures are
//! classified (trap, timeout, memory, error) for the failure policy and the counters.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap, UpdateDeadline};

use wasmtime::component::{ComponentExportIndex, ComponentNamedList, Lift, Lower, TypedFunc};

use super::bindings::types;
use super::exports::{
    Exports, HeaderReadsFn, LogFn, RequestBodyFn, RequestFn, RequestHeadersFn, ResponseBodyFn,
    ResponseHeadersFn,
};
use super::message::{DeclaredEdits, RequestView, ResponseView, request_handle, response_handle};
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
    /// The guest time the failed call took (what the failure wasted).
    pub spent: Duration,
}

impl PluginFailure {
    /// A call not made: the route's plugin is suspended after wasteful failures.
    pub(crate) fn suspended(plugin: &str) -> PluginFailure {
        PluginFailure {
            plugin: plugin.to_owned(),
            kind: FailureKind::Suspended,
            message: "suspended after repeated failures".to_owned(),
            spent: Duration::ZERO,
        }
    }
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
    request: Option<RequestFn>,
    response_headers: Option<ResponseHeadersFn>,
    log: Option<LogFn>,
    ctx: Arc<PluginContext>,
    /// Requests served (worker isolation recycles an instance after a bound).
    pub(crate) uses: u32,
    /// Whether calls run on a fiber (the plugin can wait) or directly.
    on_fiber: bool,
    /// The guest time of the last call.
    last_call: Duration,
    /// Every call made into it returned. A call abandoned mid-way (the request's
    /// future dropped while the guest waited in `http-call`) leaves the guest's memory
    /// half-way through its code: such an instance is never reused.
    pub(crate) finished: bool,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("plugin", &self.ctx.name)
            .finish_non_exhaustive()
    }
}

/// Load-time calls (instantiating a plugin at load, its `init`, asking its phases) are off
/// the request path, and may meet a busy machine: a reload beside full traffic, a test
/// suite on two cores. The deadline is wall-clock time, so they get at least this long;
/// an `init` that never returns is still cut.
const LOAD_TIMEOUT: Duration = Duration::from_secs(2);

/// The deadline for load-time calls of a plugin whose per-call `timeout` is this.
pub(crate) fn load_budget(timeout: Duration) -> Duration {
    timeout.max(LOAD_TIMEOUT)
}

impl Instance {
    /// Instantiates `plugin` for the route entry `ctx`, with its memory cap and deadline
    /// (instantiation itself runs under it too).
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
            budget: timeout,
            logged: 0,
            request: None,
            response: None,
            declared: None,
            serial: 1,
            in_phase: false,
            failed: None,
            names: Default::default(),
        };
        let mut store = Store::new(image.pre.engine(), state);
        store.limiter(|s| &mut s.limits);
        let tick = ctx.tick.clone();
        // The deadline measures the guest's own time: time spent waiting in host calls
        // (an outbound request) is given back.
        store.epoch_deadline_callback(move |ctx| {
            let state = ctx.data();
            let used = state.call_started.elapsed().saturating_sub(state.waited);
            if used >= state.budget {
                return Err(Trap::Interrupt.into());
            }
            let left = state.budget - used;
            Ok(UpdateDeadline::Continue(tick.deadline_ticks(left)))
        });
        store.set_epoch_deadline(ctx.tick.deadline_ticks(timeout));
        let started = Instant::now();
        let instantiated = if image.on_fiber {
            image.pre.instantiate_async(&mut store).await
        } else {
            image.pre.instantiate(&mut store)
        };
        let instance = match instantiated {
            Ok(instance) => instance,
            Err(e) => {
                let kind = classify(&e, store.data());
                return Err(PluginFailure {
                    plugin: ctx.name.clone(),
                    kind,
                    message: format!("instantiation failed: {e:#}"),
                    spent: started.elapsed(),
                });
            }
        };
        Ok(Instance {
            store,
            instance,
            exports: image.exports,
            request_headers: None,
            request: None,
            response_headers: None,
            log: None,
            ctx,
            uses: 0,
            on_fiber: image.on_fiber,
            last_call: Duration::ZERO,
            finished: true,
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

    /// The guest time of the last call (time waiting in host calls excluded).
    pub(crate) fn last_call_time(&self) -> Duration {
        self.last_call
    }

    /// Prepares a reused instance for a new request.
    pub(crate) fn reset_for_request(&mut self) {
        let state = self.store.data_mut();
        state.outbound_calls = 0;
        state.serial += 1;
        self.uses += 1;
    }

    fn begin(&mut self) {
        let state = self.store.data_mut();
        state.call_started = Instant::now();
        state.waited = Duration::ZERO;
        state.logged = 0;
        let budget = state.budget;
        self.store
            .set_epoch_deadline(self.ctx.tick.deadline_ticks(budget));
    }

    /// Sets the CPU deadline of later calls (see [`load_budget`]).
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.store.data_mut().budget = timeout;
    }

    fn failure(&self, phase: &str, error: &wasmtime::Error) -> PluginFailure {
        PluginFailure {
            plugin: self.ctx.name.clone(),
            kind: classify(error, self.store.data()),
            message: format!("{phase}: {error:#}"),
            spent: self.last_call,
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

    /// [`Instance::func`], kept in `slot` so a reused instance checks it once.
    fn cached<P, R>(
        &mut self,
        slot: fn(&mut Instance) -> &mut Option<TypedFunc<P, R>>,
        index: ComponentExportIndex,
    ) -> wasmtime::Result<TypedFunc<P, R>>
    where
        P: ComponentNamedList + Lower,
        R: ComponentNamedList + Lift,
    {
        if let Some(func) = *slot(self) {
            return Ok(func);
        }
        let func = self.func(index)?;
        *slot(self) = Some(func);
        Ok(func)
    }

    /// One call into the guest: under a fresh CPU deadline, with the messages lent to
    /// the store for its duration, timed into `weir_plugin_call_duration_seconds` when
    /// it is a phase (`series`, an index into `PHASE_NAMES`), failures classified.
    async fn call<P, R>(
        &mut self,
        name: &'static str,
        series: Option<usize>,
        func: wasmtime::Result<TypedFunc<P, R>>,
        params: P,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
    ) -> Result<R, PluginFailure>
    where
        P: ComponentNamedList + Lower + Send + Sync,
        R: ComponentNamedList + Lift + Send + Sync + 'static,
    {
        self.begin();
        self.finished = false;
        let data = self.store.data_mut();
        data.request = request.take();
        data.response = response.take();
        data.in_phase = series.is_some();
        data.failed = None;
        let result = match func {
            // Boxed: the fiber call's future is large, and every caller up to the
            // pipeline would otherwise hold (and move) it inline.
            Ok(func) if self.on_fiber => Box::pin(func.call_async(&mut self.store, params)).await,
            Ok(func) => func.call(&mut self.store, params),
            Err(e) => Err(e),
        };
        self.finished = true;
        let data = self.store.data_mut();
        *request = data.request.take();
        *response = data.response.take();
        data.in_phase = false;
        let failed = data.failed.take();
        let took = data.call_started.elapsed();
        self.last_call = took.saturating_sub(data.waited);
        if let Some(series) = series {
            self.ctx.series.durations[series].observe(took.as_secs_f64());
        }
        let result = result.map_err(|e| self.failure(name, &e))?;
        match failed {
            // The plugin said its call failed (`host.fail`): what it returned is
            // ignored. The call itself finished, so the instance stays usable.
            Some(message) => Err(PluginFailure {
                plugin: self.ctx.name.clone(),
                kind: FailureKind::Error,
                message: format!("{name}: {message}"),
                spent: self.last_call,
            }),
            None => Ok(result),
        }
    }

    /// Calls `init`: the plugin checks its configuration. `Ok` carries the header edits
    /// it declared (`host.declare-edits`), if any.
    pub(crate) async fn init(
        &mut self,
    ) -> Result<Result<Option<Arc<DeclaredEdits>>, String>, PluginFailure> {
        let func = self.func(self.exports.init);
        self.store.data_mut().declared = None;
        let (result,): (Result<(), String>,) = self
            .call("init", None, func, (), &mut None, &mut None)
            .await?;
        Ok(result.map(|()| self.store.data_mut().declared.take()))
    }

    /// Calls `phases`.
    pub async fn phases(&mut self) -> Result<Vec<types::Phase>, PluginFailure> {
        let func = self.func(self.exports.phases);
        self.call("phases", None, func, (), &mut None, &mut None)
            .await
            .map(|(r,)| r)
    }

    /// Calls `header-reads` when the plugin has it (since 0.1.8; `None` before).
    pub(crate) async fn header_reads(&mut self) -> Result<Option<Vec<String>>, PluginFailure> {
        let Some(one) = self.exports.one_crossing else {
            return Ok(None);
        };
        let func: wasmtime::Result<HeaderReadsFn> = self.func(one.header_reads);
        self.call("header-reads", None, func, (), &mut None, &mut None)
            .await
            .map(|(r,)| Some(r))
    }

    /// Type-checks every phase function, so a plugin whose exports do not match the
    /// ABI is refused at load rather than failing its first request.
    pub(crate) fn check_exports(&mut self) -> Result<(), PluginFailure> {
        let e = self.exports;
        let checked = (|| {
            let _: RequestHeadersFn = self.func(e.on_request_headers)?;
            let _: RequestBodyFn<'_> = self.func(e.on_request_body)?;
            let _: ResponseHeadersFn = self.func(e.on_response_headers)?;
            let _: ResponseBodyFn<'_> = self.func(e.on_response_body)?;
            let _: LogFn = self.func(e.on_log)?;
            if let Some(one) = e.one_crossing {
                let _: HeaderReadsFn = self.func(one.header_reads)?;
                let _: RequestFn = self.func(one.on_request)?;
            }
            wasmtime::Result::Ok(())
        })();
        checked.map_err(|error| self.failure("exports", &error))
    }

    /// Calls `on-request-headers` with the request lent to the store.
    pub(crate) async fn on_request_headers(
        &mut self,
        request: &mut Option<RequestView>,
    ) -> Result<types::Action, PluginFailure> {
        let func = self.cached(|i| &mut i.request_headers, self.exports.on_request_headers);
        let params = (request_handle(),);
        self.call(
            "on-request-headers",
            Some(series::REQUEST_HEADERS),
            func,
            params,
            request,
            &mut None,
        )
        .await
        .map(|(r,)| r)
    }

    /// Calls `on-request` (the plugin has it: [`Exports::one_crossing`]) with the
    /// request lent to the store and `given`, then makes the header edits it returned.
    /// A returned edit the gateway refuses fails the call.
    pub(crate) async fn on_request(
        &mut self,
        request: &mut Option<RequestView>,
        given: types::RequestGiven,
    ) -> Result<types::Action, PluginFailure> {
        let index = self.exports.one_crossing.map(|one| one.on_request);
        let func = match index {
            Some(index) => self.cached(|i| &mut i.request, index),
            None => Err(wasmtime::format_err!("the plugin has no `on-request`")),
        };
        let params = (request_handle(), given);
        let (outcome,) = self
            .call(
                "on-request",
                Some(series::REQUEST_HEADERS),
                func,
                params,
                request,
                &mut None,
            )
            .await?;
        let view = request
            .as_mut()
            .expect("the request is taken back after a call");
        match self.store.data_mut().edit_returned(view, outcome.edits) {
            Ok(()) => Ok(outcome.action),
            Err(why) => Err(PluginFailure {
                plugin: self.ctx.name.clone(),
                kind: FailureKind::Error,
                message: format!("on-request returned edits it may not make: {why}"),
                spent: self.last_call,
            }),
        }
    }

    /// Calls `on-request-body` with the request lent to the store.
    pub(crate) async fn on_request_body(
        &mut self,
        request: &mut Option<RequestView>,
        body: &[u8],
    ) -> Result<types::BodyAction, PluginFailure> {
        let func: wasmtime::Result<RequestBodyFn<'_>> = self.func(self.exports.on_request_body);
        let params = (request_handle(), body);
        self.call(
            "on-request-body",
            Some(series::REQUEST_BODY),
            func,
            params,
            request,
            &mut None,
        )
        .await
        .map(|(r,)| r)
    }

    /// Calls `on-response-headers` with both messages lent to the store.
    pub(crate) async fn on_response_headers(
        &mut self,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
    ) -> Result<types::Action, PluginFailure> {
        let func = self.cached(
            |i| &mut i.response_headers,
            self.exports.on_response_headers,
        );
        let params = (request_handle(), response_handle());
        self.call(
            "on-response-headers",
            Some(series::RESPONSE_HEADERS),
            func,
            params,
            request,
            response,
        )
        .await
        .map(|(r,)| r)
    }

    /// Calls `on-response-body` with both messages lent to the store.
    pub(crate) async fn on_response_body(
        &mut self,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
        body: &[u8],
    ) -> Result<types::BodyAction, PluginFailure> {
        let func: wasmtime::Result<ResponseBodyFn<'_>> = self.func(self.exports.on_response_body);
        let params = (request_handle(), response_handle(), body);
        self.call(
            "on-response-body",
            Some(series::RESPONSE_BODY),
            func,
            params,
            request,
            response,
        )
        .await
        .map(|(r,)| r)
    }

    /// Calls `on-log` with both messages lent to the store (read-only).
    pub(crate) async fn on_log(
        &mut self,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
    ) -> Result<(), PluginFailure> {
        let func = self.cached(|i| &mut i.log, self.exports.on_log);
        let params = (request_handle(), response_handle());
        self.call("on-log", Some(series::LOG), func, params, request, response)
            .await
    }
}

/// The phases' indices into `PHASE_NAMES`, the `phase` label of
/// `weir_plugin_call_duration_seconds`.
mod series {
    pub(super) const REQUEST_HEADERS: usize = 0;
    pub(super) const REQUEST_BODY: usize = 1;
    pub(super) const RESPONSE_HEADERS: usize = 2;
    pub(super) const RESPONSE_BODY: usize = 3;
    pub(super) const LOG: usize = 4;
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
