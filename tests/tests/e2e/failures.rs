//! Upstream failures become clear local responses, never hangs: 502 for a refused or
//! reset connection, 504 for connect and response timeouts.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use weir_tests::{TestGateway, TestUpstream, get};

fn route_to(endpoint: &str, timeouts: &str) -> String {
    format!(
        "[[upstream]]\nname = \"up\"\nendpoints = [\"{endpoint}\"]\n{timeouts}\n\
         [[route]]\nname = \"all\"\nupstream = \"up\"\n"
    )
}

#[tokio::test]
async fn refused_connection_is_502() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: nothing listens there now
    let gw = TestGateway::start(&route_to(&format!("127.0.0.1:{port}"), ""));
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 502);
    assert_eq!(reply.header("via").as_deref(), Some("1.1 weir"));
    assert!(
        reply.text().contains("upstream connection failed"),
        "{}",
        reply.text()
    );
    assert!(
        !reply.text().contains(&port.to_string()),
        "no internals leak to the client"
    );
}

#[tokio::test]
async fn reset_connection_is_502() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Accept, read the request head, then close without answering.
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            drop(stream);
        }
    });
    let gw = TestGateway::start(&route_to(&addr.to_string(), ""));
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 502);
}

#[tokio::test]
async fn slow_response_is_504_after_the_request_timeout() {
    let up = TestUpstream::start("slow");
    let gw = TestGateway::start(&route_to(
        &up.addr.to_string(),
        "timeouts = { request = \"300ms\" }",
    ));
    let started = Instant::now();
    let reply = get(&gw.url("/slow/5000")).await;
    assert_eq!(reply.status, 504);
    assert!(reply.text().contains("timeout"), "{}", reply.text());
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the timeout, not the upstream, ended it"
    );
    // A fast request on the same route still works.
    assert_eq!(get(&gw.url("/slow/10")).await.status, 200);
}

/// The response timeout of exchanges on a kept-alive upstream connection: each gets its
/// own, from its own start, whether the previous one ended just before or long ago.
#[tokio::test]
async fn each_exchange_on_a_reused_connection_gets_its_own_response_timeout() {
    let up = TestUpstream::start("reused");
    let gw = TestGateway::start(&route_to(
        &up.addr.to_string(),
        "timeouts = { request = \"1s\" }",
    ));
    let client = weir_tests::h1_client();
    let get_on = |path: &str| {
        let req = http::Request::get(gw.url(path))
            .body(weir_tests::client::empty())
            .expect("request");
        weir_tests::send(&client, req)
    };
    // Together longer than the timeout, each well within it.
    for i in 0..5 {
        let reply = get_on("/slow/300").await;
        assert_eq!(reply.status, 200, "exchange {i}: {}", reply.text());
    }
    assert_eq!(
        up.connections(),
        1,
        "the exchanges shared one upstream connection"
    );
    // A slow exchange right after a fast one on the same connection, then one after a
    // wait past the timeout with nothing in flight (the timer fired idle): each is cut
    // at its timeout, its connection dropped, and the next fast one opens another.
    for idle in [Duration::ZERO, Duration::from_millis(1500)] {
        tokio::time::sleep(idle).await;
        let started = Instant::now();
        assert_eq!(
            get_on("/slow/5000").await.status,
            504,
            "after {idle:?} idle"
        );
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the timeout ended it"
        );
        assert_eq!(get_on("/slow/10").await.status, 200);
    }
    assert_eq!(up.connections(), 3);
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener whose accept queue is full and never drained: further SYNs are dropped,
    // so connecting hangs until the gateway's connect timeout.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        // Non-blocking connects fill the queue (some may hang; that is the point).
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_nonblocking(true).unwrap();
        let _ = s.connect(&addr.into());
        fillers.push(s);
    }
    std::thread::sleep(Duration::from_millis(100));
    let gw = TestGateway::start(&route_to(
        &addr.to_string(),
        "timeouts = { connect = \"300ms\" }",
    ));
    let started = Instant::now();
    let reply = get(&gw.url("/")).await;
    assert_eq!(reply.status, 504, "{}", reply.text());
    assert!(reply.text().contains("connect timeout"), "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(socket);
}

#[tokio::test]
async fn one_failing_upstream_does_not_affect_another_route() {
    let good = TestUpstream::start("good");
    let gw = TestGateway::start(&format!(
        "[[upstream]]\nname = \"good\"\nendpoints = [\"{}\"]\n\
         [[upstream]]\nname = \"bad\"\nendpoints = [\"127.0.0.1:9\"]\n\
         [[route]]\nname = \"bad\"\nupstream = \"bad\"\nmatch = {{ path_prefix = \"/bad\" }}\n\
         [[route]]\nname = \"good\"\nupstream = \"good\"\n",
        good.addr
    ));
    assert_eq!(get(&gw.url("/bad")).await.status, 502);
    assert_eq!(get(&gw.url("/fine")).await.status, 200);
}
