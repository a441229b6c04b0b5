//! Table-style tests of the planner: feed objects in, assert the actions and status out.

use std::time::Duration;

use jiff::Timestamp;

use super::*;
use crate::api::{ConditionStatus, ModelDeployment, Phase};
use crate::build::{Child, ChildKind};
use crate::conditions::{self, DEGRADED, IMMEDIATE_FALLBACK, PROGRESSING, READY, STALLED};
use crate::revision::revision_of;

pub(super) fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

/// Tests of the immediate strategy say so (the default is a canary).
const IMMEDIATE: &str = "  rollout: {strategy: Immediate}\n";

pub(super) fn md(extra: &str) -> ModelDeployment {
    let yaml = format!(
        "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: u-1, generation: 1}}\nspec:\n  model: {{version: '1.0.0', image: 'fraud:1.0.0'}}\n{extra}"
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

pub(super) fn with_version(mut m: ModelDeployment, version: &str) -> ModelDeployment {
    m.spec.model.version = version.into();
    m.spec.model.image = format!("fraud:{version}");
    m.metadata.generation = Some(m.metadata.generation.unwrap_or(1) + 1);
    m
}

/// The observed state after the plan's applies landed, with every revision as `ready` says.
pub(super) fn apply_plan(observed: &Observed, plan: &Plan, complete: &[&str]) -> Observed {
    let mut next = observed.clone();
    for action in &plan.actions {
        match action {
            Action::Apply(Child::Deployment(d)) => {
                let name = d.metadata.name.clone().unwrap();
                let hash =
                    d.metadata.labels.as_ref().unwrap()[crate::naming::LABEL_REVISION].clone();
                // An apply without replicas leaves the count as it was (the scale manager's).
                let before = next.revisions.iter().find(|r| r.name == name).cloned();
                let before = before.as_ref();
                let replicas = d
                    .spec
                    .as_ref()
                    .unwrap()
                    .replicas
                    .or(before.and_then(|b| b.replicas));
                next.revisions.retain(|r| r.name != name);
                next.revisions.push(ObservedRevision {
                    name,
                    hash,
                    version: d.metadata.labels.as_ref().unwrap()[crate::naming::LABEL_VERSION]
                        .clone(),
                    spec_hash: Child::Deployment(d.clone()).spec_hash().map(str::to_string),
                    monitor_image: None,
                    model_files: d.metadata.annotations.as_ref().is_some_and(|a| {
                        a.contains_key(crate::build::deployment::ANNOTATION_MODEL_FILES)
                    }),
                    replicas: replicas.or(Some(1)),
                    // A Deployment that existed keeps serving while it changes size.
                    ready_replicas: before.map(|b| b.ready_replicas).unwrap_or(0),
                    complete: false,
                    available: before.is_some_and(|b| b.available),
                });
            }
            Action::Apply(Child::Service(s)) if s.metadata.name.as_deref() != Some("fraud") => {
                let name = s.metadata.name.clone().unwrap();
                next.side_services.retain(|o| o.name != name);
                next.side_services.push(ObservedChild {
                    name,
                    spec_hash: Child::Service(s.clone()).spec_hash().map(str::to_string),
                    foreign: false,
                });
            }
            Action::Apply(c @ Child::NetworkPolicy(_)) => {
                next.network_policy = Some(ObservedChild {
                    name: c.reference().name,
                    spec_hash: c.spec_hash().map(str::to_string),
                    foreign: false,
                });
            }
            Action::Apply(c @ Child::Route(_)) => {
                next.route = RouteState::Owned {
                    spec_hash: c.spec_hash().map(str::to_string),
                    not_accepted: None,
                };
            }
            Action::Apply(Child::Service(s)) => {
                next.service = Some(ObservedService {
                    spec_hash: Child::Service(s.clone()).spec_hash().map(str::to_string),
                    serving_revision: s
                        .spec
                        .as_ref()
                        .unwrap()
                        .selector
                        .as_ref()
                        .unwrap()
                        .get(crate::naming::LABEL_REVISION)
                        .or(s
                            .metadata
                            .annotations
                            .as_ref()
                            .unwrap()
                            .get(crate::build::service::ANNOTATION_STABLE_REVISION))
                        .cloned(),
                });
            }
            Action::Apply(Child::Autoscaler(h)) => {
                next.autoscaler = Some(ObservedAutoscaler {
                    spec_hash: Child::Autoscaler(h.clone()).spec_hash().map(str::to_string),
                    target: h.spec.as_ref().unwrap().scale_target_ref.name.clone(),
                });
            }
            Action::Scale {
                deployment,
                replicas,
            } => {
                if let Some(r) = next.revisions.iter_mut().find(|r| &r.name == deployment) {
                    r.replicas = Some(*replicas);
                }
            }
            Action::Delete(r) => match r.kind {
                ChildKind::Deployment => next.revisions.retain(|d| d.name != r.name),
                ChildKind::Service if r.name == "fraud" => next.service = None,
                ChildKind::Service => next.side_services.retain(|s| s.name != r.name),
                ChildKind::Autoscaler => next.autoscaler = None,
                ChildKind::NetworkPolicy => next.network_policy = None,
                ChildKind::Route => next.route = RouteState::Absent,
                ChildKind::Job => next.retraining.jobs.retain(|j| j.name != r.name),
                ChildKind::CronJob => next.retraining.cron_job = None,
            },
            Action::Apply(c @ Child::CronJob(_)) => {
                next.retraining.cron_job = Some(ObservedChild {
                    name: c.reference().name,
                    spec_hash: c.spec_hash().map(str::to_string),
                    foreign: false,
                });
            }
            Action::CreateJob(job) => {
                next.retraining.jobs.push(crate::retrain::ObservedJob {
                    name: job.metadata.name.clone().unwrap(),
                    started: now_of(plan),
                    reason: Some(crate::retrain::TriggerReason::Drift),
                    outcome: crate::retrain::JobOutcome::Running,
                });
            }
            Action::DeployCandidate(_) => {}
        }
    }
    for r in &mut next.revisions {
        if complete.contains(&r.hash.as_str()) {
            r.complete = true;
            r.available = true;
            r.ready_replicas = r.replicas.unwrap_or(1);
        }
    }
    next
}

/// When a plan's Job was started: the time its status recorded.
fn now_of(plan: &Plan) -> Timestamp {
    plan.status
        .retraining
        .as_ref()
        .and_then(|r| r.active.as_ref())
        .and_then(|a| a.started.as_ref())
        .map(|t| t.0)
        .unwrap_or(Timestamp::UNIX_EPOCH)
}

pub(super) fn applied_kinds(plan: &Plan) -> Vec<String> {
    plan.actions
        .iter()
        .map(|a| match a {
            Action::Apply(c) => format!(
                "apply {} {}",
                c.reference().kind.as_str(),
                c.reference().name
            ),
            Action::Scale {
                deployment,
                replicas,
            } => format!("scale {deployment} {replicas}"),
            Action::Delete(r) => format!("delete {} {}", r.kind.as_str(), r.name),
            Action::CreateJob(j) => {
                format!("create Job {}", j.metadata.name.clone().unwrap_or_default())
            }
            Action::DeployCandidate(m) => format!("deploy candidate {}", m.version),
        })
        .collect()
}

/// What the planner observes of a model whose reference profile was found.
pub(super) fn observed_with_profile(profile: crate::profile::ReferenceProfile) -> Observed {
    Observed {
        reference: ReferenceState::Found,
        evidence: ObservedEvidence {
            profile: Some(std::sync::Arc::new(profile)),
            ..ObservedEvidence::default()
        },
        ..Observed::default()
    }
}

pub(super) fn settle(m: &mut ModelDeployment, observed: &Observed, now: Timestamp) -> Plan {
    let p = plan(m, observed, &Settings::default(), now);
    m.status = Some(p.status.clone());
    p
}

#[test]
fn first_revision_creates_deployment_and_service_then_becomes_stable() {
    let mut m = md("");
    let rev = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    assert_eq!(
        applied_kinds(&p),
        vec![
            format!("apply Deployment fraud-{rev}"),
            "apply Service fraud".to_string(),
            "apply NetworkPolicy fraud".to_string()
        ]
    );
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert_eq!(p.status.observed_generation, Some(1));
    assert!(conditions::is_true(&p.status.conditions, PROGRESSING));
    assert!(!conditions::is_true(&p.status.conditions, READY));
    assert_eq!(p.notices[0].reason, reason::ROLLOUT_STARTED);

    // Created, Service pointing at it, pods not ready yet: still rolling out, nothing new.
    let starting = apply_plan(&Observed::default(), &p, &[]);
    let p = settle(&mut m, &starting, at(10));
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert!(p.status.stable.is_none(), "not stable before it is ready");
    assert!(p.notices.is_empty(), "{:?}", p.notices);
    // Even with status lost, a not-ready revision the Service selects is not called stable.
    let mut lost = m.clone();
    lost.status = None;
    assert!(
        plan(&lost, &starting, &Settings::default(), at(11))
            .status
            .stable
            .is_none()
    );

    let observed = apply_plan(&starting, &p, &[&rev]);
    let p = settle(&mut m, &observed, at(30));
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    assert_eq!(p.status.phase, Some(Phase::Healthy));
    assert_eq!(p.status.stable.as_ref().unwrap().hash, rev);
    assert!(p.status.canary.is_none());
    assert!(conditions::is_true(&p.status.conditions, READY));
    assert!(!conditions::is_true(&p.status.conditions, PROGRESSING));
    assert_eq!(
        p.notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
        vec![reason::ROLLOUT_COMPLETE]
    );

    // Unchanged: no action, the same status, no notice.
    let again = plan(&m, &observed, &Settings::default(), at(90));
    assert!(again.actions.is_empty());
    assert_eq!(Some(&again.status), m.status.as_ref());
    assert!(again.notices.is_empty());
}

#[test]
fn a_new_version_comes_up_beside_stable_and_replaces_it_once_complete() {
    let mut m = md(IMMEDIATE);
    let old = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let observed = apply_plan(&Observed::default(), &p, &[&old]);
    settle(&mut m, &observed, at(10));

    let mut m = with_version(m, "1.1.0");
    let new = revision_of(&m.spec);
    assert_ne!(old, new);
    let p = settle(&mut m, &observed, at(20));
    assert_eq!(
        applied_kinds(&p),
        vec![format!("apply Deployment fraud-{new}")],
        "Service keeps stable"
    );
    assert_eq!(p.status.stable.as_ref().unwrap().hash, old);
    assert_eq!(p.status.stable.as_ref().unwrap().version, "1.0.0");
    assert_eq!(p.status.canary.as_ref().unwrap().hash, new);
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    assert!(
        conditions::is_true(&p.status.conditions, READY),
        "stable still serves"
    );

    let observed = apply_plan(&observed, &p, &[&old]);
    let p = settle(&mut m, &observed, at(30));
    assert!(p.actions.is_empty(), "waiting: {:?}", applied_kinds(&p));

    let observed = apply_plan(&observed, &p, &[&old, &new]);
    let p = settle(&mut m, &observed, at(40));
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            format!("delete Deployment fraud-{old}")
        ]
    );
    assert_eq!(p.status.stable.as_ref().unwrap().hash, new);
    assert_eq!(p.status.stable.as_ref().unwrap().version, "1.1.0");
    assert!(p.status.canary.is_none());
    assert_eq!(p.status.phase, Some(Phase::Healthy));
}

