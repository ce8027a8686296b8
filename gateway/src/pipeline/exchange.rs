//! One request on its way through the pipeline: the state its phases read and change,
//! the routing step that creates it, the upstream phase, and how it ends.

use std::borrow::Cow;
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;

use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Request, Response, Uri, Version, header};

use super::{Answer, Connection, Flow, Proxied, forwarding, trace, upgrade};
use crate::config::HostRewrite;
use crate::error::{ProxyError, ResponseBody};
use crate::grpc_status::GrpcProtocol;
use crate::grpc_web::WebCall;
use crate::plugin::ChainRun;
use crate::reply::LocalReply;
use crate::request_body::RequestBody;
use crate::router::{self, Destination, RequestFacts, Route};
use crate::snapshot::Snapshot;
use crate::upstream::{
    Cluster, ForwardError, Forwarded, UpstreamBody, UpstreamFailure, UpstreamHost,
};
use hyper::body::Incoming;

/// A routed request and what its phases have made of it so far.
pub(super) struct Exchange<'s> {
    pub(super) snapshot: &'s Snapshot,
    pub(super) conn: &'s Connection,
    pub(super) route: &'s Route,
    /// The request head as it goes upstream: hop-by-hop headers gone, forwarding headers
    /// added, the plugins' edits made. Taken when the request is sent.
    pub(super) head: http::request::Parts,
    /// The normalised path and the query, as the upstream gets them.
    pub(super) path_and_query: PathAndQuery,
    /// The host the client asked for (the absolute-form authority, or `Host`).
    pub(super) original_host: Option<HeaderValue>,
    /// The client's address: the peer's, or the one trusted proxies name.
    pub(super) client: IpAddr,
    /// The same as a header value, for the plugins.
    pub(super) client_ip: HeaderValue,
    /// The HTTP version of the client's connection, which its response speaks.
    pub(super) client_version: Version,
    /// The protocol the client asked to upgrade to.
    pub(super) upgrade: Option<HeaderValue>,
    /// The route's plugins' pass, when the route has plugins (boxed: it is large, and
    /// the exchange is moved with every request's future).
    pub(super) plugins: Option<Box<ChainRun>>,
    /// The request body, when a body phase read it whole (the mirror copies it).
    pub(super) buffered: Option<Bytes>,
    /// The cluster and endpoint that answered.
    pub(super) upstream: Option<(Arc<str>, http::uri::Authority)>,
    /// What went wrong, for the log, when the response reports a failure.
    pub(super) error: Option<ProxyError>,
    pub(super) trace_id: Option<trace::TraceId>,
    /// A gRPC-Web call on a route that translates it (boxed: rare, and the exchange is
    /// moved with every request's future).
    web: Option<Box<WebCall>>,
    /// Whether the request, sent upstream (its head gone), was a gRPC call.
    grpc_sent: Option<GrpcProtocol>,
    /// A storable miss's recording, started on its body once the response-headers
    /// phases have not kept it out of the cache (boxed: only cached misses carry it).
    pub(super) recording: Option<Box<crate::cache::Recording>>,
}

/// A request the gateway refused before it was routed.
#[derive(Debug)]
pub(super) struct Unrouted {
    pub(super) error: ProxyError,
    /// Whether it was a gRPC or gRPC-Web call (answered with a gRPC status).
    pub(super) grpc: Option<GrpcProtocol>,
}

/// Whether a request with this head is a gRPC call (gRPC runs over HTTP/2 only), or a
/// gRPC-Web one. Read only when an answer is being made, or just before the head goes
/// upstream.
fn grpc_call(head: &http::request::Parts) -> Option<GrpcProtocol> {
    GrpcProtocol::of(head.version, &head.headers)
}

/// What the upstream phase got.
pub(super) enum Upstreamed {
    /// A response to relay (through the response phases).
    Relayed(Response<ResponseBody>),
    /// The client's `101`: the upgraded connections are being bridged.
    Switched(Response<ResponseBody>),
}

