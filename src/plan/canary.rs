//! The canary strategy in the planner. The rollout machine decides who serves, how many
//! replicas the canary runs and what stays warm; this maps its decision onto children:
//!
//! | rollout phase | Service `<name>` | HPA | stable Deployment | canary Deployment |
//! | --- | --- | --- | --- | --- |
//! | Progressing, Paused | every pod of the model (split) | stable | as is | sized from stable's replicas |
//! | promoted, scaling up | split, named stable = new | previous | as is, warm | scaled to previous's count |
//! | Baking | new only | new | warm, no traffic | full size (the HPA's) |
//! | RolledBack | stable only | stable | as is | 0 replicas, kept |
//!
//! On a rollback the Service is written first: traffic goes back before anything else moves.

use kube::ResourceExt;

use super::{Action, Notice, Planner, reason};
use crate::api::{ConditionStatus, ModelDeploymentStatus, Phase, RolloutPhase, RolloutState};
use crate::build::service::Selection;
use crate::build::{self, Child, ChildKind, ChildRef};
use crate::conditions::{self, DEGRADED, PROGRESSING, RECONCILING, REPORTS_AVAILABLE, STALLED};
use crate::naming;
use crate::rollout::judgement::Evidence;
use crate::rollout::machine::{self, BakeLimits, Controls, RevisionRef, Tick, Timing};
use crate::rollout::weights;
use crate::validate::Validated;

/// Most rollout records kept in status.
pub const HISTORY_LIMIT: usize = 10;

/// Reasons of the conditions the canary path sets.
pub mod canary_reason {
    /// Steps are running.
    pub const PROGRESSING: &str = "CanaryProgressing";
    /// Held by the pause control.
    pub const PAUSED: &str = "CanaryPaused";
    /// Promoted; the previous revision stays warm until the bake window ends.
    pub const BAKING: &str = "Baking";
    /// The canary was rolled back; stable serves.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// Replica-ratio traffic gives a share far from the step's.
    pub const WEIGHT_APPROXIMATED: &str = "CanaryWeightApproximated";
}

/// Percentage points between requested and actual weight worth a warning.
pub const WEIGHT_TOLERANCE: i32 = 10;

/// Whether a rollout in flight is the canary path's to plan: the spec asks for a canary, a
/// revision serves, and either another revision is asked for or the promoted one still bakes.
pub(super) fn in_flight(old: &ModelDeploymentStatus, stable: Option<&str>, target: &str) -> bool {
    match stable {
        None => false,
        Some(s) if s != target => true,
        Some(_) => old
            .rollout
            .as_ref()
            .is_some_and(|r| r.revision == target && r.phase == RolloutPhase::Baking),
    }
}

