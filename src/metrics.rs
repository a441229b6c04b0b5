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

/// Why a retraining Job was started (`drover_retraining_runs_total{reason}`): the
/// `drover.dev/retraining` label values.
pub const RETRAINING_REASONS: [&str; 2] = [
    crate::retrain::TriggerReason::Drift.label_value(),
    crate::retrain::TriggerReason::Scheduled.label_value(),
];

/// A candidate the acceptance gate accepted (`drover_retraining_candidates_total{reason}`).
pub const CANDIDATE_ACCEPTED: &str = "accepted";
/// A candidate the acceptance gate rejected.
pub const CANDIDATE_REJECTED: &str = "rejected";
/// Every verdict label value (the series a deleted ModelDeployment leaves are removed for each).
pub const CANDIDATE_VERDICTS: [&str; 2] = [CANDIDATE_ACCEPTED, CANDIDATE_REJECTED];

/// A feature of a model: bounded by `watch::TOP_FEATURES` per ModelDeployment (the series of
/// features that leave the top are removed).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FeatureLabels {
    namespace: String,
    name: String,
    feature: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    namespace: String,
    name: String,
    reason: &'static str,
}

/// The features whose score series exist, per (namespace, name).
type ScoredFeatures =
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<(String, String), Vec<String>>>>;

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
    drift_scores: Family<FeatureLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    drift_detected: Family<ModelLabels, Gauge>,
    retraining_runs: Family<ReasonLabels, Counter>,
    candidates: Family<ReasonLabels, Counter>,
    notifications: Family<OutcomeLabels, Counter>,
    feedback_duplicates: Family<ModelLabels, Counter>,
    feedback_unverified: Family<ModelLabels, Counter>,
    /// The features whose score series exist, per (namespace, name).
    scored: ScoredFeatures,
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
            drift_scores: Family::default(),
            drift_detected: Family::default(),
            retraining_runs: Family::default(),
            candidates: Family::default(),
            notifications: Family::default(),
            feedback_duplicates: Family::default(),
            feedback_unverified: Family::default(),
            scored: Default::default(),
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
        r.register(
            "drift_score",
            "Drift score of the serving revision's highest-scoring features in the last judged window",
            self.drift_scores.clone(),
        );
        r.register(
            "drift_detected",
            "1 while drift is declared on the serving revision (condition DriftDetected)",
            self.drift_detected.clone(),
        );
        r.register(
            "retraining_runs",
            "Retraining Jobs started, by trigger",
            self.retraining_runs.clone(),
        );
        r.register(
            "retraining_candidates",
            "Models reported by retraining runs, by verdict of the acceptance gate",
            self.candidates.clone(),
        );
        r.register(
            "notifications",
            "Webhook notifications by outcome (delivered, retried, failed, dropped, unsent)",
            self.notifications.clone(),
        );
        r.register(
            "feedback_duplicates",
            "Labels a pod counted for a token another pod (or the same one) had counted already, taken out of the performance windows",
            self.feedback_duplicates.clone(),
        );
        r.register(
            "feedback_unverified",
            "Labels counted without the cross-pod duplicate check: they left a monitor's feedback log before a scrape read them",
            self.feedback_unverified.clone(),
        );
    }

    /// Counts one webhook notification outcome.
    pub fn notification(&self, outcome: &'static str) {
        self.notifications
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    /// Sets the drift scores of `namespace/name`'s top features (replacing the last set) and
    /// whether drift is declared.
    pub fn set_drift(&self, namespace: &str, name: &str, scores: &[(String, f64)], detected: bool) {
        let key = (namespace.to_string(), name.to_string());
        let labels = |feature: &str| FeatureLabels {
            namespace: namespace.into(),
            name: name.into(),
            feature: feature.into(),
        };
        if let Ok(mut scored) = self.scored.lock() {
            let before = scored.remove(&key).unwrap_or_default();
            for gone in before
                .iter()
                .filter(|f| !scores.iter().any(|(s, _)| s == *f))
            {
                self.drift_scores.remove(&labels(gone));
            }
            for (feature, score) in scores.iter().filter(|(_, s)| s.is_finite()) {
                self.drift_scores
                    .get_or_create(&labels(feature))
                    .set(*score);
            }
            scored.insert(key, scores.iter().map(|(f, _)| f.clone()).collect());
        }
        self.set_drift_detected(namespace, name, detected);
    }

    /// Sets whether drift is declared on `namespace/name`.
    pub fn set_drift_detected(&self, namespace: &str, name: &str, detected: bool) {
        self.drift_detected
            .get_or_create(&ModelLabels {
                namespace: namespace.into(),
                name: name.into(),
            })
            .set(i64::from(detected));
    }

    /// Removes the steady-state series of `namespace/name` (deleted, or nothing watched).
    pub fn forget_drift(&self, namespace: &str, name: &str) {
        self.set_drift(namespace, name, &[], false);
        self.drift_detected.remove(&ModelLabels {
            namespace: namespace.into(),
            name: name.into(),
        });
        if let Ok(mut scored) = self.scored.lock() {
            scored.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// Counts a retraining Job started for `reason` (`drift` or `scheduled`).
    pub fn retraining_started(&self, namespace: &str, name: &str, reason: &'static str) {
        self.retraining_runs
            .get_or_create(&ReasonLabels {
                namespace: namespace.into(),
                name: name.into(),
                reason,
            })
            .inc();
    }

    /// Counts a candidate judged `verdict` (`accepted` or `rejected`).
    pub fn candidate_judged(&self, namespace: &str, name: &str, verdict: &'static str) {
        self.candidates
            .get_or_create(&ReasonLabels {
                namespace: namespace.into(),
                name: name.into(),
                reason: verdict,
            })
            .inc();
    }

    /// Counts what the cross-pod feedback check of one report of `namespace/name` found (a
    /// series appears with its first duplicate or unverified label).
    pub fn feedback_checked(
        &self,
        namespace: &str,
        name: &str,
        checked: crate::collect::dedup::Checked,
    ) {
        let labels = || ModelLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        if checked.duplicates > 0 {
            self.feedback_duplicates
                .get_or_create(&labels())
                .inc_by(checked.duplicates);
        }
        if checked.unverified > 0 {
            self.feedback_unverified
                .get_or_create(&labels())
                .inc_by(checked.unverified);
        }
    }

    /// Removes the feedback-check series of `namespace/name` (deleted).
    pub fn forget_feedback(&self, namespace: &str, name: &str) {
        let labels = ModelLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.feedback_duplicates.remove(&labels);
        self.feedback_unverified.remove(&labels);
    }

    /// Removes every per-ModelDeployment series of `namespace/name`, the counters included
    /// (the ModelDeployment was deleted; a new one of the same name starts from zero, which
    /// Prometheus reads as a counter reset).
    pub fn forget_deleted(&self, namespace: &str, name: &str) {
        self.forget_rollout(namespace, name);
        self.forget_drift(namespace, name);
        self.forget_feedback(namespace, name);
        let model = ModelLabels {
            namespace: namespace.into(),
            name: name.into(),
        };
        self.promotions.remove(&model);
        self.rollbacks.remove(&model);
        let reason = |reason| ReasonLabels {
            namespace: namespace.into(),
            name: name.into(),
            reason,
        };
        for why in RETRAINING_REASONS {
            self.retraining_runs.remove(&reason(why));
        }
        for verdict in CANDIDATE_VERDICTS {
            self.candidates.remove(&reason(verdict));
        }
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

    /// Fresh metrics and the registry they are registered in.
    fn registered() -> (Metrics, Registry) {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        (metrics, registry)
    }

    /// The registry in Prometheus text exposition.
    fn encode(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text
    }

    #[test]
    fn exposition_names_follow_prometheus_conventions() {
        let (metrics, registry) = registered();
        metrics.failed(FailureCategory::Api);
        metrics.reconciled(Duration::from_millis(3));
        metrics.set_phases([(Phase::Healthy, 2)]);
        metrics.feedback_checked(
            "ml",
            "fraud",
            crate::collect::dedup::Checked {
                duplicates: 2,
                unverified: 0,
            },
        );
        let text = encode(&registry);
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
        assert!(
            text.contains("drover_feedback_duplicates_total{namespace=\"ml\",name=\"fraud\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("drover_feedback_unverified_total{"),
            "no series before the first unverified label: {text}"
        );
        metrics.forget_feedback("ml", "fraud");
        let text = encode(&registry);
        assert!(
            !text.contains("drover_feedback_duplicates_total{"),
            "{text}"
        );
    }

    #[test]
    fn deleting_a_model_removes_all_its_series_and_keeps_the_others() {
        let (metrics, registry) = registered();
        for name in ["fraud", "churn"] {
            metrics.promoted("ml", name);
            metrics.rolled_back("ml", name);
            for why in RETRAINING_REASONS {
                metrics.retraining_started("ml", name, why);
            }
            for verdict in CANDIDATE_VERDICTS {
                metrics.candidate_judged("ml", name, verdict);
            }
            metrics.set_weights("ml", name, 10, 10);
            metrics.set_drift("ml", name, &[("amount".into(), 0.4)], true);
            metrics.feedback_checked(
                "ml",
                name,
                crate::collect::dedup::Checked {
                    duplicates: 1,
                    unverified: 1,
                },
            );
        }
        let before = encode(&registry);
        let series = |text: &str, name: &str| {
            text.lines()
                .filter(|l| !l.starts_with('#') && l.contains(&format!("name=\"{name}\"")))
                .count()
        };
        assert!(series(&before, "fraud") >= 11, "{before}");
        assert_eq!(
            series(&before, "fraud"),
            series(&before, "churn"),
            "{before}"
        );

        metrics.forget_deleted("ml", "fraud");
        let after = encode(&registry);
        assert_eq!(series(&after, "fraud"), 0, "{after}");
        assert_eq!(series(&after, "churn"), series(&before, "churn"), "{after}");
    }

    #[test]
    fn drift_scores_keep_only_the_current_top_features() {
        let (metrics, registry) = registered();
        metrics.set_drift(
            "ml",
            "fraud",
            &[("amount".into(), 1.5), ("age".into(), 0.1)],
            true,
        );
        metrics.set_drift(
            "ml",
            "fraud",
            &[("amount".into(), 0.7), ("channel".into(), 0.2)],
            true,
        );
        let text = encode(&registry);
        assert!(
            text.contains(
                "drover_drift_score{namespace=\"ml\",name=\"fraud\",feature=\"amount\"} 0.7"
            ),
            "{text}"
        );
        assert!(text.contains("feature=\"channel\""), "{text}");
        assert!(
            !text.contains("feature=\"age\""),
            "a feature that left the top is removed: {text}"
        );
        assert!(
            text.contains("drover_drift_detected{namespace=\"ml\",name=\"fraud\"} 1"),
            "{text}"
        );
        metrics.forget_drift("ml", "fraud");
        let text = encode(&registry);
        assert!(!text.contains("feature=\"amount\""), "{text}");
        assert!(!text.contains("drover_drift_detected{"), "{text}");
    }
}
