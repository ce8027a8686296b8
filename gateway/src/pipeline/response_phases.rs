//! The response side: the upstream's head cleaned, then the plugins' response-headers
//! phases in reverse chain order, the cache's recording of a storable miss started,
//! then the response-body phases; and the same response phases over an answer made on
//! the request side.

use std::ops::ControlFlow;

use http::{HeaderValue, Response, header};

use super::exchange::Exchange;
use super::{Answer, Flow, answered, buffering, forwarding, plugins_flow};
use crate::error::{ProxyError, ResponseBody, error_reply};
use crate::plugin;

impl Exchange<'_> {
    /// The upstream's head in the client's HTTP version, hop-by-hop hygiene and `Via`,
    /// then the plugins' response-headers phases, editing it in place.
    pub(super) async fn response_headers(
        &mut self,
        response: Response<ResponseBody>,
    ) -> Flow<Response<ResponseBody>> {
        let (mut head, body) = response.into_parts();
        // The client hears its own connection's version, and keep-alive follows its
        // connection, whatever the upstream spoke (an HTTP/1.0 upstream, or HTTP/2).
        head.version = self.client_version;
        forwarding::client_response(&mut head.headers, &self.snapshot.via.http11);
        if let Some(pass) = self.plugins.as_mut().filter(|pass| pass.edits_responses()) {
            // Boxed: see `request_headers`.
            plugins_flow(
                Box::pin(pass.response_headers(&mut head.status, &mut head.headers)).await,
            )?;
        }
        // A storable miss is recorded from here on, unless a phase kept it out.
        let body = self.record(body);
        ControlFlow::Continue(Response::from_parts(head, body))
    }

    /// The plugins' response-body phases over the whole body, read up to their smallest
    /// limit. Without such a phase the body streams.
    pub(super) async fn response_body(
        &mut self,
        response: Response<ResponseBody>,
    ) -> Flow<Response<ResponseBody>> {
        let Some(pass) = self.plugins.as_mut() else {
            return ControlFlow::Continue(response);
        };
        let Some(limit) = pass.response_body_limit() else {
            return ControlFlow::Continue(response);
        };
        let (mut head, body) = response.into_parts();
        let bytes = answered(Box::pin(buffering::read_response(body, limit)).await)?;
        let flow = Box::pin(pass.response_body(head.status, &mut head.headers, bytes)).await;
        let bytes = plugins_flow(flow)?;
        head.headers.remove(header::TRANSFER_ENCODING);
        head.headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
        ControlFlow::Continue(Response::from_parts(head, ResponseBody::full(bytes)))
    }

    /// An answer made on the request side (a plugin's, or the gateway's once the route
    /// is known): the response phases of the plugins passed so far see it first.
    pub(super) async fn answer_locally(&mut self, answer: Answer) -> Response<ResponseBody> {
        let Answer { mut reply, error } = answer;
        self.error = error;
        if let Some(pass) = self.plugins.as_mut().filter(|pass| pass.edits_responses()) {
            match Box::pin(pass.response_headers(&mut reply.status, &mut reply.headers)).await {
                plugin::Flow::Continue(()) => {}
                plugin::Flow::Respond(replacement) => reply = replacement,
                plugin::Flow::Deny(failure) => {
                    let error = ProxyError::Plugin(failure);
                    reply = error_reply(&error);
                    self.error.get_or_insert(error);
                }
            }
        }
        self.local_response(reply, self.error.as_ref())
    }
}
