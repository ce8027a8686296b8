//! A real HTTP server that answers JSON, for the tests of plugins that call services
//! and compose their answers (`aggregate`). What it does depends on the path:
//!
//! - `/together/N`: holds the request until N `/together/` requests have arrived (or
//!   [`TOGETHER_WAIT`] passed), then answers `{"together": A}`, A being how many had
//!   arrived by then: N or more only when the requests were in flight at once;
//! - `/slow/MS`: waits MS milliseconds, then answers `{"slow": MS}`;
//! - `/status/CODE`: answers CODE with `{"status": CODE}`;
//! - `/text`: answers 200 with a body that is not JSON;
//! - anything else: `{"path": PATH-AND-QUERY}`.
//!
//! JSON answers carry `content-type: application/json`. Every request head it sees is
//! recorded on arrival.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Seen;

/// Longest a `/together/N` request waits for the others.
pub const TOGETHER_WAIT: Duration = Duration::from_secs(5);

/// A running JSON server; stopped on drop.
#[derive(Debug)]
pub struct JsonUpstream {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct State {
    seen: Mutex<Vec<Seen>>,
    /// `/together/` requests that have arrived.
    together: watch::Sender<usize>,
}

impl JsonUpstream {
    /// Starts a server on a free loopback port, on its own thread.
    pub fn start() -> JsonUpstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind JSON upstream");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            seen: Mutex::new(Vec::new()),
            together: watch::Sender::new(0),
        });
        let stop = CancellationToken::new();
        let handler_state = state.clone();
        let thread = crate::upstream::serve_http(
            listener,
            stop.clone(),
            || {},
            move |req| respond(handler_state.clone(), req),
        );
        JsonUpstream {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://ADDR` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request head received so far, in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().expect("lock").clone()
    }
}

impl Drop for JsonUpstream {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

async fn respond(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().to_string(), ToString::to_string);
    state.seen.lock().expect("lock").push(Seen {
        method: req.method().clone(),
        target: target.clone(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path();
    let number = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|n| n.parse::<u64>().ok())
    };
    Ok(if let Some(wanted) = number("/together/") {
        state.together.send_modify(|arrived| *arrived += 1);
        let mut arrivals = state.together.subscribe();
        let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
        let _ = tokio::time::timeout(TOGETHER_WAIT, arrivals.wait_for(|n| *n >= wanted)).await;
        let arrived = *state.together.borrow();
        json(StatusCode::OK, &serde_json::json!({ "together": arrived }))
    } else if let Some(ms) = number("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        json(StatusCode::OK, &serde_json::json!({ "slow": ms }))
    } else if let Some(code) = number("/status/") {
        let status = u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
        json(status, &serde_json::json!({ "status": code }))
    } else if path == "/text" {
        Response::new(Full::new(Bytes::from_static(b"<html>not json</html>")))
    } else {
        json(StatusCode::OK, &serde_json::json!({ "path": target }))
    })
}
