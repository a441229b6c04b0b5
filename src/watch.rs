//! The steady-state watch: the serving revision's traffic in consecutive windows of
//! `spec.monitoring.window`, each judged once when it ends, against the reference profile
//! (input and prediction drift, mean confidence) and the SLO, with `consecutiveWindows`
//! hysteresis both ways.
//!
//! Pure: the closed window, the state kept in status and the time come in as arguments. The
//! counters stop at `consecutiveWindows`, so a model that stays clean (or stays drifted) does
//! not rewrite its status every window; live scores go to gauges instead.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{DriftSpec, DriftStatus, FeatureScore, SloSpec};
use crate::collect::ClosedWindow;
use crate::drift::{self, ColumnDrift, DriftAssessment};
use crate::monitor::report::Report;
use crate::profile::ReferenceProfile;

/// Most features named in status and on gauges: a bounded label set.
pub const TOP_FEATURES: usize = 5;

/// The verdict on one closed window.
#[derive(Clone, Debug, PartialEq)]
pub enum Judged {
    /// Judged against the profile.
    Assessed {
        /// Drift per feature and of the prediction.
        assessment: Box<DriftAssessment>,
        /// The mean-confidence check, when configured and measurable.
        confidence: Option<ConfidenceCheck>,
    },
    /// Fewer than `minSamples` requests: no verdict, the counters hold.
    TooFewSamples(u64),
    /// No pod contributed to the window: no verdict, the counters hold.
    NoReports,
    /// No usable reference profile: drift cannot be measured.
    NoProfile,
}

impl Judged {
    /// Whether the window drifted (`None`: no verdict).
    pub fn drifted(&self) -> Option<bool> {
        match self {
            Judged::Assessed {
                assessment,
                confidence,
            } => Some(
                !assessment.drifted().is_empty()
                    || assessment.prediction.as_ref().is_some_and(|p| p.drifted)
                    || confidence.as_ref().is_some_and(|c| c.drifted),
            ),
            _ => None,
        }
    }

    /// One line for a person: what drifted, with scores.
    pub fn summary(&self) -> String {
        match self {
            Judged::Assessed {
                assessment,
                confidence,
            } => {
                let mut parts: Vec<String> = assessment
                    .features
                    .iter()
                    .filter(|f| f.drifted)
                    .take(TOP_FEATURES)
                    .map(describe)
                    .collect();
                if let Some(p) = assessment.prediction.as_ref().filter(|p| p.drifted) {
                    parts.push(format!("prediction {} {:.3}", p.method, p.score));
                }
                if let Some(c) = confidence.as_ref().filter(|c| c.drifted) {
                    parts.push(format!(
                        "mean confidence {:.3}, {:.3} below the reference {:.3} (limit {})",
                        c.mean, c.drop, c.reference, c.limit
                    ));
                }
                if parts.is_empty() {
                    "no feature above the threshold".into()
                } else {
                    parts.join("; ")
                }
            }
            Judged::TooFewSamples(n) => format!("{n} requests in the window: too few to judge"),
            Judged::NoReports => "no monitor report for the window".into(),
            Judged::NoProfile => "no usable reference profile".into(),
        }
    }
}

fn describe(f: &ColumnDrift) -> String {
    let mut out = format!("{} {} {:.3}", f.name, f.method, f.score);
    if let Some(shift) = f.mean_shift {
        out.push_str(&format!(" (mean {shift:+.2}σ"));
        if let Some(ratio) = f.std_ratio {
            out.push_str(&format!(", sd ×{ratio:.2}"));
        }
        out.push(')');
    }
    out
}

/// Mean confidence of a window against the reference.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfidenceCheck {
    /// The window's mean confidence.
    pub mean: f64,
    /// The reference: the profile's mean confidence, else the previous window's.
    pub reference: f64,
    /// `reference − mean`.
    pub drop: f64,
    /// `spec.monitoring.drift.maxConfidenceDrop`.
    pub limit: f64,
    /// The drop exceeds the limit.
    pub drifted: bool,
}

