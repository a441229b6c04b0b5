//! The canary strategy through the planner: the rollout machine's decisions as children and
//! status, step by step, with the operator "restarted" (the plan recomputed from what was
//! written) after every step.

use std::collections::BTreeMap;

use super::tests::{applied_kinds, apply_plan, at, md, with_version};
use super::*;
use crate::api::{ConditionStatus, ModelDeployment, Phase, RolloutPhase};
use crate::build::Child;
use crate::conditions::{self, DEGRADED, PROGRESSING, READY};
use crate::monitor::report::Report;
use crate::revision::revision_of;
use crate::rollout::fixtures::report;
use crate::rollout::machine::reason as rollout_reason;

/// A ModelDeployment, what the planner sees of its children, and a clock.
struct Rig {
    m: ModelDeployment,
    observed: Observed,
    now: i64,
    old: String,
    new: String,
}

fn healthy() -> ObservedEvidence {
    ObservedEvidence {
        canary: Some(report(2000, 0, 20.0)),
        stable: Some(report(6000, 0, 20.0)),
        ..ObservedEvidence::default()
    }
}

fn erroring() -> ObservedEvidence {
    ObservedEvidence {
        canary: Some(report(540, 60, 20.0)),
        stable: Some(report(6000, 0, 20.0)),
        ..ObservedEvidence::default()
    }
}

fn bake(r: Report) -> ObservedEvidence {
    ObservedEvidence {
        bake: Some(r),
        ..ObservedEvidence::default()
    }
}

impl Rig {
    /// Version 1.0.0 serving (complete), then the spec moved to 2.0.0.
    fn new(extra: &str) -> Self {
        let mut m = md(extra);
        let old = revision_of(&m.spec);
        let mut observed = Observed {
            // Looked up (Gateway API mode) and not there yet; ignored in other modes.
            route: RouteState::Absent,
            ..Observed::default()
        };
        for t in [0, 10] {
            let p = plan(&m, &observed, &Settings::default(), at(t));
            observed = apply_plan(&observed, &p, &[&old]);
            m.status = Some(p.status);
        }
        assert_eq!(m.status.as_ref().unwrap().phase, Some(Phase::Healthy));
        let m = with_version(m, "2.0.0");
        let new = revision_of(&m.spec);
        Rig {
            m,
            observed,
            now: 100,
            old,
            new,
        }
    }

    /// One reconcile `secs` later with `evidence`; its writes land, and the revisions in
    /// `complete` are then fully rolled out. A restarted operator planning again from what was
    /// written does nothing more.
    fn step(&mut self, secs: i64, evidence: ObservedEvidence, complete: &[&str]) -> Plan {
        self.now += secs;
        self.observed.evidence = evidence;
        let p = plan(&self.m, &self.observed, &Settings::default(), at(self.now));
        self.m.status = Some(p.status.clone());
        // Restart: a new operator at the same instant, with the status written but the child
        // writes not yet visible and a window that has seen nothing yet, announces and records
        // nothing again.
        let mut fresh = self.observed.clone();
        fresh.evidence = ObservedEvidence::default();
        self.observed = apply_plan(&self.observed, &p, complete);
        let again = plan(&self.m, &fresh, &Settings::default(), at(self.now));
        let ids = |p: &Plan| {
            p.notices
                .iter()
                .filter(|n| n.reason != rollout_reason::JUDGED)
                .map(|n| n.reason)
                .collect::<Vec<_>>()
        };
        assert!(
            ids(&again).is_empty(),
            "announced again: {:?}",
            again.notices
        );
        assert_eq!(again.status.history, p.status.history, "recorded again");
        assert_eq!(
            again
                .status
                .rollout
                .as_ref()
                .map(|r| (r.phase, r.step, &r.revision)),
            p.status
                .rollout
                .as_ref()
                .map(|r| (r.phase, r.step, &r.revision)),
            "a restart moves nothing"
        );
        p
    }

    fn rollout(&self) -> &crate::api::RolloutState {
        self.m
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .unwrap()
    }

    fn deployment_replicas(&self, hash: &str) -> Option<i32> {
        self.observed
            .revisions
            .iter()
            .find(|r| r.hash == hash)
            .and_then(|r| r.replicas)
    }

