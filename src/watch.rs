//! The steady-state watch (issue 6, first step): the stable revision's traffic in consecutive
//! windows of `spec.monitoring.window`, each judged against the reference profile, with
//! `consecutiveWindows` hysteresis both ways. Pure: windows and time come in as arguments; the
//! state lives in status so a restarted operator resumes.
//!
//! Not wired into the operator yet: the collector and the planner call it in the next step.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::api::DriftSpec;
use crate::drift::{self, DriftAssessment};
use crate::monitor::report::Report;
use crate::profile::ReferenceProfile;

/// Most features named in the state (and on gauges): a bounded label set.
pub const TOP_FEATURES: usize = 5;

/// What the watch keeps between windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchState {
    /// When the current window started (RFC 3339).
    pub window_started: String,
    /// Consecutive judged windows that drifted.
    pub drifted_windows: i32,
    /// Consecutive judged windows that did not.
    pub clean_windows: i32,
    /// Drift is declared (set after `consecutiveWindows` drifted windows, cleared after as many
    /// clean ones).
    pub detected: bool,
    /// The highest-scoring features of the last judged window, with their scores.
    pub top: Vec<(String, f64)>,
}

/// What one look decided.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchDecision {
    /// The next state.
    pub state: WatchState,
    /// The window judged now, if one ended.
    pub judged: Option<Judged>,
    /// Drift was declared now (`Some(true)`) or cleared now (`Some(false)`).
    pub changed: Option<bool>,
}

/// A window that ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Judged {
    /// Judged against the profile.
    Assessed(DriftAssessment),
    /// Fewer than `minSamples` requests: no verdict, the counters hold.
    TooFewSamples(u64),
    /// No report reached the operator for this window: no verdict, the counters hold.
    NoReports,
}

