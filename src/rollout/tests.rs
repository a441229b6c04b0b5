//! Table-style tests of the canary state machine: healthy, degraded, inconclusive, deadline,
//! abort, promote, retry, pause, restart in every phase, a new spec mid-rollout, duplicate
//! tokens, and a property: no sequence of inputs promotes a revision whose last judgement failed.

use std::time::Duration;

use jiff::Timestamp;
use proptest::prelude::*;

use super::fixtures::report;
use super::judgement::Evidence;
use super::machine::{self, BakeLimits, Controls, Decision, RevisionRef, Tick, Timing, reason};
use crate::api::{AnalysisSpec, RolloutPhase, RolloutState, Verdict};
use crate::monitor::report::Report;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

/// Traffic of one window.
#[derive(Clone, Copy, Debug)]
enum Traffic {
    /// Plenty of healthy requests.
    Healthy,
    /// 10% errors.
    Errors,
    /// 900 ms latencies.
    Slow,
    /// A handful of requests.
    Trickle,
    /// No report at all.
    Outage,
}

struct Reports {
    healthy: Report,
    errors: Report,
    slow: Report,
    trickle: Report,
    stable: Report,
}

fn reports() -> Reports {
    Reports {
        healthy: report(2000, 0, 20.0),
        errors: report(540, 60, 20.0),
        slow: report(600, 0, 900.0),
        trickle: report(5, 0, 20.0),
        stable: report(6000, 0, 20.0),
    }
}

struct World {
    steps: Vec<i32>,
    analysis: AnalysisSpec,
    timing: Timing,
    target: RevisionRef,
    stable: RevisionRef,
    state: Option<RolloutState>,
    controls: Controls,
    now: i64,
    reasons: Vec<&'static str>,
    /// A bake breach judged outside the machine (performance from labels).
    bake_breach: Option<String>,
}

fn world() -> World {
    World {
        steps: vec![10, 25, 50],
        analysis: AnalysisSpec::default(),
        timing: Timing {
            interval: Duration::from_secs(60),
            progress_deadline: Duration::from_secs(600),
            bake_time: Duration::from_secs(300),
        },
        target: RevisionRef {
            hash: "new".into(),
            version: "2".into(),
        },
        stable: RevisionRef {
            hash: "old".into(),
            version: "1".into(),
        },
        state: None,
        controls: Controls::default(),
        bake_breach: None,
        now: 0,
        reasons: Vec::new(),
    }
}

impl World {
    /// One scrape, `seconds` after the last, with this window's traffic.
    fn tick(&mut self, seconds: i64, traffic: Traffic, r: &Reports) -> Decision {
        self.now += seconds;
        let canary = match traffic {
            Traffic::Healthy => Some(&r.healthy),
            Traffic::Errors => Some(&r.errors),
            Traffic::Slow => Some(&r.slow),
            Traffic::Trickle => Some(&r.trickle),
            Traffic::Outage => None,
        };
        let bake_window = match traffic {
            Traffic::Errors => Some(&r.errors),
            _ => Some(&r.stable),
        };
        let t = Tick {
            steps: &self.steps,
            max_failed_checks: 2,
            timing: self.timing,
            analysis: &self.analysis,
            max_latency_p99: 0.3,
            bake: BakeLimits {
                max_error_rate: 0.01,
                max_latency_p99: 0.3,
            },
            target: &self.target,
            stable: Some(&self.stable),
            state: self.state.as_ref(),
            canary_available: true,
            evidence: Evidence {
                canary,
                stable: Some(&r.stable),
                profile: None,
            },
            bake_window,
            bake_breach: self.bake_breach.clone(),
            stable_replicas: 10,
            split: Default::default(),
            promoted_full: true,
            previous_present: true,
            controls: &self.controls,
            now: at(self.now),
        };
        let d = machine::tick(&t);
        // Status round trip: what the next tick sees is what status can hold.
        self.state = d
            .state
            .as_ref()
            .map(|s| serde_json::from_value(serde_json::to_value(s).unwrap()).unwrap());
        if let Some(stable) = &d.stable
            && *stable != self.stable.hash
        {
            let promoted = self.target.hash == *stable;
            let (new_stable, old) = if promoted {
                (self.target.clone(), self.stable.clone())
            } else {
                (
                    RevisionRef {
                        hash: stable.clone(),
                        version: "?".into(),
                    },
                    self.stable.clone(),
                )
            };
            self.stable = new_stable;
            let _ = old;
        }
        self.reasons
            .extend(d.announcements.iter().map(|a| a.reason));
        d
    }

    fn phase(&self) -> Option<RolloutPhase> {
        self.state.as_ref().map(|s| s.phase)
    }
}

