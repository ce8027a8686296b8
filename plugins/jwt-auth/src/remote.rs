//! A JWKS fetched from `jwks_url` with the gateway's outbound HTTP, shared by every
//! instance through the host key-value store.
//!
//! KV entries (the plugin's namespace is shared by every route using `jwt-auth`, so each
//! key carries the URL):
//!
//! - `jwks:URL`: `FETCHED_AT\nBODY`, the last good JWKS and when it was fetched. Fresh
//!   for `jwks_cache_seconds`; after that it is refreshed (at most once per
//!   `jwks_min_refetch_seconds`, by one request), and used while a refresh fails, up to
//!   [`KEEP_STALE`] after it went stale.
//! - `jwks-refetch:URL`: present while refetching is held off (the rate limit).
//! - `jwks-failed:URL`: present for `jwks_min_refetch_seconds` after a fetch failed with
//!   no JWKS cached: requests meanwhile fail fast instead of each calling the URL.

use std::time::Duration;

use weir_plugin_sdk::host::{self, Level, http, kv};

use crate::keys::{KeySet, Strictness};

/// How long a stale JWKS is kept for use while refreshing it fails.
pub const KEEP_STALE: Duration = Duration::from_secs(24 * 60 * 60);

/// The JWKS URL and its cache settings.
#[derive(Debug, Clone)]
pub struct Remote {
    url: String,
    cache_key: String,
    refetch_key: String,
    failed_key: String,
    fresh_for: u64,
    min_refetch: Duration,
    timeout: Duration,
}

/// A JWKS body, and whether this request fetched it (so it does not fetch twice).
#[derive(Debug)]
pub struct Current {
    /// The JWKS JSON.
    pub body: Vec<u8>,
    /// Whether it was fetched just now.
    pub fetched: bool,
}

impl Remote {
    /// A remote set at `url`, fresh for `fresh_for` seconds, refetched at most once per
    /// `min_refetch`; a fetch gives up after `timeout`.
    pub fn new(url: &str, fresh_for: u64, min_refetch: Duration, timeout: Duration) -> Remote {
        Remote {
            url: url.to_owned(),
            cache_key: format!("jwks:{url}"),
            refetch_key: format!("jwks-refetch:{url}"),
            failed_key: format!("jwks-failed:{url}"),
            fresh_for,
            min_refetch,
            timeout,
        }
    }

    /// The JWKS to verify with at `now` (seconds since the epoch): the cached one,
    /// refreshed first if it is stale; fetched if none is cached. `None` when there is
    /// none to be had (the fetch failed, now or within `jwks_min_refetch_seconds`).
    pub fn current(&self, now: u64) -> Option<Current> {
        if let Some((fetched_at, body)) = kv::get(&self.cache_key).and_then(|e| decode(&e)) {
            if now.saturating_sub(fetched_at) >= self.fresh_for
                && let Some(body) = self.refetch(now)
            {
                return Some(Current {
                    body,
                    fetched: true,
                });
            }
            return Some(Current {
                body,
                fetched: false,
            });
        }
        if kv::get(&self.failed_key).is_some() {
            return None;
        }
        match self.fetch(now) {
            Ok(body) => Some(Current {
                body,
                fetched: true,
            }),
            Err(why) => {
                // Without room to remember the failure, the next request tries again.
                let _ = kv::set(&self.failed_key, b"1", Some(self.min_refetch));
                host::log(
                    Level::Warn,
                    &format!("jwks_url {}: fetch failed: {why}", self.url),
                );
                None
            }
        }
    }

    /// Fetches the set again unless that was done within `jwks_min_refetch_seconds`
    /// (by any instance); the new body, or `None` (held off, or failed: the cached set
    /// stays).
    pub fn refetch(&self, now: u64) -> Option<Vec<u8>> {
        // A full store holds refetches off too: the cached set stays in use.
        if kv::compare_and_swap(&self.refetch_key, None, b"1", Some(self.min_refetch)) != Ok(true) {
            return None;
        }
        match self.fetch(now) {
            Ok(body) => Some(body),
            Err(why) => {
                host::log(
                    Level::Warn,
                    &format!(
                        "jwks_url {}: refetch failed, keeping the cached keys: {why}",
                        self.url
                    ),
                );
                None
            }
        }
    }

    /// GETs the set, checks it has a usable key, and caches it.
    fn fetch(&self, now: u64) -> Result<Vec<u8>, String> {
        let mut request = http::OutboundRequest::get(&self.url);
        request.timeout = self.timeout;
        request
            .headers
            .push(("accept".to_owned(), b"application/json".to_vec()));
        let response = http::call(&request).map_err(|e| e.to_string())?;
        if response.status != 200 {
            return Err(format!("status {}", response.status));
        }
        let keys = KeySet::parse(&response.body, Strictness::Lenient)?;
        if keys.is_empty() {
            return Err("no usable signing key in the set".to_owned());
        }
        let mut entry = format!("{now}\n").into_bytes();
        entry.extend_from_slice(&response.body);
        let keep = Duration::from_secs(self.fresh_for).saturating_add(KEEP_STALE);
        if kv::set(&self.cache_key, &entry, Some(keep)).is_err() {
            host::log(
                Level::Warn,
                &format!(
                    "jwks_url {}: the key-value store is full; the set is not cached",
                    self.url
                ),
            );
        }
        host::log(
            Level::Info,
            &format!("jwks_url {}: fetched {} usable keys", self.url, keys.len()),
        );
        Ok(response.body)
    }
}

/// A cache entry's fetch time and body.
fn decode(entry: &[u8]) -> Option<(u64, Vec<u8>)> {
    let newline = entry.iter().position(|&b| b == b'\n')?;
    let at = std::str::from_utf8(&entry[..newline]).ok()?.parse().ok()?;
    Some((at, entry[newline + 1..].to_vec()))
}
