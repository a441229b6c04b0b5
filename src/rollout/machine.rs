//! The canary state machine: one tick takes what is known now (spec, the state kept in status,
//! whether the canary is up, the evidence of this step's window, the controls, the time) and
//! returns the next state, the traffic split, and what to announce. All state lives in status,
//! so a restarted operator resumes exactly where it was: it never promotes twice, never forgets a
//! rollback, and a control token is applied once.
//!
//! ```text
//!  start ─▶ Progressing(step i) ──pass──▶ Progressing(step i+1) … ──pass last──▶ Baking ──time──▶ Complete
//!              │  ▲  │ fail (< maxFailedChecks): new window            │ breach / abort
//!              │  │  └─ fail (= maxFailedChecks), deadline, abort ─────┴──────────▶ RolledBack
//!        pause │  │ resume                                    retry token ─▶ start again
//!              ▼  │
//!             Paused
//! ```

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::judgement::{self, Evidence, Moment};
use super::weights;
use crate::api::ModelDeploymentSpec;
use crate::api::{
    AnalysisSpec, AppliedControls, Judgement, RolloutPhase, RolloutRecord, RolloutState, Verdict,
};
use crate::monitor::report::Report;
use crate::validate::Validated;

/// Control tokens present on the ModelDeployment (annotations `drover.dev/<control>`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Controls {
    /// Promote now, skipping the remaining steps.
    pub promote: Option<String>,
    /// Roll back now.
    pub abort: Option<String>,
    /// Run a rolled-back revision's canary again.
    pub retry: Option<String>,
    /// Hold the rollout where it is.
    pub pause: Option<String>,
    /// Continue a paused rollout.
    pub resume: Option<String>,
}

/// Annotation prefix of the controls.
pub const CONTROL_PREFIX: &str = "drover.dev/";

impl Controls {
    /// Reads the control annotations (`drover.dev/promote: <token>` …).
    pub fn from_annotations(annotations: &std::collections::BTreeMap<String, String>) -> Self {
        let get = |name: &str| {
            annotations
                .get(&format!("{CONTROL_PREFIX}{name}"))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty() && v.len() <= 128)
        };
        Self {
            promote: get("promote"),
            abort: get("abort"),
            retry: get("retry"),
            pause: get("pause"),
            resume: get("resume"),
        }
    }
}

/// Durations the machine needs, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// Step interval.
    pub interval: Duration,
    /// Progress deadline.
    pub progress_deadline: Duration,
    /// Bake window.
    pub bake_time: Duration,
}

impl Timing {
    /// The durations of a checked spec.
    pub fn of(valid: &Validated) -> Self {
        Self {
            interval: valid.interval,
            progress_deadline: valid.progress_deadline,
            bake_time: valid.bake_time,
        }
    }
}

/// Limits the previous revision is kept warm against after promotion.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BakeLimits {
    /// Highest error rate.
    pub max_error_rate: f64,
    /// Highest p99 latency, seconds.
    pub max_latency_p99: f64,
}

impl BakeLimits {
    /// The stable revision's SLO where the spec sets one, else the canary's absolute limits.
    pub fn of(spec: &ModelDeploymentSpec, valid: &Validated) -> Self {
        let slo = spec.monitoring.slo.as_ref();
        Self {
            max_error_rate: slo
                .and_then(|s| s.error_rate)
                .unwrap_or(spec.rollout.analysis.max_error_rate),
            max_latency_p99: valid
                .slo_latency_p99
                .unwrap_or(valid.max_latency_p99)
                .as_secs_f64(),
        }
    }
}

/// A revision by hash and version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevisionRef {
    /// Hash.
    pub hash: String,
    /// Model version.
    pub version: String,
}

