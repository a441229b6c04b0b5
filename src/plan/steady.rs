//! The steady state in the planner: once a revision serves and no rollout is in flight, each
//! closed window of its traffic is judged ([`crate::watch`]) and the verdict becomes status:
//! condition `DriftDetected` (with the top features when declared), condition `Degraded` with
//! reason `SLOBreached`, and Events on transitions only.
//!
//! During a rollout the watch holds: the canary's own judgement covers that time, and a drift
//! counted on a revision about to be replaced would mean nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Notice, Planner, ReferenceState};
use crate::api::{ConditionStatus, DriftStatus, ModelDeploymentStatus, Phase, RolloutPhase};
use kube::ResourceExt;

use crate::conditions::{self, DEGRADED, DRIFT_DETECTED, REPORTS_AVAILABLE};
use crate::validate::Validated;
use crate::watch::{self, Judged};

/// Reasons of the steady-state conditions and Events.
pub mod steady_reason {
    /// Drift declared after `consecutiveWindows` drifted windows.
    pub const DRIFT_DETECTED: &str = "DriftDetected";
    /// Drift cleared after as many clean windows (or another revision serves).
    pub const DRIFT_CLEARED: &str = "DriftCleared";
    /// Watching; no drift declared.
    pub const NO_DRIFT: &str = "NoDrift";
    /// The reference profile belongs to another model version: drift is not measured.
    pub const PROFILE_VERSION_MISMATCH: &str = "ProfileVersionMismatch";
    /// The reference profile cannot be read: drift is not measured.
    pub const PROFILE_UNAVAILABLE: &str = "ReferenceProfileUnavailable";
    /// A window breached the SLO.
    pub const SLO_BREACHED: &str = "SLOBreached";
    /// A window was within the SLO again.
    pub const SLO_RECOVERED: &str = "SLORecovered";
    /// Performance from labels fell below `monitoring.performance` thresholds.
    pub const PERFORMANCE_DROPPED: &str = "PerformanceDropped";
    /// Performance meets its thresholds again.
    pub const PERFORMANCE_RECOVERED: &str = "PerformanceRecovered";
}

