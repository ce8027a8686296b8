//! An upstream for protocol tests: HTTP/1.1 and HTTP/2 (h2c with prior knowledge, or
//! ALPN over TLS), with an optional client-certificate requirement and a chosen
//! `SETTINGS_MAX_CONCURRENT_STREAMS`. It records every connection (the SNI it was
//! asked for, the ALPN agreed, whether a client certificate came) and every request
//! (version, target, headers, trailers), and counts requests in progress. Paths:
//!
//! - `/grpc/unary`: reads the request (body and trailers), answers like a gRPC server:
//!   `content-type: application/grpc`, one length-prefixed message, then the trailers
//!   `grpc-status: 0`, `grpc-message: all good` and `x-echo-trailer` (the request's
//!   `x-client-trailer` trailer, if any);
//! - `/grpc/stream/N`: N messages 10 ms apart, then the trailers;
//! - `/slow/MS`: answers after MS milliseconds;
//! - anything else: 200 with the HTTP version as the body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rustls::server::WebPkiClientVerifier;
use tokio_util::sync::CancellationToken;

use crate::certs::TestCert;

/// How a [`ProtoUpstream`] serves.
#[derive(Debug, Clone, Default)]
pub struct ProtoOptions {
    /// Serve TLS with this certificate, offering ALPN `h2` and `http/1.1`.
    pub tls: Option<TestCert>,
    /// With `tls`: require a client certificate issued by this CA (PEM).
    pub client_ca: Option<String>,
    /// The `SETTINGS_MAX_CONCURRENT_STREAMS` it announces (hyper's default otherwise).
    pub max_concurrent_streams: Option<u32>,
    /// Speak HTTP/2 only.
    pub http2_only: bool,
}

/// A connection as it was accepted.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The SNI the client sent (TLS only).
    pub sni: Option<String>,
    /// The ALPN protocol agreed (TLS only).
    pub alpn: Option<Vec<u8>>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct ProtoSeen {
    /// The method.
    pub method: Method,
    /// The target as received (absolute for HTTP/2).
    pub uri: String,
    /// The HTTP version.
    pub version: Version,
    /// The headers.
    pub headers: HeaderMap,
    /// The request's trailers, if it had any (`/grpc/...` only).
    pub trailers: Option<HeaderMap>,
}

#[derive(Debug, Default)]
struct ProtoState {
    connections: AtomicUsize,
    handshake_failures: AtomicUsize,
    accepted: Mutex<Vec<Accepted>>,
    seen: Mutex<Vec<ProtoSeen>>,
    active: AtomicUsize,
    peak_active: AtomicUsize,
    /// Cancelled to send GOAWAY on the connections open now.
    goaway: Mutex<CancellationToken>,
}

type ProtoBody = BoxBody<Bytes, Infallible>;

/// A running protocol-test upstream; stopped on drop.
#[derive(Debug)]
pub struct ProtoUpstream {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<ProtoState>,
    options: ProtoOptions,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProtoUpstream {
    /// Starts serving on a free loopback port, on its own thread.
    pub fn start(options: ProtoOptions) -> ProtoUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(ProtoState::default());
        let stop = CancellationToken::new();
        let thread = spawn(listener, options.clone(), state.clone(), stop.clone());
        ProtoUpstream {
            addr,
            state,
            options,
            stop,
            thread: Some(thread),
        }
    }

    /// Serves again on the same address after [`ProtoUpstream::stop`] (retrying the
    /// bind for up to 5 s), keeping the counts and records.
    pub fn restart(&mut self) {
        self.stop();
        let listener = crate::upstream::bind_again(self.addr);
        self.stop = CancellationToken::new();
        let (options, state) = (self.options.clone(), self.state.clone());
        self.thread = Some(spawn(listener, options, state, self.stop.clone()));
    }

    /// An h2c upstream (HTTP/2 only, plain TCP).
    pub fn h2c() -> ProtoUpstream {
        ProtoUpstream::start(ProtoOptions {
            http2_only: true,
            ..ProtoOptions::default()
        })
    }

    /// Stops serving: the listener and every connection close by the time this returns.
    pub fn stop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Sends GOAWAY on every open connection (their streams in progress finish; new
    /// connections are still accepted).
    pub fn goaway(&self) {
        let mut token = self.state.goaway.lock().expect("lock");
        token.cancel();
        *token = CancellationToken::new();
    }

    /// TCP connections accepted (TLS handshakes that failed included).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// TLS handshakes that failed.
    pub fn handshake_failures(&self) -> usize {
        self.state.handshake_failures.load(Ordering::Relaxed)
    }

    /// Connections that completed their TLS handshake (or every one, without TLS).
    pub fn accepted(&self) -> Vec<Accepted> {
        self.state.accepted.lock().expect("lock").clone()
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<ProtoSeen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// The most requests it was serving at once.
    pub fn peak_concurrency(&self) -> usize {
        self.state.peak_active.load(Ordering::Relaxed)
    }
}

impl Drop for ProtoUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Serves `listener` on a new thread until `stop`.
fn spawn(
    listener: std::net::TcpListener,
    options: ProtoOptions,
    state: Arc<ProtoState>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    listener.set_nonblocking(true).expect("nonblocking");
    let acceptor = options.tls.as_ref().map(|cert| acceptor(cert, &options));
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(serve(listener, options, acceptor, state, stop));
    })
}

