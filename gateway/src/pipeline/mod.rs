//! The fixed request pipeline:
//!
//! ```text
//! normalise path → route → forwarding headers, trace context → pick endpoint
//!   → upstream (timeouts, retries, circuit breaking) → response headers → metrics, log
//! ```
//!
//! (Plugin phases slot in after the trace context and around the upstream exchange.) Each
//! step is plain sequential async code; a step that cannot continue returns a
//! [`ProxyError`], which becomes the client's response in exactly one place,
//! [`ProxyError::to_response`]. Every answered request is counted in the route's
//! [`RouteSeries`] and, unless turned off, logged.

mod forwarding;
mod mirror;
pub mod trace;
mod upgrade;

use std::net::SocketAddr;
use std::time::Instant;

use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;

use crate::config::HostRewrite;
use crate::error::{ProxyError, ResponseBody};
use crate::plugin::{BodyFlow, ChainRun, LocalReply, RequestFlow, RequestParts, ResponseFlow};
use crate::router::{self, MirrorTarget, RequestFacts, Route};
use crate::snapshot::Snapshot;
use crate::telemetry::metrics::RouteSeries;
use crate::upstream::{
    Cluster, ForwardError, Forwarded, Tunnel, UnpooledBody, UpstreamBody, UpstreamHost,
};

pub use forwarding::remove_hop_by_hop;

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
pub async fn handle(
    snapshot: &Snapshot,
    conn: &Connection,
    req: Request<Incoming>,
) -> Response<ResponseBody> {
    let arrived = Instant::now();
    // Kept only for the access log; cloning a method and a URI is cheap (shared bytes).
    let logged = snapshot
        .access_log
        .then(|| (req.method().clone(), req.uri().clone()));
    let mut observed = Observed::default();
    let outcome = proxy(snapshot, conn, req, &mut observed).await;
    let (mut response, upstream, error, log) = match outcome {
        Ok(done) => (done.response, done.upstream, done.error, done.log),
        Err(err) => (err.to_response(), None, Some(err), None),
    };
    if let Some(pass) = log {
        // The log phase runs once the response is written, off the response's path.
        let written = response.body_mut().on_written();
        let (status, headers) = (response.status(), response.headers().clone());
        tokio::spawn(async move {
            let _ = written.await;
            pass.log(status, headers).await;
        });
    }
    let elapsed = arrived.elapsed();
    let route = observed.route;
    let series = match route {
        Some(route) => &route.series,
        None => RouteSeries::unrouted(),
    };
    series.record(response.status(), elapsed);
    let route = route.map_or("-", |r| &*r.name);
    if let Some((method, uri)) = logged {
        tracing::info!(
            target: "weir::access",
            client = %conn.client.ip(),
            method = %method,
            path = uri.path(),
            route,
            upstream = upstream.as_ref().map_or("-", |u| &*u.0),
            endpoint = upstream.as_ref().map_or("-", |u| u.1.as_str()),
            status = response.status().as_u16(),
            duration_ms = elapsed.as_secs_f64() * 1e3,
            trace_id = observed.trace_id.as_ref().map(tracing::field::display),
            error = error.as_ref().map(tracing::field::display),
        );
    } else if let Some(err) = &error {
        tracing::debug!(route, error = %err, "request failed");
    }
    response
}

/// What the pipeline has learned of a request so far, for its metrics and access log.
/// Filled in as the request advances, so a request that fails still reports what was
/// known when it failed.
#[derive(Debug, Default)]
struct Observed<'s> {
    /// The matched route.
    route: Option<&'s Route>,
    /// The trace id the request was forwarded with (trace context on, request routed).
    trace_id: Option<trace::TraceId>,
}

struct Proxied {
    response: Response<ResponseBody>,
    /// The cluster and endpoint, unless a plugin answered.
    upstream: Option<(std::sync::Arc<str>, http::uri::Authority)>,
    /// What went wrong, when the response reports a failure the request phases did not
    /// stop: a plugin's (`on_error = "deny"`) or the upstream's.
    error: Option<ProxyError>,
    /// The chain pass, kept for its log phase (run after the response is written).
    log: Option<ChainRun>,
}

