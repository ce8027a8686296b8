//! A recorded response shared by every client of its flight: a task reads the
//! upstream's body at the upstream's pace and appends each chunk to one list, which
//! the leader's client and the waiters each read at their own pace. The chunks are the
//! recording's (references, not copies), so while the response is being recorded the
//! list costs nothing beyond the entry it becomes; a waiter joining late reads it from
//! the first chunk.
//!
//! Once the body outgrows `max_entry_size` it is no longer recorded: the flight lands
//! (later misses go upstream themselves), the readers already on it go on, the chunks
//! every reader has passed are dropped, and the upstream is read only while less than
//! `max_entry_size` is held, so from then on the slowest reader sets the pace. A body
//! that fails upstream fails for every reader (their clients see an aborted transfer,
//! never a short body presented as whole); when no reader is left, the upstream
//! request is dropped and nothing is stored.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use http_cache_semantics::CachePolicy;
use tokio::sync::Notify;

use super::Recording;

/// Why a shared body ended early.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the upstream's response body failed while the cache shared it: {0}")]
pub struct SharedBodyError(Arc<str>);

/// A leader's response as its flight shares it.
#[derive(Debug)]
pub struct Broadcast {
    /// The upstream's status and headers, as recorded.
    pub status: StatusCode,
    /// See `status`.
    pub headers: HeaderMap,
    /// What RFC 9111 says about reusing it (whether it answers a waiter's request).
    pub policy: CachePolicy,
    /// The route's `max_entry_size`: what is held at most once it is not recorded.
    budget: u64,
    state: Mutex<State>,
    /// Readers moved on or went away (the filler may have room, or no reader left).
    moved: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// The chunks not yet passed by every reader (all of them while recorded).
    chunks: VecDeque<Bytes>,
    /// The index of `chunks[0]` in the whole body.
    first: usize,
    /// Bytes in `chunks`.
    held: u64,
    /// Set when the body is whole, failed or abandoned.
    end: Option<End>,
    /// Whether a reader may still join from the first chunk (the body is recorded).
    joinable: bool,
    readers: HashMap<u64, Slot>,
    next_reader: u64,
}

#[derive(Debug)]
enum End {
    /// Whole, with its trailers if it had some.
    Whole(Option<HeaderMap>),
    Failed(Arc<str>),
}

/// Where a reader is.
#[derive(Debug)]
struct Slot {
    /// The index of the next chunk it reads.
    next: usize,
    waker: Option<Waker>,
}

impl State {
    /// Wakes every reader waiting for a chunk or the end.
    fn wake_all(&mut self) -> Vec<Waker> {
        self.readers
            .values_mut()
            .filter_map(|slot| slot.waker.take())
            .collect()
    }

    /// Drops the chunks every reader has passed (only once no one may join).
    fn trim(&mut self) {
        if self.joinable {
            return;
        }
        let end = self.first + self.chunks.len();
        let slowest = self.readers.values().map(|s| s.next).min().unwrap_or(end);
        while self.first < slowest {
            let Some(chunk) = self.chunks.pop_front() else {
                break;
            };
            self.held -= chunk.len() as u64;
            self.first += 1;
        }
    }
}