    fn serving(&self) -> Option<String> {
        self.observed
            .service
            .as_ref()
            .and_then(|s| s.serving_revision.clone())
    }
}

fn reasons(p: &Plan) -> Vec<&'static str> {
    p.notices.iter().map(|n| n.reason).collect()
}

fn service_selects_every_revision(p: &Plan) -> Option<bool> {
    p.actions.iter().find_map(|a| match a {
        Action::Apply(Child::Service(s)) => Some(
            !s.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .is_some_and(|sel| sel.contains_key(crate::naming::LABEL_REVISION)),
        ),
        _ => None,
    })
}

fn applied_replicas(p: &Plan, hash: &str) -> Option<Option<i32>> {
    p.actions.iter().find_map(|a| match a {
        Action::Apply(Child::Deployment(d))
            if d.metadata.name.as_deref() == Some(&format!("fraud-{hash}")) =>
        {
            Some(d.spec.as_ref().and_then(|s| s.replicas))
        }
        _ => None,
    })
}

const STEPS: &str = "  replicas: 10\n  rollout: {steps: [10, 50], interval: 1m, bakeTime: 5m}\n";

#[test]
fn a_healthy_canary_splits_traffic_steps_up_promotes_bakes_and_removes_the_previous() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());

    // Canary start: one pod of eleven beside stable's ten, both behind the Service.
    let p = r.step(0, ObservedEvidence::default(), &[&old]);
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            format!("apply Deployment fraud-{new}")
        ]
    );
    assert_eq!(service_selects_every_revision(&p), Some(true));
    assert_eq!(applied_replicas(&p, &new), Some(Some(1)));
    assert_eq!(reasons(&p), vec![rollout_reason::STARTED]);
    let status = &p.status;
    assert_eq!(status.phase, Some(Phase::Progressing));
    assert_eq!(status.stable.as_ref().unwrap().hash, old);
    assert_eq!(status.stable.as_ref().unwrap().weight, Some(91));
    assert_eq!(status.canary.as_ref().unwrap().hash, new);
    assert_eq!(status.canary.as_ref().unwrap().weight, Some(9));
    assert_eq!(r.rollout().requested_weight, 10);
    assert_eq!(r.rollout().actual_weight, 9);
    assert_eq!(r.serving().as_deref(), Some(old.as_str()));
    assert_eq!(
        conditions::get(&status.conditions, PROGRESSING)
            .unwrap()
            .reason,
        canary_reason::PROGRESSING
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));

    // Waiting for the canary's pod; once it is up the step's window opens.
    let p = r.step(30, healthy(), &[&old, &new]);
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    assert!(r.rollout().step_started_at.is_none());
    assert!(
        r.rollout().reason.contains("waiting"),
        "{}",
        r.rollout().reason
    );
    let p = r.step(30, healthy(), &[&old, &new]);
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    assert!(r.rollout().step_started_at.is_some());
    let p = r.step(30, healthy(), &[&old, &new]);
    assert!(p.actions.is_empty(), "mid-step: {:?}", applied_kinds(&p));

    // The interval is over and the evidence is good: step 2 at 50% = ten canary pods.
    let p = r.step(30, healthy(), &[&old]);
    assert_eq!(reasons(&p), vec![rollout_reason::STEP_PASSED]);
    assert_eq!(applied_replicas(&p, &new), Some(Some(10)));
    assert_eq!(r.rollout().step, 1);
    assert_eq!(r.rollout().actual_weight, 50);
    assert_eq!(p.status.canary.as_ref().unwrap().weight, Some(50));

    // Waiting for the new pods: no window yet.
    let p = r.step(30, healthy(), &[&old, &new]);
    assert!(p.actions.is_empty());
    assert!(r.rollout().step_started_at.is_none());
    let p = r.step(30, healthy(), &[&old, &new]);
    assert!(p.actions.is_empty());
    assert!(r.rollout().step_started_at.is_some());

    // The last step passes: promoted. The new revision is already at full size, so it takes
    // all the traffic at once; the previous one stays warm.
    let p = r.step(60, healthy(), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::PROMOTED]);
    assert_eq!(applied_kinds(&p), vec!["apply Service fraud".to_string()]);
    assert_eq!(service_selects_every_revision(&p), Some(false));
    assert_eq!(r.serving().as_deref(), Some(new.as_str()));
    assert_eq!(r.rollout().phase, RolloutPhase::Baking);
    assert_eq!(p.status.stable.as_ref().unwrap().hash, new);
    assert_eq!(p.status.stable.as_ref().unwrap().weight, Some(100));
    assert!(p.status.canary.is_none());
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert_eq!(
        conditions::get(&p.status.conditions, PROGRESSING)
            .unwrap()
            .reason,
        canary_reason::BAKING
    );
    assert_eq!(p.status.history[0].outcome, "Promoted");
    assert_eq!(r.deployment_replicas(&old), Some(10), "previous kept warm");

    // Bake window: nothing moves; at its end the previous revision goes.
    let p = r.step(60, bake(report(3000, 0, 20.0)), &[&old, &new]);
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    let p = r.step(240, bake(report(9000, 0, 20.0)), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::BAKED]);
    assert_eq!(
        applied_kinds(&p),
        vec![format!("delete Deployment fraud-{old}")]
    );
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert_eq!(r.rollout().phase, RolloutPhase::Complete);

    // Steady: the immediate path keeps the finished rollout and the history, writes nothing.
    let p = r.step(30, ObservedEvidence::default(), &[&new]);
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    assert!(p.notices.is_empty(), "{:?}", p.notices);
    assert_eq!(p.status.history.len(), 1);
    assert_eq!(r.rollout().phase, RolloutPhase::Complete);
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert!(conditions::is_true(&p.status.conditions, READY));
}

