//! The client against a scripted endpoint on a loopback socket: what it writes, byte for
//! byte, and how it reads every framing of a response, good and broken.

use std::future::poll_fn;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, StatusCode, Version, header};
use http_body::Frame;
use http_body_util::{Either, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::{Conn, Decoder, Error, MAX_HEAD};
use crate::upstream::client::UpstreamBody;
use crate::upstream::connect::UpstreamStream;

/// A connection to a loopback endpoint, and the endpoint's side of it.
async fn pair() -> (Conn, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (
        Conn::new(UpstreamStream::Plain(client.unwrap())),
        accepted.unwrap().0,
    )
}

fn get(path: &str) -> Request<UpstreamBody> {
    let mut req = Request::new(Either::Right(Full::new(Bytes::new())));
    *req.uri_mut() = path.parse().unwrap();
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("up.test"));
    req
}

fn post(path: &str, body: &'static [u8]) -> Request<UpstreamBody> {
    let mut req = get(path);
    *req.method_mut() = Method::POST;
    *req.body_mut() = Either::Right(Full::new(Bytes::from_static(body)));
    req
}

/// Reads from the endpoint's side until `n` bytes came (or it closed).
async fn read_n(server: &mut TcpStream, n: usize) -> String {
    let mut got = vec![0; n];
    server.read_exact(&mut got).await.unwrap();
    String::from_utf8(got).unwrap()
}

/// Sends `req`, has the endpoint answer `answer` once it read `expect` (checked), and
/// returns the response with its body's frames.
async fn exchange(
    conn: &mut Conn,
    server: &mut TcpStream,
    req: Request<UpstreamBody>,
    expect: &str,
    answer: &[u8],
) -> Result<(http::Response<()>, Vec<Frame<Bytes>>), Error> {
    let head_request = req.method() == Method::HEAD;
    let Ok(mut writer) = conn.start(req).await else {
        panic!("not sent");
    };
    assert_eq!(read_n(server, expect.len()).await, expect);
    server.write_all(answer).await.unwrap();
    poll_fn(|cx| writer.poll(conn, cx)).await?;
    let (response, mut decoder) = poll_fn(|cx| conn.poll_head(cx, head_request)).await?;
    let frames = body(conn, &mut decoder).await?;
    Ok((response, frames))
}

/// [`exchange`] of a plain `GET`, which must succeed.
async fn answered(
    conn: &mut Conn,
    server: &mut TcpStream,
    answer: &[u8],
) -> (http::Response<()>, Vec<Frame<Bytes>>) {
    exchange(conn, server, get("/a?b=1"), GET_HEAD, answer)
        .await
        .unwrap()
}

async fn body(conn: &mut Conn, decoder: &mut Decoder) -> Result<Vec<Frame<Bytes>>, Error> {
    let mut frames = Vec::new();
    while let Some(frame) = poll_fn(|cx| decoder.poll_frame(conn, cx)).await {
        frames.push(frame?);
    }
    Ok(frames)
}

fn data(frames: &[Frame<Bytes>]) -> String {
    frames
        .iter()
        .filter_map(|f| f.data_ref())
        .map(|d| String::from_utf8_lossy(d).into_owned())
        .collect()
}

const GET_HEAD: &str = "GET /a?b=1 HTTP/1.1\r\nhost: up.test\r\n\r\n";

#[tokio::test]
async fn a_length_framed_response_is_read_and_the_connection_reused() {
    let (mut conn, mut server) = pair().await;
    for round in 0..3 {
        let answer =
            format!("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Round: {round}\r\n\r\nhello");
        let (response, frames) = answered(&mut conn, &mut server, answer.as_bytes()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), Version::HTTP_11);
        assert_eq!(response.headers()["x-round"], round.to_string().as_str());
        assert_eq!(data(&frames), "hello");
        assert!(conn.is_reusable());
        assert!(poll_fn(|cx| std::task::Poll::Ready(conn.poll_idle(cx))).await);
    }
}

#[tokio::test]
async fn a_small_body_in_memory_goes_with_the_head_and_gets_its_length() {
    let (mut conn, mut server) = pair().await;
    let expect = "POST /p HTTP/1.1\r\nhost: up.test\r\ncontent-length: 5\r\n\r\nabcde";
    let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n";
    let (response, frames) = exchange(&mut conn, &mut server, post("/p", b"abcde"), expect, answer)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(frames.is_empty());
    assert!(conn.is_reusable());
}