#[test]
fn under_autoscaling_replicas_are_never_applied_and_the_hpa_moves_after_completion() {
    let mut m = md(&format!(
        "{IMMEDIATE}  autoscaling: {{minReplicas: 2, maxReplicas: 10}}\n"
    ));
    let old = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    for a in &p.actions {
        if let Action::Apply(Child::Deployment(d)) = a {
            assert_eq!(d.spec.as_ref().unwrap().replicas, None, "HPA owns replicas");
        }
    }
    assert!(applied_kinds(&p).contains(&"apply HorizontalPodAutoscaler fraud".to_string()));
    let mut observed = apply_plan(&Observed::default(), &p, &[&old]);
    // The HPA scaled stable to 6.
    observed.revisions[0].replicas = Some(6);
    settle(&mut m, &observed, at(10));

    let mut m = with_version(m, "2.0.0");
    let new = revision_of(&m.spec);
    let p = settle(&mut m, &observed, at(20));
    // Created without replicas, then started at stable's current count by the scale manager.
    assert_eq!(
        applied_kinds(&p),
        vec![
            format!("apply Deployment fraud-{new}"),
            format!("scale fraud-{new} 6")
        ]
    );
    let observed = apply_plan(&observed, &p, &[&old]);
    let p = settle(&mut m, &observed, at(25));
    assert!(
        p.actions.is_empty(),
        "no repeated scale: {:?}",
        applied_kinds(&p)
    );
    let observed = apply_plan(&observed, &p, &[&old, &new]);
    let p = settle(&mut m, &observed, at(30));
    assert_eq!(
        applied_kinds(&p),
        vec![
            "apply Service fraud".to_string(),
            "apply HorizontalPodAutoscaler fraud".to_string(),
            format!("delete Deployment fraud-{old}")
        ]
    );
    let hpa_target = p.actions.iter().find_map(|a| match a {
        Action::Apply(Child::Autoscaler(h)) => {
            Some(h.spec.as_ref().unwrap().scale_target_ref.name.clone())
        }
        _ => None,
    });
    assert_eq!(hpa_target, Some(format!("fraud-{new}")));
}

