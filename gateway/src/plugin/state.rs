//! What a plugin instance's store holds, and the host functions the `weir:plugin` world
//! imports: logging, config, the key-value store, metrics, outbound HTTP.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{host, http_client, metrics, types};
use super::output::{GuestOutput, MAX_LINE, Stream};
use crate::telemetry;
use crate::telemetry::metrics::{MAX_PLUGIN_SERIES, PluginSeries, Refusal};
use prometheus::{Histogram, IntCounter};

/// Longest an outbound call may take, whatever the plugin asks for.
const MAX_OUTBOUND_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines a plugin may write per second; more are dropped.
const LOG_LINES_PER_SECOND: u32 = 100;
/// `host.log` calls one phase call may make (logged or dropped): past it the call fails.
const MAX_LOG_CALLS_PER_CALL: u32 = 100;
/// Largest outbound response body a plugin receives.
const MAX_OUTBOUND_BODY: usize = 4 * 1024 * 1024;

/// The client plugins' outbound calls go through.
pub(crate) type OutboundClient = Client<HttpConnector, Full<Bytes>>;

pub(crate) fn outbound_client() -> OutboundClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
}

/// Counters and histograms a plugin reports, by name: kept here for the admin API and
/// tests, and exported to Prometheus as `weir_plugin_NAME_total{plugin}` and
/// `weir_plugin_NAME{plugin}`.
#[derive(Debug)]
pub struct PluginMetrics {
    plugin: String,
    counters: Mutex<HashMap<String, (u64, Option<IntCounter>)>>,
    histograms: Mutex<HashMap<String, Observed>>,
}

/// A plugin histogram: observations, their sum, and its Prometheus series (none when the
/// name could not be exported).
type Observed = (u64, f64, Option<Histogram>);

impl PluginMetrics {
    pub(crate) fn new(plugin: &str) -> PluginMetrics {
        PluginMetrics {
            plugin: plugin.to_owned(),
            counters: Mutex::default(),
            histograms: Mutex::default(),
        }
    }

    /// Counter totals.
    pub fn counters(&self) -> HashMap<String, u64> {
        self.counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, (value, _))| (name.clone(), *value))
            .collect()
    }

    /// Histogram (count, sum) by name.
    pub fn histograms(&self) -> HashMap<String, (u64, f64)> {
        self.histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, (count, sum, _))| (name.clone(), (*count, *sum)))
            .collect()
    }
}

/// What every instance of one plugin-on-a-route shares.
#[derive(Debug)]
pub(crate) struct PluginContext {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) config_json: String,
    /// The plugin's part of the key-value store.
    pub(crate) kv: super::kv_host::PluginKv,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) max_outbound_calls: u32,
    pub(crate) metrics: Arc<PluginMetrics>,
    pub(crate) http: OutboundClient,
    pub(crate) log_window: Mutex<(Instant, u32)>,
    pub(crate) logs_dropped: AtomicU64,
    pub(crate) series: PluginSeries,
    /// The engine's epoch tick, for turning the CPU deadline into ticks.
    pub(crate) tick: super::engine::Tick,
}

impl PluginContext {
    /// Whether one more log line fits this second's budget. A chatty plugin cannot
    /// flood the log: past LOG_LINES_PER_SECOND lines in a second, its lines are dropped
    /// until the next second (and counted).
    pub(crate) fn may_log(&self) -> bool {
        let mut window = self
            .log_window
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        if window.1 > LOG_LINES_PER_SECOND {
            self.logs_dropped.fetch_add(1, Ordering::Relaxed);
            self.series.logs_dropped.inc();
            return false;
        }
        true
    }

    /// The first 12 hex digits of the version, for log lines.
    pub(crate) fn short_version(&self) -> &str {
        &self.version[..self.version.len().min(12)]
    }
}

/// The data of one instance's store.
pub(crate) struct HostState {
    /// Built on the guest's first WASI call: most phase calls make none, and a context
    /// costs several RNG seedings and allocations.
    pub(crate) wasi: Option<WasiCtx>,
    pub(crate) table: ResourceTable,
    pub(crate) limits: MemoryLimit,
    pub(crate) ctx: Arc<PluginContext>,
    pub(crate) outbound_calls: u32,
    /// When the current phase call started, and how much of it was spent waiting in
    /// host calls (which does not count against the CPU deadline).
    pub(crate) call_started: Instant,
    pub(crate) waited: Duration,
    /// The CPU deadline of each call: the route's `timeout`, or the longer load budget
    /// while the gateway instantiates the plugin and runs its `init` at load.
    pub(crate) budget: Duration,
    /// `host.log` calls made by the current call.
    pub(crate) logged: u32,
    /// The messages lent for the current phase call.
    pub(crate) request: Option<super::message::RequestView>,
    pub(crate) response: Option<super::message::ResponseView>,
    /// What the guest declared with `host.declare-edits`. Only the gateway's call of
    /// `init` reads it (right after); a declaration at any other time changes nothing.
    pub(crate) declared: Option<Arc<super::message::DeclaredEdits>>,
    /// Which request the instance serves (`host.request-serial`): 1 for a fresh
    /// instance's first, one more for each later one.
    pub(crate) serial: u64,
    /// A phase call is under way (`request-serial` and `fail` mean something).
    pub(crate) in_phase: bool,
    /// The message of the current phase call's `host.fail`, if it called it.
    pub(crate) failed: Option<String>,
    /// The header names its edits used, kept for later calls.
    pub(crate) names: super::edits::HeaderNames,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let plugin = &self.ctx;
        let wasi = self.wasi.get_or_insert_with(|| guest_wasi(plugin));
        WasiCtxView {
            ctx: wasi,
            table: &mut self.table,
        }
    }
}

