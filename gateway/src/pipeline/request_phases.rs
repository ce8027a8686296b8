//! The request side of the plugins (request-headers, request-body) and the mirror.

use std::ops::ControlFlow;

use http::{HeaderValue, header};
use http_body_util::{Either, Full};

use super::exchange::Exchange;
use super::{Flow, answered, buffering, mirror, plugins_flow};
use crate::error::ProxyError;
use crate::plugin::{ChainRun, RequestParts};
use crate::request_body::RequestBody;
use crate::router::MirrorTarget;
use crate::upstream::UpstreamBody;

impl Exchange<'_> {
    /// The plugins' request-headers phases, in chain order, editing the head in place.
    pub(super) async fn request_headers(&mut self) -> Flow<()> {
        let chain = &self.snapshot.chains[self.route.index];
        if chain.is_empty() {
            return ControlFlow::Continue(());
        }
        let mut pass = Box::new(ChainRun::new(chain.clone()));
        // Boxed, as every plugin phase: only routes with plugins carry their state in
        // the request's future, which every request moves (see `handle`).
        let flow = Box::pin(pass.request_headers(RequestParts {
            method: &self.head.method,
            headers: &mut self.head.headers,
            path_and_query: &mut self.path_and_query,
            scheme: self.conn.scheme,
            authority: self.original_host.clone(),
            client: self.client_ip.clone(),
            route: self.route.name.clone(),
        }))
        .await;
        self.plugins = Some(pass);
        plugins_flow(flow)
    }

    /// The plugins' request-body phases over the whole body, read up to their smallest
    /// limit. Without such a phase the body streams.
    pub(super) async fn request_body(&mut self, body: RequestBody) -> Flow<UpstreamBody> {
        let Some(limit) = self
            .plugins
            .as_deref()
            .and_then(ChainRun::request_body_limit)
        else {
            return ControlFlow::Continue(Either::Left(body));
        };
        let bytes =
            answered(Box::pin(buffering::read_request(body, limit, &self.head.headers)).await)?;
        let pass = self.plugins.as_mut().expect("the limit is the plugins'");
        let flow =
            Box::pin(pass.request_body(&mut self.head.headers, &mut self.path_and_query, bytes))
                .await;
        let bytes = plugins_flow(flow)?;
        // The body goes upstream whole, in the length the phases left it.
        self.head
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        self.buffered = Some(bytes.clone());
        ControlFlow::Continue(Either::Right(Full::new(bytes)))
    }

    /// Sends a copy of a sampled request to the route's mirror (see [`mirror`]); the body
    /// for the primary request is the same, or the same bytes read whole when the copy
    /// needed them.
    pub(super) async fn mirror(&mut self, body: UpstreamBody) -> Flow<UpstreamBody> {
        let route = self.route;
        let Some(target) = route
            .mirror
            .as_ref()
            .filter(|m| self.upgrade.is_none() && m.sampled())
        else {
            return ControlFlow::Continue(body);
        };
        // Boxed: only mirrored routes carry this state in their future.
        answered(Box::pin(self.copy_to_mirror(target, body)).await)
    }

    async fn copy_to_mirror(
        &mut self,
        target: &MirrorTarget,
        body: UpstreamBody,
    ) -> Result<UpstreamBody, ProxyError> {
        let headers = &self.head.headers;
        let (body, copied) = match (self.buffered.take(), body) {
            (Some(bytes), body) => (body, Some(bytes)),
            (None, Either::Right(full)) => (Either::Right(full), None),
            (None, Either::Left(incoming)) => {
                match mirror::plan(headers, http_body::Body::is_end_stream(&incoming)) {
                    mirror::BodyPlan::Ready => (Either::Left(incoming), Some(bytes::Bytes::new())),
                    mirror::BodyPlan::Skip => (Either::Left(incoming), None),
                    mirror::BodyPlan::Buffer => {
                        let bytes =
                            buffering::read_request(incoming, mirror::MAX_MIRROR_BODY, headers)
                                .await?;
                        (Either::Right(Full::new(bytes.clone())), Some(bytes))
                    }
                }
            }
        };
        match copied {
            Some(copied) => {
                let copy = mirror::Copy {
                    method: self.head.method.clone(),
                    path_and_query: self.path_and_query.clone(),
                    headers: headers.clone(),
                    body: copied,
                };
                let shadow = &self.snapshot.clusters[target.upstream];
                mirror::send(
                    target,
                    shadow,
                    self.conn.worker,
                    copy,
                    &self.upstream_host(),
                );
            }
            None => mirror::skipped(target),
        }
        Ok(body)
    }
}
