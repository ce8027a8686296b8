//! A real HTTP server to stand behind the gateway. What it does depends on the path:
//!
//! - `/slow/MS...`: waits MS milliseconds, then echoes;
//! - `/download/N`: streams N bytes (64 KiB chunks, generated on the fly);
//! - `/upload`: reads the request body as a stream and answers with its length;
//! - `/hop`: answers with hop-by-hop headers that the gateway must strip;
//! - anything else: echoes (200, `x-upstream: NAME`, body = the path and query).
//!
//! Every request head it sees is recorded, so tests can check what the gateway sent.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream;
use http::{HeaderMap, Method, Request, Response, Version};
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
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    stop: CancellationToken,
}

/// A generated streaming body.
type Download = StreamBody<stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>>;
type Body = Either<Full<Bytes>, Download>;

impl TestUpstream {
    /// Starts an upstream named `name` on a free loopback port, on its own thread.
    pub fn start(name: &str) -> TestUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let accept_count = connections.clone();
        let (name_c, seen_c, stop_c) = (name.to_owned(), seen.clone(), stop.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let stream = tokio::select! {
                        () = stop_c.cancelled() => return,
                        accepted = listener.accept() => match accepted {
                            Ok((stream, _)) => {
                                accept_count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                stream
                            }
                            Err(_) => continue,
                        },
                    };
                    let (name, seen) = (name_c.clone(), seen_c.clone());
                    let service = service_fn(move |req| respond(name.clone(), seen.clone(), req));
                    let conn = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    let stop = stop_c.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = conn => {}
                            () = stop.cancelled() => {}
                        }
                    });
                }
            });
        });
        TestUpstream {
            addr,
            name: name.to_owned(),
            seen,
            connections,
            stop,
        }
    }

    /// How many TCP connections it has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Every request head received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }

    /// The most recent request head.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn respond(
    name: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), ToString::to_string);
    seen.lock().expect("lock").push(Seen {
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
    response
        .headers_mut()
        .insert("x-upstream", name.parse().expect("name is a header value"));
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
