use std::time::SystemTime;

use super::*;
use crate::cache::policy;

fn caching(max_entry_size: u64) -> RouteCaching {
    RouteCaching::new(
        "r",
        &RouteCache {
            ttl_default: Duration::from_secs(60),
            max_entry_size,
            vary: Vec::new(),
        },
    )
}

fn key(path: &str) -> CacheKey {
    CacheKey::new("r", Some(b"h"), path, None, &[], &HeaderMap::new())
}

fn put(cache: &ResponseCache, caching: &RouteCaching, path: &str, body: &'static [u8]) {
    let policy = policy::plain_ok_policy();
    cache.store(
        &key(path),
        caching,
        StatusCode::OK,
        HeaderMap::new(),
        Bytes::from_static(body),
        policy,
        SystemTime::now(),
    );
}

fn found(cache: &ResponseCache, caching: &RouteCaching, path: &str) -> bool {
    matches!(
        cache.lookup(&key(path), caching, &policy::plain_get(), SystemTime::now()),
        Lookup::Fresh(_)
    )
}

#[test]
fn entries_are_found_until_purged_by_key_or_prefix() {
    let cache = ResponseCache::new(1 << 20);
    let caching = caching(1024);
    for path in ["/a/1", "/a/2", "/b/1"] {
        put(&cache, &caching, path, b"body");
    }
    assert!(found(&cache, &caching, "/a/1"));
    assert_eq!(cache.purge("r:h/b/1", false), 1);
    assert!(!found(&cache, &caching, "/b/1"));
    assert_eq!(cache.purge("r:h/a/", true), 2);
    assert!(!found(&cache, &caching, "/a/1") && !found(&cache, &caching, "/a/2"));
    assert_eq!(cache.purge("r:h/a/", true), 0);
}

#[test]
fn an_entry_stored_under_other_settings_is_not_served() {
    let cache = ResponseCache::new(1 << 20);
    put(&cache, &caching(1024), "/x", b"body");
    assert!(found(&cache, &caching(1024), "/x"));
    assert!(
        !found(&cache, &caching(2048), "/x"),
        "a reload changed the route's cache"
    );
    assert!(
        !found(&cache, &caching(1024), "/x"),
        "and the entry is gone"
    );
}

#[test]
fn the_store_stays_within_its_memory_and_counts_evictions() {
    let cache = ResponseCache::new(64 * 1024);
    let caching = caching(8 * 1024);
    static BODY: [u8; 4096] = [b'x'; 4096];
    for i in 0..100 {
        put(&cache, &caching, &format!("/{i}"), &BODY);
        cache.store.run_pending_tasks();
    }
    assert!(
        cache.weighted_size() <= 64 * 1024,
        "{}",
        cache.weighted_size()
    );
    assert!(cache.entry_count() < 100);
    assert!(caching.series.evictions.get() > 0);
}
