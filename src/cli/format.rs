//! What `status` and `history` print, from a ModelDeployment alone. Pure.

use kube::ResourceExt;

use crate::api::{
    Condition, ConditionStatus, Judgement, ModelDeployment, ModelDeploymentStatus, RevisionStatus,
    RolloutState,
};

/// Width of the `Label:` column of the status summary.
const LABEL_WIDTH: usize = 11;

/// Columns left-aligned under their headers, two spaces apart, no trailing blanks.
pub fn table(headers: &[&str], rows: &[Vec<String>], indent: &str) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from(indent);
        for (i, cell) in cells.iter().enumerate() {
            s.push_str(cell);
            if i + 1 < cells.len() {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count())
                    + 2;
                s.push_str(&" ".repeat(pad));
            }
        }
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(
            row.iter().take(headers.len()).map(String::as_str).collect(),
        ));
    }
    out
}

/// A measured number for a table: short, exact enough to compare with its threshold.
pub fn number(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(v) if !v.is_finite() => v.to_string(),
        Some(0.0) => "0".into(),
        Some(v) if v.abs() < 1e-3 || v.abs() >= 1e6 => format!("{v:.2e}"),
        Some(v) => {
            let s = format!("{v:.4}");
            let s = s.trim_end_matches('0').trim_end_matches('.');
            s.to_string()
        }
    }
}

fn labelled(out: &mut String, label: &str, value: &str) {
    let label = format!("{label}:");
    out.push_str(&format!("{label:<LABEL_WIDTH$} {value}\n"));
}

fn revision(r: &RevisionStatus) -> String {
    format!(
        "revision {}, version {}, ready {}/{}",
        r.hash, r.version, r.ready_replicas, r.replicas
    )
}

/// The canary's traffic: what the rollout asked for and what the replica split gives.
fn canary_weights(canary: Option<&RevisionStatus>, rollout: Option<&RolloutState>) -> (i32, i32) {
    match rollout {
        Some(r) if canary.is_none_or(|c| c.hash == r.revision) => {
            (r.requested_weight, r.actual_weight)
        }
        _ => {
            let w = canary.and_then(|c| c.weight).unwrap_or(0);
            (w, w)
        }
    }
}

/// `drover status`: the summary, the last judgement with every signal, and the conditions.
pub fn status(md: &ModelDeployment) -> String {
    let mut out = String::new();
    labelled(&mut out, "Name", &md.name_any());
    labelled(&mut out, "Namespace", &md.namespace().unwrap_or_default());
    let Some(status) = md.status.as_ref() else {
        labelled(
            &mut out,
            "Phase",
            "not reported yet (is the drover operator running?)",
        );
        return out;
    };
    status_body(&mut out, status);
    out
}

fn status_body(out: &mut String, status: &ModelDeploymentStatus) {
    labelled(
        out,
        "Phase",
        status.phase.map(|p| p.as_str()).unwrap_or("-"),
    );
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        labelled(out, "Message", m);
    }
    let rollout = status.rollout.as_ref();
    let in_flight = status.canary.is_some();
    let (requested, actual) = canary_weights(status.canary.as_ref(), rollout);
    match &status.stable {
        Some(s) => {
            let weight = if in_flight { 100 - actual } else { 100 };
            labelled(out, "Stable", &format!("{}, weight {weight}%", revision(s)));
        }
        None => labelled(out, "Stable", "none yet"),
    }
    match &status.canary {
        Some(c) => labelled(
            out,
            "Canary",
            &format!("{}, requested {requested}%, actual {actual}%", revision(c)),
        ),
        None => labelled(out, "Canary", "none"),
    }
    match rollout {
        Some(r) => {
            let mut line = format!("{:?}, revision {}", r.phase, r.revision);
            if !r.version.is_empty() {
                line.push_str(&format!(" (version {})", r.version));
            }
            line.push_str(&format!(", step {}", r.step));
            if r.failed_checks > 0 {
                line.push_str(&format!(", failed checks {}", r.failed_checks));
            }
            labelled(out, "Rollout", &line);
            if !r.reason.is_empty() {
                labelled(out, "Reason", &r.reason);
            }
        }
        None => labelled(out, "Rollout", "none"),
    }
    match rollout.and_then(|r| r.last_judgement.as_ref()) {
        Some(j) => judgement(out, j),
        None => labelled(out, "Judgement", "none yet"),
    }
    steady(out, status);
    conditions(out, &status.conditions);
}

