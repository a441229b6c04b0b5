//! Judging a canary step: absolute limits, and comparisons against stable with real statistics.
//!
//! - Absolute limits (error rate, p99 latency, prediction drift against stable, input drift
//!   against the reference profile, mean confidence) fail the step as soon as a window backed by
//!   at least `minRequests` breaches one — even before the interval ends.
//! - Comparisons against stable run at the end of the interval, on this step's samples only,
//!   at `alpha` Bonferroni-corrected across the comparisons made:
//!   - error rate: a one-sided Newcombe interval of `p_canary − p_stable`; its lower bound above
//!     `maxErrorRateIncrease` fails, its upper bound below passes, anything else is too little
//!     power and waits (this works with zero errors, the normal case);
//!   - latency: a one-sided Mann–Whitney U test on the two latency sketches (same buckets) —
//!     significant *and* a p99 more than `maxLatencyIncrease` above stable's fails.
//! - No canary report at all is `Frozen` (a metrics outage freezes, it never fails); fewer than
//!   `minRequests` is `Inconclusive`. Only measured bad behaviour fails.

use crate::api::{AnalysisSpec, Judgement, SignalJudgement, Verdict};
use crate::drift;
use crate::monitor::report::Report;
use crate::profile::ReferenceProfile;
use crate::stats::two_sample::{self, RequestOutcomes};
use crate::stats::{DriftMethod, drift as measures};

/// What a judgement looks at.
#[derive(Clone, Copy, Debug)]
pub struct Evidence<'a> {
    /// The canary's merged report over this step's window (`None`: no pod answered).
    pub canary: Option<&'a Report>,
    /// Stable's merged report over the same window.
    pub stable: Option<&'a Report>,
    /// The reference profile of the canary's model version.
    pub profile: Option<&'a ReferenceProfile>,
}

/// When in the step the judgement is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moment {
    /// A scrape inside the interval: only absolute breaches count (early failure).
    DuringStep,
    /// The interval has elapsed: everything is judged.
    EndOfStep,
}

fn outcomes(r: &Report) -> RequestOutcomes {
    RequestOutcomes {
        errors: r.requests.server_error,
        requests: r.requests.total(),
    }
}