/// Everything one tick looks at.
#[derive(Clone, Debug)]
pub struct Tick<'a> {
    /// `spec.rollout.steps`.
    pub steps: &'a [i32],
    /// `spec.rollout.maxFailedChecks`.
    pub max_failed_checks: i32,
    /// Durations.
    pub timing: Timing,
    /// `spec.rollout.analysis`.
    pub analysis: &'a AnalysisSpec,
    /// `analysis.maxLatencyP99` in seconds.
    pub max_latency_p99: f64,
    /// Limits during the bake window.
    pub bake: BakeLimits,
    /// The revision the spec asks for.
    pub target: &'a RevisionRef,
    /// The revision serving now.
    pub stable: Option<&'a RevisionRef>,
    /// The state kept in status.
    pub state: Option<&'a RolloutState>,
    /// The canary's pods are up at the current split.
    pub canary_available: bool,
    /// This step's window (since `stepStartedAt`).
    pub evidence: Evidence<'a>,
    /// The promoted revision's traffic since promotion (bake window).
    pub bake_window: Option<&'a Report>,
    /// A breach of the bake window judged outside the machine (performance from labels,
    /// `monitoring.performance`): rolls back like an SLO breach.
    pub bake_breach: Option<String>,
    /// Stable's current replicas (the HPA's choice, or `spec.replicas`).
    pub stable_replicas: i32,
    /// How traffic is split (sizes the canary, gives the actual weight).
    pub split: weights::Split,
    /// After promotion: the promoted revision runs at its full size (the bake window ends only
    /// then, so the previous revision is never removed before).
    pub promoted_full: bool,
    /// While baking: the previous revision's Deployment still exists (a rollback needs it).
    pub previous_present: bool,
    /// Control tokens present.
    pub controls: &'a Controls,
    /// Now.
    pub now: Timestamp,
}

/// A transition worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    /// Warning or Normal.
    pub warning: bool,
    /// Stable reason.
    pub reason: &'static str,
    /// For a person.
    pub note: String,
}

/// What one tick decided.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The next state (`None`: no canary in flight and none to remember).
    pub state: Option<RolloutState>,
    /// The revision serving after this tick.
    pub stable: Option<String>,
    /// Replicas of the canary revision (0: scaled down, e.g. rolled back).
    pub canary_replicas: i32,
    /// The revision kept warm without traffic (the previous one, while baking).
    pub keep_warm: Option<String>,
    /// Transitions to announce.
    pub announcements: Vec<Announcement>,
    /// History entry to record (newest first).
    pub record: Option<RolloutRecord>,
    /// The judgement made at this tick, recorded in status or not (for live gauges).
    pub judgement: Option<Judgement>,
}

/// Stable reasons of rollout transitions.
pub mod reason {
    /// A canary started.
    pub const STARTED: &str = "CanaryStarted";
    /// A step passed; the next one runs.
    pub const STEP_PASSED: &str = "CanaryStepPassed";
    /// A judgement failed (below `maxFailedChecks`).
    pub const CHECK_FAILED: &str = "CanaryCheckFailed";
    /// Promoted; baking.
    pub const PROMOTED: &str = "CanaryPromoted";
    /// Bake window over.
    pub const BAKED: &str = "BakeComplete";
    /// Rolled back on failed judgements.
    pub const ROLLED_BACK: &str = "CanaryRolledBack";
    /// Rolled back after promotion (bake window breach).
    pub const BAKE_ROLLBACK: &str = "BakeRolledBack";
    /// No progress within the deadline.
    pub const DEADLINE: &str = "ProgressDeadlineExceeded";
    /// Abort control.
    pub const ABORTED: &str = "CanaryAborted";
    /// Promote control.
    pub const PROMOTED_BY_HAND: &str = "CanaryPromotedManually";
    /// Pause control.
    pub const PAUSED: &str = "CanaryPaused";
    /// Resume control.
    pub const RESUMED: &str = "CanaryResumed";
    /// Retry control.
    pub const RETRIED: &str = "CanaryRetried";
    /// A new spec replaced a rollout in flight.
    pub const SUPERSEDED: &str = "CanarySuperseded";
    /// A judgement changed (inconclusive, frozen).
    pub const JUDGED: &str = "CanaryJudged";
}

fn since(t: &Option<Time>, now: Timestamp) -> Duration {
    t.as_ref()
        .map(|t| now.duration_since(t.0))
        .unwrap_or(SignedDuration::ZERO)
        .unsigned_abs()
}

fn later(now: Timestamp, d: Duration) -> Time {
    Time(
        now.checked_add(SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX))
            .unwrap_or(now),
    )
}