#[test]
fn turning_autoscaling_on_hands_replicas_over_before_dropping_them() {
    let mut m = md("  replicas: 4\n");
    let rev = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let observed = apply_plan(&Observed::default(), &p, &[&rev]);
    settle(&mut m, &observed, at(10));
    m.spec.autoscaling = serde_saphyr::from_str("{minReplicas: 2, maxReplicas: 10}").unwrap();
    let p = settle(&mut m, &observed, at(20));
    assert_eq!(
        applied_kinds(&p),
        vec![
            format!("scale fraud-{rev} 4"),
            format!("apply Deployment fraud-{rev}"),
            "apply HorizontalPodAutoscaler fraud".to_string()
        ],
        "the scale manager must co-own replicas before the main apply drops them"
    );
    // Turning it off again: replicas back in the apply, HPA deleted.
    let observed = apply_plan(&observed, &p, &[&rev]);
    m.spec.autoscaling = None;
    let p = settle(&mut m, &observed, at(30));
    assert_eq!(
        applied_kinds(&p),
        vec![
            format!("apply Deployment fraud-{rev}"),
            "delete HorizontalPodAutoscaler fraud".to_string()
        ]
    );
}

#[test]
fn an_invalid_spec_changes_nothing_and_says_why() {
    let mut m = md("");
    let rev = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let observed = apply_plan(&Observed::default(), &p, &[&rev]);
    settle(&mut m, &observed, at(10));
    m.spec.rollout.interval = crate::api::GoDuration::new("soon");
    let p = settle(&mut m, &observed, at(20));
    assert!(p.actions.is_empty());
    assert!(conditions::is_true(&p.status.conditions, STALLED));
    assert!(conditions::is_true(&p.status.conditions, DEGRADED));
    assert!(
        conditions::is_true(&p.status.conditions, READY),
        "stable keeps serving"
    );
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert!(
        p.status
            .message
            .as_ref()
            .unwrap()
            .contains("spec.rollout.interval")
    );
    assert_eq!(p.notices.len(), 1);
    assert_eq!(p.notices[0].reason, reason::INVALID_SPEC);
    assert!(p.requeue_after.is_none(), "waits for a change, no hot loop");
    // Same invalid spec again: no second notice.
    assert!(
        plan(&m, &observed, &Settings::default(), at(30))
            .notices
            .is_empty()
    );
}

