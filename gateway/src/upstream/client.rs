//! Sending a request to one endpoint over a pooled HTTP/1.1 connection, and the response
//! body that keeps driving that connection while it streams; or, for `http2` clusters,
//! on a stream of a shared HTTP/2 connection (see [`super::multiplex`]).
//!
//! The request's own task writes the request and reads the response on the HTTP/1.1
//! connection (see [`super::h1`]), and the response body reads on from it until the body
//! ends; the connection then goes back to the pool. This costs no task spawn and no
//! cross-task wake-up per request, which is most of what a generic pooled client spends.

use std::future::{Future, poll_fn};
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version, header};

use crate::request_body::RequestBody;

use super::connect::Connector;
use super::endpoint::EndpointState;
use super::h1;
use super::limits::{Breaker, ConnectionSlot, Limit, Waited};
use super::multiplex::{Checkout, MultiplexPool};
use super::pool::{IdlePool, PooledConn};
use super::response_body::{H1Body, Inner, UpstreamResponseBody};
use crate::config::{Protocol, Timeouts};

/// The body type sent upstream: the client's body streamed through untouched, or a
/// body a plugin's request-body phase produced.
pub type UpstreamBody = http_body_util::Either<RequestBody, http_body_util::Full<Bytes>>;

/// Why an upstream exchange failed, as far as the client's answer is concerned.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamFailure {
    /// The TCP connection could not be established (refused, unreachable, reset).
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    /// The TCP connection was not established within the connect timeout.
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The TLS handshake failed (an untrusted or mismatched certificate, a refused
    /// client certificate, no common protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The connection failed after it was established (reset, closed, bad response).
    #[error("exchange failed: {0}")]
    Exchange(#[source] BoxError),
    /// A new connection closed before the request could be written.
    #[error("the endpoint closed the connection before the request was sent")]
    ClosedBeforeSend,
    /// No response head within the request timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
    /// A circuit breaker refused the request before it was sent.
    #[error("overloaded: {0} reached")]
    Overloaded(Limit),
    /// The client's request body broke off or was malformed (a bad chunk, or a gRPC-Web
    /// text body that is not base64) while it streamed upstream: the client's fault, not the endpoint's. The upstream saw an
    /// aborted request at most.
    #[error("the client's request body failed: {0}")]
    ClientBody(#[source] BoxError),
}

/// An error of any kind, as exchanges over HTTP/1.1 (ours) and HTTP/2 (hyper's) fail.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl UpstreamFailure {
    /// A failed exchange, told apart from a failure of the client's body streaming
    /// through it (the only body in an upstream request that can fail: broken, or past
    /// the route's size limit).
    pub(crate) fn exchange(e: hyper::Error) -> UpstreamFailure {
        let client_body = std::error::Error::source(&e).is_some_and(|source| {
            source.downcast_ref::<hyper::Error>().is_some()
                || source
                    .downcast_ref::<crate::request_body::TooLarge>()
                    .is_some()
                || source.downcast_ref::<crate::grpc_web::BadText>().is_some()
        });
        if client_body {
            UpstreamFailure::ClientBody(Box::new(e))
        } else {
            UpstreamFailure::Exchange(Box::new(e))
        }
    }

    /// A failed exchange over HTTP/1.1: the request's body failing is the client's
    /// fault, anything else the endpoint's.
    pub(crate) fn h1(e: h1::Error) -> UpstreamFailure {
        match e {
            h1::Error::RequestBody(e) => UpstreamFailure::ClientBody(e),
            e => UpstreamFailure::Exchange(Box::new(e)),
        }
    }
}

/// A failed [`UpstreamClient::send`]: what went wrong and, when the request never left
/// (the connection could not be made), the request, untouched, to try elsewhere.
#[derive(Debug)]
pub struct SendFailure {
    /// What went wrong.
    pub failure: UpstreamFailure,
    /// The request, when nothing of it was sent.
    pub unsent: Option<Box<Request<UpstreamBody>>>,
    /// The head of a request that was sent over HTTP/1.1, for a retry to send again
    /// (its body is gone: a retry takes it from its own copy).
    pub sent_head: Option<Box<http::request::Parts>>,
}

impl SendFailure {
    fn sent(failure: UpstreamFailure) -> SendFailure {
        SendFailure {
            failure,
            unsent: None,
            sent_head: None,
        }
    }
}

/// Connections to the endpoints of one cluster, for one worker.
#[derive(Debug)]
pub struct UpstreamClient {
    /// Idle HTTP/1.1 connections per endpoint (`http1` clusters).
    pools: Vec<Arc<IdlePool>>,
    /// HTTP/2 connections per endpoint (`http2` clusters; empty otherwise).
    multiplexed: Box<[Arc<MultiplexPool>]>,
    connector: Arc<Connector>,
    connect_timeout: Duration,
    breaker: Arc<Breaker>,
}

impl UpstreamClient {
    /// A client for `endpoints` endpoints speaking `protocol`, its connections opened
    /// by `connector` and counted by `breaker`. With `before` (the client this one
    /// replaces, and for each endpoint its index there if it had it), an endpoint that
    /// stayed keeps its pooled connections.
    pub(crate) fn new(
        endpoints: usize,
        before: Option<(&UpstreamClient, &[Option<usize>])>,
        protocol: Protocol,
        timeouts: &Timeouts,
        connector: Arc<Connector>,
        breaker: Arc<Breaker>,
    ) -> UpstreamClient {
        let (pools, multiplexed) = match protocol {
            Protocol::Http1 => (
                (0..endpoints)
                    .map(|j| {
                        before
                            .and_then(|(b, stayed)| kept(&b.pools, stayed, j))
                            .unwrap_or_else(|| {
                                Arc::new(IdlePool::new(timeouts.idle, breaker.clone()))
                            })
                    })
                    .collect(),
                Box::default(),
            ),
            Protocol::Http2 => (
                Vec::new(),
                (0..endpoints)
                    .map(|j| {
                        before
                            .and_then(|(b, stayed)| kept(&b.multiplexed, stayed, j))
                            .unwrap_or_else(|| {
                                Arc::new(MultiplexPool::new(timeouts.idle, breaker.clone()))
                            })
                    })
                    .collect(),
            ),
        };
        UpstreamClient {
            pools,
            multiplexed,
            connector,
            connect_timeout: timeouts.connect,
            breaker,
        }
    }

    /// Whether a failed exchange hands back the head of the request it sent (HTTP/1.1
    /// clusters), so that a retry needs no copy of it made before.
    pub(crate) fn returns_sent_heads(&self) -> bool {
        self.multiplexed.is_empty()
    }

    /// Its idle pools, for the breaker to find spare connections in.
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Arc<IdlePool>> {
        self.pools.iter()
    }

    /// Sends `req` (origin-form URI, `Host` set) to endpoint `index` (`endpoint`) and
    /// waits up to `timeout` for the response head. A pooled connection that turns out
    /// to be closed is replaced before the request is written; a request is never sent
    /// twice.
    #[allow(
        clippy::manual_async_fn,
        reason = "an `async fn` keeps its arguments twice in its future"
    )]
    pub(crate) fn send(
        &self,
        index: usize,
        endpoint: &EndpointState,
        mut req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> impl Future<Output = Result<Response<UpstreamResponseBody>, SendFailure>> {
        async move {
            if !self.multiplexed.is_empty() {
                // Boxed: `http1` requests must not carry (and move) this future's state.
                return Box::pin(self.send_multiplexed(index, endpoint, req, timeout)).await;
            }
            let pool = &self.pools[index];
            loop {
                let (mut conn, fresh) = match self.connection(index, pool, endpoint).await {
                    Ok(got) => got,
                    Err(failure) => {
                        return Err(SendFailure {
                            failure,
                            unsent: Some(Box::new(req)),
                            sent_head: None,
                        });
                    }
                };
                if !fresh && !ready(&mut conn).await {
                    continue; // closed while idle: try the next one
                }
                match exchange(conn, req, timeout).await {
                    Ok(mut response) => {
                        response.body_mut().pool = Some(pool.clone());
                        return Ok(response);
                    }
                    Err(Exchange::NotSent(back)) if !fresh => req = *back,
                    Err(Exchange::NotSent(back)) => {
                        return Err(SendFailure {
                            failure: UpstreamFailure::ClosedBeforeSend,
                            unsent: Some(back),
                            sent_head: None,
                        });
                    }
                    Err(Exchange::Failed(failure, head)) => {
                        return Err(SendFailure {
                            failure,
                            unsent: None,
                            sent_head: head,
                        });
                    }
                }
            }
        }
    }

    /// An idle pooled connection, or a new one within `max_connections` (waiting as a
    /// pending request when the cluster is at its limit); whether it is new.
    async fn connection(
        &self,
        index: usize,
        pool: &IdlePool,
        endpoint: &EndpointState,
    ) -> Result<(Box<PooledConn>, bool), UpstreamFailure> {
        if let Some(conn) = pool.take() {
            return Ok((conn, false));
        }
        let slot = match self.breaker.reserve_or_evict() {
            Some(slot) => slot,
            // Boxed: only requests at the connection limit wait, and the waiting state
            // must not grow every request's future.
            None => match Box::pin(self.breaker.wait(self.connect_timeout, || pool.take())).await {
                Ok(Waited::Ready(conn)) => return Ok((conn, false)),
                Ok(Waited::Slot(slot)) => slot,
                Err(limit) => {
                    self.breaker.refuse(limit);
                    return Err(UpstreamFailure::Overloaded(limit));
                }
            },
        };
        // Boxed: connecting (and a TLS handshake) is a large state that requests sent on
        // a pooled connection, nearly all of them, must not carry and move.
        Ok((Box::pin(self.connect(index, endpoint, slot)).await?, true))
    }

    async fn connect(
        &self,
        index: usize,
        endpoint: &EndpointState,
        slot: ConnectionSlot,
    ) -> Result<Box<PooledConn>, UpstreamFailure> {
        let stream = self.connector.connect(index, endpoint).await?;
        Ok(Box::new(PooledConn {
            h1: h1::Conn::new(stream),
            idle_since: Instant::now(),
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            _slot: slot,
        }))
    }
}

