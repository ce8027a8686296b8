//! Bounded bursts of requests for the load-balancing tests: a fixed number of requests
//! with a fixed number in flight, and tallies of which upstream answered; and steady
//! keep-alive load, bounded in count and time, for tests that change the gateway while
//! it serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http::Request;
use http_body_util::BodyExt;

use crate::client::{ClientBody, Reply, TestClient, h1_client, send};

/// Sends `total` requests built by `request(i)`, at most `concurrency` at a time over
/// one keep-alive client, and returns the replies in the order they completed.
pub async fn burst(
    total: usize,
    concurrency: usize,
    request: impl Fn(usize) -> Request<ClientBody>,
) -> Vec<Reply> {
    let client: TestClient = h1_client();
    futures_util::stream::iter((0..total).map(|i| {
        let (client, req) = (client.clone(), request(i));
        async move { send(&client, req).await }
    }))
    .buffer_unordered(concurrency.max(1))
    .collect()
    .await
}

/// How many replies each upstream (`x-upstream`) sent; `-` counts replies without one.
pub fn by_upstream(replies: &[Reply]) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for reply in replies {
        let name = reply.header("x-upstream").unwrap_or_else(|| "-".to_owned());
        *tally.entry(name).or_insert(0) += 1;
    }
    tally
}

/// What [`until_stopped`]'s clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// Responses with status 200.
    pub ok: usize,
    /// Why the others failed (a status, an error, no response within 10 s).
    pub failed: Vec<String>,
    /// The 200s counted by the value of the header [`until_stopped`] was given (empty
    /// when absent).
    pub by_header: BTreeMap<String, usize>,
}

/// `clients` keep-alive clients each sending `GET url` until `stop` is set, at most `max`
/// times; 200s are counted by their `header`'s value.
pub async fn until_stopped(
    url: String,
    clients: usize,
    max: usize,
    stop: Arc<AtomicBool>,
    header: &'static str,
) -> Tally {
    until_stopped_with(h1_client, url, clients, max, stop, header).await
}

/// [`until_stopped`] with clients made by `client` (e.g. [`crate::h2_client`]).
pub async fn until_stopped_with(
    client: fn() -> TestClient,
    url: String,
    clients: usize,
    max: usize,
    stop: Arc<AtomicBool>,
    header: &'static str,
) -> Tally {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (url, stop) = (url.clone(), stop.clone());
            tokio::spawn(async move {
                let http = client();
                let mut tally = Tally::default();
                for _ in 0..max {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let req = Request::get(&url)
                        .body(crate::client::empty())
                        .expect("request");
                    let sent = tokio::time::timeout(Duration::from_secs(10), async {
                        let response = http.request(req).await.map_err(|e| e.to_string())?;
                        let (parts, body) = response.into_parts();
                        body.collect().await.map_err(|e| e.to_string())?;
                        Ok::<_, String>(parts)
                    })
                    .await;
                    match sent {
                        Ok(Ok(parts)) if parts.status == 200 => {
                            tally.ok += 1;
                            let value = parts
                                .headers
                                .get(header)
                                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                                .unwrap_or_default();
                            *tally.by_header.entry(value).or_default() += 1;
                        }
                        Ok(Ok(parts)) => tally.failed.push(format!("status {}", parts.status)),
                        Ok(Err(e)) => tally.failed.push(e),
                        Err(_) => tally.failed.push("no response within 10 s".to_owned()),
                    }
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        let tally = task.await.expect("load task");
        total.ok += tally.ok;
        total.failed.extend(tally.failed);
        for (value, n) in tally.by_header {
            *total.by_header.entry(value).or_default() += n;
        }
    }
    total
}