/// The failed signals with their measured values against their limits (and the p-value of a
/// comparison), e.g. `errorRate 0.1 (limit 0.01)`.
fn failing(signals: &[SignalJudgement]) -> String {
    let number = |v: f64| {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        if s.is_empty() || s == "-" {
            "0".to_string()
        } else {
            s.to_string()
        }
    };
    signals
        .iter()
        .filter(|s| s.verdict == Verdict::Fail)
        .map(|s| {
            let mut out = s.name.clone();
            if let (Some(v), Some(t)) = (s.value, s.threshold) {
                out.push_str(&format!(" {} (limit {})", number(v), number(t)));
            }
            if let Some(p) = s.p_value {
                out.push_str(&format!(", p = {p:.2e}"));
            }
            out
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn signal(name: &str, verdict: Verdict) -> SignalJudgement {
    SignalJudgement {
        name: name.to_string(),
        verdict,
        ..SignalJudgement::default()
    }
}

/// Judges `evidence` against `analysis`.
pub fn judge(
    analysis: &AnalysisSpec,
    max_latency_p99: f64,
    evidence: Evidence<'_>,
    moment: Moment,
) -> Judgement {
    let Some(canary) = evidence.canary else {
        return Judgement {
            verdict: Verdict::Frozen,
            reason: "no canary pod answered: the rollout waits for metrics".into(),
            ..Judgement::default()
        };
    };
    let n = outcomes(canary).requests;
    let enough = n >= u64::try_from(analysis.min_requests).unwrap_or(u64::MAX);
    let mut signals = Vec::new();

    // Absolute limits.
    let error_rate = if n == 0 {
        None
    } else {
        Some(canary.requests.server_error as f64 / n as f64)
    };
    signals.push(SignalJudgement {
        value: error_rate,
        threshold: Some(analysis.max_error_rate),
        note: format!(
            "{} of {n} requests answered 5xx",
            canary.requests.server_error
        ),
        ..limit(
            "errorRate",
            enough,
            error_rate.is_some_and(|r| r > analysis.max_error_rate),
        )
    });
    let p99 = canary.latency.quantile(0.99);
    signals.push(SignalJudgement {
        value: p99,
        threshold: Some(max_latency_p99),
        note: "seconds, from the latency sketch (±1%)".into(),
        ..limit(
            "latencyP99",
            enough,
            p99.is_some_and(|p| p > max_latency_p99),
        )
    });
    if let Some(limit_value) = analysis.max_prediction_drift {
        signals.push(prediction_drift(
            canary,
            evidence.stable,
            limit_value,
            analysis.min_requests,
        ));
    }
    if let Some(limit_value) = analysis.max_data_drift {
        signals.push(data_drift(
            canary,
            evidence.profile,
            limit_value,
            analysis.min_requests,
        ));
    }
    if let Some(floor) = analysis.min_confidence {
        signals.push(confidence(canary, floor, analysis.min_requests));
    }

    let breached = signals.iter().any(|s| s.verdict == Verdict::Fail);
    if moment == Moment::EndOfStep && !breached && enough {
        // Comparisons against stable, this step's samples only.
        let tests = 2;
        let alpha = two_sample::bonferroni_alpha(analysis.alpha, tests)
            .unwrap_or(analysis.alpha / tests as f64);
        match evidence.stable {
            Some(stable) if outcomes(stable).requests > 0 => {
                signals.push(error_rate_vs_stable(
                    canary,
                    stable,
                    analysis.max_error_rate_increase,
                    alpha,
                ));
                signals.push(latency_vs_stable(
                    canary,
                    stable,
                    analysis.max_latency_increase,
                    alpha,
                ));
            }
            _ => {
                let mut s = signal("errorRateVsStable", Verdict::Inconclusive);
                s.note = "stable served no requests in the window: nothing to compare with".into();
                signals.push(s);
            }
        }
    }

    let stable_requests = evidence.stable.map(|s| outcomes(s).requests).unwrap_or(0);
    let (verdict, reason) = if breached {
        (
            Verdict::Fail,
            format!("limit breached: {}", failing(&signals)),
        )
    } else if !enough {
        (
            Verdict::Inconclusive,
            format!("{n} canary requests, {} needed", analysis.min_requests),
        )
    } else if signals.iter().any(|s| s.verdict == Verdict::Fail) {
        (
            Verdict::Fail,
            format!("worse than stable: {}", failing(&signals)),
        )
    } else if moment == Moment::DuringStep {
        (
            Verdict::Inconclusive,
            "within limits so far; the step runs its interval".into(),
        )
    } else if signals.iter().any(|s| s.verdict == Verdict::Inconclusive) {
        let waiting: Vec<&str> = signals
            .iter()
            .filter(|s| s.verdict == Verdict::Inconclusive)
            .map(|s| s.name.as_str())
            .collect();
        (
            Verdict::Inconclusive,
            format!("not enough evidence yet: {}", waiting.join(", ")),
        )
    } else {
        (
            Verdict::Pass,
            "every signal within its limit and no worse than stable".into(),
        )
    };
    Judgement {
        verdict,
        reason,
        at: String::new(),
        step: 0,
        canary_requests: i64::try_from(n).unwrap_or(i64::MAX),
        stable_requests: i64::try_from(stable_requests).unwrap_or(i64::MAX),
        signals,
    }
}

fn limit(name: &str, enough: bool, breached: bool) -> SignalJudgement {
    let verdict = match (enough, breached) {
        (true, true) => Verdict::Fail,
        (true, false) => Verdict::Pass,
        (false, _) => Verdict::Inconclusive,
    };
    signal(name, verdict)
}

fn prediction_drift(
    canary: &Report,
    stable: Option<&Report>,
    max: f64,
    min: i64,
) -> SignalJudgement {
    let min = u64::try_from(min).unwrap_or(u64::MAX);
    let mut s = signal("predictionDrift", Verdict::Inconclusive);
    s.threshold = Some(max);
    let (Some(c), Some(st)) = (
        canary.prediction.as_ref(),
        stable.and_then(|s| s.prediction.as_ref()),
    ) else {
        s.note = "no predictions to compare".into();
        return s;
    };
    if c.count() < min || st.count() < min {
        s.note = format!(
            "{} canary and {} stable predictions, {min} needed each",
            c.count(),
            st.count()
        );
        return s;
    }
    match measures::score(DriftMethod::Psi, st, c) {
        Ok(score) => {
            s.value = Some(score.value);
            s.verdict = if score.value > max {
                Verdict::Fail
            } else {
                Verdict::Pass
            };
            s.note = "PSI of the canary's predictions against stable's on the same traffic".into();
        }
        Err(e) => s.note = format!("cannot compare: {e}"),
    }
    s
}

fn data_drift(
    canary: &Report,
    profile: Option<&ReferenceProfile>,
    max: f64,
    min: i64,
) -> SignalJudgement {
    let mut s = signal("dataDrift", Verdict::Inconclusive);
    s.threshold = Some(max);
    let Some(profile) = profile else {
        s.note = "no reference profile".into();
        return s;
    };
    let assessment = drift::assess(
        profile,
        canary,
        DriftMethod::Psi,
        max,
        u64::try_from(min).unwrap_or(u64::MAX),
    );
    match assessment.features.first() {
        Some(top) => {
            s.value = Some(top.score);
            s.verdict = if top.score > max {
                Verdict::Fail
            } else {
                Verdict::Pass
            };
            s.note = format!("highest PSI against the reference: {}", top.name);
        }
        None => s.note = "too few values per feature".into(),
    }
    s
}

fn confidence(canary: &Report, floor: f64, min: i64) -> SignalJudgement {
    let mut s = signal("confidence", Verdict::Inconclusive);
    s.threshold = Some(floor);
    let Some(h) = canary.confidence.as_ref() else {
        s.note = "responses carry no confidence".into();
        return s;
    };
    if h.count() < u64::try_from(min).unwrap_or(u64::MAX) {
        s.note = format!("{} confidences, {min} needed", h.count());
        return s;
    }
    s.value = h.mean();
    s.verdict = if s.value.is_some_and(|m| m < floor) {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    s.note = "mean of the highest class probability".into();
    s
}

fn error_rate_vs_stable(
    canary: &Report,
    stable: &Report,
    margin: f64,
    alpha: f64,
) -> SignalJudgement {
    let (c, st) = (outcomes(canary), outcomes(stable));
    let mut s = signal("errorRateVsStable", Verdict::Inconclusive);
    s.threshold = Some(margin);
    let Ok(z) = two_sample::one_sided_z(alpha) else {
        s.note = "invalid alpha".into();
        return s;
    };
    let (lower, upper) = two_sample::newcombe_difference(c, st, z);
    let rate = |o: RequestOutcomes| o.errors as f64 / o.requests.max(1) as f64;
    s.value = Some(rate(c) - rate(st));
    if let Ok(test) = two_sample::error_rate_exceeds(c, st, margin) {
        s.p_value = Some(test.p_value);
    }
    if lower > margin {
        s.verdict = Verdict::Fail;
        s.statistic = Some(lower);
        s.note = format!(
            "canary's error rate exceeds stable's by more than {margin}: lower bound {lower:.4} at alpha {alpha:.4}"
        );
    } else if upper <= margin {
        s.verdict = Verdict::Pass;
        s.statistic = Some(upper);
        s.note = format!(
            "no more than {margin} above stable: upper bound {upper:.4} at alpha {alpha:.4}"
        );
    } else {
        s.statistic = Some(upper);
        s.note = format!(
            "interval [{lower:.4}, {upper:.4}] still straddles the margin {margin}: more requests needed"
        );
    }
    s
}

fn latency_vs_stable(canary: &Report, stable: &Report, margin: f64, alpha: f64) -> SignalJudgement {
    let mut s = signal("latencyVsStable", Verdict::Inconclusive);
    s.threshold = Some(margin);
    let (Some(cp), Some(sp)) = (canary.latency.quantile(0.99), stable.latency.quantile(0.99))
    else {
        s.note = "no latencies to compare".into();
        return s;
    };
    let increase = if sp > 0.0 { cp / sp - 1.0 } else { 0.0 };
    s.value = Some(increase);
    let (c_counts, s_counts) = canary.latency.aligned_counts(&stable.latency);
    match two_sample::mann_whitney_greater(&c_counts, &s_counts) {
        Ok(test) => {
            s.statistic = Some(test.z);
            s.p_value = Some(test.p_value);
            if test.p_value < alpha && increase > margin {
                s.verdict = Verdict::Fail;
                s.note = format!(
                    "canary slower than stable (rank test p={:.2e}) and its p99 {:.0}% higher",
                    test.p_value,
                    increase * 100.0
                );
            } else {
                s.verdict = Verdict::Pass;
                s.note = format!(
                    "p99 {:+.0}% against stable; rank test p={:.3}",
                    increase * 100.0,
                    test.p_value
                );
            }
        }
        Err(e) => s.note = format!("cannot compare: {e}"),
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::recorder::{Exchange, Recorder};
    use serde_json::json;
    use std::time::Duration;

    /// A report with `ok` fast requests and `errors` 5xx, latencies around `ms`.
    fn report(ok: usize, errors: usize, ms: f64, prediction: i64) -> Report {
        let r = Recorder::new(None, "1", "i".into(), "t".into());
        let req = json!({"x": 1});
        let resp = json!({"prediction": prediction, "probability": 0.9});
        for i in 0..ok + errors {
            let jitter = 1.0 + (i % 10) as f64 / 100.0;
            r.record(Exchange {
                status: if i < errors { 500 } else { 200 },
                latency: Duration::from_secs_f64(ms * jitter / 1000.0),
                request: Some(Ok(&req)),
                response: Some(Ok(&resp)),
                terminating: false,
            });
        }
        r.report()
    }

    fn analysis() -> AnalysisSpec {
        AnalysisSpec::default()
    }

    fn verdict_of(j: &Judgement, name: &str) -> Verdict {
        j.signals
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.verdict)
            .unwrap_or(Verdict::Inconclusive)
    }

    #[test]
    fn healthy_canary_passes_with_zero_errors() {
        let (c, s) = (report(2000, 0, 20.0, 0), report(18000, 0, 20.0, 0));
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: Some(&c),
                stable: Some(&s),
                profile: None,
            },
            Moment::EndOfStep,
        );
        assert_eq!(j.verdict, Verdict::Pass, "{j:#?}");
        assert_eq!(verdict_of(&j, "errorRateVsStable"), Verdict::Pass);
    }

    #[test]
    fn an_absolute_breach_fails_during_the_step() {
        let (c, s) = (report(180, 20, 20.0, 0), report(2000, 0, 20.0, 0));
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: Some(&c),
                stable: Some(&s),
                profile: None,
            },
            Moment::DuringStep,
        );
        assert_eq!(j.verdict, Verdict::Fail);
        assert_eq!(verdict_of(&j, "errorRate"), Verdict::Fail);
        let slow = report(200, 0, 900.0, 0);
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: Some(&slow),
                stable: Some(&s),
                profile: None,
            },
            Moment::DuringStep,
        );
        assert_eq!(verdict_of(&j, "latencyP99"), Verdict::Fail);
    }

    #[test]
    fn too_few_requests_never_fail_and_no_report_freezes() {
        let (c, s) = (report(20, 10, 900.0, 0), report(2000, 0, 20.0, 0));
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: Some(&c),
                stable: Some(&s),
                profile: None,
            },
            Moment::EndOfStep,
        );
        assert_eq!(j.verdict, Verdict::Inconclusive, "{j:#?}");
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: None,
                stable: Some(&s),
                profile: None,
            },
            Moment::EndOfStep,
        );
        assert_eq!(j.verdict, Verdict::Frozen);
    }

    #[test]
    fn significantly_more_errors_than_stable_fails_even_under_the_absolute_limit() {
        // 0.9% errors (below the 1% limit) against stable's 0.01%: worse by more than 0.5 points.
        let (c, s) = (report(9910, 90, 20.0, 0), report(99990, 10, 20.0, 0));
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: Some(&c),
                stable: Some(&s),
                profile: None,
            },
            Moment::EndOfStep,
        );
        assert_eq!(verdict_of(&j, "errorRate"), Verdict::Pass);
        assert_eq!(verdict_of(&j, "errorRateVsStable"), Verdict::Fail, "{j:#?}");
        assert_eq!(j.verdict, Verdict::Fail);
    }

    #[test]
    fn a_small_difference_without_power_waits() {
        let (c, s) = (report(198, 2, 20.0, 0), report(2000, 2, 20.0, 0));
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: Some(&c),
                stable: Some(&s),
                profile: None,
            },
            Moment::EndOfStep,
        );
        assert_eq!(
            verdict_of(&j, "errorRateVsStable"),
            Verdict::Inconclusive,
            "{j:#?}"
        );
        assert_eq!(j.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn a_latency_regression_against_stable_fails() {
        let (c, s) = (report(2000, 0, 100.0, 0), report(20000, 0, 40.0, 0));
        let j = judge(
            &analysis(),
            0.3,
            Evidence {
                canary: Some(&c),
                stable: Some(&s),
                profile: None,
            },
            Moment::EndOfStep,
        );
        assert_eq!(
            verdict_of(&j, "latencyP99"),
            Verdict::Pass,
            "under the absolute limit"
        );
        assert_eq!(verdict_of(&j, "latencyVsStable"), Verdict::Fail, "{j:#?}");
    }

    #[test]
    fn prediction_drift_against_stable_fails() {
        let (c, s) = (report(1000, 0, 20.0, 1), report(5000, 0, 20.0, 0));
        // Without a profile the prediction bins are learned per recorder; give both the same.
        let mut a = analysis();
        a.max_prediction_drift = Some(0.2);
        let j = judge(
            &a,
            0.3,
            Evidence {
                canary: Some(&c),
                stable: Some(&s),
                profile: None,
            },
            Moment::EndOfStep,
        );
        let p = j
            .signals
            .iter()
            .find(|s| s.name == "predictionDrift")
            .unwrap();
        // Learned layouts differ ("1" vs "0" as the only category): reported, not guessed.
        assert_ne!(p.verdict, Verdict::Pass);
    }
}
