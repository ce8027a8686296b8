//! Running a route's plugin chain for one request: request phases in chain order,
//! response phases in reverse (the onion), each plugin's instance taken on first use,
//! kept for the request's later phases and handed back after its last one (a
//! single-phase plugin's right after its call), edits applied to the real message, failures
//! turned by the plugin's `on_error` policy into a denial (which the gateway answers,
//! see [`crate::error`]) or a skipped plugin.
//!
//! On a local response (a plugin answered, or a failure denied the request), the
//! response phases of the plugins *before* that plugin still run, in reverse order; the
//! plugin that answered and those after it are not called again.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use http::header::{HeaderMap, HeaderValue};
use http::uri::PathAndQuery;

use super::bindings::types;
use super::edits::local_head;
use super::message::{
    CacheMark, CacheSteering, QueuedEdit, RequestInfo, RequestView, ResponseView,
};
use super::one_call::given_fields;
use super::{ChainEntry, FailureKind, Instance, PluginFailure};
use crate::config::OnError;
use crate::reply::LocalReply;
use crate::telemetry::metrics::Refusal;

mod body_phases;

impl Drop for ChainRun {
    /// Instances that served this request without failing go back to their entry
    /// (reused under worker isolation, dropped under request isolation).
    fn drop(&mut self) {
        for (entry, instance) in self.chain.iter().zip(self.instances.drain(..)) {
            if let Some(instance) = instance {
                entry.release(instance);
            }
        }
    }
}

/// How a phase's pass through the chain ended.
#[derive(Debug)]
pub enum Flow<T = ()> {
    /// Go on with the (edited) message; a body phase hands back the body.
    Continue(T),
    /// A plugin answered with its own response.
    Respond(LocalReply),
    /// A plugin failed and its policy (`on_error = "deny"`) stops the request; the
    /// gateway answers for it.
    Deny(PluginFailure),
}

/// The state of one request's pass through a chain.
#[derive(Debug)]
pub struct ChainRun {
    chain: Arc<[ChainEntry]>,
    instances: Vec<Option<Box<Instance>>>,
    /// Entries whose request side was passed (their response phases run).
    reached: usize,
    /// The request as the request phases left it, kept read-only for the response and
    /// log phases (only when a passed plugin has one).
    request: Option<RequestView>,
    /// What the request phases were told about the request.
    info: Option<Arc<RequestInfo>>,
    /// Response edits the request phases queued, applied in the response-headers pass.
    queued: Vec<QueuedEdit>,
    /// What the request phases told the response cache.
    cache: CacheSteering,
    /// Whether a response-headers phase kept the response out of the cache.
    response_uncacheable: bool,
}

/// The request as the request phases see and change it.
#[derive(Debug)]
pub struct RequestParts<'a> {
    /// Method.
    pub method: &'a http::Method,
    /// Headers (edited in place).
    pub headers: &'a mut HeaderMap,
    /// Path and query (replaced when a plugin rewrites it).
    pub path_and_query: &'a mut PathAndQuery,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The host the request is for (its `Host`), if it named one.
    pub authority: Option<HeaderValue>,
    /// Client IP.
    pub client: HeaderValue,
    /// Route name.
    pub route: Arc<str>,
}

impl ChainRun {
    /// Starts a pass through `chain`.
    pub fn new(chain: Arc<[ChainEntry]>) -> ChainRun {
        let instances = (0..chain.len()).map(|_| None).collect();
        ChainRun {
            chain,
            instances,
            reached: 0,
            request: None,
            info: None,
            queued: Vec::new(),
            cache: CacheSteering::default(),
            response_uncacheable: false,
        }
    }

    /// What the request phases told the response cache: parts for the key, or to stay
    /// out (see `request.cache-key-append` and `request.set-uncacheable`).
    pub fn cache_steering(&self) -> &CacheSteering {
        &self.cache
    }

    /// Whether a response-headers phase kept the response out of the cache
    /// (`response.set-uncacheable`).
    pub fn response_uncacheable(&self) -> bool {
        self.response_uncacheable
    }

    /// The request's instance of entry `index`; a suspended entry is not called (see
    /// [`super::suspension`]).
    async fn instance(&mut self, index: usize) -> Result<&mut Instance, PluginFailure> {
        let entry = &self.chain[index];
        if entry.suspension.paused() {
            return Err(PluginFailure::suspended(&entry.plugin.name));
        }
        if self.instances[index].is_none() {
            self.instances[index] = Some(self.chain[index].instantiate_for_request().await?);
        }
        Ok(self.instances[index]
            .as_mut()
            .expect("the instance was just created"))
    }