#[test]
fn an_error_spike_rolls_back_traffic_first_and_stays_rejected_until_a_retry() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());
    r.step(0, ObservedEvidence::default(), &[&old]);
    r.step(30, healthy(), &[&old, &new]);

    // 10% errors over 600 requests: the step fails at the scrape that shows it.
    let p = r.step(15, erroring(), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::CHECK_FAILED]);
    assert!(p.notices[0].warning);
    assert!(p.actions.is_empty());
    assert_eq!(r.rollout().failed_checks, 1);

    // The second failure (maxFailedChecks 2) rolls back: the Service goes back to stable
    // before the canary is scaled to zero.
    let p = r.step(15, erroring(), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::ROLLED_BACK]);
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            format!("apply Deployment fraud-{new}")
        ]
    );
    assert_eq!(service_selects_every_revision(&p), Some(false));
    assert_eq!(applied_replicas(&p, &new), Some(Some(0)));
    assert_eq!(p.status.phase, Some(Phase::RolledBack));
    assert!(p.status.canary.is_none());
    assert_eq!(p.status.stable.as_ref().unwrap().hash, old);
    let degraded = conditions::get(&p.status.conditions, DEGRADED).unwrap();
    assert_eq!(degraded.status, ConditionStatus::True);
    assert_eq!(degraded.reason, canary_reason::ROLLED_BACK);
    assert!(
        degraded.message.contains("errorRate 0.1 (limit 0.01)"),
        "{}",
        degraded.message
    );
    assert_eq!(p.status.history[0].outcome, "RolledBack");
    assert!(
        conditions::is_true(&p.status.conditions, READY),
        "stable serves"
    );

    // The spec still names the revision (GitOps): it stays rejected, quietly.
    for _ in 0..3 {
        let p = r.step(600, healthy(), &[&old, &new]);
        assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
        assert!(p.notices.is_empty(), "{:?}", p.notices);
        assert_eq!(p.status.phase, Some(Phase::RolledBack));
    }
    assert_eq!(r.deployment_replicas(&new), Some(0));

    // A retry token starts it over, once.
    r.m.metadata.annotations = Some(BTreeMap::from([(
        "drover.dev/retry".to_string(),
        "try-2".to_string(),
    )]));
    let p = r.step(10, ObservedEvidence::default(), &[&old]);
    assert_eq!(
        reasons(&p),
        vec![rollout_reason::RETRIED, rollout_reason::STARTED]
    );
    assert_eq!(applied_replicas(&p, &new), Some(Some(1)));
    assert_eq!(service_selects_every_revision(&p), Some(true));
    assert_eq!(r.rollout().phase, RolloutPhase::Progressing);
    assert_eq!(r.rollout().controls.retry.as_deref(), Some("try-2"));
    let p = r.step(10, ObservedEvidence::default(), &[&old]);
    assert!(
        p.notices.is_empty(),
        "the token applies once: {:?}",
        p.notices
    );
}

