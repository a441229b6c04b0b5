//! The operator's Prometheus metrics. Every label is bounded: a result, an error category, a
//! phase, a child kind — never an object name or error text.

use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::api::Phase;

/// Bounded category of a reconcile failure (metric label and Event reason).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum FailureCategory {
    /// The API server refused or failed a request.
    Api,
    /// A write was attempted without holding the leader Lease.
    NotLeader,
    /// The object could not be read (malformed, missing fields).
    InvalidObject,
    /// Anything else.
    Internal,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CategoryLabels {
    category: FailureCategory,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// Labels of per-ModelDeployment series: bounded by the number of ModelDeployments.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    namespace: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WeightLabels {
    namespace: String,
    name: String,
    weight: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    namespace: String,
    name: String,
    signal: String,
}

/// Signals a judgement can carry (the gauges of a deleted ModelDeployment are removed for
/// each).
pub const SIGNALS: [&str; 7] = [
    "errorRate",
    "latencyP99",
    "predictionDrift",
    "dataDrift",
    "confidence",
    "errorRateVsStable",
    "latencyVsStable",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WriteLabels {
    kind: &'static str,
    verb: &'static str,
}

/// The operator's metrics, registered once and shared by every reconcile.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Counter,
    failures: Family<CategoryLabels, Counter>,
    duration: Histogram,
    phases: Family<PhaseLabels, Gauge>,
    writes: Family<WriteLabels, Counter>,
    leader: Gauge,
    scrapes: Family<OutcomeLabels, Counter>,
    promotions: Family<ModelLabels, Counter>,
    rollbacks: Family<ModelLabels, Counter>,
    weights: Family<WeightLabels, Gauge>,
    signal_values: Family<SignalLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    signal_thresholds: Family<SignalLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Counter::default(),
            failures: Family::default(),
            duration: Histogram::new([
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            phases: Family::default(),
            writes: Family::default(),
            leader: Gauge::default(),
            scrapes: Family::default(),
            promotions: Family::default(),
            rollbacks: Family::default(),
            weights: Family::default(),
            signal_values: Family::default(),
            signal_thresholds: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers every metric under the `drover` prefix.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("drover");
        r.register(
            "reconciles",
            "Reconciles of ModelDeployments",
            self.reconciles.clone(),
        );
        r.register(
            "reconcile_failures",
            "Failed reconciles by bounded category",
            self.failures.clone(),
        );
        r.register_with_unit(
            "reconcile_duration",
            "Time one reconcile took",
            prometheus_client::registry::Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "model_deployments",
            "ModelDeployments by phase",
            self.phases.clone(),
        );
        r.register(
            "child_writes",
            "Writes to child objects by kind and verb",
            self.writes.clone(),
        );
        r.register(
            "leader",
            "1 while this instance holds the leader Lease",
            self.leader.clone(),
        );
        r.register(
            "monitor_scrapes",
            "Scrapes of monitor reports by outcome (ok, timeout, connect, unauthorized, status, malformed, restarted)",
            self.scrapes.clone(),
        );
        r.register("promotions", "Canary promotions", self.promotions.clone());
        r.register(
            "rollbacks",
            "Canary rollbacks (failed judgements, deadline, abort, bake-window breach)",
            self.rollbacks.clone(),
        );
        r.register(
            "canary_weight",
            "Traffic percent of the canary, requested and actual",
            self.weights.clone(),
        );
        r.register(
            "canary_signal_value",
            "The last judged value of each canary signal",
            self.signal_values.clone(),
        );
        r.register(
            "canary_signal_threshold",
            "The threshold each canary signal is judged against",
            self.signal_thresholds.clone(),
        );
    }

    /// Counts one scrape by outcome.
    pub fn scraped(&self, outcome: &'static str) {
        self.scrapes.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a promotion of `namespace/name`.
    pub fn promoted(&self, namespace: &str, name: &str) {
        self.promotions
            .get_or_create(&ModelLabels {
                namespace: namespace.into(),
                name: name.into(),
            })
            .inc();
    }

    /// Counts a rollback of `namespace/name`.
    pub fn rolled_back(&self, namespace: &str, name: &str) {
        self.rollbacks
            .get_or_create(&ModelLabels {
                namespace: namespace.into(),
                name: name.into(),
            })
            .inc();
    }

    /// Sets the canary's requested and actual weights.
    pub fn set_weights(&self, namespace: &str, name: &str, requested: i64, actual: i64) {
        for (weight, v) in [("requested", requested), ("actual", actual)] {
            self.weights
                .get_or_create(&WeightLabels {
                    namespace: namespace.into(),
                    name: name.into(),
                    weight,
                })
                .set(v);
        }
    }

    /// Sets one judged signal's value and threshold.
    pub fn set_signal(
        &self,
        namespace: &str,
        name: &str,
        signal: &str,
        value: Option<f64>,
        threshold: Option<f64>,
    ) {
        let labels = SignalLabels {
            namespace: namespace.into(),
            name: name.into(),
            signal: signal.into(),
        };
        if let Some(v) = value.filter(|v| v.is_finite()) {
            self.signal_values.get_or_create(&labels).set(v);
        }
        if let Some(t) = threshold.filter(|t| t.is_finite()) {
            self.signal_thresholds.get_or_create(&labels).set(t);
        }
    }

    /// Removes the per-ModelDeployment series of `namespace/name` (deleted, or no canary).
    pub fn forget_rollout(&self, namespace: &str, name: &str) {
        for weight in ["requested", "actual"] {
            self.weights.remove(&WeightLabels {
                namespace: namespace.into(),
                name: name.into(),
                weight,
            });
        }
        for signal in SIGNALS {
            let labels = SignalLabels {
                namespace: namespace.into(),
                name: name.into(),
                signal: signal.into(),
            };
            self.signal_values.remove(&labels);
            self.signal_thresholds.remove(&labels);
        }
    }

    /// Counts one reconcile that took `took`.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Counts one failed reconcile.
    pub fn failed(&self, category: FailureCategory) {
        self.failures
            .get_or_create(&CategoryLabels { category })
            .inc();
    }

    /// Counts one write to a child.
    pub fn wrote(&self, kind: &'static str, verb: &'static str) {
        self.writes.get_or_create(&WriteLabels { kind, verb }).inc();
    }

    /// Sets the number of ModelDeployments in each phase.
    pub fn set_phases(&self, counts: impl IntoIterator<Item = (Phase, i64)>) {
        for phase in Phase::ALL {
            self.phases
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(0);
        }
        for (phase, n) in counts {
            self.phases
                .get_or_create(&PhaseLabels {
                    phase: phase.as_str(),
                })
                .set(n);
        }
    }

    /// Records whether this instance leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.failed(FailureCategory::Api);
        metrics.reconciled(Duration::from_millis(3));
        metrics.set_phases([(Phase::Healthy, 2)]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("drover_reconciles_total 1"), "{text}");
        assert!(
            text.contains("drover_reconcile_failures_total{category=\"Api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("drover_reconcile_duration_seconds_count 1"),
            "{text}"
        );
        assert!(
            text.contains("drover_model_deployments{phase=\"Healthy\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("drover_model_deployments{phase=\"Failed\"} 0"),
            "{text}"
        );
    }
}
