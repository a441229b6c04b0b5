//! `drover steady`: the steady-state watch replayed offline over a monitor's cumulative reports.
//! Each consecutive pair of reports is one window (their difference), judged by the planner
//! exactly as the operator would (watch, `DriftDetected`, SLO, retraining), on a virtual clock
//! that advances one `spec.monitoring.window` per report. The serving revision is the spec's,
//! ready; retraining Jobs the planner creates stay running for the rest of the replay (the
//! replay shows what the watch decides, not how a Job fares).

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::api::{ConditionStatus, ModelDeployment};
use crate::collect::ClosedWindow;
use crate::conditions::{DEGRADED, DRIFT_DETECTED};
use crate::monitor::report::Report;
use crate::plan::{
    self, Action, Observed, ObservedEvidence, ObservedRevision, ObservedService, ReferenceState,
};
use crate::profile::ReferenceProfile;
use crate::retrain::{JobOutcome, ObservedJob, TriggerReason};
use crate::revision::revision_of;
use crate::watch::Judged;

/// One judged window.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowRow {
    /// 1-based window number.
    pub window: usize,
    /// When it ended (virtual clock).
    pub at: String,
    /// Requests in the window.
    pub requests: u64,
    /// The watch's verdict: `drifted`, `clean` or why there was none.
    pub verdict: String,
    /// Features above the threshold in this window, highest score first.
    pub drifted_features: Vec<String>,
    /// Condition `DriftDetected` after the window (`True`, `False`, `Unknown`, or empty).
    pub drift_detected: String,
    /// Its message.
    pub drift_message: String,
    /// Condition `Degraded` after the window.
    pub degraded: String,
    /// Retraining Jobs the planner created at this window.
    pub jobs_created: Vec<String>,
    /// Event reasons of the window.
    pub events: Vec<String>,
}

/// Replays `reports` (one monitor's cumulative reports, oldest first) through the planner.
pub fn replay(
    md: &ModelDeployment,
    profile: ReferenceProfile,
    reports: &[Report],
) -> Result<Vec<WindowRow>, String> {
    if reports.len() < 2 {
        return Err("give at least two reports: each consecutive pair is one window".into());
    }
    let mut md = md.clone();
    md.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    md.metadata.uid.get_or_insert_with(|| "replay".into());
    md.metadata.generation.get_or_insert(1);
    md.status = None;
    let window: std::time::Duration = md
        .spec
        .monitoring
        .window
        .parse()
        .map_err(|e| format!("spec.monitoring.window: {e}"))?;
    let step = SignedDuration::try_from(window).map_err(|e| e.to_string())?;
    let hash = revision_of(&md.spec);
    let name = md.metadata.name.clone().unwrap_or_default();
    let mut observed = Observed {
        revisions: vec![ObservedRevision {
            name: crate::naming::revision_deployment(&name, &hash),
            hash: hash.clone(),
            version: md.spec.model.version.clone(),
            replicas: Some(md.spec.replicas),
            ready_replicas: md.spec.replicas,
            complete: true,
            available: true,
            ..ObservedRevision::default()
        }],
        service: Some(ObservedService {
            spec_hash: None,
            serving_revision: Some(hash),
        }),
        reference: ReferenceState::Found,
        evidence: ObservedEvidence {
            profile: Some(Arc::new(profile)),
            ..ObservedEvidence::default()
        },
        ..Observed::default()
    };
    let settings = plan::Settings::default();
    let start = Timestamp::from_second(1_800_000_000).map_err(|e| e.to_string())?;
    // Settle: the revision serves.
    let settled = plan::plan(&md, &observed, &settings, start);
    md.status = Some(settled.status);

    let mut rows = Vec::with_capacity(reports.len() - 1);
    let mut previous_confidence = None;
    for (i, pair) in reports.windows(2).enumerate() {
        let [earlier, later] = pair else { continue };
        let delta = later
            .delta(earlier)
            .map_err(|e| format!("reports {} and {}: {e}", i + 1, i + 2))?;
        let confidence = delta.confidence.as_ref().and_then(|c| c.mean());
        let now = start
            .checked_add(step * i32::try_from(i + 1).unwrap_or(i32::MAX))
            .map_err(|e| e.to_string())?;
        let requests = delta.requests.total();
        observed.evidence.steady = Some(ClosedWindow {
            key: format!("watch {}", i + 1),
            report: Some(delta),
            previous_confidence,
        });
        if confidence.is_some() {
            previous_confidence = confidence;
        }
        let p = plan::plan(&md, &observed, &settings, now);
        let mut jobs_created = Vec::new();
        for action in &p.actions {
            if let Action::CreateJob(job) = action {
                let job_name = job.metadata.name.clone().unwrap_or_default();
                observed.retraining.jobs.push(ObservedJob {
                    name: job_name.clone(),
                    started: now,
                    reason: Some(TriggerReason::Drift),
                    outcome: JobOutcome::Running,
                });
                jobs_created.push(job_name);
            }
        }
        let condition = |type_: &str| {
            p.status
                .conditions
                .iter()
                .find(|c| c.type_ == type_)
                .map(|c| {
                    let status = match c.status {
                        ConditionStatus::True => "True",
                        ConditionStatus::False => "False",
                        ConditionStatus::Unknown => "Unknown",
                    };
                    (status.to_string(), c.message.clone())
                })
                .unwrap_or_default()
        };
        let (drift_detected, drift_message) = condition(DRIFT_DETECTED);
        let (verdict, drifted_features) = match &p.watch {
            Some(j @ Judged::Assessed { assessment, .. }) => (
                if j.drifted() == Some(true) {
                    "drifted".to_string()
                } else {
                    "clean".to_string()
                },
                assessment
                    .drifted()
                    .into_iter()
                    .map(str::to_string)
                    .collect(),
            ),
            Some(other) => (other.summary(), Vec::new()),
            None => ("not watched".to_string(), Vec::new()),
        };
        rows.push(WindowRow {
            window: i + 1,
            at: now.to_string(),
            requests,
            verdict,
            drifted_features,
            drift_detected,
            drift_message,
            degraded: condition(DEGRADED).0,
            jobs_created,
            events: p.notices.iter().map(|n| n.reason.to_string()).collect(),
        });
        md.status = Some(p.status);
    }
    Ok(rows)
}

