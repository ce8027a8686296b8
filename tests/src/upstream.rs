//! A real HTTP server to stand behind the gateway. What it does depends on the path:
//!
//! - `/slow/MS...`: waits MS milliseconds, then echoes;
//! - `/download/N`: streams N bytes (64 KiB chunks, generated on the fly);
//! - `/upload`: reads the request body as a stream and answers with its length;
//! - `/hop`: answers with hop-by-hop headers that the gateway must strip;
//! - `/healthz`: the health status set with [`TestUpstream::set_health`] (200 at first);
//! - anything else: echoes (`x-upstream: NAME`, body = the path and query) with the
//!   status set with [`TestUpstream::set_status`] (200 at first).
//!
//! Every request head it sees is recorded, so tests can check what the gateway sent.
//! [`TestUpstream::stop`] closes its listener and connections (the gateway then sees
//! refused connections) and [`TestUpstream::restart`] serves the same address again.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio_util::sync::CancellationToken;

/// A request head as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// Path and query, as sent on the wire.
    pub target: String,
    /// The HTTP version the gateway used.
    pub version: Version,
    /// All headers.
    pub headers: HeaderMap,
}

/// A running upstream server; stopped on drop.
#[derive(Debug)]
pub struct TestUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name, returned in `x-upstream`.
    pub name: String,
    state: Arc<State>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the server threads share with the handle.
#[derive(Debug)]
struct State {
    name: String,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
    /// Requests answered, `/healthz` excluded.
    served: AtomicUsize,
    /// The status of ordinary answers.
    status: AtomicU16,
    /// The status of `/healthz`.
    health: AtomicU16,
    /// `/healthz` requests answered.
    health_checks: AtomicUsize,
    /// Milliseconds to wait before answering an ordinary request.
    delay_ms: AtomicU64,
}

/// A generated streaming body.
type Download = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;
type Body = Either<Full<Bytes>, Download>;

impl TestUpstream {
    /// Starts an upstream named `name` on a free loopback port, on its own thread.
    pub fn start(name: &str) -> TestUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let state = Arc::new(State {
            name: name.to_owned(),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            status: AtomicU16::new(200),
            health: AtomicU16::new(200),
            health_checks: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
        });
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let thread = serve(listener, state.clone(), stop.clone());
        TestUpstream {
            addr,
            name: name.to_owned(),
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// Stops serving: the listener and every connection close (new connections are
    /// refused) by the time this returns.
    pub fn stop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Serves again on the same address after [`TestUpstream::stop`] (retrying the bind
    /// for up to 5 s), keeping the counts and the recorded requests.
    pub fn restart(&mut self) {
        self.stop();
        let listener = bind_again(self.addr);
        self.stop = CancellationToken::new();
        self.thread = Some(serve(listener, self.state.clone(), self.stop.clone()));
    }

    /// Answers ordinary requests with `status` from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// Waits `delay` before answering each ordinary request from now on.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::Relaxed);
    }

    /// Answers `/healthz` with `status` from now on.
    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::Relaxed);
    }

    /// How many TCP connections it has accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// How many requests it has answered, `/healthz` excluded.
    pub fn served(&self) -> usize {
        self.state.served.load(Ordering::Relaxed)
    }

    /// How many `/healthz` requests it has answered.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::Relaxed)
    }

    /// Every request head received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// The most recent request head.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }
}

/// Serves `listener` on a new thread until `stop`; every connection closes with it.
fn serve(
    listener: std::net::TcpListener,
    state: Arc<State>,
    stop: CancellationToken,
) -> std::thread::JoinHandle<()> {
    let counted = state.clone();
    serve_http(
        listener,
        stop,
        move || {
            counted.connections.fetch_add(1, Ordering::Relaxed);
        },
        move |req| respond(state.clone(), req),
    )
}

/// Serves HTTP/1.1 and h2c on `listener` from a thread of its own until `stop`, which
/// also closes every connection: `handle` answers each request, `on_accept` sees each
/// new connection. The test servers' one accept loop.
pub(crate) fn serve_http<H, F, B>(
    listener: std::net::TcpListener,
    stop: CancellationToken,
    on_accept: impl Fn() + Send + 'static,
    handle: H,
) -> std::thread::JoinHandle<()>
where
    H: Fn(Request<Incoming>) -> F + Clone + Send + 'static,
    F: std::future::Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let stream = tokio::select! {
                    () = stop.cancelled() => return,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, _)) => stream,
                        Err(_) => continue,
                    },
                };
                on_accept();
                let conn = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(handle.clone()))
                    .into_owned();
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
    })
}

async fn respond(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), ToString::to_string);
    if req.uri().path() == "/healthz" {
        state.health_checks.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Either::Left(Full::new(Bytes::from_static(b"health"))));
        *response.status_mut() =
            StatusCode::from_u16(state.health.load(Ordering::Relaxed)).expect("status");
        return Ok(response);
    }
    let delay = state.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    state.seen.lock().expect("lock").push(Seen {
        method: req.method().clone(),
        target: target.clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    let mut response = if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms
            .split('/')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::new(Either::Left(Full::new(Bytes::from(target))))
    } else if let Some(n) = path.strip_prefix("/download/") {
        let total: u64 = n.parse().unwrap_or(0);
        Response::new(Either::Right(download(total)))
    } else if path == "/upload" {
        let mut body = req.into_body();
        let mut total: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                Err(_) => break,
            }
        }
        Response::new(Either::Left(Full::new(Bytes::from(total.to_string()))))
    } else if path == "/hop" {
        let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(b"hop"))));
        let h = r.headers_mut();
        h.insert("connection", "x-upstream-secret".parse().expect("value"));
        h.insert("x-upstream-secret", "1".parse().expect("value"));
        h.insert("keep-alive", "timeout=5".parse().expect("value"));
        h.insert("proxy-authenticate", "Basic".parse().expect("value"));
        h.insert("x-kept", "yes".parse().expect("value"));
        r
    } else {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = if body.is_empty() {
            target
        } else {
            format!("{target} {}", String::from_utf8_lossy(&body))
        };
        Response::new(Either::Left(Full::new(Bytes::from(text))))
    };
    if response.status() == StatusCode::OK {
        *response.status_mut() =
            StatusCode::from_u16(state.status.load(Ordering::Relaxed)).expect("status");
    }
    response.headers_mut().insert(
        "x-upstream",
        state.name.parse().expect("name is a header value"),
    );
    Ok(response)
}

/// A body of `total` bytes in 64 KiB chunks, all sharing one buffer: generating it costs
/// no memory beyond that buffer.
fn download(total: u64) -> Download {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'w'; CHUNK as usize]);
    let mut frames = Vec::with_capacity((total / CHUNK + 1) as usize);
    let mut left = total;
    while left > 0 {
        let n = left.min(CHUNK);
        frames.push(Ok(Frame::data(chunk.slice(..n as usize))));
        left -= n;
    }
    StreamBody::new(stream::iter(frames))
}

/// Binds `addr` again after a server on it stopped, retrying for up to 5 s while the
/// old socket is released.
pub(crate) fn bind_again(addr: SocketAddr) -> std::net::TcpListener {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpListener::bind(addr) {
            Ok(listener) => return listener,
            Err(e) if std::time::Instant::now() > deadline => {
                panic!("cannot bind {addr} again: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// An address on 127.0.0.1 nothing listens on (bound, then closed again): an endpoint
/// that refuses connections.
pub fn closed_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener
        .local_addr()
        .expect("a bound listener has an address")
        .to_string()
}
