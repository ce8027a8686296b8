//! `/metrics` as a Prometheus server scrapes it: valid text exposition, with every
//! series DESIGN.md names present after traffic, a plugin call and a reload.

use weir_tests::client;
use weir_tests::{TestGateway, TestUpstream, guest_wasm};

/// The series DESIGN.md promises.
const DESIGN_SERIES: &[&str] = &[
    "weir_requests_total",
    "weir_request_duration_seconds",
    "weir_upstream_request_duration_seconds",
    "weir_plugin_call_duration_seconds",
    "weir_plugin_failures_total",
    "weir_plugin_reloads_total",
    "weir_upstream_endpoint_healthy",
];

#[tokio::test]
async fn metrics_parse_and_carry_every_design_series() {
    let up = TestUpstream::start("up");
    let dir = weir_tests::gateway::plugin_dir(&[(guest_wasm!("swap_a"), "swap")]);
    let gw = TestGateway::start(&format!(
        r#"
[plugins]
dir = "{dir}/plugins"
cache_dir = "{cache}"
[[upstream]]
name = "app"
endpoints = ["{up}"]
[[route]]
name = "plugged"
match = {{ path_prefix = "/p" }}
upstream = "app"
plugins = [{{ name = "swap" }}]
[[route]]
name = "plain"
match = {{ path_prefix = "/" }}
upstream = "app"
"#,
        dir = dir.display(),
        cache = weir_tests::gateway::compile_cache().display(),
        up = up.addr
    ));
    for path in ["/p/1", "/p/2", "/plain"] {
        assert_eq!(client::get(&gw.url(path)).await.status, 200);
    }
    // A plugin reload, so the reload series has a sample with a result.
    std::fs::copy(guest_wasm!("swap_b"), dir.join("plugins/swap.wasm")).expect("copy");
    assert_eq!(gw.reload().await.0, 200);

    let reply = client::get(&gw.admin_url("/metrics")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .unwrap_or_default()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        reply.headers
    );
    let text = reply.text();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text");
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(valid_sample(line), "not a valid sample line: {line:?}");
    }
    for series in DESIGN_SERIES {
        assert!(
            scrape.samples.iter().any(|s| s.metric == *series),
            "{series} missing from:\n{text}"
        );
    }
    let has = |metric: &str, labels: &[(&str, &str)]| {
        scrape
            .samples
            .iter()
            .any(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
    };
    assert!(
        has(
            "weir_requests_total",
            &[("route", "plugged"), ("status", "200")]
        ),
        "{text}"
    );
    assert!(
        has(
            "weir_requests_total",
            &[("route", "plain"), ("status", "200")]
        ),
        "{text}"
    );
    assert!(
        has(
            "weir_plugin_call_duration_seconds",
            &[("plugin", "swap"), ("phase", "request_headers")]
        ),
        "{text}"
    );
    assert!(
        has("weir_plugin_reloads_total", &[("result", "success")]),
        "{text}"
    );
    assert!(
        has("weir_upstream_endpoint_healthy", &[("upstream", "app")]),
        "{text}"
    );
    // Bounded labels: no raw path ever becomes a label value.
    assert!(
        !text.contains("/p/1"),
        "a raw path leaked into a label:\n{text}"
    );
}

/// Whether `line` is `name{label="value",...} number` in the text exposition format.
fn valid_sample(line: &str) -> bool {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return false;
    }
    if let Some(labels) = rest.strip_prefix('{') {
        let Some(end) = labels.find("} ") else {
            return false;
        };
        for pair in labels[..end].split("\",").filter(|p| !p.is_empty()) {
            let Some((key, value)) = pair.split_once("=\"") else {
                return false;
            };
            let key_ok =
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !key_ok || value.trim_end_matches('"').contains('"') {
                return false;
            }
        }
        rest = &labels[end + 1..];
    }
    let value = rest.trim_start();
    rest.starts_with(' ')
        && (value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value))
}
