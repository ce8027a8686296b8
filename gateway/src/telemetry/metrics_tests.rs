//! The registry's series: names, labels, bounds.
use super::plugins::sanitize;
use super::*;

#[test]
fn plugin_names_are_sanitized_and_bounded() {
    assert_eq!(sanitize("Cache Hits!").as_deref(), Some("cache_hits"));
    assert_eq!(sanitize("9lives"), None);
    assert_eq!(sanitize("__"), None);
    assert_eq!(sanitize(&"a".repeat(101)), None);
}

#[test]
fn route_series_count_each_status_and_time_each_request() {
    let series = RouteSeries::new("unit-test-route");
    for status in [200, 200, 404, 503, 799] {
        let status = StatusCode::from_u16(status).unwrap();
        series.record(status, Duration::from_millis(2));
    }
    let text = render();
    for (status, count) in [(200, 2), (404, 1), (503, 1), (799, 1)] {
        let line = format!(
            "weir_requests_total{{route=\"unit-test-route\",status=\"{status}\"}} {count}\n"
        );
        assert!(text.contains(&line), "{line} in {text}");
    }
    for line in [
        "weir_request_duration_seconds_count{route=\"unit-test-route\"} 5\n",
        "weir_request_duration_seconds_bucket{route=\"unit-test-route\",le=\"0.001\"} 0\n",
        "weir_request_duration_seconds_bucket{route=\"unit-test-route\",le=\"0.0025\"} 5\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[test]
fn upstream_series_are_labelled_with_cluster_and_endpoint() {
    upstream_exchange_duration("unit-test-cluster").observe(0.02);
    set_endpoint_healthy("unit-test-cluster", "10.0.0.1:80", true);
    let text = render();
    for line in [
        "weir_upstream_request_duration_seconds_count{upstream=\"unit-test-cluster\"} 1\n",
        "weir_upstream_endpoint_healthy{endpoint=\"10.0.0.1:80\",upstream=\"unit-test-cluster\"} 1\n",
    ] {
        assert!(text.contains(line), "{line} in {text}");
    }
}

#[test]
fn plugin_series_render_and_types_do_not_clash() {
    plugin_counter("p", "unit_test_hits").unwrap().inc_by(3);
    assert!(plugin_histogram("p", "unit_test_hits_total").is_none());
    plugin_histogram("p", "unit_test_latency")
        .unwrap()
        .observe(0.5);
    let text = render();
    assert!(
        text.contains("weir_plugin_unit_test_hits_total{plugin=\"p\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("weir_plugin_unit_test_latency_count{plugin=\"p\"} 1"),
        "{text}"
    );
}