impl Planner<'_> {
    /// Judges the closed steady-state window, if one ended, and sets the watch's conditions.
    pub(super) fn steady_state(&mut self, old: &ModelDeploymentStatus, valid: &Validated) {
        let md = self.md;
        let monitoring = &md.spec.monitoring;
        if monitoring.reference.is_none()
            && monitoring.slo.is_none()
            && monitoring.performance.is_none()
        {
            // Nothing to watch for.
            self.status.drift = None;
            conditions::remove(&mut self.status.conditions, DRIFT_DETECTED);
            return;
        }
        let Some(stable) = self.status.stable.clone() else {
            return;
        };
        let in_flight = self.status.canary.is_some()
            || self.status.rollout.as_ref().is_some_and(|r| {
                matches!(
                    r.phase,
                    RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::Baking
                )
            });
        if in_flight {
            return;
        }

        self.reports_available(old);
        let profile_problem = self.profile_problem();
        let mut state = old.drift.clone();
        if let Some(s) = state.as_ref().filter(|s| s.revision != stable.hash) {
            // Another revision serves: its watch starts clean.
            let mut fresh = watch::start(&stable.hash);
            if s.detected {
                self.announcements.push(Notice {
                    warning: false,
                    reason: steady_reason::DRIFT_CLEARED,
                    note: format!(
                        "revision {} (version {}) serves now: the drift declared for revision {} no longer applies",
                        stable.hash, stable.version, s.revision
                    ),
                });
                fresh.since = Some(Time(self.now));
            }
            state = Some(fresh);
        }
        if let Some(window) = self.observed.evidence.steady.as_ref() {
            let judged = match (&profile_problem, monitoring.reference.is_some()) {
                (None, true) => watch::judge(
                    &monitoring.drift,
                    window,
                    self.observed.evidence.profile.as_deref(),
                ),
                // Never compared against the wrong baseline, or none.
                _ => Judged::NoProfile,
            };
            let decision = watch::advance(
                &monitoring.drift,
                state.as_ref(),
                &stable.hash,
                &judged,
                self.now,
            );
            let mut next = decision.state;
            match decision.changed {
                Some(true) => self.announcements.push(Notice {
                    warning: true,
                    reason: steady_reason::DRIFT_DETECTED,
                    note: format!(
                        "revision {} (version {}) drifted in {} consecutive windows: {}",
                        stable.hash,
                        stable.version,
                        monitoring.drift.consecutive_windows,
                        judged.summary()
                    ),
                }),
                Some(false) => self.announcements.push(Notice {
                    warning: false,
                    reason: steady_reason::DRIFT_CLEARED,
                    note: format!(
                        "revision {} no longer drifts ({} clean windows)",
                        stable.hash, monitoring.drift.consecutive_windows
                    ),
                }),
                None => {}
            }
            let min_samples = u64::try_from(monitoring.drift.min_samples).unwrap_or(u64::MAX);
            let slo = watch::slo_breach(
                monitoring.slo.as_ref(),
                valid.slo_latency_p99,
                window.report.as_ref(),
                min_samples,
            );
            self.breach_transition(
                &mut next.slo_breach,
                slo,
                (steady_reason::SLO_BREACHED, steady_reason::SLO_RECOVERED),
                &stable.hash,
                "is within its SLO again",
            );
            let performance =
                watch::performance_breach(monitoring.performance.as_ref(), window.report.as_ref());
            self.breach_transition(
                &mut next.performance_drop,
                performance,
                (
                    steady_reason::PERFORMANCE_DROPPED,
                    steady_reason::PERFORMANCE_RECOVERED,
                ),
                &stable.hash,
                "meets its performance thresholds again",
            );
            self.watch = Some(judged);
            state = Some(next);
        }
        let state = state.unwrap_or_else(|| watch::start(&stable.hash));
        self.drift_condition(&state, profile_problem);
        // Performance first: a model that answers in time but wrongly is the worse news.
        for (breach, reason, what) in [
            (
                &state.performance_drop,
                steady_reason::PERFORMANCE_DROPPED,
                "performance dropped",
            ),
            (
                &state.slo_breach,
                steady_reason::SLO_BREACHED,
                "SLO breached",
            ),
        ] {
            if let Some(why) = breach
                && !self.degraded()
            {
                self.condition(DEGRADED, ConditionStatus::True, reason, why.clone());
                self.status.phase = Some(Phase::Degraded);
                self.status.message = Some(format!("{what}: {why}"));
            }
        }
        self.status.drift = Some(state);
    }

    /// Records a window's verdict on a breach kept in status (`state`): set with a Warning when
    /// it starts, cleared with a Normal Event when a window is within the limits again; no
    /// verdict (`None`) changes nothing.
    fn breach_transition(
        &mut self,
        state: &mut Option<String>,
        verdict: Option<Option<String>>,
        (breached, recovered): (&'static str, &'static str),
        revision: &str,
        recovered_note: &str,
    ) {
        match verdict {
            Some(Some(why)) if state.is_none() => {
                self.announcements.push(Notice {
                    warning: true,
                    reason: breached,
                    note: format!("revision {revision}: {why}"),
                });
                *state = Some(why);
            }
            Some(None) if state.is_some() => {
                self.announcements.push(Notice {
                    warning: false,
                    reason: recovered,
                    note: format!("revision {revision} {recovered_note}"),
                });
                *state = None;
            }
            _ => {}
        }
    }

    /// Condition `ReportsAvailable` while the watch scrapes: a monitor token problem or
    /// unreachable monitors are something a person can act on, not a silent lack of verdicts.
    fn reports_available(&mut self, old: &ModelDeploymentStatus) {
        // The rollout path removed it outside a rollout; its transition time must hold.
        if !self
            .status
            .conditions
            .iter()
            .any(|c| c.type_ == REPORTS_AVAILABLE)
            && let Some(c) = old.conditions.iter().find(|c| c.type_ == REPORTS_AVAILABLE)
        {
            self.status.conditions.push(c.clone());
        }
        match &self.observed.evidence.problem {
            Some(problem) => {
                let message = problem.message(&self.md.name_any());
                self.condition(
                    REPORTS_AVAILABLE,
                    ConditionStatus::False,
                    problem.reason(),
                    message,
                );
            }
            None => self.condition(
                REPORTS_AVAILABLE,
                ConditionStatus::True,
                super::reason::REPORTS_COLLECTED,
                "",
            ),
        }
    }

    /// Why drift cannot be measured against the profile, if it cannot.
    fn profile_problem(&self) -> Option<(&'static str, String)> {
        let md = self.md;
        md.spec.monitoring.reference.as_ref()?;
        match &self.observed.reference {
            ReferenceState::Found => {}
            ReferenceState::NotReferenced => return None,
            _ => {
                return Some((
                    steady_reason::PROFILE_UNAVAILABLE,
                    "the reference profile cannot be read (see condition Stalled): drift is not measured".into(),
                ));
            }
        }
        let profile = self.observed.evidence.profile.as_deref()?;
        let version = profile.model_version.as_deref()?;
        (version != md.spec.model.version).then(|| {
            (
                steady_reason::PROFILE_VERSION_MISMATCH,
                format!(
                    "the reference profile describes model version {version}, spec.model.version is {}: drift is not measured against another version's data; build the profile for {} (drover profile --model-version {})",
                    md.spec.model.version, md.spec.model.version, md.spec.model.version
                ),
            )
        })
    }

    fn degraded(&self) -> bool {
        self.status
            .conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.status == ConditionStatus::True)
    }

    /// `DriftDetected` from the state: its message changes only with the verdict.
    fn drift_condition(&mut self, state: &DriftStatus, problem: Option<(&'static str, String)>) {
        if self.md.spec.monitoring.reference.is_none() {
            conditions::remove(&mut self.status.conditions, DRIFT_DETECTED);
            return;
        }
        let was_problem = self
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == DRIFT_DETECTED)
            .map(|c| c.reason.clone());
        if let Some((why, message)) = problem {
            if was_problem.as_deref() != Some(why) {
                self.announcements.push(Notice {
                    warning: true,
                    reason: why,
                    note: message.clone(),
                });
            }
            self.condition(DRIFT_DETECTED, ConditionStatus::Unknown, why, message);
            return;
        }
        let window = &self.md.spec.monitoring.window;
        if state.detected {
            let mut parts: Vec<String> = state
                .features
                .iter()
                .filter(|f| f.drifted)
                .map(|f| {
                    let mut s = format!("{} {}", f.name, f.score);
                    if let Some(shift) = f.mean_shift {
                        s.push_str(&format!(" (mean {shift:+}σ)"));
                    }
                    s
                })
                .collect();
            if let Some(p) = state.prediction.as_ref().filter(|p| p.drifted) {
                parts.push(format!("prediction {}", p.score));
            }
            if let Some(drop) = state.confidence_drop {
                parts.push(format!("mean confidence down {drop:.3}"));
            }
            let method = serde_json::to_value(self.md.spec.monitoring.drift.method)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            self.condition(
                DRIFT_DETECTED,
                ConditionStatus::True,
                steady_reason::DRIFT_DETECTED,
                format!(
                    "revision {} drifted in {} consecutive windows of {window} ({method}, threshold {}): {}",
                    state.revision,
                    self.md.spec.monitoring.drift.consecutive_windows,
                    self.md.spec.monitoring.drift.threshold,
                    if parts.is_empty() {
                        "see the drover_drift_score gauges".to_string()
                    } else {
                        parts.join(", ")
                    }
                ),
            );
        } else {
            self.condition(
                DRIFT_DETECTED,
                ConditionStatus::False,
                steady_reason::NO_DRIFT,
                format!(
                    "revision {} is watched in windows of {window}; no drift declared",
                    state.revision
                ),
            );
        }
    }
}
