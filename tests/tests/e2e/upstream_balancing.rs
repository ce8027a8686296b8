//! Load balancing through a real gateway to real upstreams: weights land within a
//! tolerance over a few thousand requests for each balancer, `least_request` steers
//! away from a slow endpoint, and `consistent_hash` keeps each key on its endpoint —
//! also when another endpoint is removed from the config.

use std::time::Duration;

use http::Request;
use weir_tests::client::{self, empty};
use weir_tests::gateway::write_config;
use weir_tests::load::{burst, by_upstream};
use weir_tests::{TestGateway, TestUpstream, gateway::with_test_listeners};

/// Three upstreams `a`, `b`, `c` with weights 1, 2 and 5 under `balancer`.
fn weighted(balancer: &str, ups: &[TestUpstream; 3]) -> String {
    format!(
        "[[upstream]]\nname = \"w\"\nbalancer = \"{balancer}\"\n\
         endpoints = [\"{}\", {{ address = \"{}\", weight = 2 }}, {{ address = \"{}\", weight = 5 }}]\n\
         [[route]]\nname = \"all\"\nupstream = \"w\"\n",
        ups[0].addr, ups[1].addr, ups[2].addr
    )
}

fn three() -> [TestUpstream; 3] {
    [
        TestUpstream::start("a"),
        TestUpstream::start("b"),
        TestUpstream::start("c"),
    ]
}