impl Planner<'_> {
    /// Plans one tick of a canary rollout from `stable` to `target`.
    pub(super) fn roll_out_canary(
        &mut self,
        old: &ModelDeploymentStatus,
        valid: &Validated,
        stable: &str,
        target: &str,
    ) {
        let md = self.md;
        let spec = &md.spec;
        self.canary = true;
        let stable_observed = self.observed_revision(stable).cloned();
        // Stable's replicas are the HPA's choice under autoscaling, else the spec's.
        let stable_replicas = stable_observed
            .as_ref()
            .and_then(|o| o.replicas)
            .unwrap_or(spec.replicas);
        let target_ref = RevisionRef {
            hash: target.to_string(),
            version: spec.model.version.clone(),
        };
        let stable_ref = RevisionRef {
            hash: stable.to_string(),
            version: old
                .stable
                .as_ref()
                .filter(|s| s.hash == stable)
                .map(|s| s.version.clone())
                .or(stable_observed.as_ref().map(|o| o.version.clone()))
                .unwrap_or_default(),
        };
        let state = old.rollout.as_ref();
        let split = weights::Split::from(spec.rollout.traffic.mode);
        // The canary counts as up only at the size the current step asks for.
        let canary_available = state
            .filter(|s| s.revision == target)
            .filter(|s| matches!(s.phase, RolloutPhase::Progressing | RolloutPhase::Paused))
            .map(|s| split.canary_replicas(stable_replicas, s.requested_weight))
            .zip(self.observed_revision(target))
            .is_some_and(|(want, o)| o.replicas == Some(want) && o.complete);
        let controls = Controls::from_annotations(md.annotations());
        let warm = state
            .filter(|s| s.revision == target && s.phase == RolloutPhase::Baking)
            .and_then(|s| s.previous.as_deref())
            .filter(|w| self.observed_revision(w).is_some());
        let (_, promoted_full) = self.full_size(target, warm, stable_replicas);
        let evidence = &self.observed.evidence;
        let tick = Tick {
            steps: &spec.rollout.steps,
            max_failed_checks: spec.rollout.max_failed_checks,
            timing: Timing::of(valid),
            analysis: &spec.rollout.analysis,
            max_latency_p99: valid.max_latency_p99.as_secs_f64(),
            bake: BakeLimits::of(spec, valid),
            target: &target_ref,
            stable: Some(&stable_ref),
            state,
            canary_available,
            evidence: Evidence {
                canary: evidence.canary.as_ref(),
                stable: evidence.stable.as_ref(),
                profile: evidence.profile.as_deref(),
            },
            bake_window: evidence.bake.as_ref(),
            bake_breach: crate::watch::performance_breach(
                md.spec.monitoring.performance.as_ref(),
                evidence.bake.as_ref(),
            )
            .flatten(),
            stable_replicas,
            split,
            promoted_full,
            previous_present: warm.is_some(),
            controls: &controls,
            now: self.now,
        };
        let decision = machine::tick(&tick);
        self.judgement = decision.judgement.clone();
        for a in &decision.announcements {
            self.announcements.push(Notice {
                warning: a.warning,
                reason: a.reason,
                note: a.note.clone(),
            });
        }
        let serving = decision
            .stable
            .clone()
            .unwrap_or_else(|| stable.to_string());
        let next = decision.state.clone();
        self.approximated_weight(state, next.as_ref(), stable_replicas, split);

        if serving == target {
            self.promoted_children(target, decision.keep_warm.as_deref(), stable_replicas);
        } else {
            let weight = next
                .as_ref()
                .filter(|s| s.revision == target)
                .map(|s| s.actual_weight)
                .unwrap_or(0);
            self.split_children(&serving, target, decision.canary_replicas, weight);
        }

        // Status.
        let running = next.as_ref().filter(|s| {
            s.revision == target
                && serving != target
                && matches!(s.phase, RolloutPhase::Progressing | RolloutPhase::Paused)
        });
        let canary_weight = running.map(|s| s.actual_weight).unwrap_or(0);
        let mut stable_status = self.revision_status(&serving, old);
        stable_status.weight = Some(100 - canary_weight);
        stable_status.since = old
            .stable
            .as_ref()
            .filter(|s| s.hash == serving)
            .and_then(|s| s.since.clone())
            .or(Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                self.now,
            )));
        self.status.stable = Some(stable_status);
        self.status.canary = running.map(|s| {
            let mut r = self.revision_status(target, old);
            r.weight = Some(s.actual_weight);
            r.since = s.started_at.clone();
            r
        });
        if let Some(record) = decision.record.clone() {
            self.status.history.insert(0, record);
            self.status.history.truncate(HISTORY_LIMIT);
        }
        self.canary_conditions(next.as_ref(), valid);
        self.status.rollout = next;
        self.ready_condition();
    }

    /// Replica-ratio traffic cannot give every share with few replicas (one canary pod beside
    /// two stable ones is 33%, whatever was asked): said once per step, with what to do.
    fn approximated_weight(
        &mut self,
        before: Option<&RolloutState>,
        after: Option<&RolloutState>,
        stable_replicas: i32,
        split: weights::Split,
    ) {
        let Some(after) = after.filter(|s| {
            matches!(s.phase, RolloutPhase::Progressing) && split == weights::Split::Replicas
        }) else {
            return;
        };
        let new_step = before.is_none_or(|b| {
            b.revision != after.revision
                || b.step != after.step
                || b.phase != RolloutPhase::Progressing
        });
        let gap = (after.actual_weight - after.requested_weight).abs();
        if new_step && gap >= WEIGHT_TOLERANCE {
            let canary = split.canary_replicas(stable_replicas, after.requested_weight);
            self.announcements.push(Notice {
                warning: true,
                reason: canary_reason::WEIGHT_APPROXIMATED,
                note: format!(
                    "step {} asks {}% but {canary} canary pod(s) beside {stable_replicas} stable give {}%: raise spec.replicas (or the HPA's minReplicas), or use spec.rollout.traffic.mode GatewayAPI for exact weights",
                    after.step, after.requested_weight, after.actual_weight
                ),
            });
        }
    }

    /// Before promotion, and after a rollback: stable serves (with the canary beside it while
    /// the canary has replicas).
    fn split_children(&mut self, stable: &str, target: &str, canary_replicas: i32, weight: i32) {
        let md = self.md;
        let gateway = self.gateway_mode();
        let selection = if canary_replicas > 0 && !gateway {
            Selection::Split { stable }
        } else {
            Selection::Revision(stable)
        };
        self.apply_if_changed(Child::Service(Box::new(build::service::build(
            md, selection,
        ))));
        // A route weights the canary only once it has a ready pod: a backend without
        // endpoints would fail its share of requests.
        let canary_ready = self
            .observed_revision(target)
            .is_some_and(|o| o.ready_replicas > 0);
        let canary = (canary_replicas > 0 && canary_ready).then_some((target, weight));
        self.gateway_traffic(Some(stable), canary);
        self.autoscaler_on(Some(stable));
        self.canary_deployment_actions(target, canary_replicas);
        self.reachability();
        self.delete_revisions_except(&[stable, target]);
    }

    /// The promoted revision serves: it is brought to full size next to the previous one,
    /// then takes all the traffic and the HPA, while the previous revision stays warm.
    fn promoted_children(&mut self, target: &str, warm: Option<&str>, stable_replicas: i32) {
        let md = self.md;
        let warm = warm.filter(|w| self.observed_revision(w).is_some());
        let (previous_replicas, target_full) = self.full_size(target, warm, stable_replicas);
        let gateway = self.gateway_mode();
        let selection = match warm {
            Some(_) if !target_full && !gateway => Selection::Split { stable: target },
            Some(w) if !target_full => Selection::Revision(w),
            _ => Selection::Revision(target),
        };
        self.apply_if_changed(Child::Service(Box::new(build::service::build(
            md, selection,
        ))));
        match warm {
            Some(w) if !target_full => {
                // While the new revision grows, the route follows ready capacity, as the
                // replica split does.
                let ready = |h: &str| {
                    self.observed_revision(h)
                        .map(|o| f64::from(o.ready_replicas.max(0)))
                        .unwrap_or(0.0)
                };
                let (new, old) = (ready(target), ready(w));
                let share = if new + old > 0.0 {
                    (100.0 * new / (new + old)).round() as i32
                } else {
                    0
                };
                self.gateway_traffic(Some(w), Some((target, share)));
            }
            _ => self.gateway_traffic(Some(target), None),
        }
        let hpa_target = match warm {
            Some(w) if !target_full => w,
            _ => target,
        };
        self.autoscaler_on(Some(hpa_target));
        self.deployment_actions(target, hpa_target == target, Some(previous_replicas));
        self.reachability();
        let keep: Vec<&str> = [Some(target), warm].into_iter().flatten().collect();
        self.delete_revisions_except(&keep);
    }

    /// The count the promoted revision `target` must reach (the previous revision's, within the
    /// HPA's bounds; `spec.replicas` without one), and whether it runs at that size (or under
    /// its HPA already).
    fn full_size(&self, target: &str, warm: Option<&str>, stable_replicas: i32) -> (i32, bool) {
        let md = self.md;
        let previous_replicas = warm
            .and_then(|w| self.observed_revision(w))
            .and_then(|o| o.replicas)
            .unwrap_or(stable_replicas);
        let full = match &md.spec.autoscaling {
            None => md.spec.replicas,
            Some(a) => previous_replicas.clamp(a.min_replicas, a.max_replicas.max(a.min_replicas)),
        };
        let target_name = naming::revision_deployment(&md.name_any(), target);
        let hpa_on_target = self
            .observed
            .autoscaler
            .as_ref()
            .is_some_and(|h| h.target == target_name);
        let target_full = self.observed_revision(target).is_some_and(|o| {
            o.complete && (hpa_on_target || o.replicas.is_some_and(|r| r >= full))
        });
        (previous_replicas, target_full)
    }

    /// The canary's Deployment at `replicas`: in Drover's apply without autoscaling; under the
    /// scale field manager with it, so the HPA can take the count over at promotion.
    fn canary_deployment_actions(&mut self, hash: &str, replicas: i32) {
        let md = self.md;
        let observed = self.observed_revision(hash).cloned();
        let monitor_image = self.monitor_image(hash);
        if md.spec.autoscaling.is_none() {
            let d =
                build::deployment::build(md, hash, Some(replicas), self.pins(hash, &monitor_image));
            self.apply_if_changed(Child::Deployment(Box::new(d)));
            return;
        }
        let d = build::deployment::build(md, hash, None, self.pins(hash, &monitor_image));
        let current = observed.as_ref().and_then(|o| o.replicas);
        self.apply_with_scale(
            d,
            observed.is_some(),
            (current != Some(replicas)).then_some(replicas),
        );
    }

    /// The HPA on `revision`'s Deployment when the spec autoscales; else no HPA.
    pub(super) fn autoscaler_on(&mut self, revision: Option<&str>) {
        let md = self.md;
        match (&md.spec.autoscaling, revision) {
            (Some(autoscaling), Some(hash)) => {
                let name = naming::revision_deployment(&md.name_any(), hash);
                let hpa = build::autoscaler::build(md, autoscaling, &name);
                self.apply_if_changed(Child::Autoscaler(Box::new(hpa)));
            }
            _ => {
                if self.observed.autoscaler.is_some() {
                    self.actions.push(Action::Delete(ChildRef {
                        kind: ChildKind::Autoscaler,
                        name: naming::autoscaler(&md.name_any()),
                    }));
                }
            }
        }
    }

    /// Deletes every revision Deployment but `keep`.
    pub(super) fn delete_revisions_except(&mut self, keep: &[&str]) {
        for revision in &self.observed.revisions {
            if !keep.contains(&revision.hash.as_str()) {
                self.actions.push(Action::Delete(ChildRef {
                    kind: ChildKind::Deployment,
                    name: revision.name.clone(),
                }));
            }
        }
    }

    fn canary_conditions(&mut self, state: Option<&RolloutState>, valid: &Validated) {
        let Some(state) = state else {
            return;
        };
        let message = format!(
            "revision {} (version {}): {}",
            state.revision, state.version, state.reason
        );
        let (progressing, why, phase) = match state.phase {
            RolloutPhase::Progressing => (
                ConditionStatus::True,
                canary_reason::PROGRESSING,
                Phase::Progressing,
            ),
            RolloutPhase::Paused => (
                ConditionStatus::Unknown,
                canary_reason::PAUSED,
                Phase::Progressing,
            ),
            RolloutPhase::Baking => (
                ConditionStatus::True,
                canary_reason::BAKING,
                Phase::Progressing,
            ),
            RolloutPhase::Complete => (
                ConditionStatus::False,
                reason::ROLLOUT_COMPLETE,
                Phase::Healthy,
            ),
            RolloutPhase::RolledBack => (
                ConditionStatus::False,
                canary_reason::ROLLED_BACK,
                Phase::RolledBack,
            ),
        };
        let in_flight = matches!(
            state.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::Baking
        );
        self.condition(PROGRESSING, progressing, why, message.clone());
        self.condition(
            RECONCILING,
            if in_flight {
                ConditionStatus::True
            } else {
                ConditionStatus::False
            },
            if in_flight { why } else { reason::UP_TO_DATE },
            message.clone(),
        );
        self.condition(STALLED, ConditionStatus::False, reason::UP_TO_DATE, "");
        let stable_available = self
            .status
            .stable
            .as_ref()
            .and_then(|s| self.observed_revision(&s.hash))
            .is_some_and(|r| r.available);
        if state.phase == RolloutPhase::RolledBack {
            // GitOps-safe: the spec still names the rejected revision; it stays rejected until
            // the spec changes or a retry token arrives, and says so.
            self.condition(
                DEGRADED,
                ConditionStatus::True,
                canary_reason::ROLLED_BACK,
                message.clone(),
            );
        } else if !stable_available {
            self.condition(
                DEGRADED,
                ConditionStatus::True,
                reason::STABLE_UNAVAILABLE,
                "the serving revision has no available replicas",
            );
        } else {
            self.condition(DEGRADED, ConditionStatus::False, reason::AVAILABLE, "");
        }
        self.status.phase = Some(phase);
        self.status.message = Some(message);
        // While reports are judged, say whether they arrive, and if not what to do.
        let collecting = matches!(
            state.phase,
            RolloutPhase::Progressing | RolloutPhase::Baking
        );
        match (&self.observed.evidence.problem, collecting) {
            (_, false) => conditions::remove(&mut self.status.conditions, REPORTS_AVAILABLE),
            (Some(problem), true) => {
                let message = problem.message(&self.md.name_any());
                self.condition(
                    REPORTS_AVAILABLE,
                    ConditionStatus::False,
                    problem.reason(),
                    message,
                );
            }
            (None, true) => self.condition(
                REPORTS_AVAILABLE,
                ConditionStatus::True,
                reason::REPORTS_COLLECTED,
                "",
            ),
        }
        // Judgements happen at scrapes: look again each scrape interval while something runs.
        if matches!(
            state.phase,
            RolloutPhase::Progressing | RolloutPhase::Baking
        ) {
            self.requeue_after = Some(valid.scrape_interval);
        }
    }
}
