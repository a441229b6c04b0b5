//! Retraining in the planner: finished runs are recorded (with the candidate a successful run
//! reported, judged by the acceptance gate), a new run starts when drift is declared and
//! [`crate::retrain::decide`] allows it, finished Jobs beyond `historyLimit` go, and the
//! CronJob of `retraining.schedule` is kept in line with the spec.
//!
//! The spec stays the user's: an accepted candidate is announced (status, Event, metric) for
//! whoever owns the spec to commit; only `autoDeploy: true` makes Drover set `spec.model` to it.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::json;

use super::{Action, Notice, ObservedChild, Planner};
use crate::api::{
    Candidate, ConditionStatus, DriftAction, ModelDeploymentStatus, RetrainingRun, RetrainingStatus,
};
use crate::build::retrain::{self as builder, Trigger};
use crate::build::{Child, ChildKind, ChildRef};
use crate::conditions::{self, RETRAINING};
use crate::retrain::candidate::{self, ReportedModel};
use crate::retrain::{self, JobOutcome, Limits, ObservedJob, Refusal, Situation, TriggerReason};

/// Most candidates kept in status.
pub const CANDIDATES_KEPT: usize = 5;

/// Reasons of the retraining condition and Events.
pub mod retraining_reason {
    /// A retraining Job was created.
    pub const STARTED: &str = "RetrainingStarted";
    /// A retraining run is in progress.
    pub const RUNNING: &str = "RetrainingRunning";
    /// The last run succeeded.
    pub const SUCCEEDED: &str = "RetrainingSucceeded";
    /// The last run failed (including its timeout).
    pub const FAILED: &str = "RetrainingFailed";
    /// The API server refused the Job built from the template.
    pub const REFUSED: &str = "RetrainingJobRefused";
    /// Drift is declared but a run cannot start yet (cooldown, budget).
    pub const HELD: &str = "RetrainingHeld";
    /// No run needed.
    pub const IDLE: &str = "Idle";
    /// A successful run's termination message is not a usable report.
    pub const REPORT_INVALID: &str = "RetrainingReportInvalid";
    /// A reported model passed the acceptance gate.
    pub const CANDIDATE_ACCEPTED: &str = "CandidateAccepted";
    /// A reported model failed the acceptance gate.
    pub const CANDIDATE_REJECTED: &str = "CandidateRejected";
    /// An accepted candidate was written to `spec.model` (`autoDeploy`).
    pub const CANDIDATE_DEPLOYED: &str = "CandidateDeployed";
}

/// Retraining as the controller observed it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedRetraining {
    /// This ModelDeployment's retraining Jobs (its own and its CronJob's).
    pub jobs: Vec<ObservedJob>,
    /// The CronJob `<name>-cron`.
    pub cron_job: Option<ObservedChild>,
    /// Termination messages of successful Jobs not yet recorded (see [`unrecorded`]), by Job
    /// name: the message, or why there is none.
    pub reports: std::collections::BTreeMap<String, Result<String, String>>,
}

/// `spec.model` fields to set to an accepted candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelUpdate {
    /// `spec.model.version`.
    pub version: String,
    /// `spec.model.image`, when the run built one.
    pub image: Option<String>,
    /// `spec.model.uri`, when the run reported one.
    pub uri: Option<String>,
}

/// Finished Jobs whose outcome status does not hold yet, oldest first: those that started after
/// the last recorded run (or are the run status calls active). The controller reads the
/// termination messages of the successful ones.
pub fn unrecorded<'a>(
    jobs: &'a [ObservedJob],
    status: Option<&RetrainingStatus>,
) -> Vec<&'a ObservedJob> {
    let last = status.and_then(|s| s.last.as_ref());
    let last_started = last.and_then(|l| l.started.as_ref()).map(|t| t.0);
    let mut out: Vec<&ObservedJob> = jobs
        .iter()
        .filter(|j| j.finished())
        .filter(|j| last.is_none_or(|l| l.job != j.name))
        .filter(|j| last_started.is_none_or(|t| j.started >= t))
        .collect();
    out.sort_by(|a, b| a.started.cmp(&b.started).then(a.name.cmp(&b.name)));
    out
}

