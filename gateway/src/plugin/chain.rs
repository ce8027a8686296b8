//! Running a route's plugin chain for one request: request phases in chain order,
//! response phases in reverse (the onion), each plugin's instance created on first use
//! and kept for the request's later phases, edits applied to the real message, failures
//! turned into a 5xx or a skipped plugin by the plugin's `on_error` policy.
//!
//! On a local response (a plugin answered, or a failure denied the request), the
//! response phases of the plugins *before* that plugin still run, in reverse order; the
//! plugin that answered and those after it are not called again.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;

use super::bindings::types;
use super::{ChainEntry, FailureKind, Instance, PluginFailure};
use crate::config::OnError;

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

/// A response written by a plugin (or by the gateway for a failed plugin).
#[derive(Debug)]
pub struct LocalReply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// What the request phases decided.
#[derive(Debug)]
pub enum RequestFlow {
    /// Forward the (edited) request.
    Continue,
    /// Answer with this instead; the failure, if a plugin failed.
    Respond(LocalReply, Option<PluginFailure>),
}

/// What the response phases decided.
#[derive(Debug)]
pub enum ResponseFlow {
    /// Send the (edited) response.
    Continue,
    /// Replace it with this; the failure, if a plugin failed.
    Replace(LocalReply, Option<PluginFailure>),
}

/// What the body phases decided.
#[derive(Debug)]
pub enum BodyFlow {
    /// Go on with this body.
    Continue(Bytes),
    /// Answer with this instead; the failure, if a plugin failed.
    Respond(LocalReply, Option<PluginFailure>),
}

/// The state of one request's pass through a chain.
#[derive(Debug)]
pub struct ChainRun {
    chain: Arc<[ChainEntry]>,
    instances: Vec<Option<Instance>>,
    /// Entries whose request side was passed (their response phases run).
    reached: usize,
    head: Option<types::RequestHead>,
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
    pub scheme: &'a str,
    /// The host the request is for.
    pub authority: &'a str,
    /// Client IP.
    pub client: &'a str,
    /// Route name.
    pub route: &'a str,
}

impl ChainRun {
    /// Starts a pass through `chain`.
    pub fn new(chain: Arc<[ChainEntry]>) -> ChainRun {
        let instances = (0..chain.len()).map(|_| None).collect();
        ChainRun {
            chain,
            instances,
            reached: 0,
            head: None,
        }
    }

    async fn instance(&mut self, index: usize) -> Result<&mut Instance, PluginFailure> {
        if self.instances[index].is_none() {
            self.instances[index] = Some(self.chain[index].instantiate().await?);
        }
        Ok(self.instances[index]
            .as_mut()
            .expect("the instance was just created"))
    }

    /// Runs every request-headers phase in chain order.
    pub async fn request_headers(&mut self, req: RequestParts<'_>) -> RequestFlow {
        let mut head = types::RequestHead {
            method: req.method.as_str().to_owned(),
            scheme: req.scheme.to_owned(),
            authority: req.authority.to_owned(),
            path: req.path_and_query.as_str().to_owned(),
            headers: to_wit(req.headers),
            client_address: req.client.to_owned(),
            route: req.route.to_owned(),
        };
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in 0..self.chain.len() {
            self.reached = index;
            let entry = &chain[index];
            if !entry.plugin.phases.request_headers {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_request_headers(&head).await,
                Err(failure) => Err(failure),
            };
            match called {
                Ok(types::RequestAction::Continue(edits)) => {
                    edit_wit_headers(&mut head.headers, &edits.headers);
                    apply_header_edits(req.headers, edits.headers, &entry.plugin.name);
                    let edits_path_changed = edits.path.is_some();
                    if let Some(path) = edits.path {
                        match PathAndQuery::try_from(path.as_str()) {
                            Ok(pq) if path.starts_with('/') => *req.path_and_query = pq,
                            _ => {
                                tracing::warn!(plugin = %entry.plugin.name, %path, "plugin set an invalid path; ignored")
                            }
                        }
                    }
                    if edits_path_changed {
                        head.path = req.path_and_query.as_str().to_owned();
                    }
                }
                Ok(types::RequestAction::Respond(local)) => {
                    self.head = Some(head);
                    return RequestFlow::Respond(local_reply(local, &entry.plugin.name), None);
                }
                Err(failure) => {
                    self.instances[index] = None; // never entered again
                    if let Some(reply) = self.failed(entry, failure.kind, &failure) {
                        self.head = Some(head);
                        return RequestFlow::Respond(reply, Some(failure));
                    }
                }
            }
        }
        self.reached = self.chain.len();
        self.head = Some(head);
        RequestFlow::Continue
    }