/// The guest's WASI context: no preopens, no environment, no network; stdout and stderr
/// go to the gateway log.
fn guest_wasi(plugin: &Arc<PluginContext>) -> WasiCtx {
    WasiCtx::builder()
        .stdout(GuestOutput {
            ctx: plugin.clone(),
            stream: Stream::Stdout,
        })
        .stderr(GuestOutput {
            ctx: plugin.clone(),
            stream: Stream::Stderr,
        })
        .build()
}

/// Caps linear memory and remembers whether the cap was hit, so the failure is reported
/// as memory exhaustion rather than a generic trap.
pub(crate) struct MemoryLimit {
    pub(crate) max_bytes: usize,
    pub(crate) exhausted: bool,
}

impl ResourceLimiter for MemoryLimit {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            self.exhausted = true;
            wasmtime::bail!("plugin memory limit of {} bytes reached", self.max_bytes);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, mut message: String) -> wasmtime::Result<()> {
        self.logged += 1;
        if self.logged > MAX_LOG_CALLS_PER_CALL {
            // Only a flood logs this much in one call: end it as a failure, so the
            // plugin is handled (and, if it goes on, suspended) like a loop.
            return Err(wasmtime::format_err!(
                "log flood: more than {MAX_LOG_CALLS_PER_CALL} host.log calls in one call"
            ));
        }
        if !self.ctx.may_log() {
            return Ok(());
        }
        if message.len() > MAX_LINE {
            let cut = message.floor_char_boundary(MAX_LINE);
            let dropped = message.len() - cut;
            message.truncate(cut);
            message.push_str(&format!(" [{dropped} more bytes cut]"));
        }
        let (plugin, version) = (&self.ctx.name, self.ctx.short_version());
        match level {
            host::Level::Trace => {
                tracing::trace!(target: "weir::plugin", plugin, version, "{message}")
            }
            host::Level::Debug => {
                tracing::debug!(target: "weir::plugin", plugin, version, "{message}")
            }
            host::Level::Info => {
                tracing::info!(target: "weir::plugin", plugin, version, "{message}")
            }
            host::Level::Warn => {
                tracing::warn!(target: "weir::plugin", plugin, version, "{message}")
            }
            host::Level::Error => {
                tracing::error!(target: "weir::plugin", plugin, version, "{message}")
            }
        }
        Ok(())
    }

    fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.ctx.config_json.clone())
    }

    fn declare_edits(
        &mut self,
        request: Vec<types::HeaderEdit>,
        response: Vec<types::HeaderEdit>,
    ) -> wasmtime::Result<Result<(), types::EditError>> {
        Ok(super::message::DeclaredEdits::parse(request, response)
            .map(|declared| self.declared = Some(Arc::new(declared))))
    }

    fn request_serial(&mut self) -> wasmtime::Result<u64> {
        Ok(if self.in_phase { self.serial } else { 0 })
    }

    fn fail(&mut self, mut message: String) -> wasmtime::Result<()> {
        if self.in_phase && self.failed.is_none() {
            if message.len() > MAX_LINE {
                message.truncate(message.floor_char_boundary(MAX_LINE));
            }
            self.failed = Some(message);
        }
        Ok(())
    }
}

impl metrics::Host for HostState {
    fn counter_add(&mut self, name: String, value: u64) -> wasmtime::Result<()> {
        let metrics = &self.ctx.metrics;
        let mut counters = metrics
            .counters
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if counters.len() < MAX_PLUGIN_SERIES || counters.contains_key(&name) {
            let entry = counters.entry(name).or_insert_with_key(|name| {
                (0, telemetry::metrics::plugin_counter(&metrics.plugin, name))
            });
            entry.0 = entry.0.saturating_add(value);
            if let Some(counter) = &entry.1 {
                counter.inc_by(value);
            }
        }
        Ok(())
    }

