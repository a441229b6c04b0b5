use super::*;

fn at(minutes: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + minutes * 60).unwrap()
}

fn err(text: &str) -> CandidateError {
    parse_report(text).unwrap_err()
}

fn reported(metrics: &[(&str, f64)]) -> ReportedModel {
    ReportedModel {
        version: "1.5.0".into(),
        image: Some("registry.example.com/fraud:1.5.0".into()),
        uri: None,
        metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

fn rule(name: &str) -> AcceptanceRule {
    AcceptanceRule {
        name: name.into(),
        ..AcceptanceRule::default()
    }
}

fn gate(rules: Vec<AcceptanceRule>) -> AcceptanceSpec {
    AcceptanceSpec {
        metrics: rules,
        stable_metrics: BTreeMap::new(),
    }
}

fn stable(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[test]
fn the_documented_report_parses() {
    let text = "{\"model\": {\"version\": \"1.5.0\", \"image\": \"registry/fraud:1.5.0\", \"uri\": \"s3://models/fraud/1.5.0\"}, \"metrics\": {\"accuracy\": 0.93, \"auc\": 0.95}}\n";
    let m = parse_report(text).unwrap();
    assert_eq!(m.version, "1.5.0");
    assert_eq!(m.image.as_deref(), Some("registry/fraud:1.5.0"));
    assert_eq!(m.uri.as_deref(), Some("s3://models/fraud/1.5.0"));
    assert_eq!(m.metrics, stable(&[("accuracy", 0.93), ("auc", 0.95)]));
    assert!(m.is_deployable());
}

#[test]
fn a_version_alone_is_a_report_with_nothing_to_deploy() {
    let m = parse_report(r#"{"model": {"version": "2024-06-01.3", "notes": "x"}, "extra": 1}"#)
        .unwrap();
    assert_eq!(m.version, "2024-06-01.3");
    assert!(m.metrics.is_empty());
    assert!(!m.is_deployable());
    let uri_only = parse_report(r#"{"model": {"version": "v2", "uri": "s3://m/2"}}"#).unwrap();
    assert!(uri_only.is_deployable());
}

#[test]
fn an_empty_message_says_the_job_wrote_none() {
    for text in ["", "  \n"] {
        assert_eq!(err(text), CandidateError::Empty);
    }
    assert!(err("").to_string().contains("/dev/termination-log"));
}

#[test]
fn not_json_says_where() {
    let e = err("{\"model\": {\"version\": \"1\"}\n, oops}");
    let CandidateError::NotJson {
        line, column, cut, ..
    } = &e
    else {
        panic!("{e:?}");
    };
    assert_eq!((*line, *column, *cut), (2, 3, false));
    assert!(e.to_string().contains("line 2, column 3"), "{e}");
    // Cut by the kubelet at 4096 bytes: the message says so.
    let long = format!(
        "{{\"model\": {{\"version\": \"1\"}}, \"notes\": \"{}",
        "x".repeat(5000)
    );
    let e = err(&long[..TERMINATION_MESSAGE_LIMIT]);
    assert!(
        matches!(e, CandidateError::NotJson { cut: true, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("cut"), "{e}");
    assert_eq!(
        err("[1, 2]"),
        CandidateError::NotAnObject {
            what: "the report",
            found: "an array"
        }
    );
}

#[test]
fn no_version_is_refused() {
    for text in [
        "{}",
        r#"{"model": null}"#,
        r#"{"model": {"image": "x:1"}}"#,
        r#"{"metrics": {"auc": 0.9}}"#,
    ] {
        assert_eq!(err(text), CandidateError::NoVersion, "{text}");
    }
    assert_eq!(
        err(r#"{"model": "1.5.0"}"#),
        CandidateError::NotAnObject {
            what: "model",
            found: "a string"
        }
    );
    assert_eq!(
        err(r#"{"model": {"version": 1.5}}"#),
        CandidateError::NotAString {
            field: "version",
            found: "a number"
        }
    );
}

#[test]
fn a_version_that_is_not_a_label_value_is_refused() {
    for bad in ["-1.5", "1.5.", "1 5", "v1/2", "é1", &"1".repeat(64)] {
        let text = format!(r#"{{"model": {{"version": {bad:?}}}}}"#);
        assert!(
            matches!(err(&text), CandidateError::InvalidVersion(_)),
            "{bad}"
        );
    }
    for good in ["1", "1.5.0", "v1_2-rc.3", &"1".repeat(63)] {
        let text = format!(r#"{{"model": {{"version": {good:?}}}}}"#);
        assert_eq!(parse_report(&text).unwrap().version, good);
    }
}

#[test]
fn image_and_uri_must_be_usable_in_the_spec() {
    assert!(matches!(
        err(r#"{"model": {"version": "1", "image": "my image:1"}}"#),
        CandidateError::InvalidImage(_)
    ));
    assert!(matches!(
        err(r#"{"model": {"version": "1", "image": ""}}"#),
        CandidateError::InvalidImage(_)
    ));
    let long = format!(
        r#"{{"model": {{"version": "1", "uri": "{}"}}}}"#,
        "u".repeat(2049)
    );
    assert_eq!(err(&long), CandidateError::InvalidUri(2049));
    assert_eq!(
        err(r#"{"model": {"version": "1", "image": 3}}"#),
        CandidateError::NotAString {
            field: "image",
            found: "a number"
        }
    );
}

#[test]
fn metrics_must_be_finite_numbers() {
    assert_eq!(
        err(r#"{"model": {"version": "1"}, "metrics": {"auc": "0.9"}}"#),
        CandidateError::NonNumericMetric {
            name: "auc".into(),
            found: "a string"
        }
    );
    assert_eq!(
        err(r#"{"model": {"version": "1"}, "metrics": {"auc": null}}"#),
        CandidateError::NonNumericMetric {
            name: "auc".into(),
            found: "null"
        }
    );
    assert_eq!(
        err(r#"{"model": {"version": "1"}, "metrics": [0.9]}"#),
        CandidateError::NotAnObject {
            what: "metrics",
            found: "an array"
        }
    );
    // What Python's json.dumps writes for float('nan') and float('inf').
    for (text, token) in [
        (
            r#"{"model": {"version": "1"}, "metrics": {"auc": NaN}}"#,
            "NaN",
        ),
        (
            r#"{"model": {"version": "1"}, "metrics": {"auc": Infinity}}"#,
            "Infinity",
        ),
        (
            r#"{"model": {"version": "1"}, "metrics": {"loss": -Infinity}}"#,
            "-Infinity",
        ),
    ] {
        let e = err(text);
        assert!(
            matches!(e, CandidateError::NonFinite { token: t, line: 1, .. } if t == token),
            "{text}: {e:?}"
        );
        assert!(e.to_string().contains("finite"), "{e}");
    }
    // Beyond f64: serde_json refuses it, and it never becomes infinity.
    assert!(matches!(
        err(r#"{"model": {"version": "1"}, "metrics": {"auc": 1e400}}"#),
        CandidateError::NotJson { .. }
    ));
    assert!(matches!(
        err(r#"{"model": {"version": "1"}, "metrics": {"": 1}}"#),
        CandidateError::InvalidMetricName(_)
    ));
}

#[test]
fn at_most_32_metrics() {
    let metrics = |n: usize| {
        (0..n)
            .map(|i| format!("\"m{i}\": {i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let text = |n| {
        format!(
            r#"{{"model": {{"version": "1"}}, "metrics": {{{}}}}}"#,
            metrics(n)
        )
    };
    assert_eq!(parse_report(&text(32)).unwrap().metrics.len(), 32);
    assert_eq!(err(&text(33)), CandidateError::TooManyMetrics(33));
}

#[test]
fn a_floor_passes_or_fails_with_the_values_compared() {
    let acceptance = gate(vec![AcceptanceRule {
        min: Some(0.9),
        ..rule("accuracy")
    }]);
    let v = judge(
        Some(&acceptance),
        &BTreeMap::new(),
        &reported(&[("accuracy", 0.931)]),
    );
    assert!(v.accepted);
    assert_eq!(v.reason, "accuracy 0.931 ≥ 0.900 (min)");
    assert_eq!(v.as_str(), "Accepted");
    let v = judge(
        Some(&acceptance),
        &BTreeMap::new(),
        &reported(&[("accuracy", 0.85)]),
    );
    assert!(!v.accepted);
    assert_eq!(v.reason, "accuracy 0.850 < 0.900 (min)");
    assert_eq!(v.as_str(), "Rejected");
    // A ceiling, on a value that needs more than three decimals to compare.
    let ceiling = gate(vec![AcceptanceRule {
        max: Some(0.0005),
        ..rule("logLoss")
    }]);
    let v = judge(
        Some(&ceiling),
        &BTreeMap::new(),
        &reported(&[("logLoss", 0.0004)]),
    );
    assert!(v.accepted);
    assert_eq!(v.reason, "logLoss 0.0004 ≤ 0.0005 (max)");
    let v = judge(
        Some(&ceiling),
        &BTreeMap::new(),
        &reported(&[("logLoss", 0.0006)]),
    );
    assert_eq!(v.reason, "logLoss 0.0006 > 0.0005 (max)");
}

#[test]
fn not_worse_than_stable_compares_in_the_rule_s_direction() {
    let higher = gate(vec![
        AcceptanceRule {
            min: Some(0.9),
            not_worse_than_stable: true,
            ..rule("accuracy")
        },
        AcceptanceRule {
            not_worse_than_stable: true,
            lower_is_better: true,
            ..rule("logLoss")
        },
    ]);
    let serving = stable(&[("accuracy", 0.912), ("logLoss", 0.30)]);
    let v = judge(
        Some(&higher),
        &serving,
        &reported(&[("accuracy", 0.931), ("logLoss", 0.28)]),
    );
    assert!(v.accepted, "{}", v.reason);
    assert_eq!(
        v.reason,
        "accuracy 0.931 ≥ 0.900 (min); accuracy 0.931 ≥ 0.912 (stable); logLoss 0.280 ≤ 0.300 (stable, lower is better)"
    );
    // Worse than stable both ways; failing rules lead.
    let v = judge(
        Some(&higher),
        &serving,
        &reported(&[("accuracy", 0.905), ("logLoss", 0.31)]),
    );
    assert!(!v.accepted);
    assert_eq!(
        v.reason,
        "accuracy 0.905 < 0.912 (stable); logLoss 0.310 > 0.300 (stable, lower is better); accuracy 0.905 ≥ 0.900 (min)"
    );
    // Equal to stable is not worse.
    let v = judge(
        Some(&higher),
        &serving,
        &reported(&[("accuracy", 0.912), ("logLoss", 0.30)]),
    );
    assert!(v.accepted, "{}", v.reason);
}

#[test]
fn a_metric_the_run_did_not_report_rejects() {
    let acceptance = gate(vec![
        AcceptanceRule {
            min: Some(0.9),
            ..rule("auc")
        },
        AcceptanceRule {
            min: Some(0.9),
            ..rule("accuracy")
        },
    ]);
    let v = judge(
        Some(&acceptance),
        &BTreeMap::new(),
        &reported(&[("accuracy", 0.95)]),
    );
    assert!(!v.accepted);
    assert_eq!(v.reason, "auc not reported; accuracy 0.950 ≥ 0.900 (min)");
}

#[test]
fn an_unknown_stable_metric_rejects_and_says_how_to_fix_it() {
    let acceptance = gate(vec![AcceptanceRule {
        not_worse_than_stable: true,
        ..rule("accuracy")
    }]);
    let v = judge(
        Some(&acceptance),
        &stable(&[("auc", 0.9)]),
        &reported(&[("accuracy", 0.95)]),
    );
    assert!(!v.accepted);
    assert_eq!(
        v.reason,
        "stable's accuracy unknown: set acceptance.stableMetrics"
    );
}

#[test]
fn without_acceptance_nothing_is_accepted() {
    let m = reported(&[("accuracy", 0.99)]);
    for acceptance in [None, Some(&gate(vec![]))] {
        let v = judge(acceptance, &BTreeMap::new(), &m);
        assert!(!v.accepted);
        assert_eq!(
            v.reason,
            "no acceptance thresholds in spec.remediation.retraining.acceptance"
        );
    }
    // A rule with nothing to check (refused by the CRD) does not pass unjudged.
    let v = judge(Some(&gate(vec![rule("accuracy")])), &BTreeMap::new(), &m);
    assert!(!v.accepted, "{}", v.reason);
}

#[test]
fn stable_metrics_come_from_the_spec_or_the_serving_version_s_accepted_candidate() {
    let candidate = |version: &str, minute: i64, verdict: &str, auc: f64| Candidate {
        version: version.into(),
        verdict: verdict.into(),
        ..reported(&[("auc", auc)]).candidate(
            &format!("fraud-retrain-{minute}"),
            at(minute),
            &GateVerdict {
                accepted: true,
                reason: String::new(),
            },
        )
    };
    let status = RetrainingStatus {
        candidates: vec![
            candidate("1.6.0", 30, ACCEPTED, 0.97),
            candidate("1.5.0", 20, REJECTED, 0.99),
            candidate("1.5.0", 10, ACCEPTED, 0.95),
            candidate("1.5.0", 5, ACCEPTED, 0.91),
        ],
        ..RetrainingStatus::default()
    };
    assert_eq!(
        stable_metrics(None, Some(&status), "1.5.0"),
        stable(&[("auc", 0.95)]),
        "the newest accepted candidate of the serving version"
    );
    assert!(stable_metrics(None, Some(&status), "1.4.0").is_empty());
    assert!(stable_metrics(None, None, "1.5.0").is_empty());
    let mut spec = gate(vec![]);
    assert_eq!(
        stable_metrics(Some(&spec), Some(&status), "1.5.0"),
        stable(&[("auc", 0.95)]),
        "empty stableMetrics fall through"
    );
    spec.stable_metrics = stable(&[("auc", 0.9)]);
    assert_eq!(
        stable_metrics(Some(&spec), Some(&status), "1.5.0"),
        stable(&[("auc", 0.9)])
    );
}

#[test]
fn a_candidate_records_the_model_and_the_verdict() {
    let verdict = GateVerdict {
        accepted: false,
        reason: "auc not reported".into(),
    };
    let c = reported(&[("accuracy", 0.9)]).candidate("fraud-retrain-1", at(0), &verdict);
    assert_eq!(c.version, "1.5.0");
    assert_eq!(c.job, "fraud-retrain-1");
    assert_eq!(c.at.0, at(0));
    assert_eq!(c.verdict, REJECTED);
    assert_eq!(c.reason, "auc not reported");
    assert!(!c.deployed);
}
