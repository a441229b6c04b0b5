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

fn job(name: &str, started: Timestamp, outcome: JobOutcome) -> ObservedJob {
    ObservedJob {
        name: name.into(),
        started,
        reason: Some(TriggerReason::Drift),
        outcome,
    }
}

fn situation<'a>(jobs: &'a [ObservedJob], recorded: &'a [String]) -> Situation<'a> {
    Situation {
        drift_detected: true,
        jobs,
        recorded_starts: recorded,
        refused: None,
        generation: 1,
    }
}

/// Drift held high for `days` on a one-minute clock; every Job runs `runtime` minutes. The
/// controller is played as it will run: it deletes what `decide` says, records each start in
/// status (when `record`) and prunes the record. Returns every start.
fn held_drift(days: i64, runtime: i64, limits: Limits, record: bool) -> Vec<Timestamp> {
    let mut jobs: Vec<ObservedJob> = Vec::new();
    let mut recorded: Vec<String> = Vec::new();
    let mut all = Vec::new();
    for minute in 0..days * 24 * 60 {
        let now = at(minute);
        for j in &mut jobs {
            if !j.finished() && now.duration_since(j.started) >= SignedDuration::from_mins(runtime)
            {
                j.outcome = JobOutcome::Succeeded { finished: now };
            }
        }
        let d = decide("fraud", &situation(&jobs, &recorded), limits, now);
        jobs.retain(|j| !d.delete.contains(&j.name));
        if let Some(name) = d.start {
            assert!(jobs.iter().all(|j| j.name != name), "names are unique");
            jobs.push(job(&name, now, JobOutcome::Running));
            all.push(now);
            if record {
                recorded.push(now.to_string());
            }
        }
        recorded = prune_starts(&recorded, now);
        assert!(recorded.len() <= MAX_RECORDED_STARTS);
        assert!(
            jobs.iter().filter(|j| !j.finished()).count() <= 1,
            "one at a time"
        );
        assert!(jobs.iter().filter(|j| j.finished()).count() <= limits.history_limit);
    }
    all
}