    fn histogram_observe(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        if !value.is_finite() {
            return Ok(());
        }
        let metrics = &self.ctx.metrics;
        let mut histograms = metrics
            .histograms
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if histograms.len() < MAX_PLUGIN_SERIES || histograms.contains_key(&name) {
            let entry = histograms.entry(name).or_insert_with_key(|name| {
                (
                    0,
                    0.0,
                    telemetry::metrics::plugin_histogram(&metrics.plugin, name),
                )
            });
            entry.0 += 1;
            entry.1 += value;
            if let Some(histogram) = &entry.2 {
                histogram.observe(value);
            }
        }
        Ok(())
    }
}

impl HostState {
    /// Checks one outbound request as `call` and `call-all` do (a valid `http://` URL,
    /// its host allowed, a call left in this request's `max_outbound_calls`), counts it,
    /// and builds it with its capped timeout. A refused request is not counted.
    fn outbound(
        &mut self,
        request: http_client::OutboundRequest,
    ) -> Result<(http::Request<Full<Bytes>>, Duration), http_client::HttpError> {
        use http_client::HttpError;
        let uri: http::Uri = request
            .url
            .parse()
            .map_err(|e| HttpError::InvalidRequest(format!("bad url: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(HttpError::InvalidRequest(
                "only http:// URLs are supported".to_owned(),
            ));
        }
        let Some(authority) = uri.authority() else {
            return Err(HttpError::InvalidRequest("the url has no host".to_owned()));
        };
        let host = authority.host().to_ascii_lowercase();
        let host_port = authority.as_str().to_ascii_lowercase();
        if !self
            .ctx
            .allowed_hosts
            .iter()
            .any(|allowed| *allowed == host || *allowed == host_port)
        {
            return Err(HttpError::NotAllowed(host_port));
        }
        if self.outbound_calls >= self.ctx.max_outbound_calls {
            self.ctx.series.refused(Refusal::OutboundCalls);
            return Err(HttpError::LimitExceeded);
        }
        self.outbound_calls += 1;

        let mut builder = http::Request::builder()
            .method(request.method.as_str())
            .uri(uri);
        for types::Header { name, value } in &request.headers {
            builder = builder.header(name.as_str(), value.as_slice());
        }
        let req = builder
            .body(Full::new(Bytes::from(request.body)))
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let limit = Duration::from_millis(u64::from(request.timeout_ms)).min(MAX_OUTBOUND_TIMEOUT);
        Ok((req, limit))
    }
}

/// Sends one checked outbound request and reads its whole response (up to
/// MAX_OUTBOUND_BODY), giving up after `limit`. Runs inside the plugin call's own
/// future: a call dropped half-way (the client went away) drops the exchange with it.
async fn exchange(
    client: OutboundClient,
    req: http::Request<Full<Bytes>>,
    limit: Duration,
) -> Result<http_client::OutboundResponse, http_client::HttpError> {
    use http_client::HttpError;
    let whole = async {
        let response = client
            .request(req)
            .await
            .map_err(|e| HttpError::Failed(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = http_body_util::Limited::new(body, MAX_OUTBOUND_BODY)
            .collect()
            .await
            .map_err(|e| HttpError::Failed(e.to_string()))?
            .to_bytes();
        Ok(http_client::OutboundResponse {
            status: parts.status.as_u16(),
            headers: parts
                .headers
                .iter()
                .map(|(name, value)| types::Header {
                    name: name.as_str().to_owned(),
                    value: value.as_bytes().to_vec(),
                })
                .collect(),
            body: body.to_vec(),
        })
    };
    match tokio::time::timeout(limit, whole).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout),
    }
}

impl http_client::Host for HostState {
    async fn call(
        &mut self,
        request: http_client::OutboundRequest,
    ) -> wasmtime::Result<Result<http_client::OutboundResponse, http_client::HttpError>> {
        let (req, limit) = match self.outbound(request) {
            Ok(checked) => checked,
            Err(e) => return Ok(Err(e)),
        };
        let started = Instant::now();
        let result = exchange(self.ctx.http.clone(), req, limit).await;
        self.waited += started.elapsed();
        Ok(result)
    }

    async fn call_all(
        &mut self,
        requests: Vec<http_client::OutboundRequest>,
    ) -> wasmtime::Result<Vec<Result<http_client::OutboundResponse, http_client::HttpError>>> {
        // Checked and counted in list order first, so which requests a limit refuses
        // does not depend on timing; then all that passed go at once, in this future
        // (no task is spawned that could outlive the call).
        let checked: Vec<_> = requests
            .into_iter()
            .map(|request| self.outbound(request))
            .collect();
        let client = &self.ctx.http;
        let started = Instant::now();
        let results = futures_util::future::join_all(checked.into_iter().map(|checked| {
            let client = client.clone();
            async move {
                match checked {
                    Ok((req, limit)) => exchange(client, req, limit).await,
                    Err(e) => Err(e),
                }
            }
        }))
        .await;
        self.waited += started.elapsed();
        Ok(results)
    }
}