impl<'s> Exchange<'s> {
    /// Normalises the path, routes on it, and cleans the head for forwarding (hop-by-hop
    /// headers removed once, `X-Forwarded-*`, `Via`, the client certificate and the
    /// trace context added). `client` is the client's address as
    /// [`ClientTrust::client_address`](crate::client_trust::ClientTrust::client_address)
    /// found it.
    pub(super) fn route(
        snapshot: &'s Snapshot,
        conn: &'s Connection,
        mut head: http::request::Parts,
        client: IpAddr,
    ) -> Result<Exchange<'s>, Unrouted> {
        let (route, path_and_query) = match resolve(snapshot, &head) {
            Ok(found) => found,
            Err(error) => {
                let grpc = grpc_call(&head);
                return Err(Unrouted { error, grpc });
            }
        };
        let original_host = match head.uri.authority() {
            Some(a) => HeaderValue::from_str(a.as_str()).ok(),
            None => head.headers.get(header::HOST).cloned(),
        };
        let via = match head.version {
            Version::HTTP_2 => &snapshot.via.http2,
            Version::HTTP_10 => &snapshot.via.http10,
            _ => &snapshot.via.http11,
        };
        // Read before hygiene removes `Upgrade` and `Connection` with the other hop-by-hop
        // headers: an upgrade puts them back for the upstream.
        let upgrade = upgrade::requested(head.version, &head.headers);
        let client_version = head.version;
        // Behind trusted proxies the client is the one they name, for the plugins, the
        // balancer and the log; anyone else loses the headers it may not send.
        let peer = conn.client.ip();
        let trusted = snapshot.trust.trusts(peer);
        let client_ip = match client == peer {
            true => conn.client_ip.clone(),
            false => {
                HeaderValue::try_from(client.to_string()).unwrap_or_else(|_| conn.client_ip.clone())
            }
        };
        let headers = &mut head.headers;
        forwarding::upstream_request(
            headers,
            &forwarding::Hygiene {
                untrusted: (!trusted).then_some(&snapshot.trust),
                peer_ip: &conn.client_ip,
                scheme: conn.scheme,
                host: original_host.as_ref(),
                via,
                client_cert: conn.client_cert.as_ref(),
            },
        );
        // Before the plugins, so they see the traceparent that goes upstream.
        let trace_id = snapshot.trace_context.then(|| trace::propagate(headers));
        // A gRPC-Web call becomes the gRPC call the upstream gets before the plugins
        // run: they see the call as gRPC (its text body decoded too, see `limit_body`).
        let web = match route.grpc_web {
            true => WebCall::of(headers).map(Box::new),
            false => None,
        };
        if let Some(call) = &web {
            call.to_grpc_request(headers);
        }
        Ok(Exchange {
            snapshot,
            conn,
            route,
            head,
            path_and_query,
            original_host,
            client,
            client_ip,
            client_version,
            upgrade,
            plugins: None,
            buffered: None,
            upstream: None,
            error: None,
            trace_id,
            web,
            grpc_sent: None,
            recording: None,
        })
    }

    /// Whether the request is a gRPC or gRPC-Web call, whose answers go as gRPC
    /// statuses, and in which form.
    pub(super) fn grpc(&self) -> Option<GrpcProtocol> {
        if let Some(call) = &self.web {
            return Some(GrpcProtocol::web(call));
        }
        self.grpc_sent.or_else(|| grpc_call(&self.head))
    }

    /// The response for an answer made here (`reply`, reporting `error` if it is the
    /// gateway's own failure): a gRPC status for a gRPC call.
    pub(super) fn local_response(
        &self,
        reply: LocalReply,
        error: Option<&ProxyError>,
    ) -> Response<ResponseBody> {
        crate::error::local_response(reply, error, self.grpc(), &self.snapshot.via.http11)
    }

    /// The client's body, limited to the route's `max_request_body`: refused with 413
    /// before anything runs when its `Content-Length` is already past it, and cut off
    /// (an aborted upstream request, then 413) when it streams past it. A gRPC-Web text
    /// call's body is base64-decoded as it streams.
    pub(super) fn limit_body(&self, body: Incoming) -> Flow<RequestBody> {
        let limit = self.route.max_request_body;
        if let Some(limit) = limit
            && http_body::Body::size_hint(&body)
                .exact()
                .is_some_and(|declared| declared > limit)
        {
            return ControlFlow::Break(ProxyError::BodyTooLarge { limit }.into());
        }
        let body = RequestBody::new(body, limit);
        ControlFlow::Continue(match &self.web {
            Some(call) if call.text_request => body.decoding_text(call.text_decoder()),
            _ => body,
        })
    }

    /// The `Host` the upstream gets, by the route's `host_rewrite`.
    pub(super) fn upstream_host(&self) -> UpstreamHost {
        match &self.route.host_rewrite {
            HostRewrite::Preserve => UpstreamHost::Fixed(self.original_host.clone()),
            HostRewrite::Literal(value) => UpstreamHost::Fixed(Some(value.clone())),
            HostRewrite::Endpoint => UpstreamHost::Endpoint,
        }
    }

    /// The upstream phase: picks a cluster (a split draws one) and an endpoint, sends
    /// the request and waits for the response head; an upgrade goes over a dedicated
    /// connection and is bridged on `101`. A route with `respond` answers here instead,
    /// and its answer passes the plugins' response phases like any local answer.
    pub(super) async fn upstream(&mut self, body: UpstreamBody) -> Flow<Upstreamed> {
        if let Some(caching) = &self.route.cache
            && self.upgrade.is_none()
        {
            // Boxed: only cached routes carry the cache's state in their future.
            return Box::pin(self.cached(caching.clone(), body)).await;
        }
        self.forward(body).await
    }

    /// Sends the request to the route's upstream (see [`Exchange::upstream`]).
    pub(super) async fn forward(&mut self, body: UpstreamBody) -> Flow<Upstreamed> {
        let snapshot = self.snapshot;
        let cluster = match self.route.target.pick() {
            Destination::Cluster(index) => &snapshot.clusters[index],
            Destination::Respond(direct) => {
                return ControlFlow::Break(Answer {
                    reply: LocalReply::direct(direct),
                    error: None,
                });
            }
        };
        let host = self.upstream_host();
        let key = cluster.hash_key(&self.head.headers, self.client);
        // The head goes upstream: what a failure's answer needs of it is kept.
        self.grpc_sent = grpc_call(&self.head);
        let mut head = std::mem::replace(&mut self.head, Request::new(()).into_parts().0);
        // HTTP/1.1 upstreams take the origin form: path and query only.
        let path_and_query =
            std::mem::replace(&mut self.path_and_query, PathAndQuery::from_static("/"));
        head.uri = Uri::from(path_and_query);
        head.version = Version::HTTP_11;
        let request = Request::from_parts(head, body);
        let web = self.web.as_deref();
        let sent = match self.upgrade.take() {
            None => cluster
                .forward(self.conn.worker, request, &host, key)
                .await
                .map(|Forwarded { response, endpoint }| {
                    let response = response.map(ResponseBody::upstream);
                    // Before the response phases: the plugins see the gRPC-Web answer,
                    // its trailers in the body's last frame.
                    let response = match web {
                        Some(call) => call.to_web_response(response).map(ResponseBody::grpc_web),
                        None => response,
                    };
                    (Ok(Upstreamed::Relayed(response)), endpoint)
                }),
            // Boxed: only upgrades carry this state in their future.
            Some(protocol) => {
                let tunnel = upgrade::Tunnel {
                    cluster,
                    host: &host,
                    key,
                    tunnels: &self.conn.tunnels,
                    via: &snapshot.via.http11,
                };
                Box::pin(tunnel.open(request, protocol)).await
            }
        };
        match sent {
            Ok((upstreamed, endpoint)) => {
                self.upstream = Some((cluster.name.clone(), endpoint));
                super::answered(upstreamed)
            }
            // A text body that is not base64 aborted the call: the client's fault,
            // whatever the aborted exchange reported.
            Err(_) if self.web.as_ref().is_some_and(|call| call.text_failed()) => {
                let error = "the gRPC-Web text body is not valid base64".to_owned();
                ControlFlow::Break(ProxyError::BadBody(error).into())
            }
            Err(e) => ControlFlow::Break(upstream_error(cluster, e).into()),
        }
    }

    /// Sends an answer made on the response side as it is.
    pub(super) fn send(&mut self, answer: Answer) -> Response<ResponseBody> {
        if answer.error.is_some() {
            self.error = answer.error;
        }
        self.local_response(answer.reply, self.error.as_ref())
    }

    /// What the pipeline reports for this request.
    pub(super) fn finish(self, response: Response<ResponseBody>) -> Proxied<'s> {
        Proxied {
            response,
            route: Some(self.route),
            client: self.client,
            trace_id: self.trace_id,
            upstream: self.upstream,
            error: self.error,
            log: self.plugins.filter(|pass| pass.wants_log()),
        }
    }
}

