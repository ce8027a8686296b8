//! The `[[upstream]]` keys for surviving failure: every problem is reported together
//! with its key path and place, and what is left out takes the documented defaults.

use std::path::Path;
use std::time::Duration;

use weir_gateway::Config;
use weir_gateway::config::ConfigError;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("weir.toml"), text)
}

/// (line, key, message fragment) of each diagnostic.
fn problems(text: &str) -> Vec<(usize, String, String)> {
    let err = parse(text).expect_err("the config has errors");
    err.diagnostics()
        .iter()
        .map(|d| (d.line, d.key.clone(), d.message.clone()))
        .collect()
}

fn assert_reported(text: &str, expected: &[(usize, &str, &str)]) {
    let found = problems(text);
    assert_eq!(
        found.len(),
        expected.len(),
        "expected {} problems, got:\n{found:#?}",
        expected.len()
    );
    for ((line, key, message), (want_line, want_key, fragment)) in found.iter().zip(expected) {
        assert_eq!((line, key.as_str()), (want_line, *want_key), "{found:#?}");
        assert!(
            message.contains(fragment),
            "{key}: {message:?} lacks {fragment:?}"
        );
    }
}

#[test]
fn every_health_problem_is_reported_together() {
    let text = r#"[[upstream]]
name = "a"
endpoints = ["127.0.0.1:1"]
panic_threshold = 101
health = { path = "healthz", interval = "0s", timeout = "soon", healthy = 0, unhealthy = 1000, expected_statuses = [200, "300-200", 99, "2xx"] }

[[upstream]]
name = "b"
endpoints = ["127.0.0.1:2"]
health = { interval = "1s" }
"#;
    assert_reported(
        text,
        &[
            (
                4,
                "upstream[0].panic_threshold",
                "101 is out of range: write 0 to 100",
            ),
            (5, "upstream[0].health.path", "`healthz` is not a path"),
            (5, "upstream[0].health.interval", "longer than zero"),
            (5, "upstream[0].health.timeout", "invalid duration `soon`"),
            (
                5,
                "upstream[0].health.healthy",
                "0 is out of range: write 1 to 100",
            ),
            (5, "upstream[0].health.unhealthy", "1000 is out of range"),
            (
                5,
                "upstream[0].health.expected_statuses[1]",
                "`\"300-200\"` is not a status",
            ),
            (
                5,
                "upstream[0].health.expected_statuses[2]",
                "`99` is not a status",
            ),
            (
                5,
                "upstream[0].health.expected_statuses[3]",
                "`\"2xx\"` is not a status",
            ),
            (10, "upstream[1].health.path", "need a `path`"),
        ],
    );
}

