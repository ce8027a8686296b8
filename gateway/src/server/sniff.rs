//! Which HTTP version a plain (not TLS) connection speaks, told by its first bytes
//! without reading them: an h2c client with prior knowledge opens with HTTP/2's
//! 24-byte preface, anything else is HTTP/1.
//!
//! Peeking leaves the bytes in the socket, so hyper's HTTP/1 connection reads the whole
//! request head in its first read. Reading them first (hyper-util's `auto` builder does,
//! 24 bytes) made hyper's read buffer grow from 8 to 16 KiB on every connection, kept
//! for as long as the connection stays open (`bench/conn-memory.sh`).

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// HTTP/2's connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How long to wait before looking again at a connection whose first bytes are only
/// the start of the preface (a client that writes a few bytes at a time).
const PARTIAL_RETRY: Duration = Duration::from_millis(5);

/// The version a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sniffed {
    Http1,
    Http2,
}

/// The version `first` shows, or `None` while it is a proper start of the preface.
fn version_of(first: &[u8]) -> Option<Sniffed> {
    if first.is_empty() {
        // Closed before a byte: HTTP/1's reader sees the end and closes quietly.
        return Some(Sniffed::Http1);
    }
    let len = first.len().min(H2_PREFACE.len());
    if first[..len] != H2_PREFACE[..len] {
        Some(Sniffed::Http1)
    } else if len == H2_PREFACE.len() {
        Some(Sniffed::Http2)
    } else {
        None
    }
}

/// Waits for the connection's first bytes and tells its version from them. The caller
/// bounds the wait (the header read deadline).
pub(super) async fn sniff(stream: &TcpStream) -> io::Result<Sniffed> {
    let mut first = [0u8; H2_PREFACE.len()];
    loop {
        let n = stream.peek(&mut first).await?;
        if let Some(version) = version_of(&first[..n]) {
            return Ok(version);
        }
        // The bytes stay readable, so peeking again at once would spin.
        tokio::time::sleep(PARTIAL_RETRY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_preface_is_http2_and_anything_else_http1() {
        assert_eq!(version_of(H2_PREFACE), Some(Sniffed::Http2));
        assert_eq!(version_of(b"GET / HTTP/1.1\r\n"), Some(Sniffed::Http1));
        assert_eq!(version_of(b"POST /x HTTP/1.1\r\n"), Some(Sniffed::Http1));
        assert_eq!(version_of(b"PRI * HTTP/1.1\r\n\r\n"), Some(Sniffed::Http1));
        assert_eq!(version_of(b""), Some(Sniffed::Http1));
    }

    #[test]
    fn a_start_of_the_preface_waits_for_more() {
        assert_eq!(version_of(b"P"), None);
        assert_eq!(version_of(b"PRI * HTTP/2.0\r\n"), None);
    }

    #[tokio::test]
    async fn a_preface_written_a_byte_at_a_time_is_http2_and_nothing_is_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let writer = tokio::spawn(async move {
            for byte in H2_PREFACE {
                client.write_all(&[*byte]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            client
        });
        assert_eq!(sniff(&server).await.unwrap(), Sniffed::Http2);
        let _client = writer.await.unwrap();
        let mut read = [0u8; 24];
        server.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, H2_PREFACE, "the preface is still there to read");
    }
}