#[test]
fn under_autoscaling_the_canary_is_sized_by_the_scale_manager_and_the_hpa_moves_once_full() {
    let mut r = Rig::new(
        "  autoscaling: {minReplicas: 2, maxReplicas: 10}\n  rollout: {steps: [10], interval: 1m, bakeTime: 5m}\n",
    );
    let (old, new) = (r.old.clone(), r.new.clone());
    // The HPA has scaled stable to 6.
    r.observed
        .revisions
        .iter_mut()
        .for_each(|d| d.replicas = Some(6));

    let p = r.step(0, ObservedEvidence::default(), &[&old]);
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            format!("apply Deployment fraud-{new}"),
            format!("scale fraud-{new} 1"),
        ],
        "the HPA stays on stable"
    );
    assert_eq!(
        applied_replicas(&p, &new),
        Some(None),
        "never replicas under an HPA"
    );
    r.step(30, healthy(), &[&old, &new]);
    r.step(30, healthy(), &[&old, &new]);

    // Promoted at the end of the only step: the new revision is scaled to stable's count
    // first, traffic stays split and the HPA on the previous revision meanwhile.
    let p = r.step(60, healthy(), &[&old]);
    assert_eq!(reasons(&p), vec![rollout_reason::PROMOTED]);
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            format!("scale fraud-{new} 6"),
        ]
    );
    assert_eq!(service_selects_every_revision(&p), Some(true));
    assert_eq!(r.serving().as_deref(), Some(new.as_str()), "named stable");
    let hpa_target = |r: &Rig| r.observed.autoscaler.as_ref().unwrap().target.clone();
    assert_eq!(hpa_target(&r), format!("fraud-{old}"));

    // Full size: all the traffic and the HPA move; the previous revision stays warm.
    let p = r.step(30, bake(report(500, 0, 20.0)), &[&old, &new]);
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            "apply HorizontalPodAutoscaler fraud".to_string(),
        ]
    );
    assert_eq!(service_selects_every_revision(&p), Some(false));
    assert_eq!(hpa_target(&r), format!("fraud-{new}"));
    assert_eq!(r.deployment_replicas(&old), Some(6));

    // A breach in the bake window: traffic back to the warm revision first, then the HPA,
    // then the promoted revision to zero.
    let p = r.step(30, bake(report(540, 60, 20.0)), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::BAKE_ROLLBACK]);
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            "apply HorizontalPodAutoscaler fraud".to_string(),
            format!("scale fraud-{new} 0"),
        ]
    );
    assert_eq!(r.serving().as_deref(), Some(old.as_str()));
    assert_eq!(hpa_target(&r), format!("fraud-{old}"));
    assert_eq!(p.status.phase, Some(Phase::RolledBack));
    assert_eq!(p.status.stable.as_ref().unwrap().hash, old);
    for a in &p.actions {
        if let Action::Apply(Child::Deployment(d)) = a {
            assert_eq!(d.spec.as_ref().unwrap().replicas, None);
        }
    }
    let p = r.step(30, ObservedEvidence::default(), &[&old, &new]);
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
}

#[test]
fn a_new_spec_mid_rollout_supersedes_the_canary() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());
    r.step(0, ObservedEvidence::default(), &[&old]);
    r.step(30, healthy(), &[&old, &new]);
    r.m = with_version(r.m.clone(), "3.0.0");
    let newest = revision_of(&r.m.spec);
    let p = r.step(10, ObservedEvidence::default(), &[&old, &new]);
    assert_eq!(
        reasons(&p),
        vec![rollout_reason::SUPERSEDED, rollout_reason::STARTED]
    );
    let kinds = applied_kinds(&p);
    assert!(kinds.contains(&format!("apply Deployment fraud-{newest}")));
    assert!(kinds.contains(&format!("delete Deployment fraud-{new}")));
    assert!(!kinds.contains(&format!("delete Deployment fraud-{old}")));
    assert_eq!(p.status.history[0].outcome, "Superseded");
    assert_eq!(r.rollout().revision, newest);
}