#[test]
fn a_healthy_canary_walks_every_step_then_promotes_and_bakes() {
    let r = reports();
    let mut w = world();
    let d = w.tick(0, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
    assert_eq!(d.canary_replicas, 1, "10% beside 10 stable replicas");
    assert_eq!(w.state.as_ref().unwrap().actual_weight, 9);
    for step in 0..3 {
        w.tick(30, Traffic::Healthy, &r);
        assert_eq!(
            w.state.as_ref().unwrap().step,
            step,
            "mid-interval: same step"
        );
        w.tick(30, Traffic::Healthy, &r);
        if step < 2 {
            // The new step's pods come up; the window starts at the next tick.
            w.tick(1, Traffic::Healthy, &r);
        }
    }
    assert_eq!(w.phase(), Some(RolloutPhase::Baking), "{:?}", w.reasons);
    assert_eq!(w.stable.hash, "new");
    let d = w.tick(60, Traffic::Healthy, &r);
    assert_eq!(
        d.keep_warm.as_deref(),
        Some("old"),
        "previous stays warm while baking"
    );
    w.tick(300, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Complete));
    assert_eq!(
        w.reasons,
        vec![
            reason::STARTED,
            reason::STEP_PASSED,
            reason::STEP_PASSED,
            reason::PROMOTED,
            reason::BAKED
        ]
    );
}

#[test]
fn an_error_spike_fails_at_the_scrape_that_shows_it_and_rolls_back_after_max_failed_checks() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    w.tick(10, Traffic::Errors, &r);
    assert_eq!(
        w.state.as_ref().unwrap().failed_checks,
        1,
        "no waiting for the interval"
    );
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
    let d = w.tick(10, Traffic::Errors, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::RolledBack));
    assert_eq!(d.canary_replicas, 0);
    assert_eq!(w.stable.hash, "old");
    assert_eq!(d.record.as_ref().unwrap().outcome, "RolledBack");
    let last = w.state.as_ref().unwrap().last_judgement.as_ref().unwrap();
    assert_eq!(last.verdict, Verdict::Fail);
    assert!(
        last.signals
            .iter()
            .any(|s| s.name == "errorRate" && s.verdict == Verdict::Fail)
    );
    // Stays rejected: more ticks change nothing (GitOps-safe, spec still names it).
    let before = w.state.clone();
    let d = w.tick(600, Traffic::Healthy, &r);
    assert_eq!(w.state, before);
    assert!(d.announcements.is_empty());
}

#[test]
fn latency_regression_rolls_back() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    w.tick(10, Traffic::Slow, &r);
    w.tick(10, Traffic::Slow, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::RolledBack));
}

#[test]
fn too_little_traffic_waits_until_the_deadline_then_rolls_back_with_the_reason() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Trickle, &r);
    for _ in 0..9 {
        w.tick(60, Traffic::Trickle, &r);
        assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
        assert_eq!(
            w.state.as_ref().unwrap().failed_checks,
            0,
            "inconclusive never counts as a failure"
        );
    }
    w.tick(60, Traffic::Trickle, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::RolledBack));
    let why = &w.state.as_ref().unwrap().reason;
    assert!(
        why.contains("progressDeadline") && why.contains("canary requests"),
        "{why}"
    );
}

#[test]
fn a_metrics_outage_freezes_and_never_fails() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    for _ in 0..5 {
        w.tick(60, Traffic::Outage, &r);
        assert_eq!(w.state.as_ref().unwrap().failed_checks, 0);
        assert_eq!(w.state.as_ref().unwrap().step, 0);
    }
    assert_eq!(
        w.state
            .as_ref()
            .unwrap()
            .last_judgement
            .as_ref()
            .unwrap()
            .verdict,
        Verdict::Frozen
    );
    // Metrics come back: the rollout continues.
    w.tick(60, Traffic::Healthy, &r);
    assert_eq!(w.state.as_ref().unwrap().step, 1);
}

#[test]
fn controls_apply_once() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    w.controls.pause = Some("p1".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
    w.tick(2000, Traffic::Errors, &r);
    assert_eq!(
        w.phase(),
        Some(RolloutPhase::Paused),
        "paused: no judgement, no deadline"
    );
    w.controls.resume = Some("r1".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
    // The same pause token again does nothing: it was applied.
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
    w.controls.promote = Some("go".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Baking));
    assert!(w.reasons.contains(&reason::PROMOTED_BY_HAND));
}

#[test]
fn abort_then_retry_then_a_new_spec() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    w.controls.abort = Some("a1".into());
    let d = w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::RolledBack));
    assert_eq!(d.record.unwrap().outcome, "Aborted");
    w.controls.retry = Some("t1".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(
        w.phase(),
        Some(RolloutPhase::Progressing),
        "retry runs the same canary again"
    );
    assert_eq!(w.state.as_ref().unwrap().step, 0);
    // The old abort token is still on the object: it must not abort the retried canary.
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
    // A new spec mid-rollout supersedes it.
    w.target = RevisionRef {
        hash: "newer".into(),
        version: "3".into(),
    };
    let d = w.tick(10, Traffic::Healthy, &r);
    assert_eq!(d.record.unwrap().outcome, "Superseded");
    assert_eq!(w.state.as_ref().unwrap().revision, "newer");
    assert_eq!(
        w.state.as_ref().unwrap().controls.abort.as_deref(),
        Some("a1"),
        "tokens carry over"
    );
}

