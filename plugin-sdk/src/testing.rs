//! A fake gateway for native unit tests of plugins: the host calls of
//! [`host`](crate::host) land here when a plugin is built for the host target
//! (`cargo test`) instead of `wasm32-wasip2`.
//!
//! ```
//! use weir_plugin_sdk::testing;
//! use weir_plugin_sdk::host::kv;
//!
//! testing::reset();
//! assert_eq!(kv::increment("hits", 1, None), Ok(1));
//! assert_eq!(kv::increment("hits", 1, None), Ok(2));
//! testing::with(|fake| assert_eq!(fake.kv.len(), 1));
//! ```
//!
//! State is per thread, so tests running in parallel do not see each other's.
//!
//! [`Harness`] runs whole requests through a plugin, as the gateway would: its phases in
//! order with one per-request state, its queued and declared edits applied, an upstream
//! response of your choosing, and an [`Outcome`] to assert on.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::host::Level;
use crate::host::http::{HttpError, OutboundRequest, OutboundResponse};
use crate::host::kv::KvFull;
use crate::plugin::{Phase, Plugin, active_phases, parse_config};
use crate::{Action, Body, Headers, LocalResponse, Request, Response, StaticEdits};

/// The fake gateway's state: inspect it in assertions, or prepare it (config, canned
/// HTTP responses) before calling the plugin.
#[derive(Debug, Default)]
pub struct FakeHost {
    /// The JSON config [`host::config_json`](crate::host::config_json) returns.
    pub config: String,
    /// Lines logged, in order.
    pub logs: Vec<(Level, String)>,
    /// The key-value store: value and expiry.
    pub kv: HashMap<String, (Vec<u8>, Option<Instant>)>,
    /// Entries the store takes before writes of new keys fail with
    /// [`KvFull`](crate::host::kv::KvFull), as at the gateway's `[kv] max_entries`
    /// (`None`: no bound).
    pub kv_max_entries: Option<usize>,
    /// Counter totals by name.
    pub counters: HashMap<String, u64>,
    /// Histogram observations by name.
    pub histograms: HashMap<String, Vec<f64>>,
    /// Canned responses for outbound calls, by URL; an unknown URL is `NotAllowed`.
    pub http: HashMap<String, OutboundResponse>,
    /// Canned failures for outbound calls, by URL (checked before `http`).
    pub http_errors: HashMap<String, HttpError>,
    /// Outbound requests made, in order.
    pub http_calls: Vec<OutboundRequest>,
    /// What `host.request-serial` answers: which request the plugin is serving. A
    /// [`Harness`] moves it on for each request it runs.
    pub request_serial: u64,
    /// The message of the last phase that failed (returned `Err`), until taken.
    pub failure: Option<String>,
}

thread_local! {
    static FAKE: RefCell<FakeHost> = RefCell::new(FakeHost {
        config: "{}".to_owned(),
        ..FakeHost::default()
    });
}

/// Runs `f` with this thread's fake host.
pub fn with<R>(f: impl FnOnce(&mut FakeHost) -> R) -> R {
    FAKE.with(|fake| f(&mut fake.borrow_mut()))
}

/// Clears this thread's fake host (config back to `{}`).
pub fn reset() {
    with(|fake| {
        *fake = FakeHost {
            config: "{}".to_owned(),
            ..FakeHost::default()
        }
    });
}

fn expiry(ttl_ms: Option<u64>) -> Option<Instant> {
    ttl_ms.map(|ms| Instant::now() + Duration::from_millis(ms))
}

impl FakeHost {
    /// Makes `url` answer outbound calls with `response`.
    pub fn respond_to(&mut self, url: &str, response: OutboundResponse) {
        self.http.insert(url.to_owned(), response);
    }

    /// Makes outbound calls to `url` fail with `error` (a timeout, a refused
    /// connection).
    pub fn fail_to(&mut self, url: &str, error: HttpError) {
        self.http_errors.insert(url.to_owned(), error);
    }

    pub(crate) fn kv_get(&mut self, key: &str) -> Option<Vec<u8>> {
        match self.kv.get(key) {
            Some((_, Some(at))) if *at <= Instant::now() => {
                self.kv.remove(key);
                None
            }
            Some((value, _)) => Some(value.clone()),
            None => None,
        }
    }

    /// Whether a write of `key` needs room the store does not have.
    fn kv_full(&mut self, key: &str) -> Result<(), KvFull> {
        let full = self
            .kv_max_entries
            .is_some_and(|max| self.kv_get(key).is_none() && self.kv.len() >= max);
        if full { Err(KvFull) } else { Ok(()) }
    }