async fn proxy<'s>(
    snapshot: &'s Snapshot,
    conn: &Connection,
    req: Request<Incoming>,
    observed: &mut Observed<'s>,
) -> Result<Proxied, ProxyError> {
    let (mut parts, body) = req.into_parts();
    if parts.method == http::Method::CONNECT {
        return Err(ProxyError::ConnectNotAllowed);
    }

    // Normalise the path, then route on the result.
    let path = crate::path::normalize(parts.uri.path(), snapshot.slashes)?;
    let host = router::request_host(&parts.uri, &parts.headers);
    let facts = RequestFacts {
        host,
        path: &path,
        method: &parts.method,
        headers: &parts.headers,
    };
    let route = snapshot.routes.find(&facts).ok_or(ProxyError::NoRoute)?;
    observed.route = Some(route);
    let bad_path = |_| ProxyError::BadPath(crate::path::PathError::BadEscape);

    let mut path_and_query = match (&path, parts.uri.query()) {
        (std::borrow::Cow::Borrowed(_), _) => parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
        (std::borrow::Cow::Owned(p), None) => {
            PathAndQuery::try_from(p.as_str()).map_err(bad_path)?
        }
        (std::borrow::Cow::Owned(p), Some(q)) => {
            PathAndQuery::try_from(format!("{p}?{q}")).map_err(bad_path)?
        }
    };
    let original_host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(header::HOST).cloned(),
    };
    let via = match parts.version {
        Version::HTTP_2 => &snapshot.via.http2,
        Version::HTTP_10 => &snapshot.via.http10,
        _ => &snapshot.via.http11,
    };

    // Read before hygiene removes `Upgrade` and `Connection` with the other hop-by-hop
    // headers: an upgrade puts them back for the upstream.
    let upgrade = upgrade::requested(parts.version, &parts.headers);
    let headers = &mut parts.headers;
    forwarding::clean_client_request(headers);
    forwarding::add_forwarded(
        headers,
        &conn.client_ip,
        conn.scheme,
        original_host.as_ref(),
    );
    forwarding::append_via(headers, via);
    if let Some(client_cert) = &conn.client_cert {
        forwarding::set_client_cert(headers, client_cert);
    }
    // Before the plugins, so they see the traceparent that goes upstream.
    if snapshot.trace_context {
        observed.trace_id = Some(trace::propagate(headers));
    }

    // The request phases of the route's plugins.
    let chain = &snapshot.chains[route.index];
    let mut run = None;
    let mut upstream_body;
    // A body a plugin's body phase buffered (a mirror can copy it).
    let mut buffered = None;
    if !chain.is_empty() {
        let mut pass = ChainRun::new(chain.clone());
        let flow = pass
            .request_headers(RequestParts {
                method: &parts.method,
                headers: &mut parts.headers,
                path_and_query: &mut path_and_query,
                scheme: conn.scheme,
                authority: original_host.clone(),
                client: conn.client_ip.clone(),
                route: route.name.clone(),
            })
            .await;
        if let RequestFlow::Respond(reply, failure) = flow {
            let error = failure.map(ProxyError::Plugin);
            return Ok(answer_locally(pass, reply, error, &snapshot.via.http11).await);
        }
        forwarding::remove_hop_by_hop(&mut parts.headers);

        // The request-body phases see the whole body, buffered up to their limit.
        if let Some(limit) = pass.request_body_limit() {
            let bytes = match buffer_body(body, limit, &parts.headers).await {
                Ok(bytes) => bytes,
                Err(status) => {
                    let reply = status_reply(status);
                    return Ok(answer_locally(pass, reply, None, &snapshot.via.http11).await);
                }
            };
            match pass
                .request_body(&mut parts.headers, &mut path_and_query, bytes)
                .await
            {
                BodyFlow::Continue(bytes) => {
                    forwarding::remove_hop_by_hop(&mut parts.headers);
                    parts.headers.remove(header::TRANSFER_ENCODING);
                    parts
                        .headers
                        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                    upstream_body = Either::Right(http_body_util::Full::new(bytes.clone()));
                    buffered = Some(bytes);
                }
                BodyFlow::Respond(reply, failure) => {
                    let error = failure.map(ProxyError::Plugin);
                    return Ok(answer_locally(pass, reply, error, &snapshot.via.http11).await);
                }
            }
        } else {
            upstream_body = Either::Left(body);
        }
        run = Some(pass);
    } else {
        upstream_body = Either::Left(body);
    }

    // The upstream exchange: pick an endpoint, send, wait for the response head.
    let cluster = &snapshot.clusters[route.target.pick()];
    let host = match &route.host_rewrite {
        HostRewrite::Preserve => UpstreamHost::Fixed(original_host),
        HostRewrite::Literal(value) => UpstreamHost::Fixed(Some(value.clone())),
        HostRewrite::Endpoint => UpstreamHost::Endpoint,
    };
    // Boxed, as the tunnel below: only mirrored routes carry this state.
    if let Some(mirror) = route
        .mirror
        .as_ref()
        .filter(|m| upgrade.is_none() && m.sampled())
    {
        let copied = Box::pin(copy_to_mirror(
            snapshot,
            conn,
            mirror,
            &parts,
            &path_and_query,
            &host,
            upstream_body,
            buffered,
        ));
        upstream_body = match copied.await {
            Ok(body) => body,
            Err(status) => {
                let reply = status_reply(status);
                return Ok(match run {
                    Some(pass) => answer_locally(pass, reply, None, &snapshot.via.http11).await,
                    None => Proxied {
                        response: local_reply(reply, &snapshot.via.http11),
                        upstream: None,
                        error: None,
                        log: None,
                    },
                });
            }
        };
    }
    let key = cluster.hash_key(&parts.headers, conn.client.ip());
    // HTTP/1.1 upstreams take the origin form: path and query only.
    parts.uri = Uri::from(path_and_query);
    parts.version = Version::HTTP_11;
    let (response, endpoint) = match upgrade {
        None => {
            let upstream_req = Request::from_parts(parts, upstream_body);
            let forwarded = cluster.forward(conn.worker, upstream_req, &host, key).await;
            let Forwarded { response, endpoint } = match forwarded {
                Ok(forwarded) => forwarded,
                Err(e) => return answer_error(run, upstream_error(cluster, e), snapshot).await,
            };
            (response.map(ResponseBody::upstream), endpoint)
        }
        Some(protocol) => {
            let opened = Box::pin(open_tunnel(
                snapshot,
                conn,
                cluster,
                parts,
                upstream_body,
                protocol,
                &host,
                key,
            ));
            let opened = match opened.await {
                Ok(opened) => opened,
                Err(e) => return answer_error(run, e, snapshot).await,
            };
            match opened {
                Opened::Switched(response, endpoint) => {
                    return Ok(Proxied {
                        response,
                        upstream: Some((cluster.name.clone(), endpoint)),
                        error: None,
                        log: run.filter(ChainRun::wants_log),
                    });
                }
                Opened::Answered(response, endpoint) => (response, endpoint),
            }
        }
    };

    // Response headers: the same hygiene on the way back, then the response phases.
    let (mut parts, body) = response.into_parts();
    forwarding::remove_hop_by_hop(&mut parts.headers);
    forwarding::append_via(&mut parts.headers, &snapshot.via.http11);
    let mut error = None;
    let mut response = Response::from_parts(parts, body);
    if let Some(pass) = &mut run {
        let (mut parts, body) = response.into_parts();
        response = match pass
            .response_headers(&mut parts.status, &mut parts.headers)
            .await
        {
            ResponseFlow::Continue => match pass.response_body_limit() {
                None => Response::from_parts(parts, body),
                Some(limit) => {
                    let (reply, failure) = response_body_phase(pass, parts, body, limit).await;
                    error = failure.map(ProxyError::Plugin);
                    reply
                }
            },
            ResponseFlow::Replace(reply, failure) => {
                error = failure.map(ProxyError::Plugin);
                local_reply(reply, &snapshot.via.http11)
            }
        };
    }
    Ok(Proxied {
        response,
        upstream: Some((cluster.name.clone(), endpoint)),
        error,
        log: run.filter(ChainRun::wants_log),
    })
}