#[test]
fn a_missing_reference_profile_blocks_the_new_revision_and_retries_slowly() {
    let mut m = md("  monitoring: {reference: {configMapRef: {name: fraud-ref}}}\n");
    let observed = Observed {
        reference: ReferenceState::MissingConfigMap,
        ..Observed::default()
    };
    let p = settle(&mut m, &observed, at(0));
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    let stalled = conditions::get(&p.status.conditions, STALLED).unwrap();
    assert_eq!(stalled.reason, reason::REFERENCE_NOT_FOUND);
    assert!(stalled.message.contains("fraud-ref"));
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.requeue_after, Some(MISSING_REFERENCE_RETRY));
    let found = Observed {
        reference: ReferenceState::Found,
        ..Observed::default()
    };
    let p = settle(&mut m, &found, at(10));
    assert_eq!(p.actions.len(), 3, "Deployment, Service, NetworkPolicy");
    assert_eq!(
        conditions::get(&p.status.conditions, STALLED)
            .unwrap()
            .status,
        ConditionStatus::False
    );
}

#[test]
fn progress_deadline_stalls_with_a_reason_and_keeps_stable() {
    let mut m = md("  rollout: {strategy: Immediate, progressDeadline: 5m}\n");
    let old = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let observed = apply_plan(&Observed::default(), &p, &[&old]);
    settle(&mut m, &observed, at(10));
    let mut m = with_version(m, "1.1.0");
    let p = settle(&mut m, &observed, at(100));
    assert_eq!(p.requeue_after, Some(Duration::from_secs(300)));
    let observed = apply_plan(&observed, &p, &[&old]);
    let p = settle(&mut m, &observed, at(250));
    assert_eq!(
        p.requeue_after,
        Some(Duration::from_secs(150)),
        "deadline counts from the start"
    );
    let p = settle(&mut m, &observed, at(401));
    let stalled = conditions::get(&p.status.conditions, STALLED).unwrap();
    assert_eq!(stalled.reason, reason::PROGRESS_DEADLINE);
    assert!(stalled.message.contains("5m"), "{}", stalled.message);
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert_eq!(p.status.stable.as_ref().unwrap().hash, old);
    assert!(
        p.notices
            .iter()
            .any(|n| n.reason == reason::PROGRESS_DEADLINE && n.warning)
    );
}