fn acceptor(cert: &TestCert, options: &ProtoOptions) -> tokio_rustls::TlsAcceptor {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match &options.client_ca {
        Some(pem) => {
            let ca = crate::certs::roots_from_pem(pem);
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(ca), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let (chain, key) = cert.der();
    let mut config = builder
        .with_single_cert(chain, key)
        .expect("server certificate");
    config.alpn_protocols = if options.http2_only {
        vec![b"h2".to_vec()]
    } else {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    };
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve(
    listener: std::net::TcpListener,
    options: ProtoOptions,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<ProtoState>,
    stop: CancellationToken,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if options.http2_only {
        builder = builder.http2_only();
    }
    builder
        .http2()
        .max_concurrent_streams(options.max_concurrent_streams);
    let builder = Arc::new(builder);
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        state.connections.fetch_add(1, Ordering::Relaxed);
        let (state, stop, builder, acceptor) = (
            state.clone(),
            stop.clone(),
            builder.clone(),
            acceptor.clone(),
        );
        tokio::spawn(async move {
            let Some(acceptor) = acceptor else {
                state.accepted.lock().expect("lock").push(Accepted {
                    sni: None,
                    alpn: None,
                    client_cert: false,
                });
                run_connection(&builder, TokioIo::new(stream), state, stop).await;
                return;
            };
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(_) => {
                    state.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let session = tls.get_ref().1;
            state.accepted.lock().expect("lock").push(Accepted {
                sni: session.server_name().map(str::to_owned),
                alpn: session.alpn_protocol().map(<[u8]>::to_vec),
                client_cert: session.peer_certificates().is_some(),
            });
            run_connection(&builder, TokioIo::new(tls), state, stop).await;
        });
    }
}

/// Serves one connection until it ends or `stop`; on [`ProtoUpstream::goaway`], shuts
/// it down gracefully (HTTP/2: GOAWAY, then the streams in progress finish).
async fn run_connection<I>(
    builder: &auto::Builder<TokioExecutor>,
    io: I,
    state: Arc<ProtoState>,
    stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let goaway = state.goaway.lock().expect("lock").clone();
    let service = service_fn(move |req| respond(state.clone(), req));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        () = stop.cancelled() => return,
        () = goaway.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = conn => {}
        () = stop.cancelled() => {}
    }
}

/// Counts a request as in progress while it lives.
struct Active(Arc<ProtoState>);

impl Active {
    fn new(state: &Arc<ProtoState>) -> Active {
        let now = state.active.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_active.fetch_max(now, Ordering::SeqCst);
        Active(state.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn respond(
    state: Arc<ProtoState>,
    req: Request<Incoming>,
) -> Result<Response<ProtoBody>, Infallible> {
    let _active = Active::new(&state);
    let (parts, body) = req.into_parts();
    let collected = body.collect().await.ok();
    let trailers = collected.as_ref().and_then(|c| c.trailers().cloned());
    state.seen.lock().expect("lock").push(ProtoSeen {
        method: parts.method.clone(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers.clone(),
        trailers: trailers.clone(),
    });
    let path = parts.uri.path();
    let response = if path == "/grpc/unary" {
        let echo = trailers
            .as_ref()
            .and_then(|t| t.get("x-client-trailer").cloned());
        grpc(1, Duration::ZERO, echo)
    } else if let Some(n) = path.strip_prefix("/grpc/stream/") {
        grpc(n.parse().unwrap_or(1), Duration::from_millis(10), None)
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(100))).await;
        Response::new(full(format!("{:?}", parts.version)))
    } else {
        Response::new(full(format!("{:?}", parts.version)))
    };
    Ok(response)
}

fn full(text: String) -> ProtoBody {
    Full::new(Bytes::from(text)).boxed()
}

/// A gRPC-style response: `messages` length-prefixed messages `gap` apart, then the
/// trailers (with `echo` as `x-echo-trailer`).
fn grpc(messages: usize, gap: Duration, echo: Option<HeaderValue>) -> Response<ProtoBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    trailers.insert("grpc-message", HeaderValue::from_static("all good"));
    if let Some(echo) = echo {
        trailers.insert("x-echo-trailer", echo);
    }
    let frames =
        futures_util::stream::unfold((0, Some(trailers)), move |(sent, trailers)| async move {
            if sent < messages {
                if sent > 0 && !gap.is_zero() {
                    tokio::time::sleep(gap).await;
                }
                let text = format!("message {sent}");
                let mut framed = vec![0u8];
                framed.extend_from_slice(&(text.len() as u32).to_be_bytes());
                framed.extend_from_slice(text.as_bytes());
                let frame = Frame::data(Bytes::from(framed));
                return Some((Ok(frame), (sent + 1, trailers)));
            }
            let trailers = trailers?;
            Some((Ok(Frame::trailers(trailers)), (sent, None)))
        });
    let mut response = Response::new(StreamBody::new(frames).boxed());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    response
}