/// The steady-state watch and retraining, when there are any.
fn steady(out: &mut String, status: &ModelDeploymentStatus) {
    if let Some(d) = &status.drift {
        let mut line = if d.detected {
            let features: Vec<String> = d
                .features
                .iter()
                .filter(|f| f.drifted)
                .map(|f| format!("{} {}", f.name, number(Some(f.score))))
                .collect();
            format!("DETECTED on {}", features.join(", "))
        } else {
            format!(
                "none ({} drifted / {} clean windows in a row)",
                d.drifted_windows, d.clean_windows
            )
        };
        if let Some(since) = &d.since {
            line.push_str(&format!(", since {}", since.0));
        }
        labelled(out, "Drift", &line);
        if let Some(why) = &d.slo_breach {
            labelled(out, "SLO", &format!("breached: {why}"));
        }
        if let Some(why) = &d.performance_drop {
            labelled(out, "Performance", &format!("dropped: {why}"));
        }
    }
    if let Some(r) = &status.retraining {
        let line = match (&r.active, &r.last) {
            (Some(a), _) => format!("running {} ({})", a.job, a.reason),
            (None, Some(l)) => format!("last {} {}: {}", l.job, l.result, l.message),
            (None, None) => "no run yet".to_string(),
        };
        labelled(out, "Retraining", &line);
        if let Some(held) = &r.held {
            labelled(out, "Held", held);
        }
        if let Some(c) = r.candidates.first() {
            labelled(
                out,
                "Candidate",
                &format!("{} {}: {}", c.version, c.verdict, c.reason),
            );
        }
    }
    if let Some(b) = &status.batch
        && let Some(l) = &b.last
    {
        labelled(out, "Batch", &format!("last {} {}", l.job, l.result));
    }
}