    /// Runs every request-headers phase in chain order. The headers and path are lent
    /// to each plugin in turn and edited in place.
    pub async fn request_headers(&mut self, req: RequestParts<'_>) -> Flow {
        let info = Arc::new(RequestInfo {
            method: req.method.clone(),
            scheme: req.scheme,
            authority: req.authority,
            client: req.client,
            route: req.route,
        });
        let mut view = Some(RequestView::new(
            info,
            req.path_and_query.clone(),
            std::mem::take(req.headers),
            true,
        ));
        let flow = self.request_headers_with(&mut view).await;
        let view = view.expect("the request is always taken back after a call");
        *req.headers = view.headers;
        *req.path_and_query = view.path;
        self.queued = view.queued;
        self.cache = view.cache;
        self.info = Some(view.info);
        self.keep_request(req.headers, req.path_and_query);
        flow
    }

    async fn request_headers_with(&mut self, view: &mut Option<RequestView>) -> Flow {
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        // The time sent to one-crossing phases: read once, when the first needs it.
        let mut received_ns = None;
        for (index, entry) in chain.iter().enumerate() {
            self.reached = index;
            if let (Some(declared), Some(view)) = (&entry.declared, view.as_mut()) {
                declared.apply_to_request(&mut view.headers);
            }
            if !entry.phases.request_headers {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let mark = calling(view, index);
            let called = match (self.instance(index).await, &entry.reads) {
                (Ok(instance), Some(reads)) => {
                    let received_ns = *received_ns.get_or_insert_with(now_ns);
                    let given = given(reads, view, received_ns);
                    instance.on_request(view, given).await
                }
                (Ok(instance), None) => instance.on_request_headers(view).await,
                (Err(failure), _) => Err(failure),
            };
            let called = self.answered(index, called);
            if called.is_err() {
                undo_call(view, mark);
            }
            match called {
                Ok(None) => self.done_with(index, types::Phase::RequestHeaders),
                Ok(Some(reply)) => {
                    // The plugin that answered is not called again for this request.
                    self.done_with(index, types::Phase::Log);
                    return Flow::Respond(reply);
                }
                Err(failure) => {
                    self.instances[index] = None; // never entered again
                    if self.denies(entry, &failure) {
                        return Flow::Deny(failure);
                    }
                }
            }
        }
        self.reached = self.chain.len();
        Flow::Continue(())
    }

    /// Keeps a read-only copy of the request for the response and log phases, when a
    /// passed plugin has one of them.
    fn keep_request(&mut self, headers: &HeaderMap, path: &PathAndQuery) {
        let Some(info) = self.info.clone() else {
            return;
        };
        let later = self.passed().any(|i| {
            let phases = &self.chain[i].phases;
            phases.response_headers || phases.response_body || phases.log
        });
        self.request = later.then(|| RequestView::new(info, path.clone(), headers.clone(), false));
    }

    /// Whether [`ChainRun::response_headers`] has anything to do: a passed plugin with a
    /// response-headers phase or declared response edits, or a queued edit. Callers
    /// check it before boxing that future, so a chain of request-only plugins costs
    /// nothing there.
    pub fn edits_responses(&self) -> bool {
        let edits = |entry: &ChainEntry| {
            entry.phases.response_headers
                || entry
                    .declared
                    .as_ref()
                    .is_some_and(|declared| declared.edits_responses())
        };
        self.passed().any(|i| edits(&self.chain[i]))
            || self.queued.iter().any(|edit| edit.plugin < self.reached)
    }

    /// Runs the response-headers phases of the plugins that were passed, in reverse,
    /// with the response lent to each in turn and edited in place. Only worth calling
    /// when [`ChainRun::edits_responses`]; without, it changes nothing.
    pub async fn response_headers(
        &mut self,
        status: &mut StatusCode,
        headers: &mut HeaderMap,
    ) -> Flow {
        let mut request = self.request.take();
        let mut response = Some(ResponseView::new(*status, std::mem::take(headers), true));
        let flow = self
            .response_headers_with(&mut request, &mut response)
            .await;
        let response = response.expect("the response is always taken back after a call");
        *status = response.status;
        *headers = response.headers;
        self.response_uncacheable |= response.uncacheable;
        self.request = request;
        flow
    }

    async fn response_headers_with(
        &mut self,
        request: &mut Option<RequestView>,
        response: &mut Option<ResponseView>,
    ) -> Flow {
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in self.passed().rev() {
            let entry = &chain[index];
            if let Some(response) = response.as_mut() {
                if let Some(declared) = &entry.declared {
                    declared.apply_to_response(&mut response.headers);
                }
                for edit in self.queued.extract_if(.., |edit| edit.plugin == index) {
                    edit.apply(&mut response.headers);
                }
            }
            if !entry.phases.response_headers {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let uncacheable = response.as_ref().is_some_and(|r| r.uncacheable);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_response_headers(request, response).await,
                Err(failure) => Err(failure),
            };
            match self.answered(index, called) {
                Ok(None) => self.done_with(index, types::Phase::ResponseHeaders),
                Ok(Some(reply)) => return Flow::Respond(reply),
                Err(failure) => {
                    // What the failed call told the cache is dropped with it.
                    if let Some(response) = response.as_mut() {
                        response.uncacheable = uncacheable;
                    }
                    self.instances[index] = None;
                    if self.denies(entry, &failure) {
                        return Flow::Deny(failure);
                    }
                }
            }
        }
        Flow::Continue(())
    }

    /// Hands entry `index`'s instance back once the call it made in `phase` was its
    /// last for this request, instead of holding it until the request ends. Under
    /// worker isolation the next request then reuses it at once: a worker keeps one
    /// warm instance per single-phase plugin rather than one per request in flight,
    /// whose memories, scattered over the pool, cost every call cache and TLB misses.
    fn done_with(&mut self, index: usize, phase: types::Phase) {
        if self.chain[index].phases.any_after(phase) {
            return;
        }
        if let Some(instance) = self.instances[index].take() {
            self.chain[index].release(instance);
        }
    }

    fn passed(&self) -> std::ops::Range<usize> {
        0..self.reached
    }

    /// The body limit when a passed plugin implements the request-body phase: the
    /// smallest `max_body_bytes` among them.
    pub fn request_body_limit(&self) -> Option<u64> {
        self.passed()
            .filter(|&i| self.chain[i].phases.request_body)
            .map(|i| self.chain[i].settings.max_body_bytes)
            .min()
    }

    /// The body limit when a passed plugin implements the response-body phase.
    pub fn response_body_limit(&self) -> Option<u64> {
        self.passed()
            .filter(|&i| self.chain[i].phases.response_body)
            .map(|i| self.chain[i].settings.max_body_bytes)
            .min()
    }

    /// Whether a passed plugin implements the log phase.
    pub fn wants_log(&self) -> bool {
        self.passed().any(|i| self.chain[i].phases.log)
    }

    /// Runs the log phases in chain order, after the response was written. Failures are
    /// logged and counted; nothing can change the response any more.
    pub async fn log(mut self, status: StatusCode, headers: HeaderMap) {
        let mut request = self.request.take();
        let mut response = Some(ResponseView::new(status, headers, false));
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in self.passed() {
            let entry = &chain[index];
            if !entry.phases.log {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_log(&mut request, &mut response).await,
                Err(failure) => Err(failure),
            };
            match called {
                Ok(()) => entry.suspension.succeeded(),
                Err(failure) => {
                    self.instances[index] = None;
                    if self.counted(entry, &failure) && entry.ctx.may_log() {
                        tracing::warn!(plugin = %entry.plugin.name, kind = %failure.kind, error = %failure.message, "plugin failed in the log phase");
                    }
                }
            }
        }
    }

    /// Logs and counts a failure; whether the plugin's policy denies the request.
    /// A header phase's result with a local answer checked: `Some` when the plugin
    /// answered. A call that succeeded counts as one for the entry's suspension.
    fn answered(
        &self,
        index: usize,
        called: Result<types::Action, PluginFailure>,
    ) -> Result<Option<LocalReply>, PluginFailure> {
        let answered = match called? {
            types::Action::Continue => None,
            types::Action::Respond(local) => Some(self.local_reply(index, local)?),
        };
        self.chain[index].suspension.succeeded();
        Ok(answered)
    }

    /// Entry `index`'s local answer, checked: headers the gateway owns, hop-by-hop
    /// ones and invalid ones are dropped (and counted); a body larger than the plugin's
    /// `max_body_bytes` is a failure, so a plugin cannot make the gateway hold and send
    /// whatever its memory allows.
    fn local_reply(
        &self,
        index: usize,
        local: types::LocalResponse,
    ) -> Result<LocalReply, PluginFailure> {
        let entry = &self.chain[index];
        let plugin = entry.plugin.name.as_str();
        let limit = entry.settings.max_body_bytes;
        if local.body.len() as u64 > limit {
            entry.ctx.series.refused(Refusal::LocalResponse);
            return Err(PluginFailure {
                plugin: plugin.to_owned(),
                kind: FailureKind::Error,
                message: format!(
                    "its local response body of {} bytes is over max_body_bytes ({limit})",
                    local.body.len()
                ),
                spent: self.instances[index]
                    .as_ref()
                    .map_or(Duration::ZERO, |instance| instance.last_call_time()),
            });
        }
        Ok(local_head(
            local.status,
            local.headers,
            local.body,
            |refused| {
                entry.ctx.series.refused(Refusal::LocalResponse);
                if entry.ctx.may_log() {
                    tracing::warn!(plugin, "local response: {refused}");
                }
            },
        ))
    }

    /// Counts a failure (a suspended call as a refusal), and suspends the entry when
    /// its failures wasted too much time. Whether it was a real failure (worth a log
    /// line: a suspended call is not).
    fn counted(&self, entry: &ChainEntry, failure: &PluginFailure) -> bool {
        if failure.kind == FailureKind::Suspended {
            entry.ctx.series.refused(Refusal::Suspended);
            return false;
        }
        entry.plugin.stats.failed(failure.kind);
        if let Some(pause) = entry.suspension.failed(failure.spent) {
            tracing::error!(
                plugin = %entry.plugin.name,
                route = self.info.as_ref().map_or("", |info| &*info.route),
                pause = ?pause,
                "plugin suspended: its failed calls took over {:?} of CPU in a second, or \
                 over {:?} while failed calls took over {:?} of its worker's second",
                super::suspension::WASTE_BUDGET,
                super::suspension::WORKER_WASTE_SHARE,
                super::suspension::WORKER_WASTE_BUDGET,
            );
        }
        true
    }

    fn denies(&self, entry: &ChainEntry, failure: &PluginFailure) -> bool {
        let kind = failure.kind;
        if !self.counted(entry, failure) {
            return entry.settings.on_error == OnError::Deny;
        }
        let version = &entry.plugin.version[..entry.plugin.version.len().min(12)];
        if !entry.ctx.may_log() {
            return entry.settings.on_error == OnError::Deny;
        }
        match entry.settings.on_error {
            OnError::Allow => {
                tracing::warn!(plugin = %entry.plugin.name, version, kind = %kind, error = %failure.message, "plugin failed; skipped (on_error = allow)");
                false
            }
            OnError::Deny => {
                tracing::error!(plugin = %entry.plugin.name, version, kind = %kind, error = %failure.message, "plugin failed; request denied (on_error = deny)");
                true
            }
        }
    }
}

/// Where a request view stood before a call: how many edits were queued, and what the
/// cache had been told.
#[derive(Debug, Clone, Copy)]
struct CallMark {
    queued: usize,
    cache: CacheMark,
}

/// Stamps the request view with the plugin about to be called; where it stood before.
fn calling(view: &mut Option<RequestView>, index: usize) -> CallMark {
    let view = view
        .as_mut()
        .expect("the request is lent only during a call");
    view.caller = index;
    CallMark {
        queued: view.queued.len(),
        cache: view.cache.mark(),
    }
}

/// The wall clock in nanoseconds since the Unix epoch (`request-given.received-ns`).
fn now_ns() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// What a one-crossing request phase is sent: every field of the headers it reads.
fn given(
    reads: &[http::HeaderName],
    view: &Option<RequestView>,
    received_ns: u64,
) -> types::RequestGiven {
    let fields = view
        .as_ref()
        .map(|view| given_fields(reads, &view.headers))
        .filter(|fields| !fields.is_empty());
    types::RequestGiven {
        fields,
        received_ns,
    }
}

/// Drops what a failed call queued and told the cache.
fn undo_call(view: &mut Option<RequestView>, before: CallMark) {
    if let Some(view) = view.as_mut() {
        view.queued.truncate(before.queued);
        view.cache.undo(before.cache);
    }
}
