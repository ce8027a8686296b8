//! The fixed request pipeline, DESIGN.md's phases in order:
//!
//! ```text
//! normalise path → route → request-headers → request-body? → (mirror)
//!   → pick endpoint → upstream (timeouts, retries, breaker)
//!   → response-headers → response-body? → write → log
//! ```
//!
//! `proxy` is that list: each phase is a method of the request's `Exchange` and
//! returns a `Flow`, which either goes on to the next phase or stops with the
//! `Answer` the gateway (or a plugin) makes instead. An answer made on the request side
//! still passes the response phases of the plugins passed so far; one made on the
//! response side is sent as it is. Every answer leaves through
//! [`LocalReply::into_response`](crate::reply::LocalReply::into_response), every error
//! becomes its reply in [`crate::error::error_reply`], and every request is counted in
//! its route's [`RouteSeries`] and, unless turned off, logged.

mod buffering;
mod caching;
mod exchange;
pub mod forwarding;
mod mirror;
mod request_phases;
mod response_phases;
pub mod trace;
mod upgrade;

use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use futures_util::future::Either;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;

use crate::error::{ProxyError, ResponseBody, error_reply};
use crate::plugin::{self, ChainRun, LocalReply};
use crate::router::Route;
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::RouteSeries;

use exchange::{Exchange, Upstreamed};

pub use crate::hop_by_hop::remove as remove_hop_by_hop;

/// What the server knows about the connection a request arrived on.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The client's address.
    pub client: SocketAddr,
    /// The client's IP as a header value, made once per connection for
    /// `X-Forwarded-For`.
    pub client_ip: HeaderValue,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// Which worker serves it (selects the worker's upstream pools).
    pub worker: usize,
    /// The verified client certificate as the `x-forwarded-client-cert` value (mTLS
    /// only), made once per connection.
    pub client_cert: Option<HeaderValue>,
    /// The worker's open upgrade tunnels (WebSocket and others), which outlive the
    /// request that opened them: shutdown waits for them within its grace period.
    pub tunnels: tokio_util::task::TaskTracker,
}

/// Runs one request through the pipeline and returns the response to write.
///
/// Every request's future is moved several times (constructed, then moved into its
/// caller's, up to hyper's), so its size is paid per request: the hot functions return
/// an `async move` block instead of being `async fn`s, which keep each argument twice,
/// and the state only some requests need (plugin phases, retries, new connections) is
/// boxed.
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice in its future"
)]
pub fn handle(
    snapshot: &Snapshot,
    conn: &Connection,
    req: Request<Incoming>,
) -> impl Future<Output = Response<ResponseBody>> {
    async move {
        let arrived = Instant::now();
        // Kept only for the access log; cloning a method and a URI is cheap (shared bytes).
        let logged = snapshot
            .access_log
            .then(|| (req.method().clone(), req.uri().clone()));
        let Proxied {
            mut response,
            route,
            client,
            trace_id,
            upstream,
            error,
            log,
        } = proxy(snapshot, conn, req).await;
        if let Some(pass) = log {
            // The log phase runs once the response is written, off the response's path.
            let written = response.body_mut().on_written();
            let (status, headers) = (response.status(), response.headers().clone());
            tokio::spawn(async move {
                let _ = written.await;
                (*pass).log(status, headers).await;
            });
        }
        let elapsed = arrived.elapsed();
        let series = match route {
            Some(route) => &route.series,
            None => RouteSeries::unrouted(),
        };
        // A failure answered as a gRPC status counts as the HTTP status it stands for.
        let status = crate::error::AnsweredStatus::of(&response);
        series.record(status, elapsed);
        let route = route.map_or("-", |r| &*r.name);
        if let Some((method, uri)) = logged {
            tracing::info!(
                target: "weir::access",
                client = %client,
                method = %method,
                path = uri.path(),
                route,
                upstream = upstream.as_ref().map_or("-", |u| &*u.0),
                endpoint = upstream.as_ref().map_or("-", |u| u.1.as_str()),
                status = status.as_u16(),
                duration_ms = elapsed.as_secs_f64() * 1e3,
                trace_id = trace_id.as_ref().map(tracing::field::display),
                error = error.as_ref().map(tracing::field::display),
            );
        } else if let Some(err) = &error {
            tracing::debug!(route, error = %err, "request failed");
        }
        response
    }
}

/// One request through the phases, in DESIGN.md's order.
fn proxy<'s>(
    snapshot: &'s Snapshot,
    conn: &'s Connection,
    req: Request<Incoming>,
) -> impl Future<Output = Proxied<'s>> {
    let (head, body) = req.into_parts();
    let client = snapshot
        .trust
        .client_address(conn.client.ip(), &head.headers);
    // Normalise the path, route, and add the forwarding headers.
    match Exchange::route(snapshot, conn, head, client) {
        Ok(exchange) => Either::Left(exchange.run(body)),
        Err(unrouted) => Either::Right(std::future::ready(Proxied::unrouted(
            unrouted,
            client,
            &snapshot.via.http11,
        ))),
    }
}

