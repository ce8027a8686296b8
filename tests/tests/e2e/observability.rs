//! Observability: W3C trace context on the way upstream (continued, restarted, or left
//! alone with `trace_context = false`), the per-request Prometheus series on the admin
//! listener's `/metrics`, and the access log's `trace_id`.
//!
//! Metric counts are read from the real binary ([`WeirProcess`]): its registry is its
//! own, so the counts are exactly this test's traffic.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use http::Request;
use weir_tests::client::{empty, h1_client, send};
use weir_tests::{Reply, TestGateway, TestUpstream, WeirProcess, get};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

fn traceparent(version: &str, trace_id: &str, parent_id: &str, flags: &str) -> String {
    format!("{version}-{trace_id}-{parent_id}-{flags}")
}

/// `GET url` with these extra request headers.
async fn get_with(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = Request::get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    send(&h1_client(), req.body(empty()).expect("request")).await
}

/// The fields of a `traceparent` the upstream received, checked to be one valid
/// version-00 value: (trace-id, parent-id, flags).
fn sent_traceparent(up: &TestUpstream) -> (String, String, String) {
    let seen = up.last();
    let values: Vec<_> = seen.headers.get_all("traceparent").iter().collect();
    assert_eq!(
        values.len(),
        1,
        "one traceparent upstream: {:?}",
        seen.headers
    );
    let value = values[0].to_str().expect("ASCII traceparent");
    let fields: Vec<&str> = value.split('-').collect();
    let lower_hex = |s: &str, len: usize| {
        s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    assert!(
        fields.len() == 4
            && fields[0] == "00"
            && lower_hex(fields[1], 32)
            && lower_hex(fields[2], 16)
            && lower_hex(fields[3], 2)
            && fields[1].bytes().any(|b| b != b'0')
            && fields[2].bytes().any(|b| b != b'0'),
        "not a valid version-00 traceparent: {value}"
    );
    (
        fields[1].to_owned(),
        fields[2].to_owned(),
        fields[3].to_owned(),
    )
}

fn one_route(up: &TestUpstream, server: &str) -> String {
    format!(
        "{server}[[upstream]]\nname = \"users\"\nendpoints = [\"{}\"]\n\
         [[route]]\nname = \"users-api\"\nupstream = \"users\"\n\
         match = {{ path_prefix = \"/users\" }}\n",
        up.addr
    )
}

#[tokio::test]
async fn a_valid_traceparent_keeps_its_trace_and_gets_this_hops_parent_id() {
    let up = TestUpstream::start("users");
    let gw = TestGateway::start(&one_route(&up, ""));
    let incoming = traceparent("00", TRACE_ID, PARENT_ID, "01");
    let mut parents = Vec::new();
    for _ in 0..2 {
        let reply = get_with(
            &gw.url("/users/1"),
            &[("traceparent", &incoming), ("tracestate", TRACESTATE)],
        )
        .await;
        assert_eq!(reply.status, 200);
        let (trace_id, parent_id, flags) = sent_traceparent(&up);
        assert_eq!(trace_id, TRACE_ID);
        assert_eq!(flags, "01");
        assert_ne!(parent_id, PARENT_ID, "the parent id is this hop's span");
        assert_eq!(up.last().headers["tracestate"], TRACESTATE);
        parents.push(parent_id);
    }
    assert_ne!(parents[0], parents[1], "each request is a span of its own");

    // A later version is read by its first four fields and sent on as version 00.
    let future = format!("{}-and-more", traceparent("cc", TRACE_ID, PARENT_ID, "01"));
    let reply = get_with(
        &gw.url("/users/2"),
        &[("traceparent", &future), ("tracestate", TRACESTATE)],
    )
    .await;
    assert_eq!(reply.status, 200);
    let (trace_id, parent_id, flags) = sent_traceparent(&up);
    assert_eq!((trace_id.as_str(), flags.as_str()), (TRACE_ID, "01"));
    assert_ne!(parent_id, PARENT_ID);
    assert_eq!(up.last().headers["tracestate"], TRACESTATE);
}

#[tokio::test]
async fn a_missing_or_invalid_traceparent_starts_a_new_trace_without_tracestate() {
    let up = TestUpstream::start("users");
    let gw = TestGateway::start(&one_route(&up, ""));
    let zeros = "0".repeat(32);
    let invalid = [
        None,
        Some(traceparent("00", &zeros, PARENT_ID, "01")),
        Some(traceparent("00", TRACE_ID, &"0".repeat(16), "01")),
        Some(traceparent("ff", TRACE_ID, PARENT_ID, "01")),
        Some(traceparent("00", &TRACE_ID.to_uppercase(), PARENT_ID, "01")),
        Some(format!(
            "{}-00",
            traceparent("00", TRACE_ID, PARENT_ID, "01")
        )),
        Some(traceparent("00", &TRACE_ID[1..], PARENT_ID, "01")),
    ];
    let mut trace_ids = Vec::new();
    for sent in &invalid {
        let mut headers = vec![("tracestate", TRACESTATE)];
        if let Some(value) = sent {
            headers.push(("traceparent", value));
        }
        let reply = get_with(&gw.url("/users/1"), &headers).await;
        assert_eq!(reply.status, 200);
        let (trace_id, _, flags) = sent_traceparent(&up);
        assert_ne!(trace_id, TRACE_ID, "after {sent:?}");
        assert_ne!(trace_id, TRACE_ID.to_uppercase(), "after {sent:?}");
        assert_eq!(flags, "00", "a new trace is not sampled, after {sent:?}");
        assert!(
            !up.last().headers.contains_key("tracestate"),
            "tracestate dropped after {sent:?}"
        );
        trace_ids.push(trace_id);
    }
    trace_ids.sort();
    trace_ids.dedup();
    assert_eq!(
        trace_ids.len(),
        invalid.len(),
        "every new trace id is fresh"
    );
}

/// Log lines until one satisfies `wanted` (up to 10 s); panics with what arrived.
fn wait_for_line(
    weir: &WeirProcess,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(line) = weir.log.recv_timeout(left) else {
            break;
        };
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line)
            && wanted(&event)
        {
            return event;
        }
        lines.push(line);
    }
    panic!("no such log line within 10 s; got {lines:#?}");
}