#[test]
fn lost_status_is_recovered_from_the_objects() {
    let mut m = md(IMMEDIATE);
    let old = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let observed = apply_plan(&Observed::default(), &p, &[&old]);
    let mut m = with_version(m, "1.1.0");
    m.status = None;
    let p = plan(&m, &observed, &Settings::default(), at(10));
    assert_eq!(
        p.status.stable.as_ref().unwrap().hash,
        old,
        "the Service's selector tells"
    );
    assert!(
        !applied_kinds(&p)
            .iter()
            .any(|a| a.starts_with("apply Service")),
        "traffic stays on stable"
    );
}

#[test]
fn stale_revisions_are_deleted_and_an_old_fallback_condition_goes() {
    let mut m = md("");
    let rev = revision_of(&m.spec);
    let stray = ObservedRevision {
        name: "fraud-0000000000".into(),
        hash: "0000000000".into(),
        ..ObservedRevision::default()
    };
    let observed = Observed {
        revisions: vec![stray],
        ..Observed::default()
    };
    // Written by a Drover from before the canary engine.
    let mut status = ModelDeploymentStatus::default();
    conditions::set(
        &mut status.conditions,
        IMMEDIATE_FALLBACK,
        ConditionStatus::True,
        "CanaryNotImplemented",
        "",
        Some(1),
        at(0),
    );
    m.status = Some(status);
    let p = settle(&mut m, &observed, at(0));
    assert!(applied_kinds(&p).contains(&"delete Deployment fraud-0000000000".to_string()));
    assert!(applied_kinds(&p).contains(&format!("apply Deployment fraud-{rev}")));
    assert!(conditions::get(&p.status.conditions, IMMEDIATE_FALLBACK).is_none());
}

#[test]
fn a_stable_revision_that_loses_its_pods_is_degraded() {
    let mut m = md("");
    let rev = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let mut observed = apply_plan(&Observed::default(), &p, &[&rev]);
    settle(&mut m, &observed, at(10));
    observed.revisions[0].available = false;
    observed.revisions[0].complete = false;
    let p = settle(&mut m, &observed, at(20));
    assert_eq!(p.status.phase, Some(Phase::Degraded));
    assert!(!conditions::is_true(&p.status.conditions, READY));
    assert!(
        p.notices
            .iter()
            .any(|n| n.reason == reason::STABLE_UNAVAILABLE)
    );
    assert!(
        p.actions.is_empty(),
        "nothing to rewrite: {:?}",
        applied_kinds(&p)
    );
}

