//! The body phases of a chain run: the request body in chain order, the response body
//! in reverse, each over the whole buffered body, with the same failure policy as the
//! headers phases (see the parent module).

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::StatusCode;
use http::header::HeaderMap;
use http::uri::PathAndQuery;

use super::super::ChainEntry;
use super::super::PluginFailure;
use super::super::bindings::types;
use super::super::message::{RequestView, ResponseView};
use super::{ChainRun, Flow, calling, undo_call};

impl ChainRun {
    /// Runs the request-body phases in chain order over the whole request body. The
    /// request's headers and path can still be edited.
    pub async fn request_body(
        &mut self,
        headers: &mut HeaderMap,
        path: &mut PathAndQuery,
        body: Bytes,
    ) -> Flow<Bytes> {
        let Some(info) = self.info.clone() else {
            return Flow::Continue(body);
        };
        let mut view = RequestView::new(info, path.clone(), std::mem::take(headers), true);
        view.queued = std::mem::take(&mut self.queued);
        view.cache = std::mem::take(&mut self.cache);
        let mut request = Some(view);
        let mut body = body;
        let mut flow = None;
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in self.passed() {
            let entry = &chain[index];
            if !entry.phases.request_body {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let mark = calling(&mut request, index);
            let called = match self.instance(index).await {
                Ok(instance) => instance.on_request_body(&mut request, &body).await,
                Err(failure) => Err(failure),
            };
            if called.is_err() {
                undo_call(&mut request, mark);
            }
            if let Some(stop) =
                self.body_outcome(index, entry, types::Phase::RequestBody, called, &mut body)
            {
                flow = Some(stop);
                break;
            }
        }
        let request = request.expect("the request is always taken back after a call");
        *headers = request.headers;
        *path = request.path;
        self.queued = request.queued;
        self.cache = request.cache;
        self.keep_request(headers, path);
        flow.unwrap_or(Flow::Continue(body))
    }

    /// Runs the response-body phases, in reverse chain order, over the whole response
    /// body. The response head is read-only here.
    pub async fn response_body(
        &mut self,
        status: StatusCode,
        headers: &mut HeaderMap,
        body: Bytes,
    ) -> Flow<Bytes> {
        let mut request = self.request.take();
        let mut response = Some(ResponseView::new(status, std::mem::take(headers), false));
        let mut body = body;
        let mut flow = None;
        // One handle on the chain for the loop, not a clone of each entry.
        let chain = self.chain.clone();
        for index in self.passed().rev() {
            let entry = &chain[index];
            if !entry.phases.response_body {
                continue;
            }
            entry.plugin.stats.calls.fetch_add(1, Ordering::Relaxed);
            let called = match self.instance(index).await {
                Ok(instance) => {
                    instance
                        .on_response_body(&mut request, &mut response, &body)
                        .await
                }
                Err(failure) => Err(failure),
            };
            if let Some(stop) =
                self.body_outcome(index, entry, types::Phase::ResponseBody, called, &mut body)
            {
                flow = Some(stop);
                break;
            }
        }
        *headers = response
            .expect("the response is always taken back after a call")
            .headers;
        self.request = request;
        flow.unwrap_or(Flow::Continue(body))
    }

    fn body_outcome(
        &mut self,
        index: usize,
        entry: &ChainEntry,
        phase: types::Phase,
        called: Result<types::BodyAction, PluginFailure>,
        body: &mut Bytes,
    ) -> Option<Flow<Bytes>> {
        let called = called.and_then(|action| match action {
            types::BodyAction::Continue(new) => Ok(Ok(new)),
            types::BodyAction::Respond(local) => self.local_reply(index, local).map(Err),
        });
        if called.is_ok() {
            entry.suspension.succeeded();
        }
        match called {
            Ok(Ok(Some(new))) => {
                *body = Bytes::from(new);
                self.done_with(index, phase);
                None
            }
            Ok(Ok(None)) => {
                self.done_with(index, phase);
                None
            }
            Ok(Err(reply)) => Some(Flow::Respond(reply)),
            Err(failure) => {
                self.instances[index] = None;
                self.denies(entry, &failure).then(|| Flow::Deny(failure))
            }
        }
    }
}