/// An access-log event for `path`.
fn access_to(path: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |event| event["target"] == "weir::access" && event["path"] == path
}

#[tokio::test]
async fn the_access_log_carries_the_trace_id_the_upstream_saw() {
    let up = TestUpstream::start("users");
    let weir = WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &one_route(
            &up,
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        ),
    );
    let base = format!("http://{}", weir.addr);

    assert_eq!(get(&format!("{base}/users/new")).await.status, 200);
    let (started, _, _) = sent_traceparent(&up);
    let event = wait_for_line(&weir, access_to("/users/new"));
    assert_eq!(event["trace_id"], started.as_str(), "{event}");

    let incoming = traceparent("00", TRACE_ID, PARENT_ID, "01");
    let reply = get_with(
        &format!("{base}/users/continued"),
        &[("traceparent", &incoming)],
    )
    .await;
    assert_eq!(reply.status, 200);
    let (continued, _, _) = sent_traceparent(&up);
    assert_eq!(continued, TRACE_ID);
    let event = wait_for_line(&weir, access_to("/users/continued"));
    assert_eq!(event["trace_id"], TRACE_ID, "{event}");

    // Not routed: no trace context, so no trace id.
    assert_eq!(get(&format!("{base}/elsewhere")).await.status, 404);
    let event = wait_for_line(&weir, access_to("/elsewhere"));
    assert!(event.get("trace_id").is_none(), "{event}");
}

#[tokio::test]
async fn trace_context_off_leaves_the_headers_alone_and_logs_no_trace_id() {
    let up = TestUpstream::start("users");
    let weir = WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &one_route(
            &up,
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\ntrace_context = false\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n",
        ),
    );
    let base = format!("http://{}", weir.addr);

    // An invalid traceparent and its tracestate pass through untouched.
    let invalid = traceparent("ff", TRACE_ID, PARENT_ID, "01");
    let reply = get_with(
        &format!("{base}/users/invalid"),
        &[("traceparent", &invalid), ("tracestate", TRACESTATE)],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = up.last().headers;
    assert_eq!(seen["traceparent"], invalid.as_str());
    assert_eq!(seen["tracestate"], TRACESTATE);
    let event = wait_for_line(&weir, access_to("/users/invalid"));
    assert!(event.get("trace_id").is_none(), "{event}");

    // A valid one is not given a new parent id; none is not invented.
    let valid = traceparent("00", TRACE_ID, PARENT_ID, "01");
    let reply = get_with(&format!("{base}/users/valid"), &[("traceparent", &valid)]).await;
    assert_eq!(reply.status, 200);
    assert_eq!(up.last().headers["traceparent"], valid.as_str());
    assert_eq!(get(&format!("{base}/users/none")).await.status, 200);
    assert!(!up.last().headers.contains_key("traceparent"));
    let event = wait_for_line(&weir, access_to("/users/none"));
    assert!(event.get("trace_id").is_none(), "{event}");
}