    pub(crate) fn kv_set(
        &mut self,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvFull> {
        self.kv_full(key)?;
        self.kv.insert(key.to_owned(), (value, expiry(ttl_ms)));
        Ok(())
    }

    pub(crate) fn kv_increment(
        &mut self,
        key: &str,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> Result<i64, KvFull> {
        self.kv_full(key)?;
        let current = self.kv_get(key);
        let expires = match current {
            Some(_) => self.kv.get(key).and_then(|(_, at)| *at),
            None => expiry(ttl_ms),
        };
        let old = current
            .and_then(|v| std::str::from_utf8(&v).ok()?.parse::<i64>().ok())
            .unwrap_or(0);
        let new = old.saturating_add(delta);
        self.kv
            .insert(key.to_owned(), (new.to_string().into_bytes(), expires));
        Ok(new)
    }

    pub(crate) fn kv_cas(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvFull> {
        if self.kv_get(key).as_deref() != expected {
            return Ok(false);
        }
        self.kv_set(key, new, ttl_ms)?;
        Ok(true)
    }

    pub(crate) fn http_call(
        &mut self,
        request: &OutboundRequest,
    ) -> Result<OutboundResponse, HttpError> {
        self.http_calls.push(request.clone());
        if let Some(error) = self.http_errors.get(&request.url) {
            return Err(error.clone());
        }
        self.http
            .get(&request.url)
            .cloned()
            .ok_or_else(|| HttpError::NotAllowed(request.url.clone()))
    }
}

/// Runs requests through plugin `P` the way the gateway does, against this thread's
/// fake host: built once from a config (as for a route), then each [`Harness::run`] is
/// one request with its own [`Plugin::State`].
///
/// ```
/// use weir_plugin_sdk::{Action, Plugin, PhaseResult, Request, plugin, testing::Harness};
///
/// struct Tag;
///
/// #[plugin]
/// impl Plugin for Tag {
///     type Config = ();
///     type State = ();
///     fn new(_: ()) -> Result<Self, String> {
///         Ok(Tag)
///     }
///     fn on_request_headers(&self, request: &mut Request<'_>, _: &mut ()) -> PhaseResult {
///         request.response_headers.set("x-tag", "1")?;
///         Ok(Action::Continue)
///     }
/// }
///
/// let mut harness = Harness::<Tag>::new(serde_json::json!(null));
/// let outcome = harness.run(Request::new("GET", "/"));
/// assert_eq!(outcome.status(), 200);
/// assert_eq!(outcome.header("x-tag"), Some("1"));
/// ```
#[derive(Debug)]
pub struct Harness<P: Plugin> {
    plugin: Result<P, String>,
    phases: Vec<Phase>,
    edits: StaticEdits,
    upstream: Upstream,
}

/// What the harness's upstream answers: status, headers, body.
type Upstream = (u16, Vec<(String, Vec<u8>)>, Vec<u8>);

impl<P: Plugin> Harness<P> {
    /// Resets this thread's fake host, gives it `config` (the route's `config` table
    /// as JSON; `null` for none) and builds the plugin, as the gateway does at load:
    /// a config `new` refuses, or whose [`Plugin::static_edits`] the gateway would
    /// refuse, is a [`Harness::build_error`].
    pub fn new(config: serde_json::Value) -> Harness<P> {
        reset();
        let json = if config.is_null() {
            "{}".to_owned()
        } else {
            config.to_string()
        };
        with(|fake| fake.config = json.clone());
        let plugin = parse_config(&json)
            .and_then(P::new)
            .and_then(|p| p.static_edits().check().map(|()| p));
        let (phases, edits) = match &plugin {
            Ok(p) => (active_phases(Some(p)), p.static_edits()),
            Err(_) => (Vec::new(), StaticEdits::default()),
        };
        Harness {
            plugin,
            phases,
            edits,
            upstream: (200, Vec::new(), Vec::new()),
        }
    }

    /// The plugin, built.
    ///
    /// # Panics
    /// If the config was refused (see [`Harness::build_error`]).
    pub fn plugin(&self) -> &P {
        match &self.plugin {
            Ok(p) => p,
            Err(e) => panic!("the plugin was not built: {e}"),
        }
    }

    /// Why the config was refused (the message the gateway would give), if it was.
    pub fn build_error(&self) -> Option<&str> {
        self.plugin.as_ref().err().map(String::as_str)
    }

    /// The phases the gateway would call with this config.
    pub fn phases(&self) -> &[Phase] {
        &self.phases
    }

    /// What the upstream answers from now on (by default 200, no headers, no body).
    pub fn upstream(&mut self, response: Response<'static>, body: impl Into<Vec<u8>>) {
        self.upstream = (response.status(), response.headers.all(), body.into());
    }

    /// One request without a body.
    ///
    /// # Panics
    /// If the config was refused.
    pub fn run(&mut self, request: Request<'static>) -> Outcome {
        self.run_with_body(request, Vec::new())
    }

    /// One request with a body (the request-body phase runs when the plugin has it).
    ///
    /// # Panics
    /// If the config was refused.
    pub fn run_with_body(
        &mut self,
        mut request: Request<'static>,
        body: impl Into<Vec<u8>>,
    ) -> Outcome {
        let plugin = match &self.plugin {
            Ok(p) => p,
            Err(e) => panic!("the plugin was not built: {e}"),
        };
        let logged = with(|fake| {
            fake.request_serial += 1;
            fake.failure = None;
            fake.logs.len()
        });
        let has = |phase| self.phases.contains(&phase);
        let mut state = P::State::default();
        let mut outcome = Outcome::default();
        for edit in &self.edits.request {
            let _ = edit.apply(&mut request.headers);
        }
        if has(Phase::RequestHeaders) {
            match phase_result(plugin.on_request_headers(&mut request, &mut state)) {
                Ok(Action::Continue) => {}
                // Answered here, the plugin is not called again for this request (its
                // queued edits do not reach its own answer).
                Ok(Action::Respond(local)) => {
                    outcome.answered_locally = true;
                    return outcome.finish(local, logged);
                }
                Err(e) => return outcome.failed(e, logged),
            }
        }
        let mut answer = None;
        let mut body = Body::new(body);
        if answer.is_none() && has(Phase::RequestBody) {
            match phase_result(plugin.on_request_body(&mut request, &mut body, &mut state)) {
                Ok(Action::Continue) => {}
                Ok(Action::Respond(local)) => answer = Some(local),
                Err(e) => return outcome.failed(e, logged),
            }
        }
        let (mut response, mut response_body) = match answer {
            // Answered from the body phase: its response phases still run on it.
            Some(local) => {
                outcome.answered_locally = true;
                let mut response = Response::new(local.status);
                response.headers = local.headers;
                (response, local.body)
            }
            None => {
                outcome.cache_key = request.cache_key.clone();
                outcome.uncacheable = request.uncacheable;
                outcome.upstream_request = Some(UpstreamRequest {
                    method: request.method().to_owned(),
                    path: request.path().to_owned(),
                    headers: Headers::from_pairs(request.headers.all()),
                    body: body.to_vec(),
                });
                let (status, headers, body) = self.upstream.clone();
                let mut response = Response::new(status);
                response.headers = Headers::from_pairs(headers);
                (response, body)
            }
        };
        request
            .response_headers
            .apply_recorded(&mut response.headers);
        for edit in &self.edits.response {
            let _ = edit.apply(&mut response.headers);
        }
        if has(Phase::ResponseHeaders) {
            match phase_result(plugin.on_response_headers(&request, &mut response, &mut state)) {
                Ok(Action::Continue) => outcome.uncacheable |= response.is_uncacheable(),
                Ok(Action::Respond(local)) => return outcome.finish(local, logged),
                Err(e) => return outcome.failed(e, logged),
            }
        }
        if has(Phase::ResponseBody) {
            let mut body = Body::new(response_body);
            match phase_result(plugin.on_response_body(&request, &response, &mut body, &mut state))
            {
                Ok(Action::Continue) => response_body = body.into_bytes(),
                Ok(Action::Respond(local)) => return outcome.finish(local, logged),
                Err(e) => return outcome.failed(e, logged),
            }
        }
        if has(Phase::Log) {
            plugin.on_log(&request, &response, state);
        }
        let local = LocalResponse {
            status: response.status(),
            headers: Headers::from_pairs(response.headers.all()),
            body: response_body,
        };
        outcome.finish(local, logged)
    }
}

/// A phase's result, with a failure reported through the fake host (`host.fail`)
/// counted as one.
fn phase_result(result: crate::PhaseResult) -> crate::PhaseResult {
    let failed = with(|fake| fake.failure.take());
    match (result, failed) {
        (Err(e), _) => Err(e),
        (Ok(_), Some(message)) => Err(crate::Error::msg(message)),
        (Ok(action), None) => Ok(action),
    }
}

/// The request as it went upstream, after the plugin's edits.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamRequest {
    /// The method.
    pub method: String,
    /// The path with query, as rewritten.
    pub path: String,
    /// The headers.
    pub headers: Headers<'static>,
    /// The body, as changed.
    pub body: Vec<u8>,
}

/// What the client got from one [`Harness::run`], and what went upstream.
#[derive(Debug, Default)]
pub struct Outcome {
    status: u16,
    headers: Headers<'static>,
    body: Vec<u8>,
    upstream_request: Option<UpstreamRequest>,
    answered_locally: bool,
    failure: Option<String>,
    logs: Vec<(Level, String)>,
    cache_key: Vec<String>,
    uncacheable: bool,
}

impl Outcome {
    fn finish(mut self, response: LocalResponse, logged: usize) -> Outcome {
        self.status = response.status;
        self.headers = response.headers;
        self.body = response.body;
        self.logs = with(|fake| fake.logs[logged.min(fake.logs.len())..].to_vec());
        self
    }

    /// A failed phase: the gateway answers 500 (with `on_error = "deny"`, the default).
    fn failed(mut self, error: crate::Error, logged: usize) -> Outcome {
        self.failure = Some(error.message().to_owned());
        self.finish(LocalResponse::new(500), logged)
    }

    /// The status the client got.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A response header, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get_str(name)
    }

    /// The response headers.
    pub fn headers(&self) -> &Headers<'static> {
        &self.headers
    }