fn judgement(out: &mut String, j: &Judgement) {
    out.push_str("Last judgement:\n");
    let sub = |out: &mut String, label: &str, value: &str| {
        let label = format!("{label}:");
        out.push_str(&format!("  {label:<10} {value}\n"));
    };
    sub(out, "Verdict", j.verdict.as_str());
    sub(out, "Reason", &j.reason);
    let mut when = format!("step {}", j.step);
    if !j.at.is_empty() {
        when.push_str(&format!(", at {}", j.at));
    }
    sub(out, "Step", &when);
    sub(
        out,
        "Requests",
        &format!("{} canary, {} stable", j.canary_requests, j.stable_requests),
    );
    if j.signals.is_empty() {
        sub(out, "Signals", "none");
        return;
    }
    let rows: Vec<Vec<String>> = j
        .signals
        .iter()
        .map(|s| {
            vec![
                s.name.clone(),
                number(s.value),
                number(s.threshold),
                number(s.p_value),
                s.verdict.as_str().to_string(),
                s.note.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["SIGNAL", "VALUE", "THRESHOLD", "P-VALUE", "VERDICT", "NOTE"],
        &rows,
        "  ",
    ));
}

fn conditions(out: &mut String, conditions: &[Condition]) {
    if conditions.is_empty() {
        labelled(out, "Conditions", "none");
        return;
    }
    out.push_str("Conditions:\n");
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            let status = match c.status {
                ConditionStatus::True => "True",
                ConditionStatus::False => "False",
                ConditionStatus::Unknown => "Unknown",
            };
            vec![
                c.type_.clone(),
                status.to_string(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    out.push_str(&table(
        &["TYPE", "STATUS", "REASON", "MESSAGE"],
        &rows,
        "  ",
    ));
}

/// `drover history`: how the last rollouts ended, newest first (as the operator keeps them).
pub fn history(md: &ModelDeployment) -> String {
    let records = md
        .status
        .as_ref()
        .map(|s| s.history.as_slice())
        .unwrap_or_default();
    if records.is_empty() {
        return format!(
            "No rollouts recorded for modeldeployment {}/{}.\n",
            md.namespace().unwrap_or_default(),
            md.name_any()
        );
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.at.clone(),
                r.revision.clone(),
                r.version.clone(),
                r.outcome.clone(),
                r.reason.clone(),
            ]
        })
        .collect();
    table(
        &["AT", "REVISION", "VERSION", "OUTCOME", "REASON"],
        &rows,
        "",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        AppliedControls, Phase, RolloutPhase, RolloutRecord, SignalJudgement, Verdict,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn model(status: Option<ModelDeploymentStatus>) -> ModelDeployment {
        let yaml = "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {name: fraud, namespace: ml, generation: 3}\nspec:\n  model: {version: '2.0.0', image: 'registry.example.com/fraud:2.0.0'}\n";
        let mut md: ModelDeployment = serde_saphyr::from_str(yaml).expect("fixture parses");
        md.status = status;
        md
    }

    fn failing() -> ModelDeploymentStatus {
        let at: jiff::Timestamp = "2025-06-14T10:15:00Z".parse().expect("timestamp");
        ModelDeploymentStatus {
            observed_generation: Some(3),
            phase: Some(Phase::Progressing),
            message: Some("canary 2.0.0 at 25% (step 2 of 4)".into()),
            conditions: vec![Condition {
                type_: "Ready".into(),
                status: ConditionStatus::True,
                reason: "StableAvailable".into(),
                message: "stable revision 7d9f8c6b5a serves".into(),
                last_transition_time: Time(at),
                observed_generation: Some(3),
            }],
            stable: Some(RevisionStatus {
                hash: "7d9f8c6b5a".into(),
                version: "1.0.0".into(),
                image: "registry.example.com/fraud:1.0.0".into(),
                replicas: 3,
                ready_replicas: 3,
                weight: None,
                since: None,
            }),
            canary: Some(RevisionStatus {
                hash: "5c4b3a2918".into(),
                version: "2.0.0".into(),
                image: "registry.example.com/fraud:2.0.0".into(),
                replicas: 1,
                ready_replicas: 1,
                weight: Some(25),
                since: None,
            }),
            rollout: Some(RolloutState {
                revision: "5c4b3a2918".into(),
                version: "2.0.0".into(),
                previous: Some("7d9f8c6b5a".into()),
                phase: RolloutPhase::Progressing,
                step: 1,
                requested_weight: 30,
                actual_weight: 25,
                failed_checks: 1,
                reason: "judgement Fail at step 1 (1 of 2 allowed)".into(),
                last_judgement: Some(Judgement {
                    verdict: Verdict::Fail,
                    reason: "errorRate 0.031 above 0.01".into(),
                    at: "2025-06-14T10:14:00Z".into(),
                    step: 1,
                    canary_requests: 1200,
                    stable_requests: 3600,
                    signals: vec![
                        SignalJudgement {
                            name: "errorRate".into(),
                            value: Some(0.031),
                            threshold: Some(0.01),
                            statistic: Some(4.2),
                            p_value: Some(0.000013),
                            verdict: Verdict::Fail,
                            note: "canary errors above the limit".into(),
                        },
                        SignalJudgement {
                            name: "latencyP99".into(),
                            value: Some(182.5),
                            threshold: Some(250.0),
                            verdict: Verdict::Pass,
                            ..SignalJudgement::default()
                        },
                    ],
                }),
                controls: AppliedControls::default(),
                ..RolloutState::default()
            }),
            history: vec![],
            drift: None,
            retraining: None,
            batch: None,
            model: None,
        }
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
    }

    fn words(l: &str) -> Vec<&str> {
        l.split_whitespace().collect()
    }

    #[test]
    fn status_shows_the_summary_revisions_and_weights() {
        let text = status(&model(Some(failing())));
        assert_eq!(words(line(&text, "Name:")), ["Name:", "fraud"]);
        assert_eq!(words(line(&text, "Namespace:")), ["Namespace:", "ml"]);
        assert_eq!(words(line(&text, "Phase:")), ["Phase:", "Progressing"]);
        assert!(line(&text, "Message:").ends_with("canary 2.0.0 at 25% (step 2 of 4)"));
        assert_eq!(
            line(&text, "Stable:"),
            "Stable:     revision 7d9f8c6b5a, version 1.0.0, ready 3/3, weight 75%"
        );
        assert_eq!(
            line(&text, "Canary:"),
            "Canary:     revision 5c4b3a2918, version 2.0.0, ready 1/1, requested 30%, actual 25%"
        );
        assert_eq!(
            line(&text, "Rollout:"),
            "Rollout:    Progressing, revision 5c4b3a2918 (version 2.0.0), step 1, failed checks 1"
        );
        assert!(line(&text, "Reason:").ends_with("judgement Fail at step 1 (1 of 2 allowed)"));
    }

    #[test]
    fn status_shows_the_last_judgement_and_a_row_per_signal() {
        let text = status(&model(Some(failing())));
        assert_eq!(words(line(&text, "Verdict:")), ["Verdict:", "Fail"]);
        assert!(
            text.contains("  Reason:    errorRate 0.031 above 0.01\n"),
            "{text}"
        );
        assert!(line(&text, "Step:").ends_with("step 1, at 2025-06-14T10:14:00Z"));
        assert!(line(&text, "Requests:").ends_with("1200 canary, 3600 stable"));
        assert_eq!(
            words(line(&text, "SIGNAL")),
            ["SIGNAL", "VALUE", "THRESHOLD", "P-VALUE", "VERDICT", "NOTE"]
        );
        let error_rate = line(&text, "errorRate");
        assert_eq!(
            words(error_rate),
            [
                "errorRate",
                "0.031",
                "0.01",
                "1.30e-5",
                "Fail",
                "canary",
                "errors",
                "above",
                "the",
                "limit"
            ]
        );
        assert_eq!(
            words(line(&text, "latencyP99")),
            ["latencyP99", "182.5", "250", "-", "Pass"]
        );
        // Columns line up under their headers.
        let header = line(&text, "SIGNAL");
        let col = |l: &str, w: &str| l.find(w).unwrap_or(usize::MAX);
        assert_eq!(col(header, "VERDICT"), col(error_rate, "Fail"));
        assert_eq!(col(header, "P-VALUE"), col(error_rate, "1.30e-5"));
    }

    #[test]
    fn status_shows_the_conditions() {
        let text = status(&model(Some(failing())));
        let after = text.split("Conditions:\n").nth(1).unwrap_or_default();
        let mut rows = after.lines();
        assert_eq!(
            rows.next().map(words),
            Some(vec!["TYPE", "STATUS", "REASON", "MESSAGE"])
        );
        assert_eq!(
            rows.next().map(words),
            Some(vec![
                "Ready",
                "True",
                "StableAvailable",
                "stable",
                "revision",
                "7d9f8c6b5a",
                "serves"
            ])
        );
    }

    #[test]
    fn a_settled_model_has_all_traffic_on_stable_and_no_canary() {
        let mut s = failing();
        s.phase = Some(Phase::Healthy);
        s.canary = None;
        s.conditions.clear();
        if let Some(r) = s.rollout.as_mut() {
            r.phase = RolloutPhase::Complete;
            r.last_judgement = None;
            r.reason = "promoted and baked".into();
        }
        let text = status(&model(Some(s)));
        assert!(line(&text, "Stable:").ends_with("weight 100%"), "{text}");
        assert_eq!(words(line(&text, "Canary:")), ["Canary:", "none"]);
        assert!(line(&text, "Rollout:").starts_with("Rollout:    Complete"));
        assert_eq!(
            words(line(&text, "Judgement:")),
            ["Judgement:", "none", "yet"]
        );
        assert_eq!(words(line(&text, "Conditions:")), ["Conditions:", "none"]);
    }

    #[test]
    fn status_shows_drift_retraining_and_the_last_candidate() {
        let mut s = failing();
        s.drift = Some(crate::api::DriftStatus {
            revision: "7d9f8c6b5a".into(),
            drifted_windows: 3,
            detected: true,
            features: vec![crate::api::FeatureScore {
                name: "amount".into(),
                score: 1.25,
                drifted: true,
                ..Default::default()
            }],
            ..Default::default()
        });
        s.retraining = Some(crate::api::RetrainingStatus {
            held: Some("cooldown until 2025-06-14T16:15:00Z".into()),
            last: Some(crate::api::RetrainingRun {
                job: "fraud-retrain-1".into(),
                reason: "Drift".into(),
                result: "Succeeded".into(),
                message: "reported model version 2.1.0".into(),
                ..Default::default()
            }),
            ..Default::default()
        });
        let text = status(&model(Some(s)));
        assert!(
            line(&text, "Drift:").contains("DETECTED on amount 1.25"),
            "{text}"
        );
        assert!(
            line(&text, "Retraining:").contains("fraud-retrain-1 Succeeded"),
            "{text}"
        );
        assert!(line(&text, "Held:").contains("cooldown"), "{text}");
    }

    #[test]
    fn a_model_without_status_says_so() {
        let text = status(&model(None));
        assert!(line(&text, "Phase:").contains("not reported yet"), "{text}");
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn history_is_a_table_newest_first() {
        let mut s = failing();
        s.history = vec![
            RolloutRecord {
                revision: "5c4b3a2918".into(),
                version: "2.0.0".into(),
                outcome: "RolledBack".into(),
                reason: "errorRate 0.031 above 0.01".into(),
                at: "2025-06-14T10:20:00Z".into(),
            },
            RolloutRecord {
                revision: "7d9f8c6b5a".into(),
                version: "1.0.0".into(),
                outcome: "Promoted".into(),
                reason: "every step passed".into(),
                at: "2025-06-01T08:00:00Z".into(),
            },
        ];
        let text = history(&model(Some(s)));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            words(lines[0]),
            ["AT", "REVISION", "VERSION", "OUTCOME", "REASON"]
        );
        assert_eq!(
            words(lines[1]),
            [
                "2025-06-14T10:20:00Z",
                "5c4b3a2918",
                "2.0.0",
                "RolledBack",
                "errorRate",
                "0.031",
                "above",
                "0.01"
            ]
        );
        assert!(lines[2].starts_with("2025-06-01T08:00:00Z  7d9f8c6b5a  1.0.0    Promoted"));
    }

    #[test]
    fn empty_history_says_so() {
        assert_eq!(
            history(&model(None)),
            "No rollouts recorded for modeldeployment ml/fraud.\n"
        );
    }

    #[test]
    fn numbers_are_short_and_keep_small_values_readable() {
        assert_eq!(number(None), "-");
        assert_eq!(number(Some(0.0)), "0");
        assert_eq!(number(Some(0.01)), "0.01");
        assert_eq!(number(Some(250.0)), "250");
        assert_eq!(number(Some(0.123456)), "0.1235");
        assert_eq!(number(Some(0.000013)), "1.30e-5");
        assert_eq!(number(Some(f64::INFINITY)), "inf");
    }

    #[test]
    fn tables_have_no_trailing_blanks() {
        let t = table(
            &["A", "B"],
            &[vec!["long value".into(), String::new()]],
            "  ",
        );
        assert_eq!(t, "  A           B\n  long value\n");
    }
}
