//! Waiting for a condition by polling it, never by sleeping a guessed time.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 10 ms until it returns true and returns how long that took;
/// panics naming `what` after `limit`.
pub async fn until<F, Fut>(limit: Duration, what: &str, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
