//! The steady-state watch in the planner: windows in, `DriftDetected`, `Degraded` and Events
//! out.

use std::sync::Arc;

use super::tests::{apply_plan, at, md, observed_with_profile, settle, with_version};
use super::*;
use crate::api::{ConditionStatus, Phase};
use crate::collect::ClosedWindow;
use crate::conditions::{DEGRADED, DRIFT_DETECTED};
use crate::rollout::fixtures::{fraud_profile, fraud_traffic};
use crate::watch::Judged;

const WATCHED: &str = "  rollout: {strategy: Immediate}\n  monitoring:\n    window: 15m\n    reference: {configMapRef: {name: fraud-profile}}\n    drift: {consecutiveWindows: 2, minSamples: 200}\n    slo: {latencyP99: 100ms, errorRate: 0.01}\n";

/// A ModelDeployment whose first revision serves, with the fraud profile found.
fn serving(profile: crate::profile::ReferenceProfile) -> (ModelDeployment, Observed) {
    let mut m = md(WATCHED);
    let rev = revision_of(&m.spec);
    let observed = observed_with_profile(profile);
    let p = settle(&mut m, &observed, at(0));
    let observed = apply_plan(&observed, &p, &[&rev]);
    let p = settle(&mut m, &observed, at(10));
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    (m, observed)
}

fn window(observed: &Observed, report: Option<crate::monitor::report::Report>) -> Observed {
    let mut o = observed.clone();
    o.evidence.steady = Some(ClosedWindow {
        key: "watch 1".into(),
        report,
        previous_confidence: None,
    });
    o
}

fn condition<'a>(p: &'a Plan, type_: &str) -> &'a crate::api::Condition {
    p.status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no condition {type_}: {:?}", p.status.conditions))
}

fn reasons(p: &Plan) -> Vec<&'static str> {
    p.notices.iter().map(|n| n.reason).collect()
}

#[test]
fn drift_held_for_consecutive_windows_is_declared_once_with_the_shifted_feature() {
    let (mut m, observed) = serving(fraud_profile());
    let p = settle(&mut m, &observed, at(20));
    let c = condition(&p, DRIFT_DETECTED);
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason, steady_reason::NO_DRIFT);

    let drifted = window(&observed, Some(fraud_traffic(1000, 5000.0, 0.9, 0, 5)));
    let p = settle(&mut m, &drifted, at(900));
    assert!(matches!(p.watch, Some(Judged::Assessed { .. })));
    assert_eq!(condition(&p, DRIFT_DETECTED).status, ConditionStatus::False);
    assert_eq!(p.status.drift.as_ref().unwrap().drifted_windows, 1);
    assert!(p.notices.is_empty(), "{:?}", p.notices);

    let p = settle(&mut m, &drifted, at(1800));
    let c = condition(&p, DRIFT_DETECTED);
    assert_eq!(c.status, ConditionStatus::True);
    assert!(c.message.contains("amount"), "{}", c.message);
    assert!(!c.message.contains("age "), "{}", c.message);
    assert_eq!(reasons(&p), vec![steady_reason::DRIFT_DETECTED]);
    assert!(p.notices[0].warning);
    let drift = p.status.drift.clone().unwrap();
    assert!(drift.detected);
    assert_eq!(drift.features[0].name, "amount");

    // Drift that stays: same status, no Event (the gauges carry the live scores).
    let before = m.status.clone();
    let p = settle(&mut m, &drifted, at(2700));
    assert_eq!(Some(&p.status), before.as_ref());
    assert!(p.notices.is_empty(), "{:?}", p.notices);
    // Between windows nothing changes either.
    let p = settle(&mut m, &observed, at(2710));
    assert_eq!(Some(&p.status), before.as_ref());
}

#[test]
fn a_profile_of_another_model_version_is_a_condition_never_a_comparison() {
    let mut profile = fraud_profile();
    profile.model_version = Some("0.9.0".into());
    let (mut m, observed) = serving(profile);
    let p = settle(&mut m, &observed, at(20));
    let c = condition(&p, DRIFT_DETECTED);
    assert_eq!(c.status, ConditionStatus::Unknown);
    assert_eq!(c.reason, steady_reason::PROFILE_VERSION_MISMATCH);
    assert!(
        c.message.contains("0.9.0") && c.message.contains("1.0.0"),
        "{}",
        c.message
    );
    // Announced when it appeared (in the earlier reconciles), not again.
    let drifted = window(&observed, Some(fraud_traffic(1000, 5000.0, 0.9, 0, 5)));
    for i in 1..5 {
        let p = settle(&mut m, &drifted, at(900 * i));
        assert_eq!(p.watch, Some(Judged::NoProfile));
        assert_eq!(
            condition(&p, DRIFT_DETECTED).status,
            ConditionStatus::Unknown
        );
        assert!(p.notices.is_empty(), "{:?}", p.notices);
    }
}

