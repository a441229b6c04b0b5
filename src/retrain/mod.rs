//! When to start a retraining Job (issue 6): drift declared, no run active, the cooldown since
//! the last start over, fewer than `maxRunsPerDay` starts in the last 24 hours, and the template
//! not just refused by the API server; finished Jobs beyond `historyLimit` go, oldest first.
//!
//! Scheduled runs (started by the CronJob, which Drover cannot hold back) count like any other:
//! they hold a drift run while active, start its cooldown and use up the day's budget, and
//! their finished Jobs count towards `historyLimit`.
//!
//! Pure: the Jobs that exist, the starts recorded in status and the time come in as arguments,
//! so a restarted operator decides the same, and drift held for days cannot start a storm of
//! Jobs. What a finished run reported, and whether it is good enough, is [`candidate`]'s.

pub mod candidate;

use std::fmt;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use crate::api::{RefusedJob, RetrainingSpec};
use crate::naming;

/// Why a retraining run starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TriggerReason {
    /// Drift was declared on the serving model.
    Drift,
    /// `retraining.schedule` came round (the CronJob started it).
    Scheduled,
}

impl TriggerReason {
    /// As status and the `drover.dev/trigger-reason` annotation show it (`Drift`, `Scheduled`).
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerReason::Drift => "Drift",
            TriggerReason::Scheduled => "Scheduled",
        }
    }

    /// As the `drover.dev/retraining` label carries it (`drift`, `scheduled`).
    pub const fn label_value(self) -> &'static str {
        match self {
            TriggerReason::Drift => "drift",
            TriggerReason::Scheduled => "scheduled",
        }
    }

    /// The reason a `drover.dev/retraining` label value names; `None` for anything else (a
    /// label edited by hand).
    pub fn from_label(value: &str) -> Option<Self> {
        match value {
            "drift" => Some(TriggerReason::Drift),
            "scheduled" => Some(TriggerReason::Scheduled),
            _ => None,
        }
    }
}

impl fmt::Display for TriggerReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a retraining Job stands, as its status conditions say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobOutcome {
    /// Neither `Complete` nor `Failed` yet.
    Running,
    /// Condition `Complete`.
    Succeeded {
        /// When it completed.
        finished: Timestamp,
    },
    /// Condition `Failed` (including `DeadlineExceeded` from the timeout).
    Failed {
        /// When it failed.
        finished: Timestamp,
        /// The condition's reason and message, for status.
        message: String,
    },
}

impl JobOutcome {
    /// When the Job finished; `None` while it runs.
    pub fn finished_at(&self) -> Option<Timestamp> {
        match self {
            JobOutcome::Running => None,
            JobOutcome::Succeeded { finished } | JobOutcome::Failed { finished, .. } => {
                Some(*finished)
            }
        }
    }
}

/// A retraining Job as observed (labelled for the ModelDeployment, controlled by it or by its
/// CronJob).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedJob {
    /// Job name.
    pub name: String,
    /// When it was created.
    pub started: Timestamp,
    /// From the `drover.dev/retraining` label; `None` when the label is missing or unknown.
    pub reason: Option<TriggerReason>,
    /// Running, succeeded or failed.
    pub outcome: JobOutcome,
}

impl ObservedJob {
    /// Finished (succeeded or failed), or still running.
    pub fn finished(&self) -> bool {
        self.outcome.finished_at().is_some()
    }
}

/// The limits of `spec.remediation.retraining`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Least time between two starts (and before a refused template is tried again).
    pub cooldown: Duration,
    /// Most starts in any 24 hours.
    pub max_runs_per_day: u32,
    /// Finished Jobs kept.
    pub history_limit: usize,
}

impl Limits {
    /// The limits of `spec`, or what is wrong with its cooldown. Counts out of range (possible
    /// only past an older CRD) are clamped to the schema's bounds rather than refused.
    pub fn from_spec(spec: &RetrainingSpec) -> Result<Self, String> {
        let cooldown = spec
            .cooldown
            .parse()
            .map_err(|e| format!("spec.remediation.retraining.cooldown: {e}"))?;
        Ok(Self {
            cooldown,
            max_runs_per_day: spec.max_runs_per_day.clamp(1, 48).unsigned_abs(),
            history_limit: spec.history_limit.clamp(0, 100).unsigned_abs() as usize,
        })
    }
}

/// A Job the API server refused to create, as `status.retraining.refused` records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The spec generation the Job was built from.
    pub generation: i64,
    /// When it was refused.
    pub at: Timestamp,
}

impl From<&RefusedJob> for Refusal {
    fn from(refused: &RefusedJob) -> Self {
        Self {
            generation: refused.generation,
            at: refused.at.0,
        }
    }
}

/// What the controller knows when it decides.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Situation<'a> {
    /// Drift is declared on the serving model.
    pub drift_detected: bool,
    /// The retraining Jobs that exist (drift and scheduled alike).
    pub jobs: &'a [ObservedJob],
    /// `status.retraining.starts` (RFC 3339; unparsable entries are ignored). Finished Jobs
    /// beyond `historyLimit` are deleted, so without these the budget would forget them.
    pub recorded_starts: &'a [String],
    /// `status.retraining.refused`, if any.
    pub refused: Option<Refusal>,
    /// The ModelDeployment's `metadata.generation` now.
    pub generation: i64,
}

/// Why no Job starts now (a person reads it in status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// No drift declared.
    NoDrift,
    /// A run is active.
    Running(String),
    /// The API server refused the Job built from this generation of the spec; it is tried
    /// again at this time, or as soon as the spec changes.
    Refused(Timestamp),
    /// The cooldown since the last start is not over; when it is.
    Cooldown(Timestamp),
    /// `maxRunsPerDay` starts in the last 24 hours; when enough of them leave the day.
    Budget(Timestamp),
}