#[test]
fn pause_holds_and_resume_continues() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());
    r.step(0, ObservedEvidence::default(), &[&old]);
    r.m.metadata.annotations = Some(BTreeMap::from([(
        "drover.dev/pause".to_string(),
        "p1".to_string(),
    )]));
    let p = r.step(30, healthy(), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::PAUSED]);
    assert_eq!(r.rollout().phase, RolloutPhase::Paused);
    let progressing = conditions::get(&p.status.conditions, PROGRESSING).unwrap();
    assert_eq!(progressing.status, ConditionStatus::Unknown);
    assert_eq!(progressing.reason, canary_reason::PAUSED);
    assert_eq!(p.requeue_after, None, "nothing to look at while paused");
    // Held well past the deadline: a person decided to wait.
    let p = r.step(3 * 3600, erroring(), &[&old, &new]);
    assert!(p.notices.is_empty() && p.actions.is_empty());
    r.m.metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert("drover.dev/resume".into(), "r1".into());
    let p = r.step(10, healthy(), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::RESUMED]);
    assert_eq!(r.rollout().phase, RolloutPhase::Progressing);
}

#[test]
fn lost_status_mid_canary_is_recovered_from_the_service_and_the_canary_starts_over() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());
    r.step(0, ObservedEvidence::default(), &[&old]);
    r.step(30, healthy(), &[&old, &new]);
    assert_eq!(
        r.serving().as_deref(),
        Some(old.as_str()),
        "from the annotation"
    );
    r.m.status = None;
    let p = r.step(10, healthy(), &[&old, &new]);
    assert_eq!(p.status.stable.as_ref().unwrap().hash, old);
    assert_eq!(reasons(&p), vec![rollout_reason::STARTED]);
    assert!(
        !applied_kinds(&p)
            .iter()
            .any(|a| a.starts_with("delete") || a.starts_with("apply Service")),
        "traffic stays where it was: {:?}",
        applied_kinds(&p)
    );
}

#[test]
fn a_missing_reference_profile_holds_the_rollout_before_it_starts() {
    let mut r = Rig::new(STEPS);
    r.observed.reference = ReferenceState::Invalid("no columns".into());
    let p = r.step(0, ObservedEvidence::default(), &[&r.old.clone()]);
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    let stalled = conditions::get(&p.status.conditions, crate::conditions::STALLED).unwrap();
    assert_eq!(stalled.reason, reason::REFERENCE_INVALID);
    assert!(
        stalled.message.contains("no columns"),
        "{}",
        stalled.message
    );
    assert!(p.status.rollout.is_none());
}

const GATEWAY: &str = "  replicas: 10\n  rollout:\n    steps: [10, 50]\n    interval: 1m\n    bakeTime: 0s\n    traffic:\n      mode: GatewayAPI\n      gatewayAPI: {parentRefs: [{name: public}], hostnames: [fraud.example.com]}\n";

fn route_weights(p: &Plan) -> Option<(String, i32, String, i32)> {
    p.actions.iter().find_map(|a| match a {
        Action::Apply(Child::Route(r)) => {
            let b = &r.spec.rules[0].backend_refs;
            Some((
                b[0].name.clone(),
                b[0].weight,
                b[1].name.clone(),
                b[1].weight,
            ))
        }
        _ => None,
    })
}

fn selects(p: &Plan, service: &str) -> Option<String> {
    p.actions.iter().find_map(|a| match a {
        Action::Apply(Child::Service(s)) if s.metadata.name.as_deref() == Some(service) => s
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .and_then(|sel| sel.get(crate::naming::LABEL_REVISION).cloned()),
        _ => None,
    })
}