impl Broadcast {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new reader from the first chunk, unless the body is no longer recorded (or
    /// failed): a miss that gets `None` asks the upstream itself.
    pub fn reader(self: &Arc<Self>) -> Option<Reader> {
        let mut state = self.state();
        if !state.joinable {
            return None;
        }
        let id = state.next_reader;
        state.next_reader += 1;
        let next = state.first;
        state.readers.insert(id, Slot { next, waker: None });
        Some(Reader {
            broadcast: self.clone(),
            id,
            read: 0,
            trailers_sent: false,
        })
    }

    /// Appends a chunk read from the upstream.
    fn push(&self, chunk: Bytes) {
        let wakers = {
            let mut state = self.state();
            state.held += chunk.len() as u64;
            state.chunks.push_back(chunk);
            state.wake_all()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// The body is no longer recorded: no reader may join from now on.
    fn close_to_joiners(&self) {
        self.state().joinable = false;
    }

    /// The body ended: whole (with trailers, maybe) or failed.
    fn end(&self, end: End) {
        let wakers = {
            let mut state = self.state();
            if matches!(end, End::Failed(_)) {
                state.joinable = false;
            }
            state.end = Some(end);
            state.wake_all()
        };
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Waits until there is room for another chunk; `false` when no reader is left.
    async fn room(&self) -> bool {
        loop {
            let moved = self.moved.notified();
            {
                let mut state = self.state();
                if state.readers.is_empty() {
                    return false;
                }
                state.trim();
                if state.joinable || state.held <= self.budget {
                    return true;
                }
            }
            moved.await;
        }
    }

    /// Completes once no reader is left.
    async fn deserted(&self) {
        loop {
            let moved = self.moved.notified();
            if self.state().readers.is_empty() {
                return;
            }
            moved.await;
        }
    }
}

/// Shares `recording`'s response, whose body is `body`: publishes its head to the
/// flight's waiters, starts the task that reads `body`, and returns the leader's
/// reader.
pub fn share<B>(body: B, recording: Recording) -> Reader
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (status, headers, policy, budget) = recording.head();
    let broadcast = Arc::new(Broadcast {
        status,
        headers,
        policy,
        budget,
        state: Mutex::new(State {
            joinable: true,
            ..State::default()
        }),
        moved: Notify::new(),
    });
    let leader = broadcast.reader().expect("a new broadcast is joinable");
    recording.publish(&broadcast);
    tokio::spawn(fill(broadcast, body, recording));
    leader
}

/// Reads `body` into `broadcast`, and stores it through `recording` if it ends whole
/// within `max_entry_size`.
async fn fill<B>(broadcast: Arc<Broadcast>, mut body: B, recording: Recording)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut recording = Some(recording);
    let mut whole = body.is_end_stream();
    while !whole {
        if !broadcast.room().await {
            break;
        }
        let frame = tokio::select! {
            frame = body.frame() => frame,
            () = broadcast.deserted() => break,
        };
        match frame {
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    if let Some(kept) = &mut recording
                        && !kept.keep(&data)
                    {
                        // Too large: the flight lands, and the readers on it go on.
                        recording = None;
                        broadcast.close_to_joiners();
                    }
                    if !data.is_empty() {
                        broadcast.push(data);
                    }
                    // hyper stops polling a body that says it ended.
                    whole = body.is_end_stream();
                }
                Err(frame) => {
                    // Trailers end the body; a response with them is not stored.
                    drop(recording.take());
                    broadcast.end(End::Whole(frame.into_trailers().ok()));
                    return;
                }
            },
            Some(Err(error)) => {
                drop(recording.take());
                broadcast.end(End::Failed(Arc::from(error.to_string())));
                return;
            }
            None => whole = true,
        }
    }
    if !whole {
        // Every reader went away: not stored, and the upstream request is dropped.
        drop(recording.take());
        broadcast.end(End::Failed(Arc::from("every client went away")));
        return;
    }
    // Stored (and the flight landed) before the readers see the end, so a client that
    // asks again at once is answered from the entry.
    if let Some(recording) = recording.take() {
        recording.finish();
    }
    broadcast.end(End::Whole(None));
}

/// One client's place in a [`Broadcast`]: a response body.
#[derive(Debug)]
pub struct Reader {
    broadcast: Arc<Broadcast>,
    id: u64,
    /// Bytes it has read.
    read: u64,
    trailers_sent: bool,
}

impl Reader {
    /// The shared response.
    pub fn broadcast(&self) -> &Broadcast {
        &self.broadcast
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.broadcast.state().readers.remove(&self.id);
        self.broadcast.moved.notify_one();
    }
}

impl Body for Reader {
    type Data = Bytes;
    type Error = SharedBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, SharedBodyError>>> {
        let this = self.get_mut();
        let mut state = this.broadcast.state();
        let state = &mut *state;
        let Some(slot) = state.readers.get_mut(&this.id) else {
            return Poll::Ready(None);
        };
        if let Some(chunk) = state.chunks.get(slot.next - state.first) {
            let chunk = chunk.clone();
            slot.next += 1;
            this.read += chunk.len() as u64;
            let trimming = !state.joinable;
            if trimming {
                this.broadcast.moved.notify_one();
            }
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match &state.end {
            Some(End::Whole(Some(trailers))) if !this.trailers_sent => {
                this.trailers_sent = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers.clone()))))
            }
            Some(End::Whole(_)) => Poll::Ready(None),
            Some(End::Failed(why)) => Poll::Ready(Some(Err(SharedBodyError(why.clone())))),
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = self.broadcast.state();
        let read_all = state
            .readers
            .get(&self.id)
            .is_none_or(|slot| slot.next == state.first + state.chunks.len());
        read_all && matches!(state.end, Some(End::Whole(None)))
    }

    fn size_hint(&self) -> SizeHint {
        let declared = self
            .broadcast
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // What is left of what the upstream declared.
        declared
            .and_then(|n| n.checked_sub(self.read))
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }
}

#[cfg(test)]
#[path = "broadcast_tests.rs"]
mod tests;
