//! Bounded bursts of requests for the load-balancing tests: a fixed number of requests
//! with a fixed number in flight, and tallies of which upstream answered.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use http::Request;

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