#[test]
fn gateway_api_traffic_weights_the_route_once_the_canary_is_ready_and_flips_at_promotion() {
    let m = md(GATEWAY);
    let old = revision_of(&m.spec);
    let first = Observed {
        route: RouteState::Absent,
        ..Observed::default()
    };
    let p = plan(&m, &first, &Settings::default(), at(0));
    let kinds = applied_kinds(&p);
    for k in [
        "apply Service fraud-stable",
        "apply Service fraud-canary",
        "apply HTTPRoute fraud",
        "apply NetworkPolicy fraud",
    ] {
        assert!(kinds.contains(&k.to_string()), "{kinds:?}");
    }
    assert_eq!(
        route_weights(&p),
        Some(("fraud-stable".into(), 100, "fraud-canary".into(), 0))
    );
    assert_eq!(
        selects(&p, "fraud-canary"),
        Some(old.clone()),
        "a backend that exists"
    );

    let mut r = Rig::new(GATEWAY);
    let new = r.new.clone();
    // Start: the canary gets capacity for 10% (1 of 10) and no weight until it is ready; the
    // main Service stays on stable.
    let p = r.step(0, ObservedEvidence::default(), &[&old]);
    assert_eq!(applied_replicas(&p, &new), Some(Some(1)));
    assert_eq!(selects(&p, "fraud"), None, "main Service unchanged");
    assert_eq!(
        selects(&p, "fraud-canary"),
        None,
        "the canary backend keeps pointing at stable until a canary pod is ready"
    );
    assert_eq!(route_weights(&p), None, "no weight before a ready pod");
    assert_eq!(
        r.rollout().actual_weight,
        10,
        "the route gives the exact share"
    );
    r.step(30, healthy(), &[&old, &new]);
    let p = r.step(30, healthy(), &[&old, &new]);
    assert_eq!(selects(&p, "fraud-canary"), Some(new.clone()));
    assert_eq!(
        route_weights(&p),
        Some(("fraud-stable".into(), 90, "fraud-canary".into(), 10))
    );
    // Step 2 at 50%: five canary pods, half the traffic.
    let p = r.step(60, healthy(), &[&old, &new]);
    assert_eq!(applied_replicas(&p, &new), Some(Some(5)));
    assert_eq!(
        route_weights(&p),
        Some(("fraud-stable".into(), 50, "fraud-canary".into(), 50))
    );
    r.step(30, healthy(), &[&old, &new]);
    r.step(30, healthy(), &[&old, &new]);
    // Promotion (no bake window): scaled to full size first, the route following ready
    // capacity; then everything on the new revision and the previous one removed.
    let p = r.step(60, healthy(), &[&old]);
    assert_eq!(reasons(&p), vec![rollout_reason::PROMOTED]);
    assert_eq!(applied_replicas(&p, &new), Some(Some(10)));
    assert_eq!(
        route_weights(&p),
        Some(("fraud-stable".into(), 67, "fraud-canary".into(), 33)),
        "5 ready new pods beside 10 previous ones"
    );
    assert_eq!(
        r.rollout().phase,
        RolloutPhase::Baking,
        "even without a bake window"
    );
    let p = r.step(30, ObservedEvidence::default(), &[&old, &new]);
    assert!(
        !applied_kinds(&p).iter().any(|a| a.contains("delete")),
        "the previous revision stays until the new one is at full size"
    );
    let p = r.step(30, ObservedEvidence::default(), &[&old, &new]);
    assert_eq!(reasons(&p), vec![rollout_reason::BAKED]);
    assert_eq!(selects(&p, "fraud"), Some(new.clone()));
    assert_eq!(selects(&p, "fraud-stable"), Some(new.clone()));
    assert_eq!(
        route_weights(&p),
        Some(("fraud-stable".into(), 100, "fraud-canary".into(), 0))
    );
    assert!(applied_kinds(&p).contains(&format!("delete Deployment fraud-{old}")));
}

#[test]
fn a_route_drover_does_not_own_or_a_missing_gateway_api_holds_the_rollout_and_says_why() {
    for (state, why) in [
        (RouteState::Foreign, reason::ROUTE_NOT_OWNED),
        (RouteState::ApiMissing, reason::GATEWAY_API_MISSING),
    ] {
        let mut r = Rig::new(GATEWAY);
        r.observed.route = state;
        let p = r.step(0, ObservedEvidence::default(), &[]);
        assert!(
            !applied_kinds(&p).iter().any(|a| a.contains("HTTPRoute")),
            "never written: {:?}",
            applied_kinds(&p)
        );
        assert!(p.status.rollout.is_none(), "no canary starts");
        let stalled = conditions::get(&p.status.conditions, crate::conditions::STALLED).unwrap();
        assert_eq!(stalled.reason, why);
        assert!(p.notices.iter().any(|n| n.reason == why && n.warning));
    }
}