#[tokio::test]
async fn a_declared_content_length_is_kept_and_a_body_of_another_size_refused() {
    let (mut conn, mut server) = pair().await;
    let mut req = post("/p", b"abc");
    req.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
    let mut writer = conn.start(req).await.ok().unwrap();
    // The body does not fit in the length the head says: it goes after the head, and
    // the writer finds it short when it ends.
    let failed = poll_fn(|cx| writer.poll(&mut conn, cx)).await.unwrap_err();
    assert!(
        matches!(failed, Error::BodyLength("is shorter than")),
        "{failed:?}"
    );
    let expect = "POST /p HTTP/1.1\r\nhost: up.test\r\ncontent-length: 5\r\n\r\nabc";
    assert_eq!(read_n(&mut server, expect.len()).await, expect);
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn a_chunked_response_with_extensions_and_trailers() {
    let (mut conn, mut server) = pair().await;
    let answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
        5;name=value\r\nhello\r\n6 \r\n world\r\n0\r\ngrpc-status: 0\r\nx-sum: 11\r\n\r\n";
    let (response, frames) = answered(&mut conn, &mut server, answer).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(data(&frames), "hello world");
    let trailers = frames.last().and_then(|f| f.trailers_ref()).unwrap();
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["x-sum"], "11");
    assert!(conn.is_reusable());
}

#[tokio::test]
async fn a_chunked_response_that_arrives_byte_by_byte() {
    let (mut conn, mut server) = pair().await;
    let answer: &[u8] =
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let mut writer = conn.start(get("/a?b=1")).await.ok().unwrap();
    read_n(&mut server, GET_HEAD.len()).await;
    poll_fn(|cx| writer.poll(&mut conn, cx)).await.unwrap();
    let drip = tokio::spawn(async move {
        for byte in answer {
            server.write_all(&[*byte]).await.unwrap();
            server.flush().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        server
    });
    let (_, mut decoder) = poll_fn(|cx| conn.poll_head(cx, false)).await.unwrap();
    let frames = body(&mut conn, &mut decoder).await.unwrap();
    assert_eq!(data(&frames), "abc");
    drop(drip.await.unwrap());
    assert!(conn.is_reusable());
}

#[tokio::test]
async fn a_response_without_length_runs_to_the_close_and_ends_the_connection() {
    let (mut conn, mut server) = pair().await;
    let mut writer = conn.start(get("/a?b=1")).await.ok().unwrap();
    read_n(&mut server, GET_HEAD.len()).await;
    server
        .write_all(b"HTTP/1.1 200 OK\r\n\r\nall of it")
        .await
        .unwrap();
    drop(server);
    poll_fn(|cx| writer.poll(&mut conn, cx)).await.unwrap();
    let (_, mut decoder) = poll_fn(|cx| conn.poll_head(cx, false)).await.unwrap();
    assert_eq!(
        data(&body(&mut conn, &mut decoder).await.unwrap()),
        "all of it"
    );
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn responses_without_a_body_whatever_their_head_says() {
    let (mut conn, mut server) = pair().await;
    // A HEAD's answer carries the length a GET's would have; 204 and 304 have no body.
    let mut head = get("/a?b=1");
    *head.method_mut() = Method::HEAD;
    let expect = "HEAD /a?b=1 HTTP/1.1\r\nhost: up.test\r\n\r\n";
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n";
    let (_, frames) = exchange(&mut conn, &mut server, head, expect, answer)
        .await
        .unwrap();
    assert!(frames.is_empty());
    for status in ["204 No Content", "304 Not Modified"] {
        let answer = format!("HTTP/1.1 {status}\r\ncontent-length: 3\r\n\r\n");
        let (_, frames) = answered(&mut conn, &mut server, answer.as_bytes()).await;
        assert!(frames.is_empty(), "{status}");
    }
    assert!(conn.is_reusable());
}

#[tokio::test]
async fn interim_responses_are_skipped() {
    let (mut conn, mut server) = pair().await;
    let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s.css>\r\n\r\n\
        HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    let (response, frames) = answered(&mut conn, &mut server, answer).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("link").is_none());
    assert_eq!(data(&frames), "ok");
}

#[tokio::test]
async fn what_keeps_a_connection_open_and_what_does_not() {
    let cases: [(&[u8], bool); 5] = [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
        (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            false,
        ),
        (b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
        (
            b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
            true,
        ),
        // Bytes after the response: the endpoint is not speaking HTTP as we are.
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\nHTTP/1.1 200 OK\r\n",
            false,
        ),
    ];
    for (answer, reusable) in cases {
        let (mut conn, mut server) = pair().await;
        answered(&mut conn, &mut server, answer).await;
        // Let stray bytes arrive, then look at the idle connection as the pool does.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let idle = poll_fn(|cx| std::task::Poll::Ready(conn.poll_idle(cx))).await;
        assert_eq!(idle, reusable, "{}", String::from_utf8_lossy(answer));
    }
}

#[tokio::test]
async fn an_idle_connection_the_endpoint_closed_is_not_reused() {
    let (mut conn, server) = pair().await;
    drop(server);
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(!poll_fn(|cx| std::task::Poll::Ready(conn.poll_idle(cx))).await);
}

#[tokio::test]
async fn a_transfer_coding_wins_over_a_length_which_is_removed() {
    let (mut conn, mut server) = pair().await;
    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n\
        2\r\nok\r\n0\r\n\r\n";
    let (response, frames) = answered(&mut conn, &mut server, answer).await;
    assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
    assert_eq!(data(&frames), "ok");
    // Such a response may be a smuggling attempt: its connection is not reused.
    assert!(!conn.is_reusable());
}

#[tokio::test]
async fn broken_responses_are_errors_and_end_the_connection() {
    let cases: [(&[u8], &str); 9] = [
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
            "conflicting",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
            "bad content-length",
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
            "conflicting",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            "chunk-size",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nokX\r\n0\r\n\r\n",
            "line break",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\nok\r\n0\r\n\r\n",
            "chunk-size",
        ),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n11111111111111111\r\n",
            "chunk-size",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            "101",
        ),
        (b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n", "malformed"),
    ];
    for (answer, why) in cases {
        let (mut conn, mut server) = pair().await;
        let failed = exchange(&mut conn, &mut server, get("/a?b=1"), GET_HEAD, answer)
            .await
            .unwrap_err();
        let text = failed.to_string();
        assert!(
            text.contains(why),
            "{text} for {}",
            String::from_utf8_lossy(answer)
        );
        assert!(!conn.is_reusable());
    }
}

