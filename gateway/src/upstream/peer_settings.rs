//! What an HTTP/2 peer tells about its connection, read off the bytes as they arrive:
//! its `SETTINGS_MAX_CONCURRENT_STREAMS`, and a `GOAWAY`. hyper applies the peer's
//! frames on a task of its own and offers no way to ask about them from outside, so the
//! pool (which must know when a connection is full, to open another, and when it is
//! going away, to send it nothing new) watches the frames go by instead: a frame header
//! is 9 bytes with the payload's length, so following frame boundaries costs a few
//! comparisons per read, and only `SETTINGS` payloads are looked into.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The `SETTINGS` frame type.
const SETTINGS: u8 = 0x4;
/// The `ACK` flag of a `SETTINGS` frame.
const ACK: u8 = 0x1;
/// The `GOAWAY` frame type.
const GOAWAY: u8 = 0x7;
/// `SETTINGS_MAX_CONCURRENT_STREAMS`.
const MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// Something the peer said about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Heard {
    /// Its `SETTINGS_MAX_CONCURRENT_STREAMS`.
    MaxStreams(u32),
    /// It sent `GOAWAY`: it takes no new streams.
    GoAway,
}

/// Where the scan is in the peer's frames.
#[derive(Debug, Clone, Copy)]
enum Scan {
    /// Reading a frame header; this many of its 9 bytes are in `header`.
    Header(usize),
    /// Skipping this many payload bytes.
    Skip(usize),
    /// Reading a `SETTINGS` payload with this many bytes left; this many bytes of the
    /// current 6-byte entry are in `entry`.
    Settings(usize, usize),
}

/// Follows a peer's frames and reports each `SETTINGS_MAX_CONCURRENT_STREAMS` it sets,
/// and its `GOAWAY`.
#[derive(Debug)]
pub(crate) struct FrameScan {
    scan: Scan,
    header: [u8; 9],
    entry: [u8; 6],
}

impl Default for FrameScan {
    fn default() -> Self {
        FrameScan {
            scan: Scan::Header(0),
            header: [0; 9],
            entry: [0; 6],
        }
    }
}

impl FrameScan {
    /// Reads `bytes`, the next the peer sent; calls `found` with what they say.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut found: impl FnMut(Heard)) {
        while !bytes.is_empty() {
            match self.scan {
                Scan::Header(have) => {
                    let n = (9 - have).min(bytes.len());
                    self.header[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    if have + n < 9 {
                        self.scan = Scan::Header(have + n);
                        continue;
                    }
                    let [a, b, c, kind, flags, ..] = self.header;
                    let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
                    if kind == GOAWAY {
                        found(Heard::GoAway);
                    }
                    self.scan = if len == 0 {
                        Scan::Header(0)
                    } else if kind == SETTINGS && flags & ACK == 0 {
                        Scan::Settings(len, 0)
                    } else {
                        Scan::Skip(len)
                    };
                }
                Scan::Skip(left) => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.scan = if n == left {
                        Scan::Header(0)
                    } else {
                        Scan::Skip(left - n)
                    };
                }
                Scan::Settings(left, have) => {
                    let n = (6 - have).min(left).min(bytes.len());
                    self.entry[have..have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    let (left, have) = (left - n, have + n);
                    if have == 6 {
                        let [i0, i1, v0, v1, v2, v3] = self.entry;
                        if u16::from_be_bytes([i0, i1]) == MAX_CONCURRENT_STREAMS {
                            found(Heard::MaxStreams(u32::from_be_bytes([v0, v1, v2, v3])));
                        }
                    }
                    self.scan = match (left, have) {
                        (0, _) => Scan::Header(0),
                        (_, 6) => Scan::Settings(left, 0),
                        _ => Scan::Settings(left, have),
                    };
                }
            }
        }
    }
}

/// What the peer told about one connection, shared with the pool.
#[derive(Debug)]
pub(crate) struct PeerState {
    /// The most streams it allows at once.
    pub(crate) max_streams: AtomicUsize,
    /// Whether it sent `GOAWAY`.
    pub(crate) going_away: AtomicBool,
}

impl PeerState {
    /// Before the peer said anything: `assumed` streams allowed.
    pub(crate) fn new(assumed: usize) -> PeerState {
        PeerState {
            max_streams: AtomicUsize::new(assumed),
            going_away: AtomicBool::new(false),
        }
    }
}

/// An HTTP/2 connection's IO that records in `peer` what the peer says as it reads,
/// and each stream limit in `endpoint_limit` too (for the endpoint's next connection).
#[derive(Debug)]
pub(crate) struct SettingsWatch<S> {
    inner: S,
    scan: FrameScan,
    peer: Arc<PeerState>,
    endpoint_limit: Arc<AtomicUsize>,
}

impl<S> SettingsWatch<S> {
    pub(crate) fn new(
        inner: S,
        peer: Arc<PeerState>,
        endpoint_limit: Arc<AtomicUsize>,
    ) -> SettingsWatch<S> {
        SettingsWatch {
            inner,
            scan: FrameScan::default(),
            peer,
            endpoint_limit,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for SettingsWatch<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            let (peer, endpoint_limit) = (&this.peer, &this.endpoint_limit);
            this.scan
                .feed(&buf.filled()[before..], |heard| match heard {
                    Heard::MaxStreams(max) => {
                        let max = usize::try_from(max).unwrap_or(usize::MAX);
                        peer.max_streams.store(max, Ordering::Relaxed);
                        endpoint_limit.store(max, Ordering::Relaxed);
                    }
                    Heard::GoAway => peer.going_away.store(true, Ordering::Relaxed),
                });
        }
        read
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for SettingsWatch<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
        let len = payload.len();
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        out
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let payload: Vec<u8> = entries
            .iter()
            .flat_map(|(id, value)| [id.to_be_bytes().to_vec(), value.to_be_bytes().to_vec()])
            .flatten()
            .collect();
        frame(SETTINGS, 0, &payload)
    }

    fn found_in(chunks: &[&[u8]]) -> Vec<Heard> {
        let mut scan = FrameScan::default();
        let mut found = Vec::new();
        for chunk in chunks {
            scan.feed(chunk, |v| found.push(v));
        }
        found
    }

    #[test]
    fn reads_the_limit_across_any_split_of_the_bytes() {
        let mut bytes = settings(&[(0x1, 4096), (MAX_CONCURRENT_STREAMS, 4), (0x4, 65535)]);
        bytes.extend(frame(
            0x0,
            0,
            b"data frame with a 0x03 in it: \x00\x03\x00\x00\x00\x09",
        ));
        bytes.extend(frame(SETTINGS, ACK, &[]));
        bytes.extend(settings(&[(MAX_CONCURRENT_STREAMS, 7)]));
        bytes.extend(frame(GOAWAY, 0, &[0, 0, 0, 5, 0, 0, 0, 0]));
        let expected = [Heard::MaxStreams(4), Heard::MaxStreams(7), Heard::GoAway];
        assert_eq!(found_in(&[&bytes]), expected);
        for split in 1..bytes.len() {
            let (a, b) = bytes.split_at(split);
            assert_eq!(found_in(&[a, b]), expected, "split at {split}");
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(found_in(&single), expected);
    }

    #[test]
    fn other_frames_and_settings_are_skipped() {
        let mut bytes = frame(0x1, 0x4, b"headers");
        bytes.extend(settings(&[(0x2, 0), (0x5, 16384)]));
        bytes.extend(frame(0x8, 0, &[0, 0, 0, 3]));
        assert!(found_in(&[&bytes]).is_empty());
    }
}
