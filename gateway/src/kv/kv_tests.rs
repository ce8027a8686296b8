use super::*;

fn store(max_entries: u64, max_bytes: u64) -> KvStore {
    KvStore::new(KvBounds {
        max_entries,
        max_bytes,
    })
}

#[test]
fn increments_are_atomic_across_threads() {
    let kv = Arc::new(KvStore::default());
    let ns = kv.namespace("atomic");
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (kv, ns) = (kv.clone(), ns.clone());
            std::thread::spawn(move || {
                for _ in 0..1000 {
                    kv.increment(&ns, "n", 1, None).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(kv.get(&ns, "n").unwrap(), b"4000");
}

#[test]
fn ttl_expires_and_cas_checks() {
    let kv = KvStore::default();
    let ns = kv.namespace("ttl");
    kv.set(&ns, "a", b"1".to_vec(), Some(Duration::from_millis(20)))
        .unwrap();
    assert_eq!(kv.get(&ns, "a").as_deref(), Some(&b"1"[..]));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(kv.get(&ns, "a"), None);
    assert_eq!(ns.entries(), 0, "an expired entry read is gone");
    assert!(
        kv.compare_and_swap(&ns, "b", None, b"x".to_vec(), None)
            .unwrap()
    );
    assert!(
        !kv.compare_and_swap(&ns, "b", None, b"y".to_vec(), None)
            .unwrap()
    );
    assert!(
        kv.compare_and_swap(&ns, "b", Some(b"x"), b"y".to_vec(), None)
            .unwrap()
    );
    assert_eq!(kv.increment(&ns, "c", 5, None), Ok(5));
    assert_eq!(kv.increment(&ns, "c", -2, None), Ok(3));
}

#[test]
fn an_expired_counter_starts_again_and_text_counts_as_zero() {
    let kv = KvStore::default();
    let ns = kv.namespace("counter");
    let ttl = Some(Duration::from_millis(20));
    assert_eq!(kv.increment(&ns, "w", 1, ttl), Ok(1));
    assert_eq!(kv.increment(&ns, "w", 1, ttl), Ok(2));
    assert_eq!(kv.get(&ns, "w").as_deref(), Some(&b"2"[..]));
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(kv.increment(&ns, "w", 1, ttl), Ok(1), "a new window");
    assert_eq!(
        kv.increment(&ns, "w", i64::MAX, None),
        Ok(i64::MAX),
        "saturates"
    );
    kv.set(&ns, "t", b"not a number".to_vec(), None).unwrap();
    assert_eq!(kv.increment(&ns, "t", 7, None), Ok(7));
    assert_eq!(kv.get(&ns, "t").as_deref(), Some(&b"7"[..]));
}

#[test]
fn namespaces_keep_plugins_apart() {
    let kv = KvStore::default();
    let (a, b) = (kv.namespace("a"), kv.namespace("b"));
    kv.set(&a, "k", b"from a".to_vec(), None).unwrap();
    assert_eq!(kv.get(&b, "k"), None);
    assert!(
        Arc::ptr_eq(&a, &kv.namespace("a")),
        "one namespace per plugin"
    );
    kv.delete(&b, "k");
    assert_eq!(kv.get(&a, "k").as_deref(), Some(&b"from a"[..]));
}

#[test]
fn past_max_entries_new_keys_are_refused_and_existing_ones_still_change() {
    let kv = store(10, 1 << 20);
    let ns = kv.namespace("entries-bound");
    for i in 0..10 {
        kv.increment(&ns, &format!("client-{i}"), 1, None).unwrap();
    }
    let refused = kv.increment(&ns, "client-10", 1, None).unwrap_err();
    assert_eq!(refused.entries, 10);
    assert!(kv.set(&ns, "other", b"v".to_vec(), None).is_err());
    assert!(
        kv.compare_and_swap(&ns, "other", None, b"v".to_vec(), None)
            .is_err()
    );
    // What is there can still be counted, replaced and removed.
    assert_eq!(kv.increment(&ns, "client-3", 1, None), Ok(2));
    kv.set(&ns, "client-4", b"replaced".to_vec(), None).unwrap();
    kv.delete(&ns, "client-5");
    assert_eq!(kv.increment(&ns, "client-10", 1, None), Ok(1), "room again");
    assert_eq!(ns.entries(), 10);
    // Another plugin is not affected.
    let other = kv.namespace("someone-else");
    kv.set(&other, "k", b"v".to_vec(), None).unwrap();
}

#[test]
fn past_max_bytes_a_write_that_grows_is_refused() {
    let kv = store(1000, 4096);
    let ns = kv.namespace("bytes-bound");
    kv.set(&ns, "a", vec![0; 2000], None).unwrap();
    assert!(
        kv.set(&ns, "b", vec![0; 2000], None).is_err(),
        "2 × (2000 + overhead)"
    );
    assert!(
        kv.set(&ns, "a", vec![0; 4000], None).is_err(),
        "growing past it"
    );
    kv.set(&ns, "a", vec![0; 100], None).unwrap();
    assert_eq!(ns.bytes(), cost("bytes-bound\0a", &[0; 100]));
    kv.set(&ns, "b", vec![0; 2000], None).unwrap();
    kv.delete(&ns, "a");
    kv.delete(&ns, "b");
    assert_eq!((ns.entries(), ns.bytes()), (0, 0), "all given back");
}

#[test]
fn expired_entries_give_their_room_back_without_being_read() {
    let kv = store(100, 1 << 20);
    let ns = kv.namespace("sweep");
    let ttl = Some(Duration::from_millis(10));
    for i in 0..100 {
        kv.increment(&ns, &format!("k{i}"), 1, ttl).unwrap();
    }
    assert!(kv.increment(&ns, "late", 1, ttl).is_err());
    std::thread::sleep(Duration::from_millis(20));
    // Full of expired entries: a write reclaims them a few at a time, and one that
    // finds no room sweeps further before it gives up.
    for i in 0..100 {
        kv.increment(&ns, &format!("new{i}"), 1, None)
            .unwrap_or_else(|e| panic!("write {i}: {e}"));
    }
    assert_eq!(ns.entries(), 100);
    for i in 0..100 {
        assert_eq!(kv.get(&ns, &format!("k{i}")), None);
    }
}

#[test]
fn the_sweep_looks_at_a_few_entries_per_write() {
    let kv = store(1_000_000, 1 << 30);
    let ns = kv.namespace("step");
    let ttl = Some(Duration::from_millis(300));
    let started = Instant::now();
    for i in 0..20_000 {
        kv.set(&ns, &format!("k{i}"), b"v".to_vec(), ttl).unwrap();
    }
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "none expired yet"
    );
    assert_eq!(ns.entries(), 20_000);
    std::thread::sleep(Duration::from_millis(310));
    // 1000 writes spread over 16 shards sweep about SWEEP_STEP entries each: a few
    // thousand reclaimed, not all 20 000 at once.
    for i in 0..1000 {
        kv.set(&ns, &format!("n{i}"), b"v".to_vec(), None).unwrap();
    }
    let left = ns.entries() - 1000;
    assert!(
        (20_000 - 2 * SWEEP_STEP as u64 * 1000..20_000).contains(&left),
        "{left} expired entries left"
    );
}

#[test]
fn growing_a_counter_past_its_length_is_charged() {
    let kv = store(10, 1 << 20);
    let ns = kv.namespace("digits");
    kv.increment(&ns, "n", 9, None).unwrap();
    let before = ns.bytes();
    kv.increment(&ns, "n", 1, None).unwrap();
    assert_eq!(ns.bytes(), before + 1, "`9` became `10`");
    assert_eq!(kv.get(&ns, "n").as_deref(), Some(&b"10"[..]));
}

#[test]
fn new_bounds_apply_to_every_namespace() {
    let kv = store(2, 1 << 20);
    let ns = kv.namespace("rebound");
    kv.set(&ns, "a", b"1".to_vec(), None).unwrap();
    kv.set(&ns, "b", b"1".to_vec(), None).unwrap();
    assert!(kv.set(&ns, "c", b"1".to_vec(), None).is_err());
    kv.set_bounds(KvBounds {
        max_entries: 3,
        max_bytes: 1 << 20,
    });
    kv.set(&ns, "c", b"1".to_vec(), None).unwrap();
    let later = kv.namespace("later");
    for k in ["a", "b", "c"] {
        kv.set(&later, k, b"1".to_vec(), None).unwrap();
    }
    assert!(kv.set(&later, "d", b"1".to_vec(), None).is_err());
}