/// The gateway's own answer to a request whose upstream exchange failed (502, 503,
/// 504). When the route has plugins, their response phases see it (so a request id or
/// a rate-limit header still reaches the client) and their log phases run.
async fn answer_error(
    run: Option<ChainRun>,
    error: ProxyError,
    snapshot: &Snapshot,
) -> Result<Proxied, ProxyError> {
    let Some(pass) = run else {
        return Err(error);
    };
    let (status, reason) = error.status_and_reason();
    let reply = json_reply(status, reason);
    Ok(answer_locally(pass, reply, Some(error), &snapshot.via.http11).await)
}

/// The client's error for a cluster that gave no answer.
fn upstream_error(cluster: &Cluster, e: ForwardError) -> ProxyError {
    match e {
        ForwardError::Failed { endpoint, failure } => ProxyError::Upstream {
            upstream: cluster.name.clone(),
            endpoint,
            failure,
        },
        ForwardError::Refused(refusal) => ProxyError::Refused {
            upstream: cluster.name.clone(),
            refusal,
        },
    }
}

/// Sends a copy of the request to the route's mirror (see [`mirror`]) and returns the
/// body for the primary request: the same, or the same bytes read whole when the copy
/// needed them (`Err`: the client's body could not be read, the status to answer).
#[allow(clippy::too_many_arguments)]
async fn copy_to_mirror(
    snapshot: &Snapshot,
    conn: &Connection,
    mirror: &MirrorTarget,
    parts: &http::request::Parts,
    path_and_query: &PathAndQuery,
    host: &UpstreamHost,
    body: UpstreamBody,
    buffered: Option<bytes::Bytes>,
) -> Result<UpstreamBody, StatusCode> {
    let (body, copied) = match (buffered, body) {
        (Some(bytes), body) => (body, Some(bytes)),
        (None, Either::Right(full)) => (Either::Right(full), None),
        (None, Either::Left(incoming)) => {
            match mirror::plan(&parts.headers, http_body::Body::is_end_stream(&incoming)) {
                mirror::BodyPlan::Ready => (Either::Left(incoming), Some(bytes::Bytes::new())),
                mirror::BodyPlan::Skip => (Either::Left(incoming), None),
                mirror::BodyPlan::Buffer => {
                    let bytes =
                        buffer_body(incoming, mirror::MAX_MIRROR_BODY, &parts.headers).await?;
                    (
                        Either::Right(http_body_util::Full::new(bytes.clone())),
                        Some(bytes),
                    )
                }
            }
        }
    };
    match copied {
        Some(copied) => {
            let copy = mirror::Copy {
                method: parts.method.clone(),
                path_and_query: path_and_query.clone(),
                headers: parts.headers.clone(),
                body: copied,
            };
            let shadow = &snapshot.clusters[mirror.upstream];
            mirror::send(mirror, shadow, conn.worker, copy, host);
        }
        None => mirror::skipped(mirror),
    }
    Ok(body)
}