impl Planner<'_> {
    /// Records finished runs, starts one if drift calls for it, prunes history, keeps the
    /// CronJob in line.
    pub(super) fn retraining(&mut self, old: &ModelDeploymentStatus) {
        let md = self.md;
        let observed = &self.observed.retraining;
        let Some(spec) = md.spec.remediation.retraining.as_ref() else {
            if let Some(cron) = observed.cron_job.as_ref().filter(|c| !c.foreign) {
                self.actions.push(Action::Delete(ChildRef {
                    kind: ChildKind::CronJob,
                    name: cron.name.clone(),
                }));
            }
            // Runs already made stay on record; nothing new starts.
            conditions::remove(&mut self.status.conditions, RETRAINING);
            return;
        };
        let limits = match Limits::from_spec(spec) {
            Ok(l) => l,
            Err(problem) => {
                self.condition(
                    RETRAINING,
                    ConditionStatus::False,
                    retraining_reason::REFUSED,
                    problem,
                );
                return;
            }
        };
        let mut state = old.retraining.clone().unwrap_or_default();

        // 1. What finished since status last said.
        for job in unrecorded(&observed.jobs, old.retraining.as_ref()) {
            self.record_finished(&mut state, job);
        }

        // 2. What runs now.
        state.active = observed
            .jobs
            .iter()
            .filter(|j| !j.finished())
            .max_by_key(|j| j.started)
            .map(|j| {
                let known = state.active.as_ref().filter(|a| a.job == j.name);
                RetrainingRun {
                    job: j.name.clone(),
                    reason: j
                        .reason
                        .map(TriggerReason::as_str)
                        .unwrap_or("Unknown")
                        .to_string(),
                    started: Some(Time(j.started)),
                    finished: None,
                    result: "Running".into(),
                    message: known.map(|k| k.message.clone()).unwrap_or_default(),
                }
            });
        state.starts = retrain::prune_starts(&state.starts, self.now);

        // 3. Start one?
        // A performance drop measured from labels is remediated like drift.
        let drift = self
            .status
            .drift
            .as_ref()
            .is_some_and(|d| d.detected || d.performance_drop.is_some())
            && md.spec.remediation.on_drift == DriftAction::Retrain;
        let generation = md.metadata.generation.unwrap_or(0);
        let decision = retrain::decide(
            &md.name_any(),
            &Situation {
                drift_detected: drift,
                jobs: &observed.jobs,
                recorded_starts: &state.starts,
                refused: state.refused.as_ref().map(Refusal::from),
                generation,
            },
            limits,
            self.now,
        );
        for name in &decision.delete {
            self.actions.push(Action::Delete(ChildRef {
                kind: ChildKind::Job,
                name: name.clone(),
            }));
        }
        if let Some(name) = &decision.start {
            let trigger = Trigger {
                reason: TriggerReason::Drift,
                report: self.trigger_report(),
            };
            if let Some(job) = builder::job(md, name, &trigger) {
                self.actions.push(Action::CreateJob(Box::new(job)));
                // A new attempt: a refusal of an older spec no longer applies.
                state.refused = None;
                state.starts.push(self.now.to_string());
                state.starts = retrain::prune_starts(&state.starts, self.now);
                state.active = Some(RetrainingRun {
                    job: name.clone(),
                    reason: TriggerReason::Drift.as_str().into(),
                    started: Some(Time(self.now)),
                    finished: None,
                    result: "Running".into(),
                    message: String::new(),
                });
                self.announcements.push(Notice {
                    warning: false,
                    reason: retraining_reason::STARTED,
                    note: format!(
                        "started retraining Job {name}: {} on the serving revision",
                        if self.status.drift.as_ref().is_some_and(|d| d.detected) {
                            "drift declared"
                        } else {
                            "performance dropped"
                        }
                    ),
                });
            }
        }
        // Said only while it matters: drift wants a run and none can start.
        state.held = match (&decision.held, drift) {
            (Some(held), true) => Some(held.to_string()),
            _ => None,
        };
        if state.held.is_some()
            && old
                .retraining
                .as_ref()
                .and_then(|r| r.held.as_ref())
                .is_none()
            && let Some(held) = &state.held
        {
            self.announcements.push(Notice {
                warning: false,
                reason: retraining_reason::HELD,
                note: format!("drift declared; retraining held: {held}"),
            });
        }

        // 4. The CronJob.
        match builder::cron_job(md) {
            Some(cron) => match observed.cron_job.as_ref() {
                Some(c) if c.foreign => {}
                _ => self.apply_if_changed(Child::CronJob(Box::new(cron))),
            },
            None => {
                if let Some(c) = observed.cron_job.as_ref().filter(|c| !c.foreign) {
                    self.actions.push(Action::Delete(ChildRef {
                        kind: ChildKind::CronJob,
                        name: c.name.clone(),
                    }));
                }
            }
        }
        self.retraining_condition(&state);
        self.status.retraining = Some(state);
    }

    /// Records the outcome of `job` and, for a successful one, the model it reported.
    fn record_finished(&mut self, state: &mut RetrainingStatus, job: &ObservedJob) {
        let reason = job
            .reason
            .map(TriggerReason::as_str)
            .unwrap_or("Unknown")
            .to_string();
        let mut run = RetrainingRun {
            job: job.name.clone(),
            reason,
            started: Some(Time(job.started)),
            finished: job.outcome.finished_at().map(Time),
            result: String::new(),
            message: String::new(),
        };
        match &job.outcome {
            JobOutcome::Running => return,
            JobOutcome::Failed { message, .. } => {
                run.result = "Failed".into();
                run.message = message.clone();
                self.announcements.push(Notice {
                    warning: true,
                    reason: retraining_reason::FAILED,
                    note: format!("retraining Job {} failed: {message}", job.name),
                });
            }
            JobOutcome::Succeeded { finished } => {
                run.result = "Succeeded".into();
                let report = self
                    .observed
                    .retraining
                    .reports
                    .get(&job.name)
                    .cloned()
                    .unwrap_or_else(|| {
                        Err("its pods are gone: no termination message to read".into())
                    });
                match report
                    .and_then(|text| candidate::parse_report(&text).map_err(|e| e.to_string()))
                {
                    Ok(reported) => {
                        run.message = format!("reported model version {}", reported.version);
                        self.judge_candidate(state, &job.name, &reported, *finished);
                    }
                    Err(why) => {
                        run.message = format!("no candidate: {why}");
                        self.announcements.push(Notice {
                            warning: true,
                            reason: retraining_reason::REPORT_INVALID,
                            note: format!(
                                "retraining Job {} succeeded but reported no usable model: {why}",
                                job.name
                            ),
                        });
                    }
                }
                self.announcements.push(Notice {
                    warning: false,
                    reason: retraining_reason::SUCCEEDED,
                    note: format!("retraining Job {} succeeded: {}", job.name, run.message),
                });
            }
        }
        if state.active.as_ref().is_some_and(|a| a.job == job.name) {
            state.active = None;
        }
        state.last = Some(run);
    }

    /// Judges a reported model by the acceptance gate and records it.
    fn judge_candidate(
        &mut self,
        state: &mut RetrainingStatus,
        job: &str,
        reported: &ReportedModel,
        at: Timestamp,
    ) {
        let md = self.md;
        let Some(spec) = md.spec.remediation.retraining.as_ref() else {
            return;
        };
        let stable = candidate::stable_metrics(
            spec.acceptance.as_ref(),
            Some(state),
            &md.spec.model.version,
        );
        let verdict = candidate::judge(spec.acceptance.as_ref(), &stable, reported);
        let mut recorded: Candidate = reported.candidate(job, at, &verdict);
        // Metric label values are lower case (`accepted`, `rejected`), as documented.
        self.candidates_judged.push(if verdict.accepted {
            crate::metrics::CANDIDATE_ACCEPTED
        } else {
            crate::metrics::CANDIDATE_REJECTED
        });
        if verdict.accepted {
            let deploy = spec.auto_deploy && reported.is_deployable();
            self.announcements.push(Notice {
                warning: false,
                reason: retraining_reason::CANDIDATE_ACCEPTED,
                note: format!(
                    "retrained model {} passed the acceptance gate ({}){}",
                    reported.version,
                    verdict.reason,
                    if deploy {
                        "; autoDeploy: rolling it out"
                    } else {
                        "; set spec.model to it to roll it out"
                    }
                ),
            });
            if deploy && reported.version != md.spec.model.version {
                self.actions.push(Action::DeployCandidate(ModelUpdate {
                    version: reported.version.clone(),
                    image: reported.image.clone(),
                    uri: reported.uri.clone(),
                }));
                recorded.deployed = true;
                self.announcements.push(Notice {
                    warning: false,
                    reason: retraining_reason::CANDIDATE_DEPLOYED,
                    note: format!(
                        "spec.model set to the retrained model {} (autoDeploy); it goes in by canary",
                        reported.version
                    ),
                });
            }
        } else {
            self.announcements.push(Notice {
                warning: true,
                reason: retraining_reason::CANDIDATE_REJECTED,
                note: format!(
                    "retrained model {} rejected by the acceptance gate: {}",
                    reported.version, verdict.reason
                ),
            });
        }
        state.candidates.insert(0, recorded);
        state.candidates.truncate(CANDIDATES_KEPT);
    }

    /// What a drift-triggered run is told (`DROVER_TRIGGER_REPORT`).
    fn trigger_report(&self) -> String {
        let md = self.md;
        let drift = self.status.drift.clone().unwrap_or_default();
        json!({
            "reason": TriggerReason::Drift.as_str(),
            "model": {
                "name": md.name_any(),
                "namespace": md.metadata.namespace,
                "version": md.spec.model.version,
                "image": md.spec.model.image,
                "revision": drift.revision,
            },
            "window": md.spec.monitoring.window.to_string(),
            "method": md.spec.monitoring.drift.method,
            "threshold": md.spec.monitoring.drift.threshold,
            "consecutiveWindows": md.spec.monitoring.drift.consecutive_windows,
            "declaredAt": drift.since.map(|t| t.0.to_string()),
            "features": drift.features,
            "prediction": drift.prediction,
            "confidenceDrop": drift.confidence_drop,
            "performanceDrop": drift.performance_drop,
        })
        .to_string()
    }

    fn retraining_condition(&mut self, state: &RetrainingStatus) {
        if let Some(active) = &state.active {
            self.condition(
                RETRAINING,
                ConditionStatus::True,
                retraining_reason::RUNNING,
                format!(
                    "retraining Job {} ({}) is running",
                    active.job, active.reason
                ),
            );
            return;
        }
        if let Some(refused) = &state.refused {
            self.condition(
                RETRAINING,
                ConditionStatus::False,
                retraining_reason::REFUSED,
                format!(
                    "the API server refused the retraining Job: {} (fix spec.remediation.retraining.jobTemplate)",
                    refused.message
                ),
            );
            return;
        }
        if let Some(held) = &state.held {
            self.condition(
                RETRAINING,
                ConditionStatus::False,
                retraining_reason::HELD,
                format!("drift declared; retraining held: {held}"),
            );
            return;
        }
        let (reason, message) = match &state.last {
            Some(last) if last.result == "Failed" => (
                retraining_reason::FAILED,
                format!("last run {} failed: {}", last.job, last.message),
            ),
            Some(last) => (
                retraining_reason::SUCCEEDED,
                format!("last run {} succeeded: {}", last.job, last.message),
            ),
            None => (retraining_reason::IDLE, "no retraining run yet".to_string()),
        };
        self.condition(RETRAINING, ConditionStatus::False, reason, message);
    }
}