/// The value of the sample `name{labels}` in Prometheus text, labels in any order.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let found: BTreeMap<&str, &str> = rest
            .strip_suffix('}')?
            .split(',')
            .filter(|pair| !pair.is_empty())
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                Some((k, v.trim_matches('"')))
            })
            .collect();
        (metric == name && found == wanted).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status_and_report_endpoints() {
    let (a, b) = (TestUpstream::start("a"), TestUpstream::start("b"));
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // nothing listens there now
    let weir = WeirProcess::with_config(
        weir_tests::weir_bin!(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nworkers = 1\naccess_log = false\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\
             [[upstream]]\nname = \"users\"\nendpoints = [\"{}\", \"{}\"]\n\
             [[upstream]]\nname = \"gone\"\nendpoints = [\"{closed}\"]\n\
             [[route]]\nname = \"users-api\"\nupstream = \"users\"\n\
             match = {{ path_prefix = \"/users\" }}\n\
             [[route]]\nname = \"broken\"\nupstream = \"gone\"\n\
             match = {{ path_prefix = \"/broken\" }}\n",
            a.addr, b.addr
        ),
    );
    let base = format!("http://{}", weir.addr);
    for path in ["/users/1", "/users/2?q=x", "/users/3"] {
        assert_eq!(get(&format!("{base}{path}")).await.status, 200);
    }
    assert_eq!(get(&format!("{base}/nowhere/1")).await.status, 404);
    assert_eq!(get(&format!("{base}/nowhere/2")).await.status, 404);
    assert_eq!(get(&format!("{base}/broken")).await.status, 502);

    // Recorded before each response was returned: no waiting needed.
    let reply = get(&format!("http://{}/metrics", weir.admin)).await;
    assert_eq!(reply.status, 200);
    let text = reply.text();
    let expect = |name: &str, labels: &[(&str, &str)], value: f64| {
        assert_eq!(
            sample(&text, name, labels),
            Some(value),
            "{name}{labels:?} in\n{text}"
        );
    };
    let requests = "weir_requests_total";
    expect(requests, &[("route", "users-api"), ("status", "200")], 3.0);
    expect(requests, &[("route", "-"), ("status", "404")], 2.0);
    expect(requests, &[("route", "broken"), ("status", "502")], 1.0);
    let series = text.lines().filter(|l| l.starts_with(requests)).count();
    assert_eq!(series, 3, "no other status or route series:\n{text}");
    // No path ever becomes a label.
    assert!(
        !text.contains("nowhere") && !text.contains("/users"),
        "{text}"
    );

    let request_count = "weir_request_duration_seconds_count";
    expect(request_count, &[("route", "users-api")], 3.0);
    expect(request_count, &[("route", "-")], 2.0);
    expect(request_count, &[("route", "broken")], 1.0);
    let bucket = "weir_request_duration_seconds_bucket";
    expect(bucket, &[("route", "users-api"), ("le", "10")], 3.0);
    expect(bucket, &[("route", "users-api"), ("le", "+Inf")], 3.0);

    // Exchanges that got a response: none for the closed port.
    let upstream_count = "weir_upstream_request_duration_seconds_count";
    expect(upstream_count, &[("upstream", "users")], 3.0);
    expect(upstream_count, &[("upstream", "gone")], 0.0);

    let healthy = "weir_upstream_endpoint_healthy";
    for (upstream, endpoint) in [("users", a.addr), ("users", b.addr), ("gone", closed)] {
        expect(
            healthy,
            &[("upstream", upstream), ("endpoint", &endpoint.to_string())],
            1.0,
        );
    }
}
