//! When to start a retraining Job (issue 6, first step): drift declared, no run active, the
//! cooldown since the last start over, and fewer than `maxRunsPerDay` starts in the last 24
//! hours; finished Jobs beyond `historyLimit` go, oldest first. Pure: the Jobs that exist and the
//! time come in as arguments, so a restarted operator decides the same, and drift held for days
//! cannot start a storm of Jobs.
//!
//! Not wired into the operator yet: building and applying the Job is the next step.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// A retraining Job as observed (labelled for the ModelDeployment, controlled by it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedJob {
    /// Job name.
    pub name: String,
    /// When it was created.
    pub started: Timestamp,
    /// Finished (succeeded or failed), or still running.
    pub finished: bool,
}

/// The limits of `spec.remediation.retraining`, parsed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Least time between two starts.
    pub cooldown: Duration,
    /// Most starts in any 24 hours.
    pub max_runs_per_day: u32,
    /// Finished Jobs kept.
    pub history_limit: usize,
}

/// Why no Job starts now (a person reads it in status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// No drift declared.
    NoDrift,
    /// A run is active.
    Running(String),
    /// The cooldown since the last start is not over; when it is.
    Cooldown(Timestamp),
    /// `maxRunsPerDay` starts in the last 24 hours; when the oldest leaves the day.
    Budget(Timestamp),
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetrainDecision {
    /// Start a Job with this name (`<model>-retrain-<minutes since the epoch>`).
    pub start: Option<String>,
    /// Or why not.
    pub held: Option<Held>,
    /// Finished Jobs beyond the history limit, oldest first.
    pub delete: Vec<String>,
}

const DAY: SignedDuration = SignedDuration::from_hours(24);

/// Decides for `model` at `now`.
pub fn decide(
    model: &str,
    drift_detected: bool,
    jobs: &[ObservedJob],
    limits: Limits,
    now: Timestamp,
) -> RetrainDecision {
    let mut finished: Vec<&ObservedJob> = jobs.iter().filter(|j| j.finished).collect();
    finished.sort_by_key(|j| j.started);
    let excess = finished.len().saturating_sub(limits.history_limit);
    let delete = finished
        .iter()
        .take(excess)
        .map(|j| j.name.clone())
        .collect();
    let held = held(drift_detected, jobs, limits, now);
    let start = held.is_none().then(|| job_name(model, now));
    RetrainDecision {
        start,
        held,
        delete,
    }
}

fn held(
    drift_detected: bool,
    jobs: &[ObservedJob],
    limits: Limits,
    now: Timestamp,
) -> Option<Held> {
    if !drift_detected {
        return Some(Held::NoDrift);
    }
    if let Some(active) = jobs.iter().find(|j| !j.finished) {
        return Some(Held::Running(active.name.clone()));
    }
    let cooldown = SignedDuration::try_from(limits.cooldown).unwrap_or(SignedDuration::MAX);
    if let Some(last) = jobs.iter().map(|j| j.started).max() {
        let until = last.checked_add(cooldown).unwrap_or(Timestamp::MAX);
        if now < until {
            return Some(Held::Cooldown(until));
        }
    }
    let mut today: Vec<Timestamp> = jobs
        .iter()
        .map(|j| j.started)
        .filter(|s| now.duration_since(*s) < DAY)
        .collect();
    today.sort();
    if today.len() >= limits.max_runs_per_day.max(1) as usize {
        let oldest = today.first().copied().unwrap_or(now);
        return Some(Held::Budget(
            oldest.checked_add(DAY).unwrap_or(Timestamp::MAX),
        ));
    }
    None
}

