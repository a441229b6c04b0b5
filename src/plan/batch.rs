//! Batch scoring in the planner: the CronJob `<name>-batch` follows `spec.batch`, and the runs
//! it starts are recorded in `status.batch` (the last that finished, when one last succeeded),
//! with an Event when a run finishes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Action, Notice, ObservedChild, Planner};
use crate::api::{BatchStatus, ModelDeploymentStatus, RetrainingRun};
use crate::build::{Child, ChildKind, ChildRef};
use crate::retrain::{JobOutcome, ObservedJob};

/// Reasons of the batch Events.
pub mod batch_reason {
    /// A batch run succeeded.
    pub const SUCCEEDED: &str = "BatchRunSucceeded";
    /// A batch run failed (including its deadline).
    pub const FAILED: &str = "BatchRunFailed";
}

/// Batch scoring as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedBatch {
    /// CronJob `<name>-batch`.
    pub cron_job: Option<ObservedChild>,
    /// The Jobs it started.
    pub jobs: Vec<ObservedJob>,
}

impl Planner<'_> {
    /// Keeps the CronJob in line with `spec.batch` and records its runs.
    pub(super) fn batch(&mut self, old: &ModelDeploymentStatus) {
        let observed = &self.observed.batch;
        // The initializer runs the image new revisions get (the spec's, else this operator's).
        let fetch_image = self
            .md
            .spec
            .monitoring
            .sidecar
            .image
            .clone()
            .unwrap_or_else(|| self.settings.monitor_image.clone());
        match crate::build::batch::cron_job(self.md, &fetch_image, self.registry_version.as_deref())
        {
            Some(cron) => {
                if !observed.cron_job.as_ref().is_some_and(|c| c.foreign) {
                    self.apply_if_changed(Child::CronJob(Box::new(cron)));
                }
            }
            None => {
                if let Some(c) = observed.cron_job.as_ref().filter(|c| !c.foreign) {
                    self.actions.push(Action::Delete(ChildRef {
                        kind: ChildKind::CronJob,
                        name: c.name.clone(),
                    }));
                }
            }
        }
        if self.md.spec.batch.is_none() && observed.jobs.is_empty() {
            self.status.batch = None;
            return;
        }
        let mut state = old.batch.clone().unwrap_or_default();
        state.active = observed
            .jobs
            .iter()
            .filter(|j| !j.finished())
            .max_by_key(|j| j.started)
            .map(|j| j.name.clone());
        let newest_finished = observed
            .jobs
            .iter()
            .filter(|j| j.finished())
            .max_by_key(|j| (j.outcome.finished_at(), j.started));
        if let Some(job) = newest_finished {
            let known = state.last.as_ref().is_some_and(|l| l.job == job.name);
            let newer = state
                .last
                .as_ref()
                .and_then(|l| l.started.as_ref())
                .is_none_or(|t| job.started > t.0);
            if !known && newer {
                let (result, message) = match &job.outcome {
                    JobOutcome::Failed { message, .. } => ("Failed", message.clone()),
                    _ => ("Succeeded", String::new()),
                };
                let finished = job.outcome.finished_at();
                if result == "Succeeded" {
                    state.last_success = finished.map(Time);
                }
                self.announcements.push(Notice {
                    warning: result == "Failed",
                    reason: if result == "Failed" {
                        batch_reason::FAILED
                    } else {
                        batch_reason::SUCCEEDED
                    },
                    note: if result == "Failed" {
                        format!("batch scoring run {} failed: {message}", job.name)
                    } else {
                        format!("batch scoring run {} succeeded", job.name)
                    },
                });
                state.last = Some(RetrainingRun {
                    job: job.name.clone(),
                    reason: "Scheduled".into(),
                    started: Some(Time(job.started)),
                    finished: finished.map(Time),
                    result: result.into(),
                    message,
                });
            }
        }
        self.status.batch = Some(state).filter(|s| *s != BatchStatus::default());
    }
}
