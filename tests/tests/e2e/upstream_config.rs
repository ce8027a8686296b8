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
    let o = config.upstreams[0].outlier.expect("outlier");
    assert_eq!(o.consecutive_failures, 5);
    assert_eq!(o.base_ejection, Duration::from_secs(30));
    assert_eq!(o.max_ejection, Duration::from_secs(300));
    assert_eq!(o.max_ejected_percent, 10);
}