/// Reason while a finished bake window waits for the promoted revision's full size.
const WAITING_FOR_FULL_SIZE: &str =
    "bake window over; waiting for the promoted revision to run at full size";

/// A fresh token of `control`: present and not the one already acted on.
fn fresh<'a>(present: &'a Option<String>, applied: &Option<String>) -> Option<&'a String> {
    present.as_ref().filter(|p| applied.as_ref() != Some(*p))
}

#[derive(Default)]
struct Out {
    announcements: Vec<Announcement>,
    record: Option<RolloutRecord>,
    judgement: Option<Judgement>,
}

impl Out {
    /// The decision carrying what was said and recorded so far.
    fn decide(
        self,
        state: Option<RolloutState>,
        stable: Option<String>,
        canary_replicas: i32,
        keep_warm: Option<String>,
    ) -> Decision {
        Decision {
            state,
            stable,
            canary_replicas,
            keep_warm,
            announcements: self.announcements,
            record: self.record,
            judgement: self.judgement,
        }
    }

    fn say(&mut self, warning: bool, reason: &'static str, note: String) {
        self.announcements.push(Announcement {
            warning,
            reason,
            note,
        });
    }
}

/// One tick of the machine.
pub fn tick(t: &Tick<'_>) -> Decision {
    let mut out = Out::default();
    let now = t.now;
    let Some(stable) = t.stable else {
        // The first revision has nothing to be compared with: it is deployed at once.
        return out.decide(t.state.cloned(), None, 0, None);
    };
    let record = |state: &RolloutState, outcome: &str, why: &str| RolloutRecord {
        revision: state.revision.clone(),
        version: state.version.clone(),
        outcome: outcome.to_string(),
        reason: why.to_string(),
        at: now.to_string(),
    };

    // The promoted revision serves: bake, or nothing to do.
    if stable.hash == t.target.hash {
        let Some(state) = t
            .state
            .filter(|s| s.revision == stable.hash && s.phase == RolloutPhase::Baking)
        else {
            return steady(t, stable, out);
        };
        let mut next = state.clone();
        // Traffic can only go back to a revision that still runs.
        let previous = state.previous.clone().filter(|_| t.previous_present);
        let abort = fresh(&t.controls.abort, &state.controls.abort).cloned();
        let breach = t
            .bake_window
            .and_then(|w| bake_breach(w, t.bake, t.analysis.min_requests))
            .or_else(|| t.bake_breach.clone());
        if let (Some(previous), Some(why)) = (
            previous.clone(),
            abort
                .as_ref()
                .map(|_| "aborted by the drover.dev/abort control".to_string())
                .or(breach),
        ) {
            if let Some(token) = abort {
                next.controls.abort = Some(token);
            }
            next.phase = RolloutPhase::RolledBack;
            next.requested_weight = 0;
            next.actual_weight = 0;
            next.reason = format!("rolled back during the bake window: {why}");
            out.say(
                true,
                reason::BAKE_ROLLBACK,
                format!(
                    "revision {} rolled back to {previous}: {why}",
                    state.revision
                ),
            );
            out.record = Some(record(state, "RolledBack", &why));
            return out.decide(Some(next), Some(previous), 0, None);
        }
        let bake_over = state.bake_until.as_ref().is_none_or(|until| now >= until.0);
        if bake_over && !t.promoted_full {
            // The previous revision goes only once the promoted one runs at full size.
            if next.reason != WAITING_FOR_FULL_SIZE {
                next.reason = WAITING_FOR_FULL_SIZE.into();
            }
            return out.decide(Some(next), Some(stable.hash.clone()), 0, previous);
        }
        if bake_over {
            next.phase = RolloutPhase::Complete;
            next.previous = None;
            next.reason = "promoted and baked".into();
            out.say(
                false,
                reason::BAKED,
                format!(
                    "revision {} baked; {} removed",
                    state.revision,
                    previous.unwrap_or_default()
                ),
            );
            return out.decide(Some(next), Some(stable.hash.clone()), 0, None);
        }
        return out.decide(Some(next), Some(stable.hash.clone()), 0, previous);
    }

    // A different revision is asked for than the one serving.
    let carried_controls = t.state.map(|s| s.controls.clone()).unwrap_or_default();
    let mut state = match t.state {
        Some(s) if s.revision == t.target.hash => s.clone(),
        previous => {
            if let Some(p) = previous
                .filter(|p| matches!(p.phase, RolloutPhase::Progressing | RolloutPhase::Paused))
            {
                out.say(
                    false,
                    reason::SUPERSEDED,
                    format!("a new spec replaced the rollout of revision {}", p.revision),
                );
                out.record = Some(record(p, "Superseded", "a new spec arrived mid-rollout"));
            }
            start(t, carried_controls, &mut out)
        }
    };

    if state.phase == RolloutPhase::RolledBack {
        if let Some(token) = fresh(&t.controls.retry, &state.controls.retry).cloned() {
            let mut controls = state.controls.clone();
            controls.retry = Some(token);
            out.say(
                false,
                reason::RETRIED,
                format!("retrying revision {}", state.revision),
            );
            state = start(t, controls, &mut out);
        } else {
            // Rejected until the spec changes or a retry token arrives (GitOps-safe: spec is
            // the user's, it still names this revision).
            return out.decide(Some(state), Some(stable.hash.clone()), 0, None);
        }
    }
    if state.phase == RolloutPhase::Baking || state.phase == RolloutPhase::Complete {
        // Status says promoted but stable is another revision: the promotion did not land (or
        // was rolled back by hand). Start over rather than guess.
        state = start(t, state.controls.clone(), &mut out);
    }

    // Controls.
    if let Some(token) = fresh(&t.controls.abort, &state.controls.abort).cloned() {
        state.controls.abort = Some(token);
        return roll_back(
            t,
            stable,
            state,
            reason::ABORTED,
            "aborted by the drover.dev/abort control".into(),
            out,
        );
    }
    if let Some(token) = fresh(&t.controls.promote, &state.controls.promote).cloned() {
        state.controls.promote = Some(token);
        out.say(
            false,
            reason::PROMOTED_BY_HAND,
            format!(
                "revision {} promoted by the drover.dev/promote control",
                state.revision
            ),
        );
        return promote(
            t,
            stable,
            state,
            "promoted by the drover.dev/promote control",
            out,
        );
    }
    // A resume token that finds nothing paused is used up, so it cannot undo a later pause.
    if state.phase == RolloutPhase::Progressing
        && fresh(&t.controls.pause, &state.controls.pause).is_none()
        && let Some(token) = fresh(&t.controls.resume, &state.controls.resume).cloned()
    {
        state.controls.resume = Some(token);
    }
    if let Some(token) = fresh(&t.controls.pause, &state.controls.pause).cloned() {
        state.controls.pause = Some(token);
        if state.phase == RolloutPhase::Progressing {
            state.phase = RolloutPhase::Paused;
            state.reason = "paused by the drover.dev/pause control".into();
            out.say(
                false,
                reason::PAUSED,
                format!(
                    "rollout of revision {} paused at step {}",
                    state.revision, state.step
                ),
            );
        }
    }
    if state.phase == RolloutPhase::Paused {
        match fresh(&t.controls.resume, &state.controls.resume).cloned() {
            Some(token) => {
                state.controls.resume = Some(token);
                state.phase = RolloutPhase::Progressing;
                state.progress_at = Some(Time(now));
                state.step_started_at = None;
                state.reason = "resumed".into();
                out.say(
                    false,
                    reason::RESUMED,
                    format!("rollout of revision {} resumed", state.revision),
                );
            }
            None => {
                // A deliberate pause holds the deadline too: a person decided to wait.
                let replicas = t
                    .split
                    .canary_replicas(t.stable_replicas, state.requested_weight);
                return hold(stable, state, replicas, out);
            }
        }
    }

    // The deadline holds in every running phase: waiting for pods, for data, or for a pass.
    if since(&state.progress_at, now) >= t.timing.progress_deadline {
        let why = format!(
            "no progress for {}s (spec.rollout.progressDeadline) at step {}; last judgement: {}",
            t.timing.progress_deadline.as_secs(),
            state.step,
            state
                .last_judgement
                .as_ref()
                .map(|j| j.reason.as_str())
                .unwrap_or(state.reason.as_str())
        );
        return roll_back(t, stable, state, reason::DEADLINE, why, out);
    }

    let replicas = t
        .split
        .canary_replicas(t.stable_replicas, state.requested_weight);
    state.actual_weight =
        t.split
            .actual_weight(t.stable_replicas, replicas, state.requested_weight);
    // A step's window opens once the canary runs at the step's size; a canary resized inside
    // the step (stable's HPA moved) keeps its window, or an active HPA could restart the step
    // until the deadline.
    if !t.canary_available && state.step_started_at.is_none() {
        state.reason = format!("waiting for the canary's {replicas} replica(s)");
        return hold(stable, state, replicas, out);
    }
    if state.step_started_at.is_none() {
        state.step_started_at = Some(Time(now));
        state.reason = format!(
            "step {} running at {}% traffic",
            state.step, state.requested_weight
        );
    }
    let moment = if since(&state.step_started_at, now) >= t.timing.interval {
        Moment::EndOfStep
    } else {
        Moment::DuringStep
    };
    let mut judged = judgement::judge(t.analysis, t.max_latency_p99, t.evidence, moment);
    judged.at = now.to_string();
    judged.step = state.step;
    out.judgement = Some(judged.clone());
    // Status changes on judgements, not on every scrape: an inconclusive judgement that only
    // counts more requests is the same judgement.
    let waiting_on = |j: &Judgement| -> Vec<String> {
        j.signals
            .iter()
            .filter(|s| s.verdict != Verdict::Pass)
            .map(|s| s.name.clone())
            .collect()
    };
    let changed = state.last_judgement.as_ref().is_none_or(|j| {
        j.verdict != judged.verdict
            || j.step != judged.step
            || waiting_on(j) != waiting_on(&judged)
            || judged.verdict == Verdict::Fail
    });
    match judged.verdict {
        Verdict::Fail => {
            state.failed_checks += 1;
            let why = judged.reason.clone();
            state.last_judgement = Some(judged);
            if state.failed_checks >= t.max_failed_checks {
                let why = format!("{} failed check(s): {why}", state.failed_checks);
                return roll_back(t, stable, state, reason::ROLLED_BACK, why, out);
            }
            out.say(
                true,
                reason::CHECK_FAILED,
                format!(
                    "step {} failed ({}/{}): {why}",
                    state.step, state.failed_checks, t.max_failed_checks
                ),
            );
            // A new window for the next judgement of the same step.
            state.step_started_at = Some(Time(now));
            hold(stable, state, replicas, out)
        }
        Verdict::Pass => {
            state.last_judgement = Some(judged);
            let last = usize::try_from(state.step).unwrap_or(0) + 1 >= t.steps.len();
            if last {
                return promote(t, stable, state, "every step passed", out);
            }
            state.step += 1;
            state.requested_weight = t
                .steps
                .get(usize::try_from(state.step).unwrap_or(0))
                .copied()
                .unwrap_or(0);
            state.step_started_at = None;
            state.progress_at = Some(Time(now));
            state.reason = format!(
                "step {} passed; step {} at {}%",
                state.step - 1,
                state.step,
                state.requested_weight
            );
            out.say(false, reason::STEP_PASSED, state.reason.clone());
            let replicas = t
                .split
                .canary_replicas(t.stable_replicas, state.requested_weight);
            state.actual_weight =
                t.split
                    .actual_weight(t.stable_replicas, replicas, state.requested_weight);
            hold(stable, state, replicas, out)
        }
        Verdict::Inconclusive | Verdict::Frozen => {
            if changed && moment == Moment::EndOfStep {
                out.say(
                    false,
                    reason::JUDGED,
                    format!("step {}: {}", state.step, judged.reason),
                );
            }
            if changed && moment == Moment::EndOfStep {
                state.last_judgement = Some(judged);
            }
            hold(stable, state, replicas, out)
        }
    }
}