/// The replay as text, a line per window.
pub fn table(rows: &[WindowRow]) -> String {
    let mut out =
        String::from("WINDOW  REQUESTS  VERDICT   DRIFTED FEATURES          DRIFT    JOBS\n");
    for r in rows {
        out.push_str(&format!(
            "{:<7} {:<9} {:<9} {:<25} {:<8} {}\n",
            r.window,
            r.requests,
            r.verdict,
            if r.drifted_features.is_empty() {
                "-".to_string()
            } else {
                r.drifted_features.join(",")
            },
            r.drift_detected,
            if r.jobs_created.is_empty() {
                "-".to_string()
            } else {
                r.jobs_created.join(",")
            }
        ));
    }
    if let Some(last) = rows.last()
        && !last.drift_message.is_empty()
    {
        out.push_str(&format!("\nDriftDetected: {}\n", last.drift_message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::fixtures::{fraud_profile, fraud_traffic};

    fn md() -> ModelDeployment {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/retraining.yaml");
        let text = std::fs::read_to_string(path).unwrap();
        serde_saphyr::from_str(&text).unwrap()
    }

    /// Cumulative reports of one monitor: each window's traffic added to the last.
    fn cumulative(windows: &[Report]) -> Vec<Report> {
        let mut out: Vec<Report> = Vec::new();
        let mut total = windows[0].clone();
        // An empty first report: the monitor just started.
        out.push(total.delta(&total).unwrap());
        out.push(total.clone());
        for w in &windows[1..] {
            total = total.merge(w).unwrap();
            out.push(total.clone());
        }
        out
    }

    #[test]
    fn drifted_windows_declare_drift_on_the_shifted_feature_and_plan_one_job() {
        let mut windows = vec![fraud_traffic(600, 60.0, 0.9, 0, 5)];
        windows.extend((0..6).map(|_| fraud_traffic(600, 5000.0, 0.9, 0, 5)));
        let rows = replay(&md(), fraud_profile(), &cumulative(&windows)).unwrap();
        assert_eq!(rows.len(), 7);
        // Declared at the third consecutive drifted window (consecutiveWindows: 3 in the
        // example), not before. (The fixture's traffic differs from the profile in more than
        // `amount`; CI replays real traffic where only the shifted features drift.)
        let first = rows
            .iter()
            .position(|r| r.drift_detected == "True")
            .unwrap_or_else(|| panic!("{rows:#?}"));
        assert!(rows[..first].iter().all(|r| r.drift_detected == "False"));
        assert_eq!(
            rows[..=first]
                .iter()
                .filter(|r| r.verdict == "drifted")
                .count(),
            3,
            "{rows:#?}"
        );
        assert!(rows[first].drifted_features.contains(&"amount".to_string()));
        assert!(rows[first].events.contains(&"DriftDetected".to_string()));
        let jobs: Vec<&String> = rows.iter().flat_map(|r| &r.jobs_created).collect();
        assert_eq!(jobs.len(), 1, "{rows:#?}");
        assert_eq!(
            rows[first].jobs_created.len(),
            1,
            "the Job starts with the declaration"
        );
        assert!(table(&rows).contains("DriftDetected: revision"));
    }

    #[test]
    fn fewer_than_two_reports_is_an_error() {
        assert!(replay(&md(), fraud_profile(), &[]).is_err());
    }
}