#[test]
fn the_mismatch_is_announced_when_it_appears() {
    let mut profile = fraud_profile();
    profile.model_version = Some("1.0.0".into());
    let (mut m, observed) = serving(profile.clone());
    assert_eq!(
        condition(&settle(&mut m, &observed, at(20)), DRIFT_DETECTED).status,
        ConditionStatus::False,
        "the profile of the serving version is used"
    );
    profile.model_version = Some("0.9.0".into());
    let mut other = observed.clone();
    other.evidence.profile = Some(Arc::new(profile));
    let p = settle(&mut m, &other, at(30));
    assert_eq!(reasons(&p), vec![steady_reason::PROFILE_VERSION_MISMATCH]);
    assert!(settle(&mut m, &other, at(40)).notices.is_empty());
}

#[test]
fn an_slo_breach_degrades_until_a_window_within_it() {
    let (mut m, observed) = serving(fraud_profile());
    settle(&mut m, &observed, at(20));
    let slow = window(&observed, Some(fraud_traffic(1000, 50.0, 0.9, 30, 250)));
    let p = settle(&mut m, &slow, at(900));
    let c = condition(&p, DEGRADED);
    assert_eq!(c.status, ConditionStatus::True);
    assert_eq!(c.reason, steady_reason::SLO_BREACHED);
    assert!(
        c.message.contains("above 0.01") && c.message.contains("p99"),
        "{}",
        c.message
    );
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert!(reasons(&p).contains(&steady_reason::SLO_BREACHED));
    // Held between windows, and by a window with too few requests.
    assert_eq!(
        condition(&settle(&mut m, &observed, at(910)), DEGRADED).status,
        ConditionStatus::True
    );
    let few = window(&observed, Some(fraud_traffic(20, 50.0, 0.9, 0, 5)));
    assert_eq!(
        condition(&settle(&mut m, &few, at(1800)), DEGRADED).status,
        ConditionStatus::True
    );
    // A window within the SLO recovers it.
    let fine = window(&observed, Some(fraud_traffic(1000, 50.0, 0.9, 0, 5)));
    let p = settle(&mut m, &fine, at(2700));
    assert_eq!(condition(&p, DEGRADED).status, ConditionStatus::False);
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert!(reasons(&p).contains(&steady_reason::SLO_RECOVERED));
}

#[test]
fn the_watch_holds_during_a_rollout_and_starts_over_for_the_new_revision() {
    let (mut m, observed) = serving(fraud_profile());
    let drifted = window(&observed, Some(fraud_traffic(1000, 5000.0, 0.9, 0, 5)));
    settle(&mut m, &drifted, at(900));
    let p = settle(&mut m, &drifted, at(1800));
    assert!(p.status.drift.as_ref().unwrap().detected);
    let old_rev = p.status.stable.clone().unwrap().hash;

    // A new version rolls out (immediately): while it comes up the watch holds.
    m = with_version(m, "1.1.0");
    let new_rev = revision_of(&m.spec);
    let p = settle(&mut m, &drifted, at(1900));
    assert!(p.status.canary.is_some());
    assert_eq!(p.status.drift.as_ref().unwrap().revision, old_rev);
    assert!(p.status.drift.as_ref().unwrap().detected, "held");
    let mut up = apply_plan(&observed, &p, &[&new_rev]);
    // The new version brings its own profile.
    let mut profile = fraud_profile();
    profile.model_version = Some("1.1.0".into());
    up.evidence.profile = Some(Arc::new(profile));
    let p = settle(&mut m, &up, at(2000));
    assert_eq!(p.status.stable.as_ref().unwrap().hash, new_rev);
    let drift = p.status.drift.as_ref().unwrap();
    assert_eq!(drift.revision, new_rev);
    assert!(!drift.detected);
    assert!(reasons(&p).contains(&steady_reason::DRIFT_CLEARED));
    assert_eq!(condition(&p, DRIFT_DETECTED).status, ConditionStatus::False);
}

