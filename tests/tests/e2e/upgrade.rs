//! HTTP/1.1 `Upgrade` passthrough: a real WebSocket client talks to a real WebSocket
//! server through the gateway; an upgrade the upstream refuses is an ordinary response;
//! tunnels count against the cluster's connection limit; CONNECT is refused.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::Request;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{
    Request as WsRequest, Response as WsResponse,
};
use weir_tests::client::{empty, h1_client};
use weir_tests::{TestGateway, TestUpstream, raw_request, send};

/// A WebSocket server on a free loopback port: it greets each client with `hello`, then
/// echoes every text and binary message until the client closes. It records the `Host`
/// and path of each handshake, and stops when dropped.
struct EchoServer {
    addr: SocketAddr,
    handshakes: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EchoServer {
    async fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let seen = handshakes.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    // The callback's error type is tungstenite's (large) HTTP response.
                    #[allow(clippy::result_large_err)]
                    let record = |req: &WsRequest, resp: WsResponse| {
                        let host = req
                            .headers()
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or_default()
                            .to_owned();
                        seen.lock()
                            .expect("lock")
                            .push((host, req.uri().path().to_owned()));
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, record).await
                    else {
                        return;
                    };
                    if ws.send(Message::text("hello")).await.is_err() {
                        return;
                    }
                    while let Some(Ok(message)) = ws.next().await {
                        if message.is_close() {
                            let _ = ws.close(None).await;
                            return;
                        }
                        let echo = message.is_text() || message.is_binary();
                        if echo && ws.send(message).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EchoServer {
            addr,
            handshakes,
            task,
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Opens a WebSocket through the gateway at `gw` to `path`.
async fn connect(
    gw: &TestGateway,
    path: &str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let stream = TcpStream::connect(gw.addr)
        .await
        .expect("connect to the gateway");
    let url = format!("ws://chat.example.com{path}");
    tokio_tungstenite::client_async(url, stream)
        .await
        .map(|(ws, _)| ws)
}

async fn next_message(ws: &mut Client) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("a valid message")
}

fn ws_config(addr: SocketAddr, limits: &str) -> String {
    format!(
        "[[upstream]]\nname = \"chat\"\nendpoints = [\"{addr}\"]\n{limits}\
         [[route]]\nname = \"chat\"\nupstream = \"chat\"\n"
    )
}

#[tokio::test]
async fn a_websocket_echoes_through_the_gateway_both_ways_and_closes() {
    let server = EchoServer::start().await;
    let gw = TestGateway::start(&ws_config(server.addr, ""));
    let mut ws = connect(&gw, "/chat/room-1")
        .await
        .expect("WebSocket handshake");

    assert_eq!(next_message(&mut ws).await, Message::text("hello"));
    for i in 0..5 {
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        assert_eq!(next_message(&mut ws).await, Message::text(text));
    }
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    ws.send(Message::binary(blob.clone()))
        .await
        .expect("send binary");
    assert_eq!(next_message(&mut ws).await, Message::binary(blob));

    ws.close(None).await.expect("close");
    // The server's close frame comes back, then the stream ends.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = ws.next().await {
            match message {
                Ok(Message::Close(_)) | Err(_) => {}
                Ok(other) => panic!("unexpected message after close: {other:?}"),
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the tunnel did not close");
    drop(ws);

    let handshakes = server.handshakes.lock().expect("lock").clone();
    assert_eq!(
        handshakes,
        [("chat.example.com".to_owned(), "/chat/room-1".to_owned())]
    );
    // The tunnel gave its place back once closed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let upstreams = gw.admin_json("/admin/upstreams").await;
        let load = &upstreams["upstreams"][0]["load"];
        if load["connections"] == 0 && load["requests"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still counted: {load}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_open_tunnel_counts_against_the_connection_limit() {
    let server = EchoServer::start().await;
    let gw = TestGateway::start(&ws_config(
        server.addr,
        "limits = { max_connections = 1, max_pending = 0 }\n",
    ));
    let mut first = connect(&gw, "/one").await.expect("first handshake");
    assert_eq!(next_message(&mut first).await, Message::text("hello"));
    // The only connection is the tunnel's: a second upgrade is refused with 503.
    match connect(&gw, "/two").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected a 503 refusal, got {other:?}"),
    }
    first.close(None).await.expect("close");
    while let Some(Ok(_)) = first.next().await {}
    drop(first);
    // Once closed, the place is free again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut second = loop {
        match connect(&gw, "/two").await {
            Ok(ws) => break ws,
            Err(e) => {
                assert!(std::time::Instant::now() < deadline, "still refused: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(next_message(&mut second).await, Message::text("hello"));
}

#[tokio::test]
async fn an_upgrade_the_upstream_refuses_is_a_normal_response() {
    let upstream = TestUpstream::start("plain");
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"plain\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"plain\"\nupstream = \"plain\"\n",
        upstream.addr
    ));
    let client = h1_client();
    let req = Request::get(gw.url("/not-a-socket"))
        .header("connection", "upgrade")
        .header("upgrade", "foo/1")
        .body(empty())
        .expect("request");
    let reply = send(&client, req).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "/not-a-socket");
    assert!(reply.header("upgrade").is_none());
    let seen = upstream.last();
    assert_eq!(seen.headers["upgrade"], "foo/1", "the upstream was asked");
    assert_eq!(seen.headers["connection"], "upgrade");
    // The client's connection is still good for ordinary requests.
    let reply = send(
        &client,
        Request::get(gw.url("/after"))
            .body(empty())
            .expect("request"),
    )
    .await;
    assert_eq!(reply.text(), "/after");
}

#[tokio::test]
async fn connect_is_refused_with_405() {
    let upstream = TestUpstream::start("plain");
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"plain\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"plain\"\nupstream = \"plain\"\n",
        upstream.addr
    ));
    let response = raw_request(
        gw.addr,
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 405"), "{response}");
    assert_eq!(upstream.served(), 0);
}
