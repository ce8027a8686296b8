//! Failover with the default config: an endpoint that dies under steady load costs no
//! request (refused connections go elsewhere, requests caught in flight are retried,
//! the dead endpoint is set aside), and throughput stays at the survivor's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use weir_tests::{TestGateway, TestUpstream, h1_client, send};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_of_two_endpoints_under_load_fails_no_request() {
    let mut a = TestUpstream::start("a");
    let b = TestUpstream::start("b");
    // A little work per request, so that requests are in flight at `a` when it dies.
    a.set_delay(Duration::from_millis(3));
    b.set_delay(Duration::from_millis(3));
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"pair\"\nendpoints = [\"{}\", \"{}\"]\n\
         [[route]]\nname = \"failover\"\nupstream = \"pair\"\n",
        a.addr, b.addr
    ));
    let url = gw.url("/steady");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let (url, stop, ok, failed) = (url.clone(), stop.clone(), ok.clone(), failed.clone());
        let failures = failures.clone();
        clients.push(tokio::spawn(async move {
            let client = h1_client();
            while !stop.load(Ordering::Relaxed) {
                let req = http::Request::get(&url)
                    .body(weir_tests::client::empty())
                    .unwrap();
                let reply = send(&client, req).await;
                match reply.status.as_u16() {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => {
                        failures
                            .lock()
                            .unwrap()
                            .push(format!("{} {}", reply.status, reply.text()));
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(a.served() > 0 && b.served() > 0, "both endpoints served");
    a.stop();
    let killed = Instant::now();
    let at_kill = ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = ok.load(Ordering::Relaxed) - at_kill;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        tokio::time::timeout(Duration::from_secs(10), client)
            .await
            .expect("clients stop")
            .unwrap();
    }
    let per_second_before = before as f64;
    let per_second_after = after as f64 / killed.elapsed().as_secs_f64().max(2.0);
    println!(
        "before the kill: {per_second_before:.0} req/s over two endpoints; after: \
         {per_second_after:.0} req/s on one; failed: {}",
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed: {:?}",
        failures.lock().unwrap()
    );
    assert!(after > 0, "the survivor kept serving");
    // Both endpoints sleep 3 ms a request, so one carries about half of two; far less
    // would mean requests keep waiting on the dead one.
    assert!(
        per_second_after > per_second_before * 0.3,
        "before {per_second_before:.0}/s, after {per_second_after:.0}/s"
    );
    let upstreams = gw.admin_json("/admin/upstreams").await;
    let endpoints = &upstreams["upstreams"][0]["endpoints"];
    let dead = endpoints
        .as_array()
        .and_then(|e| e.iter().find(|e| e["address"] == a.addr.to_string()))
        .unwrap_or_else(|| panic!("{endpoints}"));
    assert_eq!(dead["in_rotation"], false, "set aside: {dead}");
}

#[tokio::test]
async fn a_refused_connection_goes_to_another_endpoint_whatever_the_method() {
    let up = TestUpstream::start("alive");
    let dead = weir_tests::closed_addr();
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"half\"\nendpoints = [\"{dead}\", \"{}\"]\n\
         [[route]]\nname = \"refused-failover\"\nupstream = \"half\"\n",
        up.addr
    ));
    // A streamed POST, never replayable, still reaches the live endpoint every time:
    // nothing of it was sent to the dead one.
    let client = h1_client();
    for i in 0..6 {
        let req = http::Request::post(gw.url("/orders"))
            .body(weir_tests::client::full(format!("order {i}")))
            .unwrap();
        let reply = send(&client, req).await;
        assert_eq!(reply.status, 200, "request {i}: {}", reply.text());
    }
    assert_eq!(up.served(), 6);
}