#[test]
fn without_a_profile_or_slo_nothing_is_watched() {
    let mut m = md("  rollout: {strategy: Immediate}\n");
    let rev = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let observed = apply_plan(&Observed::default(), &p, &[&rev]);
    let p = settle(
        &mut m,
        &window(&observed, Some(fraud_traffic(1000, 5000.0, 0.9, 0, 5))),
        at(10),
    );
    assert!(p.status.drift.is_none());
    assert!(
        !p.status
            .conditions
            .iter()
            .any(|c| c.type_ == DRIFT_DETECTED)
    );
    assert!(p.watch.is_none());
}

#[test]
fn unreachable_monitors_in_steady_state_are_a_condition_and_hold_the_watch() {
    let (mut m, observed) = serving(fraud_profile());
    let p = settle(&mut m, &observed, at(20));
    let c = condition(&p, crate::conditions::REPORTS_AVAILABLE);
    assert_eq!(c.status, ConditionStatus::True);
    let since = c.last_transition_time.clone();
    // Stable across reconciles (no rewrite).
    let p = settle(&mut m, &observed, at(30));
    assert_eq!(
        condition(&p, crate::conditions::REPORTS_AVAILABLE).last_transition_time,
        since
    );
    let mut down = window(&observed, None);
    down.evidence.problem = Some(CollectionProblem::Unreachable {
        revision: "r".into(),
        pods: 2,
    });
    let p = settle(&mut m, &down, at(900));
    let c = condition(&p, crate::conditions::REPORTS_AVAILABLE);
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason, reason::MONITORS_UNREACHABLE);
    assert_eq!(p.watch, Some(Judged::NoReports));
    assert_eq!(p.status.drift.as_ref().unwrap().drifted_windows, 0);
}

#[test]
fn a_performance_drop_from_labels_degrades_and_starts_retraining_like_drift() {
    let mut m = md(&format!(
        "{WATCHED}    performance: {{minLabels: 100, minAccuracy: 0.9}}\n  remediation:\n    onDrift: Retrain\n    retraining:\n      jobTemplate: {{spec: {{template: {{spec: {{containers: [{{name: t, image: t}}]}}}}}}}}\n"
    ));
    let rev = revision_of(&m.spec);
    let mut observed = observed_with_profile(fraud_profile());
    for _ in 0..3 {
        let p = settle(&mut m, &observed, at(0));
        observed = apply_plan(&observed, &p, &[&rev]);
    }
    // Clean inputs (a threshold nothing reaches), but labels say accuracy is 0.6.
    m.spec.monitoring.drift.threshold = 1e9;
    let mut report = fraud_traffic(1000, 50.0, 0.9, 0, 5);
    let mut performance = crate::monitor::feedback::Performance::default();
    for i in 0..200 {
        let truth = if i % 5 < 3 { 1 } else { 0 };
        performance
            .record(
                crate::monitor::feedback::Task::Classification,
                &serde_json::json!(1),
                &serde_json::json!(truth),
            )
            .unwrap();
    }
    report.performance = Some(performance);
    let p = settle(&mut m, &window(&observed, Some(report)), at(900));
    let c = condition(&p, DEGRADED);
    assert_eq!(c.status, ConditionStatus::True);
    assert_eq!(c.reason, steady_reason::PERFORMANCE_DROPPED);
    assert!(
        c.message.contains("accuracy 0.6000 below 0.9"),
        "{}",
        c.message
    );
    assert!(reasons(&p).contains(&steady_reason::PERFORMANCE_DROPPED));
    assert!(
        p.actions.iter().any(|a| matches!(a, Action::CreateJob(_))),
        "remediated like drift: a retraining Job"
    );
    assert!(!p.status.drift.as_ref().unwrap().detected, "no input drift");
    // Too few labels: no verdict, the drop holds.
    let mut few = fraud_traffic(1000, 50.0, 0.9, 0, 5);
    few.performance = Some(crate::monitor::feedback::Performance::default());
    let p = settle(&mut m, &window(&observed, Some(few)), at(1800));
    assert!(p.status.drift.as_ref().unwrap().performance_drop.is_some());
}