/// Judges a closed window's drift.
pub fn judge(
    spec: &DriftSpec,
    window: &ClosedWindow,
    profile: Option<&ReferenceProfile>,
) -> Judged {
    let Some(report) = &window.report else {
        return Judged::NoReports;
    };
    let min_samples = u64::try_from(spec.min_samples).unwrap_or(u64::MAX);
    let n = report.requests.total();
    if n < min_samples {
        return Judged::TooFewSamples(n);
    }
    let Some(profile) = profile else {
        return Judged::NoProfile;
    };
    let assessment = drift::assess(
        profile,
        report,
        drift::method_of(spec.method),
        spec.threshold,
        min_samples,
    );
    let confidence = spec.max_confidence_drop.and_then(|limit| {
        let live = report.confidence.as_ref()?;
        if live.count() < min_samples {
            return None;
        }
        let mean = live.mean()?;
        let reference = profile
            .confidence
            .as_ref()
            .and_then(|c| c.mean)
            .or(window.previous_confidence)?;
        let drop = reference - mean;
        Some(ConfidenceCheck {
            mean,
            reference,
            drop,
            limit,
            drifted: drop > limit,
        })
    });
    Judged::Assessed {
        assessment: Box::new(assessment),
        confidence,
    }
}

/// What one judged window does to the watch.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchDecision {
    /// The next state.
    pub state: DriftStatus,
    /// Drift was declared now (`Some(true)`) or cleared now (`Some(false)`).
    pub changed: Option<bool>,
}

/// The state for `revision` before any window: a new revision starts clean.
pub fn start(revision: &str) -> DriftStatus {
    DriftStatus {
        revision: revision.to_string(),
        ..DriftStatus::default()
    }
}

/// Advances the watch of `revision` by the verdict on one window. A state kept for another
/// revision starts over (a declared drift is cleared: the model it was about no longer serves).
pub fn advance(
    spec: &DriftSpec,
    state: Option<&DriftStatus>,
    revision: &str,
    judged: &Judged,
    now: Timestamp,
) -> WatchDecision {
    let (mut next, mut changed) = match state {
        Some(s) if s.revision == revision => (s.clone(), None),
        Some(s) if s.detected => (start(revision), Some(false)),
        _ => (start(revision), None),
    };
    if changed.is_some() {
        next.since = Some(Time(now));
    }
    let Some(drifted) = judged.drifted() else {
        return WatchDecision {
            state: next,
            changed,
        };
    };
    let need = spec.consecutive_windows.max(1);
    if drifted {
        next.drifted_windows = (next.drifted_windows + 1).min(need);
        next.clean_windows = 0;
    } else {
        next.clean_windows = (next.clean_windows + 1).min(need);
        next.drifted_windows = 0;
    }
    if !next.detected && next.drifted_windows >= need {
        next.detected = true;
        next.since = Some(Time(now));
        if let Judged::Assessed {
            assessment,
            confidence,
        } = judged
        {
            next.features = assessment
                .features
                .iter()
                .take(TOP_FEATURES)
                .map(score)
                .collect();
            next.prediction = assessment.prediction.as_ref().map(score);
            next.confidence_drop = confidence.as_ref().map(|c| c.drop);
        }
        changed = Some(true);
    } else if next.detected && next.clean_windows >= need {
        next.detected = false;
        next.since = Some(Time(now));
        next.features.clear();
        next.prediction = None;
        next.confidence_drop = None;
        changed = Some(false);
    }
    WatchDecision {
        state: next,
        changed,
    }
}

fn score(c: &ColumnDrift) -> FeatureScore {
    FeatureScore {
        name: c.name.clone(),
        score: round(c.score),
        mean_shift: c.mean_shift.map(round),
        std_ratio: c.std_ratio.map(round),
        drifted: c.drifted,
    }
}

/// Four significant decimals: status carries decisions, not noise.
fn round(v: f64) -> f64 {
    if v.is_finite() {
        (v * 1e4).round() / 1e4
    } else {
        0.0
    }
}