impl<'s> Exchange<'s> {
    /// The phases of a routed request, then what the pipeline reports.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps its arguments twice in its future"
    )]
    fn run(mut self, body: Incoming) -> impl Future<Output = Proxied<'s>> {
        async move {
            let flow = self.request_side(body).await;
            let response = match flow {
                ControlFlow::Continue(Upstreamed::Relayed(response)) => {
                    match self.response_side(response).await {
                        ControlFlow::Continue(response) => response,
                        ControlFlow::Break(answer) => self.send(answer),
                    }
                }
                ControlFlow::Continue(Upstreamed::Switched(response)) => response,
                ControlFlow::Break(answer) => self.answer_locally(answer).await,
            };
            self.finish(response)
        }
    }
}

impl Exchange<'_> {
    /// request-headers → request-body → mirror → upstream, after the body's declared
    /// length is checked against the route's limit.
    async fn request_side(&mut self, body: Incoming) -> Flow<Upstreamed> {
        let body = self.limit_body(body)?;
        self.request_headers().await?;
        let body = self.request_body(body).await?;
        let body = self.mirror(body).await?;
        self.upstream(body).await
    }

    /// response-headers → response-body.
    async fn response_side(
        &mut self,
        response: Response<ResponseBody>,
    ) -> Flow<Response<ResponseBody>> {
        let response = self.response_headers(response).await?;
        self.response_body(response).await
    }
}

/// How a phase ends: on to the next phase with `T`, or an answer made here.
type Flow<T> = ControlFlow<Answer, T>;

/// A response the gateway makes itself, and the error it reports (for the log and
/// metrics) when it answers for a failure.
#[derive(Debug)]
struct Answer {
    reply: LocalReply,
    error: Option<ProxyError>,
}

impl From<ProxyError> for Answer {
    fn from(error: ProxyError) -> Answer {
        Answer {
            reply: error_reply(&error),
            error: Some(error),
        }
    }
}

/// A phase's result from a step that can fail with one of the gateway's errors.
fn answered<T>(result: Result<T, ProxyError>) -> Flow<T> {
    match result {
        Ok(value) => ControlFlow::Continue(value),
        Err(error) => ControlFlow::Break(error.into()),
    }
}

/// A phase's result from the plugins' pass: a plugin's own answer, or the gateway's
/// for a plugin whose failure denies the request.
fn plugins_flow<T>(flow: plugin::Flow<T>) -> Flow<T> {
    match flow {
        plugin::Flow::Continue(value) => ControlFlow::Continue(value),
        plugin::Flow::Respond(reply) => ControlFlow::Break(Answer { reply, error: None }),
        plugin::Flow::Deny(failure) => ControlFlow::Break(ProxyError::Plugin(failure).into()),
    }
}

/// What the pipeline hands back for the metrics, the access log and the log phase.
struct Proxied<'s> {
    response: Response<ResponseBody>,
    /// The matched route.
    route: Option<&'s Route>,
    /// The client's address (the one trusted proxies name, else the peer's).
    client: std::net::IpAddr,
    /// The trace id the request was forwarded with (trace context on, request routed).
    trace_id: Option<trace::TraceId>,
    /// The cluster and endpoint that answered.
    upstream: Option<(Arc<str>, http::uri::Authority)>,
    /// What went wrong, when the response reports a failure.
    error: Option<ProxyError>,
    /// The plugins' pass, kept for its log phase (run after the response is written).
    log: Option<Box<ChainRun>>,
}

impl Proxied<'_> {
    /// A request refused before it was routed.
    fn unrouted(
        exchange::Unrouted { error, grpc }: exchange::Unrouted,
        client: std::net::IpAddr,
        via: &HeaderValue,
    ) -> Proxied<'static> {
        Proxied {
            response: crate::error::error_response(&error, grpc, via),
            route: None,
            client,
            trace_id: None,
            upstream: None,
            error: Some(error),
            log: None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The size of what `make` returns, without calling it: with `unimplemented!()`
    /// arguments, the size of a future no test could build.
    pub(crate) fn size_of_return<F>(_make: impl FnOnce() -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A request's future is moved several times per request (see [`handle`]): this
    /// bound catches a change that makes every request carry a large state, such as an
    /// inline `.await` on a future only some requests need. Box that one instead.
    #[test]
    #[allow(unreachable_code, clippy::diverging_sub_expression)]
    fn a_requests_future_stays_small() {
        let handle =
            size_of_return(|| handle(unimplemented!(), unimplemented!(), unimplemented!()));
        assert!(
            handle <= 2304,
            "pipeline::handle's future is {handle} bytes"
        );
    }
}