/// One look at the watch at `now`, with the stable revision's `window` since
/// `state.window_started`.
pub fn look(
    spec: &DriftSpec,
    window_length: Duration,
    state: Option<&WatchState>,
    window: Option<&Report>,
    profile: &ReferenceProfile,
    now: Timestamp,
) -> WatchDecision {
    let fresh = |s: WatchState| WatchState {
        window_started: now.to_string(),
        ..s
    };
    let Some(state) = state else {
        return WatchDecision {
            state: fresh(WatchState::default()),
            judged: None,
            changed: None,
        };
    };
    let started: Option<Timestamp> = state.window_started.parse().ok();
    let elapsed = started
        .map(|s| now.duration_since(s))
        .unwrap_or(SignedDuration::MAX);
    if elapsed < SignedDuration::try_from(window_length).unwrap_or(SignedDuration::MAX) {
        return WatchDecision {
            state: state.clone(),
            judged: None,
            changed: None,
        };
    }
    let min_samples = u64::try_from(spec.min_samples).unwrap_or(u64::MAX);
    let judged = match window {
        None => Judged::NoReports,
        Some(w) if w.requests.total() < min_samples => Judged::TooFewSamples(w.requests.total()),
        Some(w) => Judged::Assessed(drift::assess(
            profile,
            w,
            drift::method_of(spec.method),
            spec.threshold,
            min_samples,
        )),
    };
    let mut next = fresh(state.clone());
    let mut changed = None;
    if let Judged::Assessed(a) = &judged {
        let drifted = !a.drifted().is_empty() || a.prediction.as_ref().is_some_and(|p| p.drifted);
        if drifted {
            next.drifted_windows += 1;
            next.clean_windows = 0;
        } else {
            next.clean_windows += 1;
            next.drifted_windows = 0;
        }
        next.top = a
            .features
            .iter()
            .take(TOP_FEATURES)
            .map(|f| (f.name.clone(), f.score))
            .collect();
        let need = spec.consecutive_windows.max(1);
        if !next.detected && next.drifted_windows >= need {
            next.detected = true;
            changed = Some(true);
        } else if next.detected && next.clean_windows >= need {
            next.detected = false;
            changed = Some(false);
        }
    }
    WatchDecision {
        state: next,
        judged: Some(judged),
        changed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::recorder::{Exchange, Recorder};
    use serde_json::json;

    fn profile() -> ReferenceProfile {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/models/fraud/profile.json"
        );
        ReferenceProfile::from_json(&std::fs::read(path).unwrap()).unwrap()
    }

    /// A window of `n` requests whose `amount` is around `amount`.
    fn window(n: usize, amount: f64) -> Report {
        let p = profile();
        let r = Recorder::new(Some(&p), "1.0.0", "i".into(), "t".into());
        let mut rng = fastrand::Rng::with_seed(3);
        for i in 0..n {
            let req = json!({"amount": amount * (0.5 + rng.f64()), "age": 30 + (i % 40), "account_age_days": 200 + (i % 2000),
                             "transactions_24h": i % 10, "distance_km": rng.f64() * 40.0,
                             "merchant_category": "grocery", "channel": "online"});
            let resp = json!({"prediction": 0, "probability": 0.9});
            r.record(Exchange {
                status: 200,
                latency: Duration::from_millis(5),
                request: Some(Ok(&req)),
                response: Some(Ok(&resp)),
                terminating: false,
            });
        }
        r.report()
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
        let len = Duration::from_secs(15 * 60);
        let shifted = window(1000, 5000.0);
        let d = look(&spec, len, None, None, &p, at(0));
        let mut state = d.state;
        // Mid-window: nothing judged.
        let d = look(&spec, len, Some(&state), Some(&shifted), &p, at(10));
        assert!(d.judged.is_none());
        // First drifted window: not yet declared.
        let d = look(&spec, len, Some(&state), Some(&shifted), &p, at(15));
        assert!(matches!(&d.judged, Some(Judged::Assessed(a)) if a.drifted().contains(&"amount")));
        assert_eq!(d.changed, None);
        state = d.state;
        assert_eq!(state.drifted_windows, 1);
        // Second: declared, with the feature on top.
        let d = look(&spec, len, Some(&state), Some(&shifted), &p, at(30));
        assert_eq!(d.changed, Some(true));
        state = d.state;
        assert!(state.detected);
        assert_eq!(state.top[0].0, "amount");
        // A window without reports or with too few samples changes nothing.
        let d = look(&spec, len, Some(&state), None, &p, at(45));
        assert_eq!(d.judged, Some(Judged::NoReports));
        assert_eq!(d.state.drifted_windows, 2);
        state = d.state;
        let d = look(
            &spec,
            len,
            Some(&state),
            Some(&window(50, 50.0)),
            &p,
            at(60),
        );
        assert_eq!(d.judged, Some(Judged::TooFewSamples(50)));
        state = d.state;
        assert!(state.detected);
        // Clean windows (judged with a threshold nothing reaches): one is not enough to clear.
        let calm = DriftSpec {
            threshold: 1e9,
            ..spec.clone()
        };
        let d = look(&calm, len, Some(&state), Some(&shifted), &p, at(75));
        assert_eq!(d.changed, None);
        assert!(d.state.detected, "hysteresis holds");
        state = d.state;
        let d = look(&calm, len, Some(&state), Some(&shifted), &p, at(90));
        assert_eq!(d.changed, Some(false));
        assert!(!d.state.detected);
    }

    #[test]
    fn a_restarted_operator_resumes_from_the_state_in_status() {
        let spec = DriftSpec::default();
        let p = profile();
        let d = look(&spec, Duration::from_secs(60), None, None, &p, at(0));
        let kept: WatchState =
            serde_json::from_value(serde_json::to_value(&d.state).unwrap()).unwrap();
        assert_eq!(kept, d.state);
        let again = look(&spec, Duration::from_secs(60), Some(&kept), None, &p, at(0));
        assert_eq!(again.state, kept, "same instant, same state");
        assert!(again.judged.is_none());
    }
}
