//! Graceful shutdown of the real `weir` binary: on SIGTERM/SIGINT it stops accepting,
//! finishes in-flight requests, and exits 0; the grace period bounds the wait.

use std::time::{Duration, Instant};

use weir_tests::{TestUpstream, WeirProcess, get};

fn start(up: &TestUpstream, grace: &str) -> WeirProcess {
    WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 2\nshutdown_grace = \"{grace}\"\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [[upstream]]\nname = \"up\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n",
            up.addr
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_in_flight_requests_then_exits_zero() {
    let up = TestUpstream::start("up");
    let weir = start(&up, "10s");
    let addr = weir.addr;
    // An idle keep-alive connection must not hold shutdown up.
    assert_eq!(get(&format!("http://{addr}/warm")).await.status, 200);

    let in_flight = tokio::spawn(async move { get(&format!("http://{addr}/slow/1500")).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    weir.signal("TERM");

    // New connections are refused soon after the signal.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the gateway kept accepting after SIGTERM");

    let reply = in_flight.await.unwrap();
    assert_eq!(reply.status, 200, "the in-flight request completed");
    assert_eq!(reply.text(), "/slow/1500");
    assert_eq!(
        reply.header("connection").as_deref(),
        Some("close"),
        "a response while draining closes its HTTP/1.1 connection"
    );
    let code = weir.exit_code(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "it exited once the request was done"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_period_bounds_the_wait_and_sigint_works_too() {
    let up = TestUpstream::start("up");
    let weir = start(&up, "500ms");
    let addr = weir.addr;
    let stuck = tokio::spawn(async move {
        let client = weir_tests::h1_client();
        let req = http::Request::get(format!("http://{addr}/slow/30000"))
            .body(weir_tests::client::empty())
            .unwrap();
        client.request(req).await.is_err()
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    weir.signal("INT");
    let code = weir.exit_code(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "the grace period ended the wait"
    );
    assert!(
        stuck.await.unwrap(),
        "the unfinished request was cut, not answered"
    );
}