const ALIAS: &str = "  model: {version: '1.0.0', image: 'fraud:1.0.0', uri: 'models:/fraud@champion', registry: {trackingUri: 'http://mlflow:5000'}}\n";

/// A spec whose model comes from the registry by alias.
fn aliased(extra: &str) -> ModelDeployment {
    let yaml = format!(
        "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: u-1, generation: 1}}\nspec:\n{ALIAS}{extra}"
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

fn resolved(version: &str) -> RegistryState {
    RegistryState::Resolved {
        version: version.into(),
        location: format!("s3://mlflow/1/models/m-{version}/artifacts"),
    }
}

fn fetch_args_of(p: &Plan) -> Vec<String> {
    p.actions
        .iter()
        .find_map(|a| match a {
            Action::Apply(Child::Deployment(d)) => d
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.init_containers.as_ref())
                .and_then(|c| c.iter().find(|c| c.name == "fetch-model"))
                .and_then(|c| c.args.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

#[test]
fn an_alias_resolves_into_the_revision_and_a_moved_alias_rolls_out_a_new_one() {
    let mut m = aliased(IMMEDIATE);
    let v3 = crate::revision::revision_with(&m.spec, Some("3"));
    let observed = Observed {
        registry: resolved("3"),
        ..Observed::default()
    };
    let p = settle(&mut m, &observed, at(0));
    assert_eq!(applied_kinds(&p)[0], format!("apply Deployment fraud-{v3}"));
    assert!(
        fetch_args_of(&p).contains(&"--registry-version=3".to_string()),
        "the pod fetches the version its revision names: {:?}",
        fetch_args_of(&p)
    );
    let model = p.status.model.clone().unwrap();
    assert_eq!(
        (model.uri.as_str(), model.version.as_str()),
        ("models:/fraud@champion", "3")
    );
    assert!(conditions::is_true(
        &p.status.conditions,
        conditions::MODEL_RESOLVED
    ));
    assert!(
        p.requeue_after.unwrap() <= REGISTRY_POLL,
        "an alias is looked up again"
    );
    let mut observed = apply_plan(&observed, &p, &[&v3]);
    settle(&mut m, &observed, at(10));

    // The alias moves: a new revision comes up beside the running one, announced.
    observed.registry = resolved("4");
    let v4 = crate::revision::revision_with(&m.spec, Some("4"));
    assert_ne!(v3, v4);
    let p = settle(&mut m, &observed, at(20));
    assert_eq!(
        applied_kinds(&p),
        vec![format!("apply Deployment fraud-{v4}")]
    );
    assert!(fetch_args_of(&p).contains(&"--registry-version=4".to_string()));
    assert_eq!(p.status.stable.as_ref().unwrap().hash, v3);
    assert_eq!(p.status.canary.as_ref().unwrap().hash, v4);
    assert!(
        p.notices
            .iter()
            .any(|n| n.reason == reason::MODEL_RESOLVED && n.note.contains("version 4 (was 3)")),
        "{:?}",
        p.notices
    );
}

#[test]
fn a_registry_that_is_down_keeps_the_last_resolution() {
    let mut m = aliased(IMMEDIATE);
    let v3 = crate::revision::revision_with(&m.spec, Some("3"));
    let observed = Observed {
        registry: resolved("3"),
        ..Observed::default()
    };
    let p = settle(&mut m, &observed, at(0));
    let mut observed = apply_plan(&observed, &p, &[&v3]);
    settle(&mut m, &observed, at(10));

    observed.registry = RegistryState::Unresolved {
        transient: true,
        message: "MLflow registry http://mlflow:5000 is unavailable: cannot connect".into(),
    };
    let p = settle(&mut m, &observed, at(20));
    assert!(p.actions.is_empty(), "{:?}", applied_kinds(&p));
    assert_eq!(p.status.stable.as_ref().unwrap().hash, v3);
    assert_eq!(p.status.model.as_ref().unwrap().version, "3");
    let c = conditions::get(&p.status.conditions, conditions::MODEL_RESOLVED).unwrap();
    assert_eq!(
        (c.status, c.reason.as_str()),
        (ConditionStatus::False, reason::REGISTRY_UNAVAILABLE)
    );
    assert!(c.message.contains("keeping version 3"), "{}", c.message);
    assert!(!conditions::is_true(&p.status.conditions, STALLED));
    assert_eq!(
        p.notices.iter().map(|n| n.reason).collect::<Vec<_>>(),
        vec![reason::REGISTRY_UNAVAILABLE]
    );
    // Still down: no new Event.
    let p = settle(&mut m, &observed, at(30));
    assert!(p.notices.is_empty(), "{:?}", p.notices);
}

#[test]
fn a_uri_that_cannot_be_resolved_stalls_with_a_condition_and_an_event() {
    let mut m = aliased(IMMEDIATE);
    let observed = Observed {
        registry: RegistryState::Unresolved {
            transient: false,
            message: "MLflow registry http://mlflow:5000: alias \"champion\" of model \"fraud\" not found: Registered model alias champion not found.".into(),
        },
        ..Observed::default()
    };
    let p = settle(&mut m, &observed, at(0));
    assert!(
        !applied_kinds(&p).iter().any(|a| a.contains("Deployment")),
        "no revision starts: {:?}",
        applied_kinds(&p)
    );
    let stalled = conditions::get(&p.status.conditions, STALLED).unwrap();
    assert_eq!(stalled.reason, reason::MODEL_UNRESOLVED);
    assert!(
        stalled
            .message
            .contains("cannot resolve models:/fraud@champion")
    );
    let c = conditions::get(&p.status.conditions, conditions::MODEL_RESOLVED).unwrap();
    assert_eq!(c.status, ConditionStatus::False);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    let event = p
        .notices
        .iter()
        .find(|n| n.reason == reason::MODEL_UNRESOLVED)
        .unwrap();
    assert!(event.warning && event.note.contains("alias \"champion\""));
}

#[test]
fn a_spec_without_a_registry_uri_has_no_model_status() {
    let mut m = md(IMMEDIATE);
    let p = settle(&mut m, &Observed::default(), at(0));
    assert!(p.status.model.is_none());
    assert!(conditions::get(&p.status.conditions, conditions::MODEL_RESOLVED).is_none());
    assert_eq!(
        p.requeue_after,
        plan(&m, &Observed::default(), &Settings::default(), at(0)).requeue_after
    );
}

#[test]
fn a_revision_an_older_drover_built_with_a_uri_is_not_changed_by_the_upgrade() {
    let with_uri = "  model: {version: '1.0.0', image: 'fraud:1.0.0', uri: 's3://models/fraud/1.0.0/'}\n  rollout: {strategy: Immediate}\n";
    let yaml = format!(
        "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: u-1, generation: 1}}\nspec:\n{with_uri}"
    );
    let mut m: ModelDeployment = serde_saphyr::from_str(&yaml).unwrap();
    let rev = revision_of(&m.spec);
    let p = settle(&mut m, &Observed::default(), at(0));
    let mut observed = apply_plan(&Observed::default(), &p, &[&rev]);
    settle(&mut m, &observed, at(10));
    // What an older Drover applied: the uri only passed on as MODEL_URI, no annotation.
    let legacy = crate::build::deployment::build(
        &m,
        &rev,
        Some(1),
        crate::build::deployment::Pins {
            model_files: false,
            ..crate::build::deployment::Pins::new(DEFAULT_MONITOR_IMAGE)
        },
    );
    let template = legacy
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    assert!(
        template
            .init_containers
            .iter()
            .flatten()
            .all(|c| c.name != "fetch-model")
    );
    observed.revisions[0].model_files = false;
    observed.revisions[0].spec_hash = Child::Deployment(Box::new(legacy))
        .spec_hash()
        .map(str::to_string);
    let p = settle(&mut m, &observed, at(20));
    assert!(
        p.actions.is_empty(),
        "the running revision is left as it was: {:?}",
        applied_kinds(&p)
    );
    // The next revision gets the model's files.
    let mut m = with_version(m, "1.1.0");
    let p = settle(&mut m, &observed, at(30));
    assert!(
        fetch_args_of(&p).contains(&"--uri=s3://models/fraud/1.0.0/".to_string()),
        "{:?}",
        applied_kinds(&p)
    );
}