/// The most starts in any 24-hour window.
fn most_in_a_day(starts: &[Timestamp]) -> usize {
    starts
        .iter()
        .map(|s| {
            starts
                .iter()
                .filter(|o| *o <= s && s.duration_since(**o) < DAY)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn drift_held_for_days_starts_runs_within_cooldown_and_budget_only() {
    for (cooldown_h, budget, runtime) in [(6, 2, 30), (1, 3, 90), (12, 5, 5)] {
        let limits = Limits {
            cooldown: Duration::from_secs(cooldown_h * 3600),
            max_runs_per_day: budget,
            history_limit: 3,
        };
        let starts = held_drift(4, runtime, limits, true);
        assert!(!starts.is_empty());
        for pair in starts.windows(2) {
            let gap = pair[1].duration_since(pair[0]);
            assert!(
                gap >= SignedDuration::from_hours(cooldown_h as i64),
                "{gap}"
            );
            assert!(
                gap >= SignedDuration::from_mins(runtime),
                "never two at once"
            );
        }
        assert!(most_in_a_day(&starts) <= budget as usize);
        // With the budget binding (6h cooldown, 2/day) four days give exactly 8 runs.
        if (cooldown_h, budget) == (6, 2) {
            assert_eq!(starts.len(), 8);
        }
    }
}

#[test]
fn five_days_of_drift_with_a_short_history_keep_the_budget_through_recorded_starts() {
    let cooldown = SignedDuration::from_hours(1);
    for history_limit in [0, 1] {
        for budget in 2..=4 {
            let limits = Limits {
                cooldown: Duration::from_secs(3600),
                max_runs_per_day: budget,
                history_limit,
            };
            let starts = held_drift(5, 20, limits, true);
            assert_eq!(
                most_in_a_day(&starts),
                budget as usize,
                "history {history_limit}, budget {budget}"
            );
            for pair in starts.windows(2) {
                assert!(pair[1].duration_since(pair[0]) >= cooldown);
            }
            // The budget is what binds: a full day's worth every day.
            assert!(starts.len() >= 5 * budget as usize, "{}", starts.len());
            assert!(starts.len() <= 5 * budget as usize + 1, "{}", starts.len());
        }
    }
    // Without the record, deleted Jobs are forgotten and drift starts runs back to back: the
    // record is what holds the budget.
    let forgetful = held_drift(
        1,
        20,
        Limits {
            cooldown: Duration::from_secs(3600),
            max_runs_per_day: 2,
            history_limit: 0,
        },
        false,
    );
    assert!(most_in_a_day(&forgetful) > 2, "{}", forgetful.len());
}

#[test]
fn no_drift_no_run_and_reasons_say_when() {
    let d = decide(
        "fraud",
        &Situation {
            drift_detected: false,
            ..situation(&[], &[])
        },
        limits(),
        at(0),
    );
    assert_eq!(d.held, Some(Held::NoDrift));
    assert!(d.start.is_none());
    let running = [job("fraud-retrain-1", at(0), JobOutcome::Running)];
    let d = decide("fraud", &situation(&running, &[]), limits(), at(5));
    assert_eq!(d.held, Some(Held::Running("fraud-retrain-1".into())));
    assert_eq!(
        d.held.unwrap().to_string(),
        "retraining Job fraud-retrain-1 is running"
    );
    let done = [job(
        "fraud-retrain-1",
        at(0),
        JobOutcome::Failed {
            finished: at(3),
            message: "BackoffLimitExceeded".into(),
        },
    )];
    assert_eq!(
        decide("fraud", &situation(&done, &[]), limits(), at(5)).held,
        Some(Held::Cooldown(at(360)))
    );
    let d = decide("fraud", &situation(&done, &[]), limits(), at(360));
    assert_eq!(d.start.as_deref(), Some("fraud-retrain-30000360"));
}

#[test]
fn a_scheduled_run_in_progress_holds_a_drift_run() {
    let jobs = [ObservedJob {
        reason: Some(TriggerReason::Scheduled),
        ..job("fraud-cron-30000000", at(0), JobOutcome::Running)
    }];
    assert_eq!(
        decide("fraud", &situation(&jobs, &[]), limits(), at(400)).held,
        Some(Held::Running("fraud-cron-30000000".into()))
    );
}

#[test]
fn finished_jobs_beyond_the_history_limit_go_oldest_first() {
    let jobs: Vec<ObservedJob> = (0..5)
        .map(|i| {
            job(
                &format!("j{i}"),
                at(i * 400),
                JobOutcome::Succeeded {
                    finished: at(i * 400 + 10),
                },
            )
        })
        .chain([job("running", at(2500), JobOutcome::Running)])
        .collect();
    let d = decide("fraud", &situation(&jobs, &[]), limits(), at(3000));
    assert_eq!(d.delete, vec!["j0".to_string(), "j1".to_string()]);
    assert_eq!(
        naming::retrain_job("fraud", at(0)).len(),
        "fraud-retrain-30000000".len()
    );
}

#[test]
fn recorded_starts_count_once_with_their_jobs_and_alone_once_deleted() {
    // The controller recorded t; the API server stamped the Job 4 s later: one run.
    let jobs = [job(
        "a",
        at(0).checked_add(SignedDuration::from_secs(4)).unwrap(),
        JobOutcome::Succeeded { finished: at(10) },
    )];
    let recorded = [at(0).to_string(), "not a time".to_string()];
    let limits = Limits {
        cooldown: Duration::from_secs(60),
        ..limits()
    };
    let d = decide("fraud", &situation(&jobs, &recorded), limits, at(20));
    assert_eq!(d.held, None, "one run of a budget of two");
    // A scheduled run and a drift run 30 s apart, both recorded: two runs.
    let jobs = [
        job("s", at(0), JobOutcome::Succeeded { finished: at(10) }),
        job(
            "d",
            at(0).checked_add(SignedDuration::from_secs(30)).unwrap(),
            JobOutcome::Succeeded { finished: at(10) },
        ),
    ];
    let recorded = [
        at(0).to_string(),
        at(0)
            .checked_add(SignedDuration::from_secs(30))
            .unwrap()
            .to_string(),
    ];
    let d = decide("fraud", &situation(&jobs, &recorded), limits, at(20));
    assert!(matches!(d.held, Some(Held::Budget(_))), "{:?}", d.held);
    // Their Jobs deleted, the record alone still holds the budget.
    let d = decide("fraud", &situation(&[], &recorded), limits, at(20));
    assert!(matches!(d.held, Some(Held::Budget(_))), "{:?}", d.held);
}

#[test]
fn the_budget_frees_when_enough_starts_leave_the_day() {
    // Three starts in a day (a schedule is not held by the budget) against a budget of two:
    // one slot frees when the first two have left the day, not the first alone.
    let recorded: Vec<String> = [0, 60, 120].iter().map(|m| at(*m).to_string()).collect();
    let limits = Limits {
        cooldown: Duration::from_secs(60),
        ..limits()
    };
    let d = decide("fraud", &situation(&[], &recorded), limits, at(200));
    assert_eq!(d.held, Some(Held::Budget(at(60 + 24 * 60))));
    let d = decide(
        "fraud",
        &situation(&[], &recorded),
        limits,
        at(60 + 24 * 60),
    );
    assert!(d.start.is_some());
}

#[test]
fn a_refused_template_is_retried_after_a_spec_change_or_the_cooldown() {
    let refused = Some(Refusal {
        generation: 3,
        at: at(0),
    });
    let same = Situation {
        refused,
        generation: 3,
        ..situation(&[], &[])
    };
    let d = decide("fraud", &same, limits(), at(1));
    assert_eq!(d.held, Some(Held::Refused(at(360))));
    assert!(d.start.is_none());
    assert!(
        d.held
            .unwrap()
            .to_string()
            .contains("or when the spec changes")
    );
    assert!(
        decide("fraud", &same, limits(), at(359)).start.is_none(),
        "held through the cooldown"
    );
    assert!(
        decide("fraud", &same, limits(), at(360)).start.is_some(),
        "tried again after the cooldown"
    );
    let changed = Situation {
        generation: 4,
        ..same
    };
    assert!(
        decide("fraud", &changed, limits(), at(1)).start.is_some(),
        "tried again at once after a spec change"
    );
    // From status: the RefusedJob's generation and time.
    let from_status = Refusal::from(&crate::api::RefusedJob {
        generation: 3,
        at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(0)),
        message: "spec.template.spec.containers: Required value".into(),
    });
    assert_eq!(Some(from_status), refused);
}

#[test]
fn pruned_starts_keep_the_day_and_the_newest_sorted_and_bounded() {
    let starts = vec![
        at(2000).to_string(),
        "garbage".to_string(),
        at(0).to_string(),
        at(1500).to_string(),
        at(1500).to_string(),
    ];
    assert_eq!(
        prune_starts(&starts, at(1500 + 24 * 60 - 1)),
        vec![at(1500).to_string(), at(2000).to_string()]
    );
    // Long after: only the newest, for a cooldown longer than a day.
    assert_eq!(
        prune_starts(&starts, at(100_000)),
        vec![at(2000).to_string()]
    );
    assert!(prune_starts(&[], at(0)).is_empty());
    let many: Vec<String> = (0..100).map(|m| at(m).to_string()).collect();
    let pruned = prune_starts(&many, at(100));
    assert_eq!(pruned.len(), MAX_RECORDED_STARTS);
    assert_eq!(pruned.last(), Some(&at(99).to_string()));
}

#[test]
fn a_cooldown_longer_than_a_day_survives_the_deleted_job() {
    let limits = Limits {
        cooldown: Duration::from_secs(48 * 3600),
        max_runs_per_day: 2,
        history_limit: 0,
    };
    let recorded = prune_starts(&[at(0).to_string()], at(30 * 60));
    let d = decide("fraud", &situation(&[], &recorded), limits, at(30 * 60));
    assert_eq!(d.held, Some(Held::Cooldown(at(48 * 60))));
}

#[test]
fn limits_come_from_the_spec_clamped() {
    let mut spec: crate::api::RetrainingSpec = serde_json::from_value(serde_json::json!({
        "jobTemplate": {},
        "historyLimit": -3,
        "maxRunsPerDay": 0,
    }))
    .unwrap();
    assert_eq!(
        Limits::from_spec(&spec),
        Ok(Limits {
            cooldown: Duration::from_secs(6 * 3600),
            max_runs_per_day: 1,
            history_limit: 0,
        })
    );
    spec.cooldown = crate::api::GoDuration::new("soon");
    assert!(Limits::from_spec(&spec).unwrap_err().contains("cooldown"));
}

#[test]
fn trigger_reasons_round_trip_through_the_label() {
    for reason in [TriggerReason::Drift, TriggerReason::Scheduled] {
        assert_eq!(
            TriggerReason::from_label(reason.label_value()),
            Some(reason)
        );
    }
    assert_eq!(TriggerReason::from_label("Drift"), None);
    assert_eq!(TriggerReason::Scheduled.to_string(), "Scheduled");
}
