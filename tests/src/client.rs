//! HTTP clients for tests: pooled HTTP/1.1, h2c (prior knowledge), and raw bytes on a
//! socket for requests that real clients would tidy up first (`..`, `//`, odd headers).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The request body type of the test clients.
pub type ClientBody = BoxBody<Bytes, std::io::Error>;

/// A pooled test client.
pub type TestClient = Client<HttpConnector, ClientBody>;

/// A response, body collected.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Reply {
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// An HTTP/1.1 client with keep-alive.
pub fn h1_client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

/// An HTTP/2 client speaking h2c with prior knowledge.
pub fn h2_client() -> TestClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new())
}

/// An empty request body.
pub fn empty() -> ClientBody {
    full(Bytes::new())
}

/// A request body of these bytes.
pub fn full(bytes: impl Into<Bytes>) -> ClientBody {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// Sends `req` and collects the response; panics after 20 s so a hang fails the test.
pub async fn send(client: &TestClient, req: Request<ClientBody>) -> Reply {
    let exchange = async {
        let response = client.request(req).await.expect("request failed");
        let (parts, body) = response.into_parts();
        let body = body.collect().await.expect("body failed").to_bytes();
        Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("no response within 20 s")
}

/// `GET url` with HTTP/1.1.
pub async fn get(url: &str) -> Reply {
    let req = Request::get(url).body(empty()).expect("request");
    send(&h1_client(), req).await
}

/// [`get`] of an owned URL, for spawning.
pub async fn get_owned(url: String) -> Reply {
    get(&url).await
}

/// `n` concurrent [`get`]s of `url`, each on a task of its own: the replies in the order
/// the requests were started.
pub async fn get_concurrently(url: &str, n: usize) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(get_owned(url.to_owned())))
        .collect();
    let mut replies = Vec::with_capacity(n);
    for task in tasks {
        replies.push(task.await.expect("request task"));
    }
    replies
}

/// Writes `request` verbatim to `addr`, then reads the response until the server closes
/// the connection (so send `Connection: close`). Panics after 10 s.
pub async fn raw_request(addr: SocketAddr, request: &str) -> String {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await.expect("read");
        String::from_utf8_lossy(&out).into_owned()
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .expect("no complete response within 10 s")
}

/// A response read frame by frame.
#[derive(Debug)]
pub struct FramedReply {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Each data frame as it arrived.
    pub data: Vec<Bytes>,
    /// The trailers, if any came.
    pub trailers: Option<HeaderMap>,
}

/// A request body of `data` followed by `trailers`.
pub fn with_trailers(data: impl Into<Bytes>, trailers: HeaderMap) -> ClientBody {
    let frames = [
        Ok(hyper::body::Frame::data(data.into())),
        Ok(hyper::body::Frame::trailers(trailers)),
    ];
    http_body_util::StreamBody::new(futures_util::stream::iter(frames)).boxed()
}

/// Sends `req` (absolute URI) as HTTP/2 on `io` — a plain connection (prior knowledge)
/// or a TLS one that agreed on `h2` — and reads the response frame by frame. Panics
/// after 20 s.
pub async fn h2_exchange<I>(io: I, req: Request<ClientBody>) -> FramedReply
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let exchange = async {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(io),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let response = sender.send_request(req).await.expect("request failed");
        let (parts, mut body) = response.into_parts();
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("body failed");
            match frame.into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        FramedReply {
            status: parts.status,
            headers: parts.headers,
            data,
            trailers,
        }
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("no response within 20 s")
}