    /// The response body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// The response body as text (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The response body parsed as JSON.
    ///
    /// # Panics
    /// If it is not JSON.
    pub fn body_json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("the body is not JSON ({e}): {}", self.body_str()))
    }

    /// The request as it went upstream; `None` if the plugin answered or failed.
    pub fn upstream_request(&self) -> Option<&UpstreamRequest> {
        self.upstream_request.as_ref()
    }

    /// Whether the plugin answered the request itself.
    pub fn answered_locally(&self) -> bool {
        self.answered_locally
    }

    /// Why a phase failed (its `Err`), if one did; the client then got a 500.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// What the plugin logged during this request.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// The parts the request phases appended to the response cache's key
    /// ([`Request::cache_key_append`]), for a request that went upstream.
    pub fn cache_key(&self) -> &[String] {
        &self.cache_key
    }

    /// Whether the gateway's response cache would stay out: the request phases called
    /// [`Request::set_uncacheable`] (for a request that went upstream), or
    /// `on_response_headers` called [`Response::set_uncacheable`] and went on.
    ///
    /// ```
    /// use weir_plugin_sdk::{Action, Plugin, PhaseResult, Request, Response, plugin};
    /// use weir_plugin_sdk::testing::Harness;
    ///
    /// /// Caches per tenant; never a response the upstream marks personal.
    /// struct PerTenant;
    ///
    /// #[plugin]
    /// impl Plugin for PerTenant {
    ///     type Config = ();
    ///     type State = ();
    ///     fn new(_: ()) -> Result<Self, String> {
    ///         Ok(PerTenant)
    ///     }
    ///     fn on_request_headers(&self, request: &mut Request<'_>, _: &mut ()) -> PhaseResult {
    ///         match request.headers.get_str("x-tenant").map(str::to_owned) {
    ///             Some(tenant) => request.cache_key_append(&tenant)?,
    ///             None => request.set_uncacheable()?,
    ///         }
    ///         Ok(Action::Continue)
    ///     }
    ///     fn on_response_headers(
    ///         &self,
    ///         _: &Request<'_>,
    ///         response: &mut Response<'_>,
    ///         _: &mut (),
    ///     ) -> PhaseResult {
    ///         if response.headers.contains("x-personal") {
    ///             response.set_uncacheable()?;
    ///         }
    ///         Ok(Action::Continue)
    ///     }
    /// }
    ///
    /// let mut harness = Harness::<PerTenant>::new(serde_json::json!(null));
    /// let outcome = harness.run(Request::new("GET", "/").with_header("x-tenant", "acme"));
    /// assert_eq!(outcome.cache_key(), ["acme"]);
    /// assert!(!outcome.uncacheable());
    /// assert!(harness.run(Request::new("GET", "/")).uncacheable());
    /// harness.upstream(Response::new(200).with_header("x-personal", "1"), "mine");
    /// let outcome = harness.run(Request::new("GET", "/").with_header("x-tenant", "acme"));
    /// assert!(outcome.uncacheable());
    /// assert_eq!(outcome.body_str(), "mine");
    /// ```
    pub fn uncacheable(&self) -> bool {
        self.uncacheable
    }
}
