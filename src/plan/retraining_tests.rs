//! Retraining in the planner on a virtual clock: drift held high for days.

use jiff::{SignedDuration, Timestamp};

use super::tests::{apply_plan, observed_with_profile, settle};
use super::*;
use crate::collect::ClosedWindow;
use crate::retrain::JobOutcome;
use crate::rollout::fixtures::{fraud_profile, fraud_traffic};

fn example() -> ModelDeployment {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/retraining.yaml");
    let mut md: ModelDeployment =
        serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    md.metadata.uid = Some("u-1".into());
    md.metadata.generation = Some(1);
    md
}

fn at(minutes: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + minutes * 60).unwrap()
}

#[test]
fn drift_held_for_days_starts_runs_only_within_cooldown_budget_and_one_at_a_time() {
    let mut md = example();
    let rev = revision_of(&md.spec);
    let mut observed = observed_with_profile(fraud_profile());
    // Serving.
    for _ in 0..4 {
        let p = settle(&mut md, &observed, at(0));
        observed = apply_plan(&observed, &p, &[&rev]);
    }
    assert!(md.status.as_ref().unwrap().stable.is_some());
    let drifted = Some(fraud_traffic(600, 5000.0, 0.9, 0, 5));
    let mut starts: Vec<(Timestamp, String)> = Vec::new();
    let run_for = SignedDuration::from_mins(50);
    // Three days of 15-minute windows, every one drifted; each run takes 50 minutes and
    // reports nothing.
    for window in 1..=(3 * 24 * 4) {
        let now = at(window * 15);
        for job in &mut observed.retraining.jobs {
            if job.outcome == JobOutcome::Running && now.duration_since(job.started) >= run_for {
                job.outcome = JobOutcome::Succeeded { finished: now };
            }
        }
        observed.evidence.steady = Some(ClosedWindow {
            key: format!("watch {window}"),
            report: drifted.clone(),
            previous_confidence: None,
        });
        let p = settle(&mut md, &observed, now);
        for action in &p.actions {
            if let Action::CreateJob(job) = action {
                starts.push((now, job.metadata.name.clone().unwrap()));
            }
        }
        let before = observed.retraining.jobs.len();
        observed = apply_plan(&observed, &p, &[&rev]);
        // apply_plan stamps created Jobs with the status's start time.
        for job in observed.retraining.jobs.iter_mut().skip(before) {
            job.started = now;
        }
        let running = observed
            .retraining
            .jobs
            .iter()
            .filter(|j| j.outcome == JobOutcome::Running)
            .count();
        assert!(running <= 1, "one run at a time (window {window})");
        assert!(
            observed.retraining.jobs.len() <= 3 + 1,
            "historyLimit 3 plus the running one"
        );
        let status = md.status.as_ref().unwrap();
        // consecutiveWindows 3: declared from the third window on, and held.
        assert_eq!(status.drift.as_ref().unwrap().detected, window >= 3);
        assert!(status.retraining.as_ref().unwrap().starts.len() <= 48);
    }
    // cooldown 6h, maxRunsPerDay 2: the budget binds; three days give 6 runs.
    assert_eq!(starts.len(), 6, "{starts:?}");
    for pair in starts.windows(2) {
        assert!(pair[1].0.duration_since(pair[0].0) >= SignedDuration::from_hours(6));
    }
    for (i, (t, _)) in starts.iter().enumerate() {
        let in_day = starts[..=i]
            .iter()
            .filter(|(o, _)| t.duration_since(*o) < SignedDuration::from_hours(24))
            .count();
        assert!(in_day <= 2, "at most maxRunsPerDay in any 24 hours");
    }
    let names: std::collections::BTreeSet<&String> = starts.iter().map(|(_, n)| n).collect();
    assert_eq!(names.len(), starts.len(), "every run its own Job");
    let retraining = md.status.unwrap().retraining.unwrap();
    assert!(
        retraining
            .held
            .as_deref()
            .is_some_and(|h| h.contains("until")),
        "{retraining:?}"
    );
}