/// The route for `head` and the path and query its upstream gets, or why there is none.
fn resolve<'s>(
    snapshot: &'s Snapshot,
    head: &http::request::Parts,
) -> Result<(&'s Route, PathAndQuery), ProxyError> {
    if head.method == http::Method::CONNECT {
        return Err(ProxyError::ConnectNotAllowed);
    }
    let limit = snapshot.config.server.limits.max_uri_bytes;
    if target_length(&head.uri) > limit {
        return Err(ProxyError::UriTooLong { limit });
    }
    check_host(head.version, &head.headers)?;
    let (route, path) = snapshot.routes.resolve(RequestFacts {
        host: router::request_host(&head.uri, &head.headers),
        path: head.uri.path(),
        method: &head.method,
        headers: &head.headers,
    })?;
    Ok((route, path_and_query(&head.uri, path)?))
}

/// The path and query the upstream gets: the request's own when normalising changed
/// nothing, else the normalised path with the query.
fn path_and_query(uri: &Uri, path: Cow<'_, str>) -> Result<PathAndQuery, ProxyError> {
    let bad_path = |_| ProxyError::BadPath(crate::path::PathError::BadEscape);
    match (path, uri.query()) {
        (Cow::Borrowed(_), _) => Ok(uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"))),
        (Cow::Owned(p), None) => PathAndQuery::try_from(p).map_err(bad_path),
        (Cow::Owned(p), Some(q)) => PathAndQuery::try_from(format!("{p}?{q}")).map_err(bad_path),
    }
}

/// The length of a request target as the client sent it (origin form: path and query;
/// absolute form: scheme and authority too).
fn target_length(uri: &Uri) -> usize {
    let scheme = uri.scheme_str().map_or(0, |s| s.len() + 3);
    let authority = uri.authority().map_or(0, |a| a.as_str().len());
    let path = uri.path_and_query().map_or(0, |p| p.as_str().len());
    scheme + authority + path
}

/// RFC 9112 §3.2: an HTTP/1.1 request names its host in one `Host` header, and no
/// request has two or an invalid one (empty is allowed: a target without authority). A
/// request in absolute form is routed on its target's authority whatever `Host` says.
fn check_host(version: Version, headers: &http::HeaderMap) -> Result<(), ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (_, Some(_)) => Err(ProxyError::BadHost("more than one Host header")),
        (None, None) if version == Version::HTTP_11 => Err(ProxyError::BadHost("no Host header")),
        (Some(host), None)
            if !host.is_empty() && http::uri::Authority::try_from(host.as_bytes()).is_err() =>
        {
            Err(ProxyError::BadHost("not a valid host"))
        }
        _ => Ok(()),
    }
}

/// The client's error for a cluster that gave no answer.
fn upstream_error(cluster: &Cluster, e: ForwardError) -> ProxyError {
    // The client's body passing the route's limit while it streamed is the client's 413.
    if let ForwardError::Failed {
        failure: UpstreamFailure::ClientBody(e),
        ..
    } = &e
        && let Some(too_large) = RequestBody::too_large(&**e)
    {
        return ProxyError::BodyTooLarge {
            limit: too_large.limit,
        };
    }
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

#[cfg(test)]
#[path = "exchange_tests.rs"]
mod tests;
