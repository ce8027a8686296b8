//! An origin server for the response cache's tests: what it answers is written in the
//! request's query, so each test names the response it wants and the cache keys differ.
//!
//! - `cc=V`: `Cache-Control: V`; `etag=V`: `ETag: "V"`; `lm=V`: `Last-Modified: V`;
//!   `vary=V`: `Vary: V`; `cookie=V`: `Set-Cookie: V`; `personal=V`: `x-personal: V`;
//!   `status=N`: the status;
//! - `size=N`: a body of N bytes (byte `i` is `b'a' + i % 26`), streamed in 16 KiB
//!   chunks (`chunked=1`: without `Content-Length`), `pause=MS`: a pause before each
//!   chunk after the first, `gate=1`: the chunks after the first wait until the test
//!   calls [`Origin::open_gate`];
//! - otherwise the body is `PATH?QUERY #N`, N counting the requests for that target, so
//!   a test tells a stored answer from a new one.
//!
//! A request whose `If-None-Match` names the ETag it would send gets `304`. Every
//! request is counted; [`Origin::set_delay`] holds answers back, [`Origin::set_failing`]
//! answers 503 to everything.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use tokio_util::sync::CancellationToken;

/// A running origin; stopped on drop.
#[derive(Debug)]
pub struct Origin {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
}

#[derive(Debug, Default)]
struct State {
    requests: AtomicUsize,
    per_target: Mutex<HashMap<String, usize>>,
    seen: Mutex<Vec<HeaderMap>>,
    delay_ms: AtomicU64,
    failing: AtomicBool,
    /// Whether `gate=1` bodies may go on past their first chunk.
    gate: tokio::sync::watch::Sender<bool>,
}

type Chunks = futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>;
type Body = Either<Full<Bytes>, StreamBody<Chunks>>;

impl Origin {
    /// Starts an origin on a free loopback port, on its own thread.
    pub fn start() -> Origin {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind origin");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let stop = CancellationToken::new();
        let served = state.clone();
        crate::upstream::serve_http(
            listener,
            stop.clone(),
            || {},
            move |req| respond(served.clone(), req),
        );
        Origin { addr, state, stop }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// The request headers of every request, in order.
    pub fn seen(&self) -> Vec<HeaderMap> {
        self.state.seen.lock().expect("lock").clone()
    }

    /// Holds every answer back this long.
    pub fn set_delay(&self, delay: Duration) {
        let ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state.delay_ms.store(ms, Ordering::SeqCst);
    }

    /// Lets `gate=1` bodies send the rest of their chunks.
    pub fn open_gate(&self) {
        self.state.gate.send_replace(true);
    }

    /// Answers 503 to everything while `failing`.
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn respond(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    state.requests.fetch_add(1, Ordering::SeqCst);
    state.seen.lock().expect("lock").push(req.headers().clone());
    let n = {
        let mut per = state.per_target.lock().expect("lock");
        let n = per.entry(target.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if state.failing.load(Ordering::SeqCst) {
        let mut r = Response::new(Either::Left(Full::new(Bytes::from_static(b"failing\n"))));
        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(r);
    }
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), decode(v)))
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::try_from(value).expect("header value"));
    };
    if let Some(v) = param("cc") {
        set("cache-control", v);
    }
    let etag = param("etag").map(|v| format!("\"{v}\""));
    if let Some(v) = &etag {
        set("etag", v.clone());
    }
    if let Some(v) = param("lm") {
        set("last-modified", v);
    }
    if let Some(v) = param("vary") {
        set("vary", v);
    }
    if let Some(v) = param("cookie") {
        set("set-cookie", v);
    }
    if let Some(v) = param("personal") {
        set("x-personal", v);
    }
    let asked_for = req
        .headers()
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    if let (Some(etag), Some(asked)) = (&etag, asked_for)
        && asked.split(',').any(|t| t.trim() == etag)
    {
        let mut r = Response::new(Either::Left(Full::new(Bytes::new())));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        *r.headers_mut() = headers;
        return Ok(r);
    }
    let status = param("status")
        .and_then(|s| s.parse().ok())
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::OK);
    let body = match param("size").and_then(|s| s.parse::<usize>().ok()) {
        Some(size) => {
            let pause = param("pause").and_then(|s| s.parse().ok()).unwrap_or(0u64);
            let gate = param("gate").map(|_| state.gate.subscribe());
            if param("chunked").is_none() {
                set("content-length", size.to_string());
            }
            let chunks: Vec<(usize, usize)> = (0..size)
                .step_by(16 * 1024)
                .map(|at| (at, (size - at).min(16 * 1024)))
                .collect();
            let stream = futures_util::stream::iter(chunks.into_iter().enumerate())
                .then(move |(i, (at, len))| {
                    let gate = gate.clone();
                    async move {
                        if i > 0 && pause > 0 {
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                        }
                        if let Some(mut gate) = gate.filter(|_| i > 0) {
                            let _ = gate.wait_for(|open| *open).await;
                        }
                        Ok(Frame::data(sized_body(at, len)))
                    }
                })
                .boxed();
            Either::Right(StreamBody::new(stream))
        }
        None => Either::Left(Full::new(Bytes::from(format!("{target} #{n}")))),
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().extend(headers);
    Ok(r)
}

/// Bytes `at..at + len` of a `size=N` body.
pub fn sized_body(at: usize, len: usize) -> Bytes {
    (at..at + len)
        .map(|i| b'a' + (i % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// `%XX` escapes and `+` decoded.
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => out.push(b),
                    Err(_) => out.extend_from_slice(&bytes[i..i + 3]),
                }
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