    /// Runs the response-headers phases of the plugins that were passed, in reverse.
    pub async fn response_headers(
        &mut self,
        status: &mut StatusCode,
        headers: &mut HeaderMap,
    ) -> ResponseFlow {
        let Some(head) = self.head.take() else {
            return ResponseFlow::Continue;
        };
        let flow = self.response_headers_with(&head, status, headers).await;
        self.head = Some(head);
        flow
    }

    async fn response_headers_with(
        &mut self,
        head: &types::RequestHead,
        status: &mut StatusCode,
        headers: &mut HeaderMap,
    ) -> ResponseFlow {
        let mut response = types::ResponseHead {
            status: status.as_u16(),
            headers: to_wit(headers),
        };
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in (0..self.reached).rev() {
            let entry = &chain[index];
            if !entry.plugin.phases.response_headers {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_response_headers(head, &response).await,
                Err(failure) => Err(failure),
            };
            match called {
                Ok(types::ResponseAction::Continue(edits)) => {
                    apply_header_edits(headers, edits.headers, &entry.plugin.name);
                    if let Some(code) = edits.status.and_then(|s| StatusCode::from_u16(s).ok()) {
                        *status = code;
                    }
                    response.status = status.as_u16();
                    response.headers = to_wit(headers);
                }
                Ok(types::ResponseAction::Respond(local)) => {
                    return ResponseFlow::Replace(local_reply(local, &entry.plugin.name), None);
                }
                Err(failure) => {
                    self.instances[index] = None;
                    if let Some(reply) = self.failed(entry, failure.kind, &failure) {
                        return ResponseFlow::Replace(reply, Some(failure));
                    }
                }
            }
        }
        ResponseFlow::Continue
    }

    fn passed(&self) -> std::ops::Range<usize> {
        0..self.reached
    }

    /// The body limit when a passed plugin implements the request-body phase: the
    /// smallest `max_body_bytes` among them.
    pub fn request_body_limit(&self) -> Option<u64> {
        self.passed()
            .filter(|&i| self.chain[i].plugin.phases.request_body)
            .map(|i| self.chain[i].settings.max_body_bytes)
            .min()
    }

    /// The body limit when a passed plugin implements the response-body phase.
    pub fn response_body_limit(&self) -> Option<u64> {
        self.passed()
            .filter(|&i| self.chain[i].plugin.phases.response_body)
            .map(|i| self.chain[i].settings.max_body_bytes)
            .min()
    }

    /// Whether a passed plugin implements the log phase.
    pub fn wants_log(&self) -> bool {
        self.passed().any(|i| self.chain[i].plugin.phases.log)
    }

    /// Runs the request-body phases in chain order over the whole request body.
    pub async fn request_body(&mut self, body: Bytes) -> BodyFlow {
        let Some(head) = self.head.take() else {
            return BodyFlow::Continue(body);
        };
        let mut body = body;
        let mut flow = None;
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in self.passed() {
            let entry = &chain[index];
            if !entry.plugin.phases.request_body {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_request_body(&head, &body).await,
                Err(failure) => Err(failure),
            };
            if let Some(stop) = self.body_outcome(index, entry, called, &mut body) {
                flow = Some(stop);
                break;
            }
        }
        self.head = Some(head);
        flow.unwrap_or(BodyFlow::Continue(body))
    }

    /// Runs the response-body phases, in reverse chain order, over the whole response
    /// body.
    pub async fn response_body(
        &mut self,
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
    ) -> BodyFlow {
        let Some(head) = self.head.take() else {
            return BodyFlow::Continue(body);
        };
        let response = types::ResponseHead {
            status: status.as_u16(),
            headers: to_wit(headers),
        };
        let mut body = body;
        let mut flow = None;
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in self.passed().rev() {
            let entry = &chain[index];
            if !entry.plugin.phases.response_body {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_response_body(&head, &response, &body).await,
                Err(failure) => Err(failure),
            };
            if let Some(stop) = self.body_outcome(index, entry, called, &mut body) {
                flow = Some(stop);
                break;
            }
        }
        self.head = Some(head);
        flow.unwrap_or(BodyFlow::Continue(body))
    }

    fn body_outcome(
        &mut self,
        index: usize,
        entry: &ChainEntry,
        called: Result<types::BodyAction, PluginFailure>,
        body: &mut Bytes,
    ) -> Option<BodyFlow> {
        match called {
            Ok(types::BodyAction::Continue(Some(new))) => {
                *body = Bytes::from(new);
                None
            }
            Ok(types::BodyAction::Continue(None)) => None,
            Ok(types::BodyAction::Respond(local)) => Some(BodyFlow::Respond(
                local_reply(local, &entry.plugin.name),
                None,
            )),
            Err(failure) => {
                self.instances[index] = None;
                self.failed(entry, failure.kind, &failure)
                    .map(|reply| BodyFlow::Respond(reply, Some(failure)))
            }
        }
    }