#[test]
fn health_defaults() {
    let config = parse(
        "[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\nhealth = { path = \"/ping\" }\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let u = &config.upstreams[0];
    assert_eq!(u.panic_threshold, 50);
    let h = u.health.as_ref().expect("health");
    assert_eq!(h.path, "/ping");
    assert_eq!(h.interval, Duration::from_secs(5));
    assert_eq!(h.timeout, Duration::from_secs(1));
    assert_eq!((h.healthy, h.unhealthy), (2, 3));
    assert!(h.expects(200) && h.expects(399) && !h.expects(400) && !h.expects(199));
    let plain = parse("[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        plain.upstreams[0].health.is_none(),
        "no checks unless asked"
    );
}

#[test]
fn outlier_problems_and_defaults() {
    let text = r#"[[upstream]]
name = "a"
endpoints = ["127.0.0.1:1"]
outlier = { consecutive_failures = 0, base_ejection = "1m", max_ejection = "10s", max_ejected_percent = 150 }
"#;
    assert_reported(
        text,
        &[
            (
                4,
                "upstream[0].outlier.consecutive_failures",
                "0 is out of range: write 1 to 1000",
            ),
            (
                4,
                "upstream[0].outlier.max_ejection",
                "the longest ejection (10s) is shorter than the first (1m)",
            ),
            (
                4,
                "upstream[0].outlier.max_ejected_percent",
                "150 is out of range: write 0 to 100",
            ),
        ],
    );
    let config = parse("[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\noutlier = {}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let o = config.upstreams[0].outlier;
    assert_eq!(o.consecutive_failures, 5);
    assert_eq!(o.base_ejection, Duration::from_secs(30));
    assert_eq!(o.max_ejection, Duration::from_secs(300));
    assert_eq!(o.max_ejected_percent, 10);
}

#[test]
fn retry_problems_and_defaults() {
    let text = r#"[[upstream]]
name = "a"
endpoints = ["127.0.0.1:1"]
retries = { attempts = 11, on = ["5xx", "conect-failure"], retriable_statuses = [99], per_try_timeout = "0ms", backoff_base = "100ms", backoff_max = "10ms", budget_percent = -1 }

[[upstream]]
name = "b"
endpoints = ["127.0.0.1:2"]
retries = { on = ["retriable-status-codes"] }
"#;
    let found = problems(text);
    let keys: Vec<&str> = found.iter().map(|(_, k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "upstream[0].retries.attempts",
            "upstream[0].retries.on[1]",
            "upstream[0].retries.retriable_statuses[0]",
            "upstream[0].retries.per_try_timeout",
            "upstream[0].retries.backoff_max",
            "upstream[0].retries.budget_percent",
            "upstream[1].retries.retriable_statuses",
        ],
        "{found:#?}"
    );
    let err = parse(text).expect_err("invalid");
    let typo = &err.diagnostics()[1];
    assert_eq!(
        typo.help.as_deref(),
        Some("did you mean `connect-failure`?")
    );

    let config = parse("[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\nretries = {}\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let r = config.upstreams[0].retries.clone();
    assert_eq!(r.attempts, 1);
    assert!(r.on.connect_failure && r.on.reset);
    assert!(!r.on.server_error && !r.on.gateway_error && !r.on.retriable_statuses);
    assert_eq!(r.per_try_timeout, None);
    assert!(!r.allow_non_idempotent);
    assert_eq!(r.backoff_base, Duration::from_millis(25));
    assert_eq!(r.backoff_max, Duration::from_millis(250));
    assert_eq!((r.budget_percent, r.min_retry_concurrency), (20, 3));
    let plain = parse("[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    // Without a table: one more try after a reset, and refused endpoints set aside.
    let implicit = &plain.upstreams[0].retries;
    assert_eq!(implicit.attempts, 1);
    assert!(implicit.on.reset && !implicit.on.connect_failure);
    let outlier = &plain.upstreams[0].outlier;
    assert!(outlier.connect_failures_only);
    assert_eq!(outlier.consecutive_failures, 3);
}

#[test]
fn limit_and_timeout_problems_and_defaults() {
    let text = r#"[[upstream]]
name = "a"
endpoints = ["127.0.0.1:1"]
limits = { max_connections = 0, max_pending = -1, max_requests = 0 }
"#;
    assert_reported(
        text,
        &[
            (
                4,
                "upstream[0].limits.max_connections",
                "0 is out of range: write 1 to",
            ),
            (
                4,
                "upstream[0].limits.max_pending",
                "-1 is out of range: write 0 to",
            ),
            (
                4,
                "upstream[0].limits.max_requests",
                "0 is out of range: write 1 to",
            ),
        ],
    );
    let config = parse("[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let u = &config.upstreams[0];
    assert_eq!(
        (
            u.limits.max_connections,
            u.limits.max_pending,
            u.limits.max_requests
        ),
        (1024, 1024, 1024)
    );
    assert_eq!(u.timeouts.connect, Duration::from_secs(5));
    assert_eq!(u.timeouts.request, Duration::from_secs(15));
    assert_eq!(u.timeouts.idle, Duration::from_secs(60));
    let err = parse(
        "[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\ntimeouts = { idle = \"0s\" }\n",
    )
    .expect_err("zero idle timeout");
    assert_eq!(err.diagnostics()[0].key, "upstream[0].timeouts.idle");
}

/// The brief's example, verbatim: every key of it is accepted.
#[test]
fn the_full_example_is_valid() {
    let text = r#"[[upstream]]
name = "users"
endpoints = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 3 }]
balancer = "least_request"
health = { path = "/healthz", interval = "2s", timeout = "1s", healthy = 2, unhealthy = 2 }
outlier = { consecutive_failures = 5, base_ejection = "30s", max_ejected_percent = 50 }
retries = { attempts = 2, on = ["connect-failure", "reset", "5xx"], per_try_timeout = "2s" }
limits = { max_connections = 1024, max_pending = 256, max_requests = 1024 }
timeouts = { connect = "1s", request = "15s", idle = "60s" }
"#;
    let config = parse(text).unwrap_or_else(|e| panic!("{e}"));
    let u = &config.upstreams[0];
    assert_eq!(u.endpoints[1].weight, 3);
    assert_eq!(u.limits.max_pending, 256);
    assert_eq!(u.retries.attempts, 2);
    assert_eq!(u.outlier.max_ejected_percent, 50);
}

#[test]
fn tls_problems_name_their_keys() {
    let dir = weir_tests::gateway::fresh_dir();
    let ca = weir_tests::certs::TestCa::new("Config CA");
    let ca_file = ca.write(&dir, "ca");
    let (cert, _) = ca.client("gateway").write(&dir, "client");
    let (_, other_key) = ca.client("someone-else").write(&dir, "other");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "hello").expect("write");
    let text = format!(
        r#"[[upstream]]
name = "a"
endpoints = ["127.0.0.1:1"]
tls = {{ ca = "{missing}", server_name = "bad name!" }}

[[upstream]]
name = "b"
endpoints = ["127.0.0.1:2"]
tls = {{ ca = "{garbage}", cert = "{cert}" }}

[[upstream]]
name = "c"
endpoints = ["127.0.0.1:3"]
tls = {{ ca = "{ca}", cert = "{cert}", key = "{other_key}" }}

[[upstream]]
name = "d"
endpoints = ["127.0.0.1:4"]
tls = {{ ca = "{ca}", key = "{other_key}" }}
"#,
        missing = dir.join("missing.pem").display(),
        garbage = garbage.display(),
        cert = cert.display(),
        ca = ca_file.display(),
        other_key = other_key.display(),
    );
    assert_reported(
        &text,
        &[
            (4, "upstream[0].tls.ca", "cannot read"),
            (
                4,
                "upstream[0].tls.server_name",
                "`bad name!` is not a server name",
            ),
            (9, "upstream[1].tls.ca", "holds no certificate"),
            (9, "upstream[1].tls.key", "needs its private key"),
            (14, "upstream[2].tls.key", "does not match the certificate"),
            (19, "upstream[3].tls.cert", "needs its client certificate"),
        ],
    );
}

#[test]
fn protocol_and_tls_keys_are_checked_by_name() {
    let text = "[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\nprotocol = \"http3\"\n";
    let err = parse(text).expect_err("unknown protocol");
    let d = &err.diagnostics()[0];
    assert_eq!(
        (d.line, d.key.as_str()),
        (4, "upstream[0].protocol"),
        "{err}"
    );
    assert!(d.message.contains("http3"), "{}", d.message);

    let text =
        "[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\ntls = { server_nme = \"x\" }\n";
    let err = parse(text).expect_err("unknown key");
    let d = &err.diagnostics()[0];
    assert_eq!(d.key, "upstream[0].tls.server_nme", "{err}");
    assert_eq!(
        d.help.as_deref(),
        Some("did you mean `server_name`?"),
        "{err}"
    );
}

#[test]
fn protocol_and_tls_defaults() {
    let config = parse("[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let u = &config.upstreams[0];
    assert_eq!(u.protocol, weir_gateway::config::Protocol::Http1);
    assert!(u.tls.is_none(), "plain TCP unless asked");

    let dir = weir_tests::gateway::fresh_dir();
    let ca = weir_tests::certs::TestCa::new("Config CA");
    let ca_file = ca.write(&dir, "ca");
    let text = format!(
        "[[upstream]]\nname = \"a\"\nendpoints = [\"127.0.0.1:1\"]\nprotocol = \"http2\"\n\
         tls = {{ ca = \"{}\", server_name = \"users.internal\" }}\n",
        ca_file.display()
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let u = &config.upstreams[0];
    assert_eq!(u.protocol, weir_gateway::config::Protocol::Http2);
    let tls = u.tls.as_ref().expect("tls");
    assert_eq!(tls.client_config.alpn_protocols, [b"h2".to_vec()]);
    assert_eq!(tls.ca.as_deref(), Some(ca_file.as_path()));
}
