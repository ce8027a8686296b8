//! The key-value store in a real `redis-server`: the in-memory store's semantics (TTLs,
//! atomic increment, compare-and-swap, namespaces, per-plugin bounds), and its errors
//! when Redis is down or frozen.

use std::sync::Arc;
use std::time::Duration;

use weir_gateway::config::{KvBounds, RedisSettings};
use weir_gateway::kv::{KvError, RedisNamespace, RedisStore};
use weir_tests::RedisServer;

fn store(redis: &RedisServer, bounds: KvBounds, timeout: Duration) -> RedisStore {
    RedisStore::new(&RedisSettings::new(redis.url()), bounds, timeout)
        .expect("a valid URL makes a store")
}

const GENEROUS: Duration = Duration::from_secs(2);

#[tokio::test]
async fn set_get_ttl_increment_cas_and_delete_behave_as_in_memory() {
    let redis = RedisServer::start();
    let kv = store(&redis, KvBounds::default(), GENEROUS);
    let ns = RedisNamespace::new("semantics");

    assert_eq!(kv.get(&ns, "k").await, Ok(None));
    kv.set(&ns, "k", b"v1", None).await.unwrap();
    assert_eq!(kv.get(&ns, "k").await, Ok(Some(b"v1".to_vec())));

    // TTL on set: gone after it.
    kv.set(&ns, "short", b"x", Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(kv.get(&ns, "short").await, Ok(Some(b"x".to_vec())));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(kv.get(&ns, "short").await, Ok(None));

    // Increment: absent counts as 0, the TTL applies on creation only.
    let ttl = Some(Duration::from_millis(300));
    assert_eq!(kv.increment(&ns, "n", 5, ttl).await, Ok(5));
    assert_eq!(kv.increment(&ns, "n", -2, None).await, Ok(3));
    assert_eq!(kv.increment(&ns, "n", 7, Some(GENEROUS)).await, Ok(10));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        kv.get(&ns, "n").await,
        Ok(None),
        "expired with the first TTL"
    );
    assert_eq!(kv.increment(&ns, "n", 1, None).await, Ok(1), "counts again");
    // Non-numeric counts as 0; the sum saturates.
    kv.set(&ns, "text", b"abc", None).await.unwrap();
    assert_eq!(kv.increment(&ns, "text", 4, None).await, Ok(4));
    kv.set(&ns, "big", i64::MAX.to_string().as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(kv.increment(&ns, "big", 10, None).await, Ok(i64::MAX));
    assert_eq!(kv.increment(&ns, "big", -1, None).await, Ok(i64::MAX - 1));

    // Compare-and-swap: on absence, then on a value.
    assert_eq!(
        kv.compare_and_swap(&ns, "c", None, b"a", None).await,
        Ok(true)
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "c", None, b"b", None).await,
        Ok(false)
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "c", Some(b"x"), b"b", None).await,
        Ok(false)
    );
    assert_eq!(
        kv.compare_and_swap(&ns, "c", Some(b"a"), b"b", None).await,
        Ok(true)
    );
    assert_eq!(kv.get(&ns, "c").await, Ok(Some(b"b".to_vec())));

    kv.delete(&ns, "c").await.unwrap();
    assert_eq!(kv.get(&ns, "c").await, Ok(None));

    // Another plugin's namespace does not see these keys.
    let other = RedisNamespace::new("other");
    assert_eq!(kv.get(&other, "k").await, Ok(None));
    assert_eq!(kv.increment(&other, "n", 1, None).await, Ok(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_increments_from_two_stores_are_atomic() {
    let redis = RedisServer::start();
    let a = Arc::new(store(&redis, KvBounds::default(), GENEROUS));
    let b = Arc::new(store(&redis, KvBounds::default(), GENEROUS));
    let ns = Arc::new(RedisNamespace::new("atomic"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..400 {
        let kv = if i % 2 == 0 { a.clone() } else { b.clone() };
        let ns = ns.clone();
        tasks.spawn(async move { kv.increment(&ns, "hits", 1, None).await.unwrap() });
    }
    let mut seen = Vec::new();
    while let Some(n) = tasks.join_next().await {
        seen.push(n.unwrap());
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=400).collect::<Vec<i64>>(), "every count once");
}

#[tokio::test]
async fn bounds_refuse_new_entries_and_expired_ones_give_their_room_back() {
    let redis = RedisServer::start();
    let bounds = KvBounds {
        max_entries: 3,
        max_bytes: 1 << 20,
    };
    let kv = store(&redis, bounds, GENEROUS);
    let ns = RedisNamespace::new("bounded");
    for key in ["a", "b"] {
        kv.set(&ns, key, b"1", None).await.unwrap();
    }
    kv.set(&ns, "brief", b"1", Some(Duration::from_millis(100)))
        .await
        .unwrap();
    // Full: a new key is refused (and an increment of a new key too), an existing one
    // may still change.
    assert!(matches!(
        kv.set(&ns, "d", b"1", None).await,
        Err(KvError::Full(_))
    ));
    assert!(matches!(
        kv.increment(&ns, "e", 1, None).await,
        Err(KvError::Full(_))
    ));
    assert_eq!(
        kv.compare_and_swap(&ns, "f", None, b"1", None).await,
        Err(KvError::Full(weir_gateway::kv::KvFull {
            entries: 3,
            bytes: 1 << 20
        }))
    );
    kv.set(&ns, "a", b"2", None).await.unwrap();
    assert_eq!(kv.increment(&ns, "b", 1, None).await, Ok(2));
    assert_eq!(kv.get(&ns, "d").await, Ok(None), "nothing was stored");
    // Once `brief` expired, its room is reclaimed for the next write.
    tokio::time::sleep(Duration::from_millis(250)).await;
    kv.set(&ns, "d", b"1", None).await.unwrap();
    // A deleted key gives its room back.
    kv.delete(&ns, "a").await.unwrap();
    kv.set(&ns, "e", b"1", None).await.unwrap();

    // The byte bound: keys, values and 96 bytes an entry.
    let tight = store(
        &redis,
        KvBounds {
            max_entries: 100,
            max_bytes: 1024,
        },
        GENEROUS,
    );
    let ns = RedisNamespace::new("bytes");
    tight.set(&ns, "k", &[b'x'; 800], None).await.unwrap();
    assert!(matches!(
        tight.set(&ns, "l", &[b'x'; 200], None).await,
        Err(KvError::Full(_))
    ));
    // Replacing the value by a smaller one frees room.
    tight.set(&ns, "k", &[b'x'; 100], None).await.unwrap();
    tight.set(&ns, "l", &[b'x'; 200], None).await.unwrap();
}

#[tokio::test]
async fn calls_fail_with_a_clear_error_while_redis_is_down_or_frozen_and_recover() {
    let mut redis = RedisServer::start();
    let kv = store(&redis, KvBounds::default(), Duration::from_millis(100));
    let ns = RedisNamespace::new("outage");
    assert_eq!(kv.increment(&ns, "n", 1, None).await, Ok(1));

    redis.pause();
    let frozen = kv.increment(&ns, "n", 1, None).await;
    assert_eq!(frozen, Err(KvError::Timeout(Duration::from_millis(100))));
    redis.resume();

    redis.stop();
    let down = kv.increment(&ns, "n", 1, None).await;
    assert!(
        matches!(
            &down,
            Err(KvError::Unavailable(_)) | Err(KvError::Timeout(_))
        ),
        "{down:?}"
    );

    redis.start_again();
    // Recovery is automatic: within a few seconds calls succeed again (the server came
    // back empty, so the counter starts over).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match kv.increment(&ns, "fresh", 1, None).await {
            Ok(n) => {
                assert_eq!(n, 1);
                break;
            }
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no recovery within 10 s: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