    /// Runs the log phases in chain order, after the response was written. Failures are
    /// logged and counted; nothing can change the response any more.
    pub async fn log(mut self, status: StatusCode, headers: HeaderMap) {
        let Some(head) = self.head.take() else { return };
        let response = types::ResponseHead {
            status: status.as_u16(),
            headers: to_wit(&headers),
        };
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in self.passed() {
            let entry = &chain[index];
            if !entry.plugin.phases.log {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_log(&head, &response).await,
                Err(failure) => Err(failure),
            };
            if let Err(failure) = called {
                self.instances[index] = None;
                entry.plugin.stats.failed(failure.kind);
                tracing::warn!(plugin = %entry.plugin.name, kind = %failure.kind, error = %failure.message, "plugin failed in the log phase");
            }
        }
    }

    /// Logs and counts a failure; the reply to send when the policy denies.
    fn failed(
        &self,
        entry: &ChainEntry,
        kind: FailureKind,
        failure: &PluginFailure,
    ) -> Option<LocalReply> {
        entry.plugin.stats.failed(kind);
        let version = &entry.plugin.version[..entry.plugin.version.len().min(12)];
        match entry.settings.on_error {
            OnError::Allow => {
                tracing::warn!(plugin = %entry.plugin.name, version, kind = %kind, error = %failure.message, "plugin failed; skipped (on_error = allow)");
                None
            }
            OnError::Deny => {
                tracing::error!(plugin = %entry.plugin.name, version, kind = %kind, error = %failure.message, "plugin failed; request denied (on_error = deny)");
                let (status, reason) = match kind {
                    FailureKind::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "plugin timeout"),
                    _ => (StatusCode::INTERNAL_SERVER_ERROR, "plugin failure"),
                };
                let mut headers = HeaderMap::new();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Some(LocalReply {
                    status,
                    headers,
                    body: Bytes::from(format!("{{\"error\":\"{reason}\"}}\n")),
                })
            }
        }
    }
}

fn to_wit(headers: &HeaderMap) -> Vec<types::Header> {
    headers
        .iter()
        .map(|(name, value)| types::Header {
            name: name.as_str().to_owned(),
            value: value.as_bytes().to_vec(),
        })
        .collect()
}

/// Applies edits to the copy of the headers plugins are shown, the same way
/// [`apply_header_edits`] does to the real ones (so it need not be rebuilt).
fn edit_wit_headers(headers: &mut Vec<types::Header>, edits: &types::HeaderEdits) {
    if edits.remove.is_empty() && edits.set.is_empty() && edits.append.is_empty() {
        return;
    }
    let valid = |h: &types::Header| {
        HeaderName::from_bytes(h.name.as_bytes()).is_ok()
            && HeaderValue::from_bytes(&h.value).is_ok()
    };
    headers.retain(|h| {
        !edits.remove.iter().any(|r| r.eq_ignore_ascii_case(&h.name))
            && !edits
                .set
                .iter()
                .any(|s| valid(s) && s.name.eq_ignore_ascii_case(&h.name))
    });
    for h in edits.set.iter().chain(&edits.append).filter(|h| valid(h)) {
        headers.push(types::Header {
            name: h.name.to_ascii_lowercase(),
            value: h.value.clone(),
        });
    }
}

fn header(plugin: &str, name: &str, value: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    match (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_bytes(value),
    ) {
        (Ok(n), Ok(v)) => Some((n, v)),
        _ => {
            tracing::warn!(plugin, name, "plugin set an invalid header; ignored");
            None
        }
    }
}

fn apply_header_edits(headers: &mut HeaderMap, edits: types::HeaderEdits, plugin: &str) {
    for name in &edits.remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
    for types::Header { name, value } in &edits.set {
        if let Some((n, v)) = header(plugin, name, value) {
            headers.insert(n, v);
        }
    }
    for types::Header { name, value } in &edits.append {
        if let Some((n, v)) = header(plugin, name, value) {
            headers.append(n, v);
        }
    }
}

fn local_reply(local: types::LocalResponse, plugin: &str) -> LocalReply {
    let status = StatusCode::from_u16(local.status).unwrap_or_else(|_| {
        tracing::warn!(
            plugin,
            status = local.status,
            "plugin answered with an invalid status; sending 500"
        );
        StatusCode::INTERNAL_SERVER_ERROR
    });
    let mut headers = HeaderMap::new();
    for types::Header { name, value } in &local.headers {
        if let Some((n, v)) = header(plugin, name, value) {
            headers.append(n, v);
        }
    }
    LocalReply {
        status,
        headers,
        body: Bytes::from(local.body),
    }
}
