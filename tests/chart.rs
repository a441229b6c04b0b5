//! The Helm chart against the code: its CRDs are the generated ones, and every metric its
//! dashboard and PrometheusRule query is one that Drover exposes (the operator's registry and
//! the monitor's collector, read from their own exposition rather than from a hand-kept list).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use drover::metrics::Metrics;
use drover::monitor::recorder::{MetricsCollector, Recorder};
use drover::profile::ReferenceProfile;
use prometheus_client::registry::Registry;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// The series names an exposition's `# TYPE` lines allow, with the suffixes each type's
/// samples carry in Prometheus.
fn series_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            panic!("malformed TYPE line: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "gauge" => &[""],
            other => panic!("unexpected metric type {other} in {line}"),
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// Everything the operator and a monitor expose. A family without series is not printed, so
/// the operator's metrics are each given one series through the calls the operator makes, and
/// the monitor runs with the fraud example's profile (prediction and confidence families).
fn exposed() -> BTreeSet<String> {
    let mut text = String::new();
    let mut operator = Registry::default();
    let metrics = Metrics::default();
    metrics.register(&mut operator);
    metrics.reconciled(std::time::Duration::from_millis(1));
    metrics.failed(drover::metrics::FailureCategory::Api);
    metrics.set_phases([]);
    metrics.wrote("Deployment", "apply");
    metrics.set_leader(true);
    metrics.scraped("ok");
    metrics.promoted("ml", "fraud");
    metrics.rolled_back("ml", "fraud");
    metrics.set_weights("ml", "fraud", 10, 10);
    metrics.set_signal("ml", "fraud", "errorRate", Some(0.01), Some(0.02));
    metrics.set_drift("ml", "fraud", &[("amount".into(), 0.3)], true);
    metrics.retraining_started("ml", "fraud", "drift");
    metrics.candidate_judged("ml", "fraud", "rejected");
    prometheus_client::encoding::text::encode(&mut text, &operator).unwrap();

    let profile =
        ReferenceProfile::from_json(read("examples/models/fraud/profile.json").as_bytes()).unwrap();
    let recorder = Arc::new(Recorder::new(
        Some(&profile),
        "1.0.0",
        "test".into(),
        "2026-01-01T00:00:00Z".into(),
    ));
    let mut monitor = Registry::default();
    monitor.register_collector(Box::new(MetricsCollector(recorder)));
    prometheus_client::encoding::text::encode(&mut text, &monitor).unwrap();
    series_names(&text)
}

/// The `drover_*` names a query text uses.
fn queried(text: &str) -> BTreeSet<String> {
    let re = regex_lite::Regex::new(r"\bdrover_[a-z0-9_]+").unwrap();
    re.find_iter(text).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn exposition_is_read_whole() {
    let names = exposed();
    for name in [
        "drover_reconcile_failures_total",
        "drover_reconcile_duration_seconds_bucket",
        "drover_drift_score",
        "drover_retraining_runs_total",
        "drover_canary_weight",
        "drover_monitor_requests_total",
        "drover_monitor_request_duration_seconds_bucket",
        "drover_monitor_confidence_count",
        "drover_monitor_predictions_total",
    ] {
        assert!(names.contains(name), "{name} not in {names:?}");
    }
}

#[test]
fn dashboard_and_alerts_query_only_exposed_metrics() {
    let exposed = exposed();
    for path in [
        "charts/drover/dashboards/drover.json",
        "charts/drover/templates/prometheusrule.yaml",
    ] {
        let used = queried(&read(path));
        assert!(used.len() >= 8, "{path} queries too little: {used:?}");
        let unknown: Vec<_> = used.difference(&exposed).collect();
        assert!(
            unknown.is_empty(),
            "{path} queries metrics Drover does not expose: {unknown:?}\nexposed: {exposed:?}"
        );
    }
}

#[test]
fn dashboard_covers_the_issue_panels() {
    // Canary weight, error rate and latency per revision, drift per feature, retraining runs.
    let used = queried(&read("charts/drover/dashboards/drover.json"));
    for name in [
        "drover_canary_weight",
        "drover_monitor_requests_total",
        "drover_monitor_request_duration_seconds_bucket",
        "drover_drift_score",
        "drover_retraining_runs_total",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }
    let alerts = queried(&read("charts/drover/templates/prometheusrule.yaml"));
    for name in [
        "drover_rollbacks_total",
        "drover_drift_detected",
        "drover_reconcile_failures_total",
        "drover_monitor_request_duration_seconds_bucket",
    ] {
        assert!(alerts.contains(name), "no alert on {name}");
    }
}

#[test]
fn chart_crds_are_the_generated_ones() {
    let generated = drover::crd::to_yaml().unwrap();
    assert_eq!(
        read("charts/drover/crds/drover.dev_modeldeployments.yaml"),
        generated,
        "charts/drover/crds is stale: cp crds/drover.dev_modeldeployments.yaml charts/drover/crds/"
    );
}