/// What an upgrade request got from upstream.
enum Opened {
    /// `101`: the tunnel is being bridged; this is the client's `101`.
    Switched(Response<ResponseBody>, http::uri::Authority),
    /// Any other answer, to proxy as a normal response.
    Answered(Response<ResponseBody>, http::uri::Authority),
}

/// Sends an upgrade request (`parts` in origin form) over a dedicated connection; on a
/// `101` bridges the two upgraded connections (see [`upgrade`]).
#[allow(clippy::too_many_arguments)]
async fn open_tunnel(
    snapshot: &Snapshot,
    conn: &Connection,
    cluster: &std::sync::Arc<Cluster>,
    mut parts: http::request::Parts,
    body: UpstreamBody,
    protocol: HeaderValue,
    host: &UpstreamHost,
    key: Option<u64>,
) -> Result<Opened, ProxyError> {
    let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    upgrade::set_upgrade_headers(&mut parts.headers, protocol);
    let req = Request::from_parts(parts, body);
    let Tunnel {
        mut response,
        endpoint,
        guard,
    } = cluster
        .open_tunnel(req, host, key)
        .await
        .map_err(|e| upstream_error(cluster, e))?;
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        let response = response.map(|body| ResponseBody::unpooled(UnpooledBody::new(body, guard)));
        return Ok(Opened::Answered(response, endpoint));
    }
    let Some(client) = client else {
        // Only a connection served with upgrades can switch; ours all are.
        return Ok(Opened::Answered(
            crate::error::local_response(StatusCode::BAD_GATEWAY, "upgrade not possible"),
            endpoint,
        ));
    };
    let upstream = hyper::upgrade::on(&mut response);
    upgrade::bridge(client, upstream, guard, &conn.tunnels, cluster.name.clone());
    let (parts, _) = response.into_parts();
    Ok(Opened::Switched(
        upgrade::switched(parts, &snapshot.via.http11),
        endpoint,
    ))
}