#[test]
fn a_gateway_that_refuses_the_route_degrades_with_its_reason() {
    let mut r = Rig::new(GATEWAY);
    if let RouteState::Owned { not_accepted, .. } = &mut r.observed.route {
        *not_accepted = Some((
            "NoMatchingParent".into(),
            "Gateway \"public\" did not accept HTTPRoute fraud: no listener".into(),
        ));
    } else {
        panic!("the rig's route is Drover's: {:?}", r.observed.route);
    }
    let p = r.step(0, ObservedEvidence::default(), &[&r.old.clone()]);
    let degraded = conditions::get(&p.status.conditions, DEGRADED).unwrap();
    assert_eq!(degraded.status, ConditionStatus::True);
    assert_eq!(degraded.reason, reason::ROUTE_NOT_ACCEPTED);
    assert!(
        degraded.message.contains("NoMatchingParent"),
        "{}",
        degraded.message
    );
}

#[test]
fn reports_that_do_not_arrive_say_why_once_and_freeze_the_step() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());
    r.step(0, ObservedEvidence::default(), &[&old]);
    let p = r.step(30, healthy(), &[&old, &new]);
    let c = conditions::get(&p.status.conditions, crate::conditions::REPORTS_AVAILABLE).unwrap();
    assert_eq!(c.status, ConditionStatus::True);
    let unreachable = ObservedEvidence {
        problem: Some(CollectionProblem::Unreachable {
            revision: new.clone(),
            pods: 1,
        }),
        ..ObservedEvidence::default()
    };
    let p = r.step(30, unreachable.clone(), &[&old, &new]);
    let c = conditions::get(&p.status.conditions, crate::conditions::REPORTS_AVAILABLE).unwrap();
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(c.reason, reason::MONITORS_UNREACHABLE);
    assert!(c.message.contains("9090"), "{}", c.message);
    assert_eq!(reasons(&p), vec![reason::MONITORS_UNREACHABLE]);
    assert!(p.notices[0].warning);
    let p = r.step(30, unreachable, &[&old, &new]);
    assert!(p.notices.is_empty(), "said once: {:?}", p.notices);
    assert_eq!(
        r.rollout().phase,
        RolloutPhase::Progressing,
        "frozen, not failed"
    );
    let p = r.step(
        30,
        ObservedEvidence {
            problem: Some(CollectionProblem::TokenMissing),
            ..ObservedEvidence::default()
        },
        &[&old, &new],
    );
    let missing = p
        .notices
        .iter()
        .find(|n| n.reason == reason::MONITOR_TOKEN_MISSING)
        .unwrap();
    assert!(missing.warning && missing.note.contains("fraud-monitor-token"));
}

#[test]
fn a_share_few_replicas_cannot_give_is_announced_once_with_what_to_do() {
    let mut r = Rig::new("  replicas: 2\n  rollout: {steps: [10, 50], interval: 1m}\n");
    let old = r.old.clone();
    let p = r.step(0, ObservedEvidence::default(), &[&old]);
    let warning = p
        .notices
        .iter()
        .find(|n| n.reason == canary_reason::WEIGHT_APPROXIMATED)
        .expect("announced");
    assert!(warning.warning);
    assert!(
        warning.note.contains("asks 10%") && warning.note.contains("33%"),
        "{}",
        warning.note
    );
    assert!(warning.note.contains("GatewayAPI"));
    let p = r.step(30, ObservedEvidence::default(), &[&old]);
    assert!(
        p.notices
            .iter()
            .all(|n| n.reason != canary_reason::WEIGHT_APPROXIMATED),
        "once per step"
    );
}

#[test]
fn a_bake_breach_never_points_traffic_at_a_revision_that_is_gone() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());
    r.step(0, ObservedEvidence::default(), &[&old]);
    r.step(30, healthy(), &[&old, &new]);
    r.step(30, healthy(), &[&old, &new]);
    r.step(60, healthy(), &[&old]);
    r.step(30, healthy(), &[&old, &new]);
    r.step(30, healthy(), &[&old, &new]);
    r.step(60, healthy(), &[&old, &new]);
    assert_eq!(r.rollout().phase, RolloutPhase::Baking);
    // Someone deleted the previous revision's Deployment; then the SLO is breached.
    r.observed.revisions.retain(|d| d.hash != old);
    let p = r.step(30, bake(report(540, 60, 20.0)), &[&new]);
    assert!(
        !p.notices
            .iter()
            .any(|n| n.reason == rollout_reason::BAKE_ROLLBACK),
        "{:?}",
        p.notices
    );
    assert_eq!(p.status.stable.as_ref().unwrap().hash, new, "traffic stays");
    assert!(
        !applied_kinds(&p)
            .iter()
            .any(|a| a.contains("apply Service"))
    );
}