/// The performance verdict on a window: `Some(Some(why))` below a threshold, `Some(None)`
/// within, `None` no verdict (no performance settings, or fewer than `minLabels` labels).
pub fn performance_breach(
    spec: Option<&crate::api::PerformanceSpec>,
    report: Option<&Report>,
) -> Option<Option<String>> {
    let spec = spec?;
    let p = report?.performance.as_ref()?;
    if p.labelled < u64::try_from(spec.min_labels).unwrap_or(u64::MAX) {
        return None;
    }
    let mut breaches = Vec::new();
    // What the figures rest on, so a verdict explains itself (duplicates from other pods
    // were taken out; unverified labels could not be checked for them).
    let mut basis = vec![format!("{} labels", p.labelled)];
    if p.duplicates > 0 {
        basis.push(format!("{} duplicates taken out", p.duplicates));
    }
    if p.unverified > 0 {
        basis.push(format!("{} unverified", p.unverified));
    }
    let n = basis.join(", ");
    if let (Some(min), Some(acc)) = (spec.min_accuracy, p.accuracy())
        && acc < min
    {
        breaches.push(format!("accuracy {acc:.4} below {min} ({n})"));
    }
    if let (Some(min), Some((_, _, f1))) = (
        spec.min_f1,
        p.precision_recall_f1(spec.positive_class.as_deref()),
    ) && f1 < min
    {
        breaches.push(format!("F1 {f1:.4} below {min} ({n})"));
    }
    if let (Some(max), Some(mae)) = (spec.max_mae, p.mae())
        && mae > max
    {
        breaches.push(format!("MAE {mae:.4} above {max} ({n})"));
    }
    if let (Some(max), Some(rmse)) = (spec.max_rmse, p.rmse())
        && rmse > max
    {
        breaches.push(format!("RMSE {rmse:.4} above {max} ({n})"));
    }
    Some((!breaches.is_empty()).then(|| breaches.join("; ")))
}