#[tokio::test]
async fn a_body_cut_short_is_an_error() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort"[..],
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nab",
    ] {
        let (mut conn, mut server) = pair().await;
        let mut writer = conn.start(get("/a?b=1")).await.ok().unwrap();
        read_n(&mut server, GET_HEAD.len()).await;
        server.write_all(answer).await.unwrap();
        drop(server);
        poll_fn(|cx| writer.poll(&mut conn, cx)).await.unwrap();
        let (_, mut decoder) = poll_fn(|cx| conn.poll_head(cx, false)).await.unwrap();
        let failed = body(&mut conn, &mut decoder).await.unwrap_err();
        assert!(matches!(failed, Error::Closed), "{failed:?}");
        assert!(!conn.is_reusable());
    }
}

#[tokio::test]
async fn a_head_past_the_limit_is_refused() {
    let (mut conn, mut server) = pair().await;
    let mut writer = conn.start(get("/a?b=1")).await.ok().unwrap();
    read_n(&mut server, GET_HEAD.len()).await;
    let endless = tokio::spawn(async move {
        let _ = server.write_all(b"HTTP/1.1 200 OK\r\n").await;
        let field = format!("x-filler: {}\r\n", "a".repeat(1000));
        for _ in 0..=MAX_HEAD / field.len() + 1 {
            if server.write_all(field.as_bytes()).await.is_err() {
                break;
            }
        }
        server
    });
    poll_fn(|cx| writer.poll(&mut conn, cx)).await.unwrap();
    let failed = poll_fn(|cx| conn.poll_head(cx, false)).await.unwrap_err();
    assert!(
        matches!(failed, Error::HeadTooLarge | Error::Invalid(_)),
        "{failed:?}"
    );
    drop(conn);
    drop(endless.await);
}

#[tokio::test]
async fn a_connection_closed_before_the_answer() {
    let (mut conn, mut server) = pair().await;
    let mut writer = conn.start(get("/a?b=1")).await.ok().unwrap();
    read_n(&mut server, GET_HEAD.len()).await;
    drop(server);
    poll_fn(|cx| writer.poll(&mut conn, cx)).await.unwrap();
    let failed = poll_fn(|cx| conn.poll_head(cx, false)).await.unwrap_err();
    assert!(matches!(failed, Error::Closed | Error::Io(_)), "{failed:?}");
    assert!(!conn.is_reusable());
}
