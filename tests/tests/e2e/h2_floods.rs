//! HTTP/2 abuse on a raw connection: rapid reset, CONTINUATION floods, streams past
//! `max_concurrent_streams`, and a PING flood. Each abusive connection is closed or
//! held back, and another client is served throughout.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use weir_tests::{TestGateway, TestUpstream, h2_client, send};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A `GET /` header block: `:method GET`, `:scheme http`, `:path /` from the static
/// table and `:authority: localhost` as a literal.
fn get_block() -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 9];
    block.extend_from_slice(b"localhost");
    block
}

/// What the server did with a raw connection: a GOAWAY, or a close.
#[derive(Debug, Default)]
struct Ending {
    goaway: Option<u32>,
    closed: bool,
    rst_streams: usize,
}

/// Reads frames until the server closes the connection or `limit` passes.
async fn read_frames(mut reader: OwnedReadHalf, limit: Duration) -> Ending {
    let mut ending = Ending::default();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, reader.read(&mut chunk)).await {
            Err(_) => return ending,
            Ok(Ok(0) | Err(_)) => {
                ending.closed = true;
                return ending;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            match buf[3] {
                GOAWAY if len >= 8 => {
                    ending.goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
                }
                RST_STREAM => ending.rst_streams += 1,
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
}

/// An h2c connection past the preface and SETTINGS exchange (the server's SETTINGS
/// acknowledged after they arrive).
async fn raw_h2(gw: &TestGateway) -> (tokio::net::tcp::OwnedWriteHalf, OwnedReadHalf) {
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    writer.write_all(&hello).await.unwrap();
    let mut head = [0u8; 9];
    reader.read_exact(&mut head).await.unwrap();
    assert_eq!(head[3], SETTINGS, "the server speaks first with SETTINGS");
    let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
    let mut payload = vec![0u8; len];
    reader.read_exact(&mut payload).await.unwrap();
    writer
        .write_all(&frame(SETTINGS, ACK, 0, &[]))
        .await
        .unwrap();
    (writer, reader)
}

fn gateway(up: &TestUpstream, route: &str) -> TestGateway {
    TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [server.limits]\nmax_concurrent_streams = 20\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"{route}\"\nupstream = \"up\"\n",
        up.addr
    ))
}