/// Each upstream's share of `total` requests sent 16 at a time.
async fn shares(gw: &TestGateway, total: usize) -> [f64; 3] {
    let replies = burst(total, 16, |i| {
        Request::get(gw.url(&format!("/n/{i}")))
            .body(empty())
            .expect("request")
    })
    .await;
    assert!(replies.iter().all(|r| r.status == 200));
    let tally = by_upstream(&replies);
    ["a", "b", "c"].map(|name| tally.get(name).copied().unwrap_or(0) as f64 / total as f64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_weights_are_exact_over_whole_rounds() {
    let ups = three();
    let gw = TestGateway::start(&weighted("round_robin", &ups));
    // 4000 = 500 rounds of 8: the smooth schedule gives exactly 1/8, 2/8 and 5/8.
    let got = shares(&gw, 4000).await;
    for (share, expected) in got.iter().zip([0.125, 0.25, 0.625]) {
        assert!((share - expected).abs() < 0.005, "{got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_least_request_follow_weights_within_tolerance() {
    // `random` is a pure weighted draw: 0.05 is over 5 standard deviations at 3000
    // requests. `least_request` also weighs the requests in flight, which depend on
    // each endpoint's latency: on a busy machine the shares flatten somewhat, so it
    // gets a wider band, and must still rank the endpoints by weight.
    for (balancer, tolerance) in [("random", 0.05), ("least_request", 0.1)] {
        let ups = three();
        let gw = TestGateway::start(&weighted(balancer, &ups));
        let got = shares(&gw, 3000).await;
        eprintln!("{balancer}: shares {got:?} for weights 1:2:5");
        for (share, expected) in got.iter().zip([0.125, 0.25, 0.625]) {
            assert!(
                (share - expected).abs() < tolerance,
                "{balancer}: {got:?} vs 1:2:5"
            );
        }
        assert!(got[0] < got[1] && got[1] < got[2], "{balancer}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_request_steers_away_from_a_slow_endpoint() {
    let fast = TestUpstream::start("fast");
    let slow = TestUpstream::start("slow");
    slow.set_delay(Duration::from_millis(40));
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"lr\"\nbalancer = \"least_request\"\nendpoints = [\"{}\", \"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"lr\"\n",
        fast.addr, slow.addr
    ));
    let replies = burst(600, 16, |i| {
        Request::get(gw.url(&format!("/n/{i}")))
            .body(empty())
            .expect("request")
    })
    .await;
    let tally = by_upstream(&replies);
    let to_slow = tally.get("slow").copied().unwrap_or(0);
    eprintln!("least_request with one endpoint 40 ms slower: {tally:?}");
    // Round robin would send it half (300).
    assert!(to_slow < 120, "{tally:?}");
}

/// Which upstream answers user `user` (hashed on `x-user`).
async fn owner(gw: &TestGateway, user: usize) -> String {
    let req = Request::get(gw.url("/"))
        .header("x-user", format!("user-{user}"))
        .body(empty())
        .expect("request");
    let reply = client::send(&client::h1_client(), req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.header("x-upstream").expect("x-upstream")
}

fn hashed(endpoints: &[&TestUpstream]) -> String {
    let list: Vec<String> = endpoints
        .iter()
        .map(|u| format!("\"{}\"", u.addr))
        .collect();
    with_test_listeners(&format!(
        "[[upstream]]\nname = \"h\"\nbalancer = \"consistent_hash\"\nhash_on = \"header:x-user\"\n\
         endpoints = [{}]\n[[route]]\nname = \"all\"\nupstream = \"h\"\n",
        list.join(", ")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistent_hash_keeps_keys_when_another_endpoint_is_removed() {
    let [a, b, c] = three();
    let config = write_config(&hashed(&[&a, &b, &c]));
    let gw = TestGateway::from_file(&config);
    const USERS: usize = 300;
    let mut before = Vec::with_capacity(USERS);
    for user in 0..USERS {
        before.push(owner(&gw, user).await);
    }
    for (user, first) in before.iter().enumerate().take(50) {
        assert_eq!(&owner(&gw, user).await, first, "a key keeps its endpoint");
    }
    let on_b = before.iter().filter(|o| *o == "b").count();
    assert!(on_b > USERS / 6, "b owns {on_b} of {USERS} keys");

    // Remove `b` from the config; the reload keeps the ring positions of `a` and `c`.
    std::fs::write(&config, hashed(&[&a, &c])).expect("write config");
    assert_eq!(gw.reload().await.0, 200);
    let mut moved = 0;
    for (user, first) in before.iter().enumerate() {
        let now = owner(&gw, user).await;
        if first == "b" {
            moved += 1;
            assert_ne!(now, "b");
        } else {
            assert_eq!(&now, first, "user {user} moved off an endpoint that stayed");
        }
    }
    eprintln!(
        "consistent_hash: removing 1 of 3 endpoints remapped {moved}/{USERS} keys ({:.0}%), all of them the removed endpoint's",
        100.0 * moved as f64 / USERS as f64
    );
}

#[tokio::test]
async fn consistent_hash_on_a_cookie_and_on_the_client_ip() {
    let [a, b, c] = three();
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"cookie\"\nbalancer = \"consistent_hash\"\nhash_on = \"cookie:session\"\n\
         endpoints = [\"{a}\", \"{b}\", \"{c}\"]\n\
         [[upstream]]\nname = \"ip\"\nbalancer = \"consistent_hash\"\nhash_on = \"ip\"\n\
         endpoints = [\"{a}\", \"{b}\", \"{c}\"]\n\
         [[route]]\nname = \"ip\"\nmatch = {{ path_prefix = \"/ip\" }}\nupstream = \"ip\"\n\
         [[route]]\nname = \"cookie\"\nupstream = \"cookie\"\n",
        a = a.addr,
        b = b.addr,
        c = c.addr
    ));
    let by_cookie = |session: usize| {
        let req = Request::get(gw.url("/"))
            .header("cookie", format!("theme=dark; session=s{session}"))
            .body(empty())
            .expect("request");
        async move {
            client::send(&client::h1_client(), req)
                .await
                .header("x-upstream")
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for session in 0..30 {
        let first = by_cookie(session).await;
        assert_eq!(by_cookie(session).await, first, "session {session}");
        seen.insert(first);
    }
    assert_eq!(seen.len(), 3, "30 sessions spread over the 3 endpoints");
    // Every request of this test comes from 127.0.0.1: one endpoint serves them all.
    let mut ips = std::collections::BTreeSet::new();
    for i in 0..10 {
        let reply = client::get(&gw.url(&format!("/ip/{i}"))).await;
        ips.insert(reply.header("x-upstream"));
    }
    assert_eq!(ips.len(), 1, "{ips:?}");
}