/// The SLO verdict on a window: `Some(Some(why))` breached, `Some(None)` within, `None` no
/// verdict (too few requests, or no SLO).
pub fn slo_breach(
    slo: Option<&SloSpec>,
    latency_p99: Option<std::time::Duration>,
    report: Option<&Report>,
    min_samples: u64,
) -> Option<Option<String>> {
    let slo = slo?;
    let report = report?;
    let n = report.requests.total();
    if n < min_samples || n == 0 {
        return None;
    }
    let mut breaches = Vec::new();
    if let Some(limit) = slo.error_rate {
        let rate = report.requests.server_error as f64 / n as f64;
        if rate > limit {
            breaches.push(format!(
                "error rate {rate:.4} above {limit} (spec.monitoring.slo.errorRate; {} of {n} requests answered 5xx)",
                report.requests.server_error
            ));
        }
    }
    if let (Some(limit), Some(p99)) = (latency_p99, report.latency.quantile(0.99))
        && p99 > limit.as_secs_f64()
    {
        breaches.push(format!(
            "p99 latency {p99:.3}s above {:.3}s (spec.monitoring.slo.latencyP99)",
            limit.as_secs_f64()
        ));
    }
    Some((!breaches.is_empty()).then(|| breaches.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_performance_verdict_says_what_its_labels_rest_on() {
        use crate::monitor::feedback::{Performance, Task};
        let spec: crate::api::PerformanceSpec =
            serde_json::from_value(serde_json::json!({"minLabels": 2, "minAccuracy": 0.9}))
                .unwrap();
        let mut p = Performance::default();
        for (prediction, truth) in [(1, 0), (1, 1)] {
            p.record(
                Task::Classification,
                &serde_json::json!(prediction),
                &serde_json::json!(truth),
            )
            .unwrap();
        }
        let mut report = crate::rollout::fixtures::report(1, 0, 1.0);
        report.performance = Some(p.clone());
        assert_eq!(
            performance_breach(Some(&spec), Some(&report)),
            Some(Some("accuracy 0.5000 below 0.9 (2 labels)".into()))
        );
        p.duplicates = 3;
        p.unverified = 1;
        report.performance = Some(p);
        assert_eq!(
            performance_breach(Some(&spec), Some(&report)),
            Some(Some(
                "accuracy 0.5000 below 0.9 (2 labels, 3 duplicates taken out, 1 unverified)".into()
            ))
        );
    }

    fn profile() -> ReferenceProfile {
        crate::rollout::fixtures::fraud_profile()
    }

    fn traffic(n: usize, amount: f64, confidence: f64, errors: usize, latency_ms: u64) -> Report {
        crate::rollout::fixtures::fraud_traffic(n, amount, confidence, errors, latency_ms)
    }

    fn closed(report: Option<Report>) -> ClosedWindow {
        ClosedWindow {
            key: "watch 1".into(),
            report,
            previous_confidence: None,
        }
    }

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minutes * 60).unwrap()
    }

    #[test]
    fn drift_is_declared_after_consecutive_windows_and_cleared_after_as_many_clean_ones() {
        let spec = DriftSpec {
            consecutive_windows: 2,
            min_samples: 200,
            ..DriftSpec::default()
        };
        let p = profile();
        let shifted = judge(
            &spec,
            &closed(Some(traffic(1000, 5000.0, 0.9, 0, 5))),
            Some(&p),
        );
        assert!(
            matches!(&shifted, Judged::Assessed { assessment, .. } if assessment.drifted().contains(&"amount"))
        );
        assert!(
            shifted.summary().starts_with("amount psi"),
            "{}",
            shifted.summary()
        );

        let d = advance(&spec, None, "r1", &shifted, at(15));
        assert_eq!(d.changed, None, "one drifted window is not enough");
        assert_eq!(d.state.drifted_windows, 1);
        let d = advance(&spec, Some(&d.state), "r1", &shifted, at(30));
        assert_eq!(d.changed, Some(true));
        let mut state = d.state;
        assert!(state.detected);
        assert_eq!(state.features[0].name, "amount");
        assert!(state.features[0].drifted);

        // Still drifted: counters stay at their cap, nothing to write.
        let d = advance(&spec, Some(&state), "r1", &shifted, at(45));
        assert_eq!(
            d.state, state,
            "a model that stays drifted does not rewrite status"
        );

        // Windows without a verdict change nothing.
        for judged in [
            Judged::NoReports,
            Judged::TooFewSamples(50),
            judge(&spec, &closed(None), Some(&p)),
            judge(&spec, &closed(Some(traffic(50, 50.0, 0.9, 0, 5))), Some(&p)),
        ] {
            assert_eq!(judged.drifted(), None);
            assert_eq!(
                advance(&spec, Some(&state), "r1", &judged, at(60)).state,
                state
            );
        }

        // Clean windows (judged with a threshold nothing reaches): one is not enough to clear.
        let calm_spec = DriftSpec {
            threshold: 1e9,
            ..spec.clone()
        };
        let calm = judge(
            &calm_spec,
            &closed(Some(traffic(1000, 5000.0, 0.9, 0, 5))),
            Some(&p),
        );
        assert_eq!(calm.drifted(), Some(false));
        let d = advance(&spec, Some(&state), "r1", &calm, at(75));
        assert_eq!(d.changed, None);
        assert!(d.state.detected, "hysteresis holds");
        state = d.state;
        let d = advance(&spec, Some(&state), "r1", &calm, at(90));
        assert_eq!(d.changed, Some(false));
        assert!(!d.state.detected);
        assert!(d.state.features.is_empty());
    }

    #[test]
    fn a_new_serving_revision_starts_over_and_clears_a_declared_drift() {
        let spec = DriftSpec {
            consecutive_windows: 1,
            min_samples: 200,
            ..DriftSpec::default()
        };
        let p = profile();
        let shifted = judge(
            &spec,
            &closed(Some(traffic(1000, 5000.0, 0.9, 0, 5))),
            Some(&p),
        );
        let d = advance(&spec, None, "r1", &shifted, at(0));
        assert!(d.state.detected);
        let d = advance(&spec, Some(&d.state), "r2", &Judged::NoReports, at(15));
        assert_eq!(d.changed, Some(false));
        assert_eq!(d.state.revision, "r2");
        assert!(!d.state.detected);
        assert_eq!(d.state.drifted_windows, 0);
    }

    #[test]
    fn a_fall_of_mean_confidence_counts_as_drift() {
        let spec = DriftSpec {
            consecutive_windows: 1,
            min_samples: 200,
            threshold: 1e9,
            max_confidence_drop: Some(0.1),
            ..DriftSpec::default()
        };
        let with = profile();
        let reference = with.confidence.as_ref().and_then(|c| c.mean).unwrap();
        let mut without = profile();
        without.confidence = None;
        let window = |confidence: f64, previous: Option<f64>| ClosedWindow {
            previous_confidence: previous,
            ..closed(Some(traffic(1000, 50.0, confidence, 0, 5)))
        };

        // Against the profile's mean confidence.
        let judged = judge(&spec, &window(0.6, Some(0.61)), Some(&with));
        let Judged::Assessed {
            confidence: Some(c),
            ..
        } = &judged
        else {
            panic!("{judged:?}")
        };
        assert!((c.reference - reference).abs() < 1e-12, "the profile wins");
        assert!((c.mean - 0.6).abs() < 0.01, "{}", c.mean);
        assert!(c.drifted);
        assert_eq!(judged.drifted(), Some(true));
        assert!(
            judged.summary().contains("mean confidence"),
            "{}",
            judged.summary()
        );
        assert_eq!(
            judge(&spec, &window(0.92, None), Some(&with)).drifted(),
            Some(false)
        );

        // Without one in the profile, against the previous window; none on the first window.
        assert_eq!(
            judge(&spec, &window(0.6, Some(0.9)), Some(&without)).drifted(),
            Some(true)
        );
        assert_eq!(
            judge(&spec, &window(0.85, Some(0.9)), Some(&without)).drifted(),
            Some(false)
        );
        let first = judge(&spec, &window(0.6, None), Some(&without));
        assert!(matches!(
            first,
            Judged::Assessed {
                confidence: None,
                ..
            }
        ));
        // Not configured: not watched.
        let off = DriftSpec {
            max_confidence_drop: None,
            ..spec.clone()
        };
        assert_eq!(
            judge(&off, &window(0.1, Some(0.9)), Some(&with)).drifted(),
            Some(false)
        );
    }

    #[test]
    fn slo_breaches_name_values_and_thresholds_and_need_samples() {
        let slo = SloSpec {
            latency_p99: Some(crate::api::GoDuration::new("100ms")),
            error_rate: Some(0.01),
        };
        let limit = Some(Duration::from_millis(100));
        let slow = traffic(1000, 50.0, 0.9, 50, 250);
        let why = slo_breach(Some(&slo), limit, Some(&slow), 200)
            .unwrap()
            .unwrap();
        assert!(why.contains("error rate 0.0500 above 0.01"), "{why}");
        assert!(why.contains("p99 latency 0.2"), "{why}");
        let fine = traffic(1000, 50.0, 0.9, 0, 20);
        assert_eq!(slo_breach(Some(&slo), limit, Some(&fine), 200), Some(None));
        assert_eq!(
            slo_breach(Some(&slo), limit, Some(&slow), 5000),
            None,
            "too few"
        );
        assert_eq!(slo_breach(None, limit, Some(&slow), 200), None, "no SLO");
        assert_eq!(slo_breach(Some(&slo), limit, None, 200), None, "no reports");
    }

    #[test]
    fn the_state_survives_a_round_trip_through_status() {
        let spec = DriftSpec::default();
        let d = advance(&spec, None, "r1", &Judged::TooFewSamples(3), at(0));
        let kept: DriftStatus =
            serde_json::from_value(serde_json::to_value(&d.state).unwrap()).unwrap();
        assert_eq!(kept, d.state);
    }
}