fn start(t: &Tick<'_>, controls: AppliedControls, out: &mut Out) -> RolloutState {
    let weight = t.steps.first().copied().unwrap_or(0);
    // Controls act on the rollout in flight: a token already on the object when a rollout
    // starts (set while nothing ran, or for the previous revision) counts as used, so an old
    // promote or abort never decides the next canary.
    let present = |now: &Option<String>, applied: Option<String>| now.clone().or(applied);
    let controls = AppliedControls {
        promote: present(&t.controls.promote, controls.promote),
        abort: present(&t.controls.abort, controls.abort),
        retry: present(&t.controls.retry, controls.retry),
        pause: present(&t.controls.pause, controls.pause),
        resume: present(&t.controls.resume, controls.resume),
    };
    out.say(
        false,
        reason::STARTED,
        format!(
            "canary of revision {} (version {}) at {weight}%",
            t.target.hash, t.target.version
        ),
    );
    RolloutState {
        revision: t.target.hash.clone(),
        version: t.target.version.clone(),
        previous: t.stable.map(|s| s.hash.clone()),
        phase: RolloutPhase::Progressing,
        step: 0,
        requested_weight: weight,
        actual_weight: 0,
        failed_checks: 0,
        started_at: Some(Time(t.now)),
        step_started_at: None,
        progress_at: Some(Time(t.now)),
        bake_until: None,
        reason: format!("starting the canary at {weight}%"),
        last_judgement: None,
        controls,
    }
}