/// Buffers the upstream's body for the response-body phases (502 past the limit).
async fn response_body_phase(
    pass: &mut ChainRun,
    mut parts: http::response::Parts,
    body: ResponseBody,
    limit: u64,
) -> (Response<ResponseBody>, Option<crate::plugin::PluginFailure>) {
    let collected = match body.into_streamed() {
        Ok(upstream) => {
            http_body_util::Limited::new(upstream, usize::try_from(limit).unwrap_or(usize::MAX))
                .collect()
                .await
                .map(http_body_util::Collected::to_bytes)
                .ok()
        }
        Err(_) => None,
    };
    let Some(bytes) = collected else {
        return (
            crate::error::local_response(
                StatusCode::BAD_GATEWAY,
                "upstream response body too large for a plugin, or broken",
            ),
            None,
        );
    };
    match pass
        .response_body(parts.status, &mut parts.headers, bytes)
        .await
    {
        BodyFlow::Continue(bytes) => {
            parts.headers.remove(header::TRANSFER_ENCODING);
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            (Response::from_parts(parts, ResponseBody::full(bytes)), None)
        }
        BodyFlow::Respond(reply, failure) => {
            let mut response = Response::new(ResponseBody::full(reply.body));
            *response.status_mut() = reply.status;
            *response.headers_mut() = reply.headers;
            (response, failure)
        }
    }
}

/// Reads a request body whole, refusing (413) one larger than `limit`.
async fn buffer_body(
    body: Incoming,
    limit: u64,
    headers: &http::HeaderMap,
) -> Result<bytes::Bytes, StatusCode> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    match http_body_util::Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(StatusCode::PAYLOAD_TOO_LARGE),
        Err(_) => Err(StatusCode::BAD_REQUEST),
    }
}

/// A local reply for a request whose body could not be read: `{"error": "<reason>"}`.
fn status_reply(status: StatusCode) -> LocalReply {
    let reason = status.canonical_reason().unwrap_or("bad request");
    json_reply(status, &reason.to_ascii_lowercase())
}

/// The gateway's own JSON reply (`{"error": "<reason>"}`), for the response phases.
fn json_reply(status: StatusCode, reason: &str) -> LocalReply {
    LocalReply {
        status,
        headers: json_headers(),
        body: bytes::Bytes::from(crate::error::local_body(reason)),
    }
}

fn json_headers() -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers
}

/// A local response (a plugin's, or the gateway's own once the request phases ran),
/// after the response phases of the plugins passed; the pass is kept for its log phase.
async fn answer_locally(
    mut pass: ChainRun,
    reply: LocalReply,
    error: Option<ProxyError>,
    via: &HeaderValue,
) -> Proxied {
    let mut reply = reply;
    let response = match pass
        .response_headers(&mut reply.status, &mut reply.headers)
        .await
    {
        ResponseFlow::Continue => local_reply(reply, via),
        ResponseFlow::Replace(replacement, _) => local_reply(replacement, via),
    };
    Proxied {
        response,
        upstream: None,
        error,
        log: pass.wants_log().then_some(pass),
    }
}

fn local_reply(reply: LocalReply, via: &HeaderValue) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(reply.body));
    *response.status_mut() = reply.status;
    *response.headers_mut() = reply.headers;
    forwarding::append_via(response.headers_mut(), via);
    response
}