#[test]
fn a_breach_in_the_bake_window_points_traffic_back() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    w.controls.promote = Some("go".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.stable.hash, "new");
    let d = w.tick(30, Traffic::Errors, &r);
    assert_eq!(
        d.stable.as_deref(),
        Some("old"),
        "traffic back to the warm previous revision"
    );
    assert!(w.reasons.contains(&reason::BAKE_ROLLBACK));
}

#[test]
fn a_performance_drop_in_the_bake_window_rolls_back_too() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    w.controls.promote = Some("go".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.stable.hash, "new");
    w.bake_breach = Some("accuracy 0.71 below 0.9 (300 labels)".into());
    let d = w.tick(30, Traffic::Healthy, &r);
    assert_eq!(d.stable.as_deref(), Some("old"));
    assert!(w.reasons.contains(&reason::BAKE_ROLLBACK));
    assert!(
        w.state.as_ref().unwrap().reason.contains("accuracy 0.71"),
        "{:?}",
        w.state
    );
}

#[test]
fn a_restart_in_any_phase_resumes_where_it_was() {
    let r = reports();
    let scripts: Vec<Vec<(i64, Traffic)>> = vec![
        vec![
            (0, Traffic::Healthy),
            (60, Traffic::Healthy),
            (1, Traffic::Healthy),
        ],
        vec![(0, Traffic::Healthy), (10, Traffic::Errors)],
        vec![
            (0, Traffic::Healthy),
            (10, Traffic::Errors),
            (10, Traffic::Errors),
        ],
        vec![(0, Traffic::Trickle), (60, Traffic::Trickle)],
    ];
    for script in scripts {
        let mut a = world();
        let mut b = world();
        for (dt, traffic) in &script {
            a.tick(*dt, *traffic, &r);
            b.tick(*dt, *traffic, &r);
        }
        // b "restarts": only what status holds survives (already round-tripped through JSON).
        let restored: Option<RolloutState> =
            serde_json::from_str(&serde_json::to_string(&b.state).unwrap()).unwrap();
        b.state = restored;
        let da = a.tick(30, Traffic::Healthy, &r);
        let db = b.tick(30, Traffic::Healthy, &r);
        assert_eq!(da, db);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, .. ProptestConfig::default() })]
    /// No sequence of traffic, timing and controls promotes a revision whose last judgement
    /// failed, and a rolled-back revision stays rolled back without a retry.
    #[test]
    fn never_promotes_after_a_failed_judgement(script in prop::collection::vec((0i64..120, 0usize..5, 0usize..8), 1..40)) {
        let r = reports();
        let mut w = world();
        let mut pause = 0;
        for (dt, traffic, control) in script {
            let traffic = [Traffic::Healthy, Traffic::Errors, Traffic::Slow, Traffic::Trickle, Traffic::Outage][traffic];
            match control {
                0 => { pause += 1; w.controls.pause = Some(format!("p{pause}")); }
                1 => w.controls.resume = Some(format!("r{pause}")),
                _ => {}
            }
            let before = w.state.clone();
            let d = w.tick(dt, traffic, &r);
            if let Some(record) = &d.record && record.outcome == "Promoted" {
                let last = before.as_ref().and_then(|s| s.last_judgement.clone());
                let judged_now = w.state.as_ref().and_then(|s| s.last_judgement.clone());
                prop_assert!(judged_now.map(|j| j.verdict) == Some(Verdict::Pass), "promoted without a passing judgement: {last:?}");
            }
            if before.as_ref().is_some_and(|s| s.phase == RolloutPhase::RolledBack) {
                prop_assert_eq!(w.phase(), Some(RolloutPhase::RolledBack));
            }
        }
    }
}

#[test]
fn tokens_set_while_nothing_runs_never_decide_the_next_canary() {
    let r = reports();
    let mut w = world();
    // Rolled back by an abort; then promote and pause tokens are set while nothing runs.
    w.tick(0, Traffic::Healthy, &r);
    w.controls.abort = Some("a1".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::RolledBack));
    w.controls.promote = Some("stale-promote".into());
    w.controls.resume = Some("stale-resume".into());
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(
        w.phase(),
        Some(RolloutPhase::RolledBack),
        "nothing to promote"
    );
    // A new spec: its canary runs its steps; the stale tokens count as used.
    w.target = RevisionRef {
        hash: "newer".into(),
        version: "3".into(),
    };
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Progressing));
    assert!(!w.reasons.contains(&reason::PROMOTED_BY_HAND));
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(
        w.phase(),
        Some(RolloutPhase::Progressing),
        "not aborted either"
    );
    // A pause now holds: the stale resume cannot undo it.
    w.controls.pause = Some("p1".into());
    w.tick(10, Traffic::Healthy, &r);
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
}

#[test]
fn a_resume_that_finds_nothing_paused_is_used_up() {
    let r = reports();
    let mut w = world();
    w.tick(0, Traffic::Healthy, &r);
    w.tick(10, Traffic::Healthy, &r);
    w.controls.resume = Some("early".into());
    w.tick(10, Traffic::Healthy, &r);
    w.controls.pause = Some("p1".into());
    w.tick(10, Traffic::Healthy, &r);
    w.tick(10, Traffic::Healthy, &r);
    assert_eq!(w.phase(), Some(RolloutPhase::Paused));
}