fn hold(stable: &RevisionRef, state: RolloutState, replicas: i32, out: Out) -> Decision {
    out.decide(Some(state), Some(stable.hash.clone()), replicas, None)
}

fn steady(t: &Tick<'_>, stable: &RevisionRef, out: Out) -> Decision {
    out.decide(t.state.cloned(), Some(stable.hash.clone()), 0, None)
}

fn roll_back(
    t: &Tick<'_>,
    stable: &RevisionRef,
    mut state: RolloutState,
    why_reason: &'static str,
    why: String,
    mut out: Out,
) -> Decision {
    state.phase = RolloutPhase::RolledBack;
    state.requested_weight = 0;
    state.actual_weight = 0;
    state.step_started_at = None;
    state.reason = why.clone();
    out.say(
        true,
        why_reason,
        format!("revision {} rolled back: {why}", state.revision),
    );
    let outcome = if why_reason == reason::ABORTED {
        "Aborted"
    } else {
        "RolledBack"
    };
    out.record = Some(RolloutRecord {
        revision: state.revision.clone(),
        version: state.version.clone(),
        outcome: outcome.into(),
        reason: why,
        at: t.now.to_string(),
    });
    out.decide(Some(state), Some(stable.hash.clone()), 0, None)
}

fn promote(
    t: &Tick<'_>,
    stable: &RevisionRef,
    mut state: RolloutState,
    why: &str,
    mut out: Out,
) -> Decision {
    state.previous = Some(stable.hash.clone());
    state.requested_weight = 100;
    state.actual_weight = 100;
    state.step_started_at = None;
    state.progress_at = Some(Time(t.now));
    state.reason = why.to_string();
    out.say(
        false,
        reason::PROMOTED,
        format!("revision {} promoted: {why}", state.revision),
    );
    out.record = Some(RolloutRecord {
        revision: state.revision.clone(),
        version: state.version.clone(),
        outcome: "Promoted".into(),
        reason: why.to_string(),
        at: t.now.to_string(),
    });
    // Always through Baking, even without a bake window: the previous revision stays warm
    // until the promoted one runs at full size.
    state.phase = RolloutPhase::Baking;
    state.bake_until = Some(later(t.now, t.timing.bake_time));
    let promoted = state.revision.clone();
    out.decide(Some(state), Some(promoted), 0, Some(stable.hash.clone()))
}

fn bake_breach(window: &Report, limits: BakeLimits, min_requests: i64) -> Option<String> {
    let n = window.requests.total();
    if n < u64::try_from(min_requests).unwrap_or(u64::MAX) {
        return None;
    }
    let error_rate = window.requests.server_error as f64 / n as f64;
    if error_rate > limits.max_error_rate {
        return Some(format!(
            "error rate {error_rate:.4} above {}",
            limits.max_error_rate
        ));
    }
    match window.latency.quantile(0.99) {
        Some(p99) if p99 > limits.max_latency_p99 => {
            Some(format!("p99 {p99:.3}s above {}s", limits.max_latency_p99))
        }
        _ => None,
    }
}