/// The pool endpoint `j` had in the client replaced, if it stayed (`stayed[j]` is its
/// index there).
fn kept<P>(pools: &[Arc<P>], stayed: &[Option<usize>], j: usize) -> Option<Arc<P>> {
    pools.get(stayed.get(j).copied().flatten()?).cloned()
}

impl UpstreamClient {
    /// [`UpstreamClient::send`] for `http2` clusters: the request goes as HTTP/2 on a
    /// stream of a shared connection. A connection found gone before the request was
    /// written is dropped and the request tried on another; a request is never sent
    /// twice.
    async fn send_multiplexed(
        &self,
        index: usize,
        endpoint: &EndpointState,
        mut req: Request<UpstreamBody>,
        timeout: Duration,
    ) -> Result<Response<UpstreamResponseBody>, SendFailure> {
        let authority = &endpoint.authority;
        let pool = &self.multiplexed[index];
        let scheme = self.connector.scheme();
        loop {
            let checkout = pool
                .checkout(&self.connector, index, endpoint, self.connect_timeout)
                .await;
            let Checkout {
                mut sender,
                stream,
                fresh,
            } = match checkout {
                Ok(taken) => taken,
                Err(failure) => {
                    return Err(SendFailure {
                        failure,
                        unsent: Some(Box::new(req)),
                        sent_head: None,
                    });
                }
            };
            into_http2(&mut req, authority, &scheme);
            let outcome = tokio::time::timeout(timeout, sender.try_send_request(req)).await;
            match outcome {
                // Dropping the response future resets the stream.
                Err(_) => return Err(SendFailure::sent(UpstreamFailure::Timeout(timeout))),
                Ok(Ok(response)) => {
                    let (parts, body) = response.into_parts();
                    let body = UpstreamResponseBody {
                        inner: Inner::H2(body),
                        pool: None,
                        in_flight: None,
                        stream: Some(stream),
                    };
                    return Ok(Response::from_parts(parts, body));
                }
                Ok(Err(mut e)) => match e.take_message() {
                    Some(back) => {
                        stream.mark_broken();
                        if fresh {
                            return Err(SendFailure {
                                failure: UpstreamFailure::ClosedBeforeSend,
                                unsent: Some(Box::new(back)),
                                sent_head: None,
                            });
                        }
                        req = back;
                    }
                    None => {
                        let failure = UpstreamFailure::exchange(e.into_error());
                        // A client's broken body resets only its own stream: the
                        // connection goes on serving the others.
                        if !matches!(failure, UpstreamFailure::ClientBody(_)) {
                            stream.mark_broken();
                        }
                        return Err(SendFailure::sent(failure));
                    }
                },
            }
        }
    }
}