#[test]
fn a_profile_deleted_mid_canary_stalls_without_tearing_the_canary_down() {
    let mut r = Rig::new(STEPS);
    let (old, new) = (r.old.clone(), r.new.clone());
    r.step(0, ObservedEvidence::default(), &[&old]);
    r.step(30, healthy(), &[&old, &new]);
    r.observed.reference = ReferenceState::MissingConfigMap;
    let p = r.step(30, healthy(), &[&old, &new]);
    assert!(
        !applied_kinds(&p).iter().any(|a| a.starts_with("delete")),
        "{:?}",
        applied_kinds(&p)
    );
    assert_eq!(r.rollout().phase, RolloutPhase::Progressing);
    let stalled = conditions::get(&p.status.conditions, crate::conditions::STALLED).unwrap();
    assert_eq!(stalled.status, ConditionStatus::True);
    assert_eq!(stalled.reason, reason::REFERENCE_NOT_FOUND);
}

#[test]
fn leaving_gateway_api_mode_removes_the_route_and_its_services() {
    let mut r = Rig::new(GATEWAY);
    assert!(matches!(r.observed.route, RouteState::Owned { .. }));
    assert_eq!(r.observed.side_services.len(), 2);
    r.m.spec.rollout.traffic.mode = crate::api::TrafficMode::Replicas;
    let p = r.step(10, ObservedEvidence::default(), &[&r.old.clone()]);
    let kinds = applied_kinds(&p);
    for k in [
        "delete Service fraud-stable",
        "delete Service fraud-canary",
        "delete HTTPRoute fraud",
    ] {
        assert!(kinds.contains(&k.to_string()), "{kinds:?}");
    }
}

#[test]
fn stables_hpa_moving_mid_step_resizes_the_canary_without_restarting_the_step() {
    let mut r = Rig::new(
        "  autoscaling: {minReplicas: 2, maxReplicas: 20}\n  rollout: {steps: [50], interval: 5m}\n",
    );
    let (old, new) = (r.old.clone(), r.new.clone());
    r.observed
        .revisions
        .iter_mut()
        .for_each(|d| d.replicas = Some(6));
    r.step(0, ObservedEvidence::default(), &[&old]);
    r.step(30, healthy(), &[&old, &new]);
    r.step(30, healthy(), &[&old, &new]);
    let opened = r.rollout().step_started_at.clone();
    assert!(opened.is_some());
    // The HPA scales stable to 8: the canary follows, the step's window stays.
    r.observed
        .revisions
        .iter_mut()
        .filter(|d| d.hash == old)
        .for_each(|d| d.replicas = Some(8));
    let p = r.step(30, healthy(), &[&old]);
    assert!(applied_kinds(&p).contains(&format!("scale fraud-{new} 8")));
    assert_eq!(r.rollout().step_started_at, opened);
    let p = r.step(30, healthy(), &[&old, &new]);
    assert_eq!(r.rollout().step_started_at, opened);
    assert!(
        p.notices
            .iter()
            .all(|n| n.reason != rollout_reason::DEADLINE)
    );
}

#[test]
fn a_network_policy_someone_else_owns_is_left_alone_and_said() {
    let mut r = Rig::new(STEPS);
    r.observed.network_policy = Some(ObservedChild {
        name: "fraud".into(),
        spec_hash: None,
        foreign: true,
    });
    let p = r.step(10, ObservedEvidence::default(), &[&r.old.clone()]);
    assert!(
        !applied_kinds(&p)
            .iter()
            .any(|a| a.contains("NetworkPolicy"))
    );
    let degraded = conditions::get(&p.status.conditions, DEGRADED).unwrap();
    assert_eq!(degraded.reason, reason::NETWORK_POLICY_NOT_OWNED);
}