/// `<model>-retrain-<minutes since the epoch>`: unique per minute, sortable, within the name
/// length every derived name is checked against.
pub fn job_name(model: &str, now: Timestamp) -> String {
    format!("{model}-retrain-{}", now.as_second().max(0) / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + minutes * 60).unwrap()
    }

    fn limits() -> Limits {
        Limits {
            cooldown: Duration::from_secs(6 * 3600),
            max_runs_per_day: 2,
            history_limit: 3,
        }
    }

    /// Drift held high for `days` on a one-minute clock; every Job runs `runtime` minutes.
    fn held_drift(days: i64, runtime: i64, limits: Limits) -> Vec<ObservedJob> {
        let mut jobs: Vec<ObservedJob> = Vec::new();
        let mut all = Vec::new();
        for minute in 0..days * 24 * 60 {
            let now = at(minute);
            for j in &mut jobs {
                if !j.finished
                    && now.duration_since(j.started) >= SignedDuration::from_mins(runtime)
                {
                    j.finished = true;
                }
            }
            let d = decide("fraud", true, &jobs, limits, now);
            jobs.retain(|j| !d.delete.contains(&j.name));
            if let Some(name) = d.start {
                let job = ObservedJob {
                    name,
                    started: now,
                    finished: false,
                };
                all.push(job.clone());
                jobs.push(job);
            }
            assert!(
                jobs.iter().filter(|j| !j.finished).count() <= 1,
                "one at a time"
            );
            assert!(jobs.iter().filter(|j| j.finished).count() <= limits.history_limit);
        }
        all
    }

    #[test]
    fn drift_held_for_days_starts_runs_within_cooldown_and_budget_only() {
        for (cooldown_h, budget, runtime) in [(6, 2, 30), (1, 3, 90), (12, 5, 5)] {
            let limits = Limits {
                cooldown: Duration::from_secs(cooldown_h * 3600),
                max_runs_per_day: budget,
                history_limit: 3,
            };
            let starts = held_drift(4, runtime, limits);
            assert!(!starts.is_empty());
            for pair in starts.windows(2) {
                let gap = pair[1].started.duration_since(pair[0].started);
                assert!(
                    gap >= SignedDuration::from_hours(cooldown_h as i64),
                    "{gap}"
                );
                assert!(
                    gap >= SignedDuration::from_mins(runtime),
                    "never two at once"
                );
            }
            for (i, s) in starts.iter().enumerate() {
                let in_day = starts[..=i]
                    .iter()
                    .filter(|o| s.started.duration_since(o.started) < DAY)
                    .count();
                assert!(in_day <= budget as usize, "budget of {budget} per 24h");
            }
            // With the budget binding (6h cooldown, 2/day) four days give exactly 8 runs.
            if (cooldown_h, budget) == (6, 2) {
                assert_eq!(starts.len(), 8);
            }
        }
    }

    #[test]
    fn no_drift_no_run_and_reasons_say_when() {
        let d = decide("fraud", false, &[], limits(), at(0));
        assert_eq!(d.held, Some(Held::NoDrift));
        assert!(d.start.is_none());
        let running = [ObservedJob {
            name: "fraud-retrain-1".into(),
            started: at(0),
            finished: false,
        }];
        assert_eq!(
            decide("fraud", true, &running, limits(), at(5)).held,
            Some(Held::Running("fraud-retrain-1".into()))
        );
        let done = [ObservedJob {
            finished: true,
            ..running[0].clone()
        }];
        assert_eq!(
            decide("fraud", true, &done, limits(), at(5)).held,
            Some(Held::Cooldown(at(360)))
        );
        let d = decide("fraud", true, &done, limits(), at(360));
        assert_eq!(d.start.as_deref(), Some("fraud-retrain-30000360"));
    }

    #[test]
    fn finished_jobs_beyond_the_history_limit_go_oldest_first() {
        let jobs: Vec<ObservedJob> = (0..5)
            .map(|i| ObservedJob {
                name: format!("j{i}"),
                started: at(i * 400),
                finished: true,
            })
            .collect();
        let d = decide("fraud", false, &jobs, limits(), at(3000));
        assert_eq!(d.delete, vec!["j0".to_string(), "j1".to_string()]);
        assert!(
            crate::naming::derived_names("m".repeat(crate::api::MAX_NAME_LENGTH).as_str())
                .iter()
                .any(|n| n.contains("-retrain-")),
            "the Job name is among the checked derived names"
        );
        assert_eq!(
            job_name("fraud", at(0)).len(),
            "fraud-retrain-30000000".len()
        );
    }
}