/// A well-behaved h2c client gets its answer promptly.
async fn others_are_served(gw: &TestGateway) {
    let started = Instant::now();
    let req = http::Request::get(gw.url("/fine"))
        .body(weir_tests::client::empty())
        .unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), send(&h2_client(), req))
        .await
        .expect("another client is answered within 5 s");
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_closes_the_connection_and_spares_the_upstream() {
    let up = TestUpstream::start("up");
    up.set_delay(Duration::from_millis(50));
    let gw = gateway(&up, "rapid-reset");
    let (mut writer, reader) = raw_h2(&gw).await;
    let ending = tokio::spawn(read_frames(reader, Duration::from_secs(10)));
    let mut sent = 0u32;
    'flood: for batch in 0..200u32 {
        let mut bytes = Vec::new();
        for i in 0..50 {
            let id = 2 * (batch * 50 + i) + 1;
            bytes.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &get_block()));
            bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
        }
        if writer.write_all(&bytes).await.is_err() {
            break 'flood;
        }
        sent += 50;
        if batch % 20 == 0 {
            others_are_served(&gw).await;
        }
    }
    let ending = ending.await.unwrap();
    assert!(
        ending.goaway.is_some() || ending.closed,
        "the flooding connection was ended: {ending:?} after {sent} streams"
    );
    assert!(
        up.served() < 1000,
        "{} of {sent} reset requests reached the upstream",
        up.served()
    );
    others_are_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_continuation_flood_is_cut_off() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, "continuation");
    let (mut writer, reader) = raw_h2(&gw).await;
    let ending = tokio::spawn(read_frames(reader, Duration::from_secs(10)));
    writer
        .write_all(&frame(HEADERS, END_STREAM, 1, &get_block()))
        .await
        .unwrap();
    // Literal header fields, never ending the block: 9 bytes each.
    let field: &[u8] = &[0x00, 3, b'x', b'-', b'a', 3, b'a', b'a', b'a'];
    let payload: Vec<u8> = field.iter().copied().cycle().take(9 * 1000).collect();
    let mut sent = 0usize;
    for _ in 0..2000 {
        if writer
            .write_all(&frame(CONTINUATION, 0, 1, &payload))
            .await
            .is_err()
        {
            break;
        }
        sent += payload.len();
    }
    let ending = ending.await.unwrap();
    assert!(
        ending.goaway.is_some() || ending.closed,
        "{ending:?} after {sent} bytes of CONTINUATION"
    );
    assert!(
        sent < 9_000 * 2000,
        "the gateway stopped reading before the flood ended"
    );
    assert!(up.seen().is_empty());
    others_are_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_max_concurrent_streams_are_refused() {
    let up = TestUpstream::start("up");
    up.set_delay(Duration::from_millis(500));
    let gw = gateway(&up, "streams");
    let (mut writer, reader) = raw_h2(&gw).await;
    let ending = tokio::spawn(read_frames(reader, Duration::from_secs(3)));
    let mut bytes = Vec::new();
    for i in 0..40u32 {
        bytes.extend(frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            2 * i + 1,
            &get_block(),
        ));
    }
    writer.write_all(&bytes).await.unwrap();
    let ending = ending.await.unwrap();
    assert!(
        ending.rst_streams >= 20 || ending.goaway.is_some(),
        "the 20 streams past the limit were refused: {ending:?}"
    );
    assert!(up.served() <= 20, "{} served", up.served());
    others_are_served(&gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_without_reading_is_held_back_then_closed() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [server.limits]\nheader_read_timeout = \"2s\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"pings\"\nupstream = \"up\"\n",
        up.addr
    ));
    let (mut writer, reader) = raw_h2(&gw).await;
    // Never read the PONGs: the gateway must stop reading rather than queue them, and
    // a connection that sends no request is closed at its head deadline.
    let ping = frame(PING, 0, 0, &[7; 8]);
    let flood: Vec<u8> = ping
        .iter()
        .copied()
        .cycle()
        .take(ping.len() * 1000)
        .collect();
    let started = Instant::now();
    let flooding = async {
        for _ in 0..100_000 {
            if writer.write_all(&flood).await.is_err() {
                return;
            }
        }
    };
    let stopped = tokio::time::timeout(Duration::from_secs(15), flooding).await;
    assert!(
        stopped.is_ok(),
        "the flooding connection was closed within 15 s"
    );
    assert!(started.elapsed() < Duration::from_secs(15));
    drop(reader);
    others_are_served(&gw).await;
}

/// The gateway tells h2c from HTTP/1 by a connection's first bytes, looked at without
/// reading them: a preface that arrives a byte at a time is still HTTP/2.
#[tokio::test]
async fn a_preface_trickled_a_byte_at_a_time_is_still_http2() {
    let up = TestUpstream::start("up");
    let gw = gateway(&up, "trickle");
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    for byte in PREFACE {
        writer.write_all(&[*byte]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    writer.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    let mut head = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(10), reader.read_exact(&mut head))
        .await
        .expect("the server answers the preface")
        .unwrap();
    assert_eq!(head[3], SETTINGS, "the server speaks HTTP/2: {head:?}");
}

/// A client that stops in the middle of the preface is closed at the head deadline
/// (and counted under it), like one that stops in the middle of an HTTP/1 head.
#[tokio::test]
async fn a_client_that_stops_in_the_preface_is_closed_at_the_head_deadline() {
    let up = TestUpstream::start("up");
    let gw = TestGateway::start(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n\
         [server.limits]\nheader_read_timeout = \"500ms\"\nidle_timeout = \"60s\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"stalled\"\nupstream = \"up\"\n",
        up.addr
    ));
    let stream = TcpStream::connect(gw.addr).await.unwrap();
    let (reader, mut writer) = stream.into_split();
    writer.write_all(&PREFACE[..8]).await.unwrap();
    let ending = read_frames(reader, Duration::from_secs(20)).await;
    assert!(
        ending.closed,
        "the stalled connection is closed: {ending:?}"
    );
    let closed = "weir_client_connections_closed_total{reason=\"header_read_timeout\"}";
    assert!(gw.metric(closed).await >= 1.0, "counted as a head timeout");
    others_are_served(&gw).await;
}