impl fmt::Display for Held {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Held::NoDrift => f.write_str("no drift declared"),
            Held::Running(job) => write!(f, "retraining Job {job} is running"),
            Held::Refused(until) => write!(
                f,
                "the API server refused the Job template; retried at {until} or when the spec changes"
            ),
            Held::Cooldown(until) => write!(f, "cooldown until {until}"),
            Held::Budget(until) => write!(f, "maxRunsPerDay reached until {until}"),
        }
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrainDecision {
    /// Start a Job with this name ([`naming::retrain_job`]).
    pub start: Option<String>,
    /// Or why not.
    pub held: Option<Held>,
    /// Finished Jobs beyond the history limit, oldest first (drift and scheduled together).
    pub delete: Vec<String>,
}

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// Starts most `status.retraining.starts` may hold (its schema's `maxItems`).
pub const MAX_RECORDED_STARTS: usize = 48;

/// A start recorded in status and an observed Job's creation this close together are one run:
/// the controller records the time of the create, the API server stamps its own a moment later.
const SAME_START: SignedDuration = SignedDuration::from_secs(60);

/// Decides for `model` at `now`.
pub fn decide(
    model: &str,
    situation: &Situation<'_>,
    limits: Limits,
    now: Timestamp,
) -> RetrainDecision {
    let mut finished: Vec<&ObservedJob> = situation.jobs.iter().filter(|j| j.finished()).collect();
    finished.sort_by(|a, b| a.started.cmp(&b.started).then(a.name.cmp(&b.name)));
    let excess = finished.len().saturating_sub(limits.history_limit);
    let delete = finished
        .iter()
        .take(excess)
        .map(|j| j.name.clone())
        .collect();
    let held = held(situation, limits, now);
    let start = held.is_none().then(|| naming::retrain_job(model, now));
    RetrainDecision {
        start,
        held,
        delete,
    }
}

fn held(situation: &Situation<'_>, limits: Limits, now: Timestamp) -> Option<Held> {
    if !situation.drift_detected {
        return Some(Held::NoDrift);
    }
    if let Some(active) = situation.jobs.iter().find(|j| !j.finished()) {
        return Some(Held::Running(active.name.clone()));
    }
    let cooldown = SignedDuration::try_from(limits.cooldown).unwrap_or(SignedDuration::MAX);
    if let Some(refused) = situation.refused
        && refused.generation == situation.generation
    {
        let until = refused.at.checked_add(cooldown).unwrap_or(Timestamp::MAX);
        if now < until {
            return Some(Held::Refused(until));
        }
    }
    let starts = starts(situation.jobs, situation.recorded_starts);
    if let Some(last) = starts.last() {
        let until = last.checked_add(cooldown).unwrap_or(Timestamp::MAX);
        if now < until {
            return Some(Held::Cooldown(until));
        }
    }
    // A start in the future (clock skew between the API server and the operator) counts too.
    let today: Vec<Timestamp> = starts
        .into_iter()
        .filter(|s| now.duration_since(*s) < DAY)
        .collect();
    let budget = limits.max_runs_per_day.max(1) as usize;
    if today.len() >= budget {
        // Below the budget again once all but `budget - 1` of today's starts are a day old.
        let pivot = today[today.len() - budget];
        return Some(Held::Budget(
            pivot.checked_add(DAY).unwrap_or(Timestamp::MAX),
        ));
    }
    None
}

/// Every start known, oldest first: the observed Jobs' creations, and the recorded starts no
/// Job accounts for (their Jobs were deleted). Each Job accounts for at most one recorded start,
/// the nearest within [`SAME_START`], so two runs close together are never merged into one.
fn starts(jobs: &[ObservedJob], recorded: &[String]) -> Vec<Timestamp> {
    let mut unmatched: Vec<Timestamp> = recorded.iter().filter_map(|s| s.parse().ok()).collect();
    let mut out = Vec::with_capacity(jobs.len() + unmatched.len());
    for job in jobs {
        let nearest = unmatched
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.duration_since(job.started).abs()))
            .filter(|(_, gap)| *gap <= SAME_START)
            .min_by_key(|(_, gap)| *gap)
            .map(|(i, _)| i);
        // The later of the two, so the cooldown never ends early.
        let start = match nearest {
            Some(i) => unmatched.swap_remove(i).max(job.started),
            None => job.started,
        };
        out.push(start);
    }
    out.extend(unmatched);
    out.sort();
    out
}

/// `status.retraining.starts` pruned at `now`: those of the last 24 hours, oldest first, at
/// most [`MAX_RECORDED_STARTS`] (the newest). The newest start is kept whatever its age, because
/// a cooldown longer than a day must still count from it after its Job is deleted. Unparsable
/// entries are dropped; the rest are written back in RFC 3339 as jiff prints them.
pub fn prune_starts(starts: &[String], now: Timestamp) -> Vec<String> {
    let mut parsed: Vec<Timestamp> = starts.iter().filter_map(|s| s.parse().ok()).collect();
    parsed.sort();
    parsed.dedup();
    let newest = parsed.last().copied();
    let mut kept: Vec<Timestamp> = parsed
        .into_iter()
        .filter(|s| now.duration_since(*s) < DAY || Some(*s) == newest)
        .collect();
    let excess = kept.len().saturating_sub(MAX_RECORDED_STARTS);
    kept.drain(..excess);
    kept.iter().map(Timestamp::to_string).collect()
}

#[cfg(test)]
mod tests;
