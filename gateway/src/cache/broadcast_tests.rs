use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use http_body_util::StreamBody;
use tokio::sync::mpsc;

use super::*;
use crate::cache::policy;
use crate::cache::{CacheKey, Joined, Lookup, ResponseCache, RouteCaching};
use crate::config::RouteCache;

type Chunks = Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send>>;

/// A body whose chunks the test sends, one at a time (the channel holds one).
fn upstream() -> (mpsc::Sender<Bytes>, StreamBody<Chunks>) {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok(Frame::data(chunk)), rx))
    });
    (tx, StreamBody::new(Box::pin(stream) as Chunks))
}

struct Setup {
    cache: Arc<ResponseCache>,
    caching: Arc<RouteCaching>,
    key: CacheKey,
}

impl Setup {
    fn new(max_entry_size: u64) -> Setup {
        let settings = RouteCache {
            ttl_default: Duration::from_secs(60),
            max_entry_size,
            vary: Vec::new(),
        };
        Setup {
            cache: Arc::new(ResponseCache::new(1 << 20)),
            caching: Arc::new(RouteCaching::new("r", &settings)),
            key: CacheKey::new("r", Some(b"h"), "/x", None, &[], &HeaderMap::new()),
        }
    }

    /// Leads the key's flight and shares `body`: the leader's reader.
    fn lead<B>(&self, body: B) -> Reader
    where
        B: Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: std::fmt::Display,
    {
        let Joined::Lead(lead) = self.cache.join(&self.key) else {
            panic!("the first miss leads");
        };
        let policy = policy::plain_ok_policy();
        let recording = Recording::new(
            self.cache.clone(),
            self.key.clone(),
            self.caching.clone(),
            StatusCode::OK,
            HeaderMap::new(),
            policy,
            Some(lead),
        );
        share(body, recording)
    }

    /// A miss that joins the flight.
    async fn join(&self) -> Option<Reader> {
        match self.cache.join(&self.key) {
            Joined::Wait(waiter) => waiter.joined().await,
            Joined::Lead(_) => None,
        }
    }

    fn stored(&self) -> Option<Bytes> {
        let asked = policy::plain_get();
        match self
            .cache
            .lookup(&self.key, &self.caching, &asked, SystemTime::now())
        {
            Lookup::Fresh(entry) => Some(entry.body.clone()),
            _ => None,
        }
    }
}

/// The next data chunk of `reader`, within a second.
async fn next(reader: &mut Reader) -> Option<Bytes> {
    let frame = tokio::time::timeout(Duration::from_secs(1), reader.frame())
        .await
        .expect("a frame within a second")?;
    Some(frame.expect("no error").into_data().expect("data"))
}

#[tokio::test]
async fn waiters_read_the_leaders_body_as_it_streams_and_it_is_stored_whole() {
    let setup = Setup::new(1000);
    let (tx, body) = upstream();
    let mut leader = setup.lead(body);
    let mut early = setup.join().await.expect("joins the streaming response");
    tx.send(Bytes::from_static(b"one ")).await.unwrap();
    assert_eq!(next(&mut early).await.as_deref(), Some(&b"one "[..]));
    // A waiter that joins later reads from the first chunk.
    let mut late = setup.join().await.expect("still joinable");
    tx.send(Bytes::from_static(b"two")).await.unwrap();
    assert_eq!(next(&mut late).await.as_deref(), Some(&b"one "[..]));
    assert_eq!(next(&mut late).await.as_deref(), Some(&b"two"[..]));
    assert_eq!(next(&mut early).await.as_deref(), Some(&b"two"[..]));
    assert!(setup.stored().is_none(), "not stored before the end");
    drop(tx);
    assert_eq!(next(&mut early).await, None);
    assert_eq!(setup.stored().as_deref(), Some(&b"one two"[..]));
    // The leader, who has read nothing yet, still gets all of it.
    assert_eq!(next(&mut leader).await.as_deref(), Some(&b"one "[..]));
    assert_eq!(next(&mut leader).await.as_deref(), Some(&b"two"[..]));
    assert_eq!(next(&mut leader).await, None);
    assert_eq!(next(&mut late).await, None);
}

#[tokio::test]
async fn past_max_entry_size_the_slowest_reader_bounds_what_is_held() {
    let setup = Setup::new(1000);
    let (tx, body) = upstream();
    let mut leader = setup.lead(body);
    let mut slow = setup.join().await.expect("joins");
    let chunk = Bytes::from(vec![b'a'; 300]);
    // The upstream sends as fast as the gateway reads: the leader keeps up, the slow
    // waiter reads nothing. Past 1000 bytes the gateway stops reading the upstream.
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        for _ in 0..100 {
            if tx.send(chunk.clone()).await.is_err() {
                break;
            }
            sent += 300;
        }
        sent
    });
    let mut read = 0u64;
    while let Ok(Some(frame)) =
        tokio::time::timeout(Duration::from_millis(300), leader.frame()).await
    {
        read += frame.unwrap().into_data().unwrap().len() as u64;
    }
    assert!(
        (1000..=1000 + 2 * 300).contains(&read),
        "the leader read {read} bytes while the slow waiter read none"
    );
    let held = slow.broadcast.state().held;
    assert!(held <= 1000 + 300, "{held} bytes held");
    assert!(setup.join().await.is_none(), "no longer joinable");
    // The slow waiter still gets every byte, and so does the leader.
    let mut total = 0u64;
    let mut leader_total = read;
    loop {
        let (a, b) = (next(&mut slow).await, next(&mut leader).await);
        total += a.as_ref().map_or(0, |c| c.len() as u64);
        leader_total += b.as_ref().map_or(0, |c| c.len() as u64);
        if a.is_none() && b.is_none() {
            break;
        }
    }
    let sent = sender.await.unwrap();
    assert_eq!((total, leader_total, sent), (30_000, 30_000, 30_000));
    assert!(setup.stored().is_none(), "too large to store");
}

#[tokio::test]
async fn a_failed_body_fails_every_reader_and_is_not_stored() {
    let setup = Setup::new(1000);
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item, rx))
    })
    .boxed();
    let mut leader = setup.lead(StreamBody::new(stream));
    let mut waiter = setup.join().await.expect("joins");
    tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
        .await
        .unwrap();
    tx.send(Err(std::io::Error::other("reset by the upstream")))
        .await
        .unwrap();
    for reader in [&mut leader, &mut waiter] {
        assert_eq!(next(reader).await.as_deref(), Some(&b"part"[..]));
        let failed = reader.frame().await.expect("a frame");
        let error = failed.expect_err("the body failed").to_string();
        assert!(error.contains("reset by the upstream"), "{error}");
    }
    assert!(setup.stored().is_none());
    // The flight landed: the next miss leads.
    assert!(matches!(setup.cache.join(&setup.key), Joined::Lead(_)));
}

#[tokio::test]
async fn when_every_reader_goes_away_the_upstream_is_dropped_and_nothing_stored() {
    let setup = Setup::new(1000);
    let (tx, body) = upstream();
    let leader = setup.lead(body);
    let waiter = setup.join().await.expect("joins");
    tx.send(Bytes::from_static(b"x")).await.unwrap();
    drop((leader, waiter));
    // The filler drops the body (and so the channel's receiver).
    tokio::time::timeout(Duration::from_secs(1), tx.closed())
        .await
        .expect("the upstream body dropped");
    assert!(setup.stored().is_none());
    // The flight landed: the next miss leads.
    assert!(matches!(setup.cache.join(&setup.key), Joined::Lead(_)));
}