/// Turns a request made for HTTP/1.1 (origin-form target, `Host` header) into one for
/// HTTP/2: the target becomes `scheme://authority/path`, where the authority is what
/// `Host` said (or, without one, the endpoint's address), and `Host` itself goes, as
/// `:authority` replaces it.
fn into_http2(req: &mut Request<UpstreamBody>, endpoint: &Authority, scheme: &Scheme) {
    let authority = req
        .headers_mut()
        .remove(header::HOST)
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .or_else(|| req.uri().authority().cloned())
        .unwrap_or_else(|| endpoint.clone());
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(scheme.clone());
    parts.authority = Some(authority);
    parts.path_and_query = Some(
        req.uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    *req.version_mut() = Version::HTTP_2;
}

/// Whether an idle connection can take a request now: its endpoint neither closed it
/// nor sent anything while it idled.
async fn ready(conn: &mut Box<PooledConn>) -> bool {
    poll_fn(|cx| Poll::Ready(conn.h1.poll_idle(cx))).await
}

enum Exchange {
    /// The connection was gone before the request was written; here it is back.
    NotSent(Box<Request<UpstreamBody>>),
    /// The exchange failed after the request started: why, and the request's head.
    Failed(UpstreamFailure, Option<Box<http::request::Parts>>),
}

/// Writes the request and waits for the response head, writing the request's body
/// meanwhile. The response's body reads on from the connection (and finishes writing the
/// request's, if the endpoint answered before it had all of it).
#[allow(
    clippy::manual_async_fn,
    reason = "an `async fn` keeps its arguments twice in its future"
)]
fn exchange(
    mut conn: Box<PooledConn>,
    req: Request<UpstreamBody>,
    timeout: Duration,
) -> impl Future<Output = Result<Response<UpstreamResponseBody>, Exchange>> {
    async move {
        conn.deadline
            .as_mut()
            .reset(tokio::time::Instant::now() + timeout);
        let head_request = req.method() == Method::HEAD;
        let mut writer = match conn.h1.start(req).await {
            Ok(writer) => writer,
            Err(h1::NotSent(req)) => return Err(Exchange::NotSent(Box::new(req))),
        };
        // A connection that fails while the request is written is told only if no
        // response comes: an endpoint may answer (a 413, say) and close before it has
        // read the whole request.
        let mut write_failed = None;
        let outcome = poll_fn(|cx| {
            if write_failed.is_none()
                && let Poll::Ready(Err(e)) = writer.poll(&mut conn.h1, cx)
            {
                if !matches!(e, h1::Error::Io(_)) {
                    return Poll::Ready(Some(Err(e)));
                }
                write_failed = Some(e);
            }
            match conn.h1.poll_head(cx, head_request) {
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Some(Err(write_failed.take().unwrap_or(e))));
                }
                Poll::Ready(Ok(head)) => return Poll::Ready(Some(Ok(head))),
                Poll::Pending => {}
            }
            conn.deadline.as_mut().poll(cx).map(|()| None)
        })
        .await;
        match outcome {
            None => Err(Exchange::Failed(
                UpstreamFailure::Timeout(timeout),
                conn.h1.take_sent().map(Box::new),
            )),
            Some(Err(e)) => Err(Exchange::Failed(
                UpstreamFailure::h1(e),
                conn.h1.take_sent().map(Box::new),
            )),
            Some(Ok((head, decoder))) => {
                let writer = (!writer.is_done()).then_some(writer);
                let body = UpstreamResponseBody {
                    inner: Inner::H1(Box::new(H1Body {
                        decoder,
                        writer,
                        conn: Some(conn),
                    })),
                    pool: None,
                    in_flight: None,
                    stream: None,
                };
                Ok(head.map(|()| body))
            }
        }
    }
}
