//! One decision of the rollout engine for one ModelDeployment, and a 24-hour scenario at 10 s
//! resolution through `drover simulate`'s engine. Baseline in the same run: judging the same
//! evidence alone (the statistics), so the figures read as ratios to it.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use drover::api::{AnalysisSpec, ModelDeployment};
use drover::monitor::recorder::{Exchange, Recorder};
use drover::rollout::judgement::{self, Evidence, Moment};
use drover::rollout::machine::{self, BakeLimits, Controls, RevisionRef, Tick, Timing};
use drover::simulate::{self, scenario::Scenario};

fn report(n: usize, ms: f64) -> drover::monitor::report::Report {
    let r = Recorder::new(None, "1", "i".into(), "t".into());
    let req = serde_json::json!({"x": 1});
    let resp = serde_json::json!({"prediction": 0, "probability": 0.9});
    for i in 0..n {
        r.record(Exchange {
            status: 200,
            latency: Duration::from_secs_f64(ms * (1.0 + (i % 13) as f64 / 50.0) / 1000.0),
            request: Some(Ok(&req)),
            response: Some(Ok(&resp)),
            terminating: false,
        });
    }
    r.report()
}

fn rollout(c: &mut Criterion) {
    let canary = report(2000, 20.0);
    let stable = report(20000, 20.0);
    let analysis = AnalysisSpec::default();
    let evidence = Evidence {
        canary: Some(&canary),
        stable: Some(&stable),
        profile: None,
    };
    let target = RevisionRef {
        hash: "new".into(),
        version: "2".into(),
    };
    let old = RevisionRef {
        hash: "old".into(),
        version: "1".into(),
    };
    let controls = Controls::default();
    let steps = [10, 25, 50];
    c.bench_function("baseline: judge one step (statistics only)", |b| {
        b.iter(|| judgement::judge(black_box(&analysis), 0.3, evidence, Moment::EndOfStep))
    });
    // A canary in step 0 whose interval has elapsed: the tick judges and advances.
    let mut state = drover::api::RolloutState {
        revision: "new".into(),
        version: "2".into(),
        phase: drover::api::RolloutPhase::Progressing,
        requested_weight: 10,
        started_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        )),
        progress_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            jiff::Timestamp::UNIX_EPOCH,
        )),
        ..Default::default()
    };
    state.step_started_at = state.started_at.clone();
    let now = jiff::Timestamp::from_second(120).expect("a time");
    c.bench_function("one decision (tick: judge the step and advance)", |b| {
        b.iter(|| {
            let t = Tick {
                steps: &steps,
                max_failed_checks: 2,
                timing: Timing {
                    interval: Duration::from_secs(60),
                    progress_deadline: Duration::from_secs(1800),
                    bake_time: Duration::from_secs(600),
                },
                analysis: &analysis,
                max_latency_p99: 0.3,
                bake: BakeLimits {
                    max_error_rate: 0.01,
                    max_latency_p99: 0.3,
                },
                target: &target,
                stable: Some(&old),
                state: Some(&state),
                canary_available: true,
                evidence,
                bake_window: None,
                bake_breach: None,
                stable_replicas: 10,
                split: Default::default(),
                promoted_full: true,
                previous_present: true,
                controls: &controls,
                now,
            };
            machine::tick(black_box(&t))
        })
    });
    let md: ModelDeployment = serde_saphyr::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/full.yaml"))
            .expect("example"),
    )
    .expect("a ModelDeployment");
    let day = Scenario::from_yaml(
        "duration: 24h\nresolution: 10s\nrps: 50\nstable: [{from: 0s}]\ncanary: [{from: 0s}, {from: 12h, errorRate: 0.05}]\n",
    )
    .expect("scenario");
    let mut group = c.benchmark_group("simulate");
    group.sample_size(10);
    group.bench_function("24 h at 10 s resolution (8,640 ticks)", |b| {
        b.iter(|| simulate::simulate(black_box(&md), &day))
    });
    group.finish();
}

criterion_group!(benches, rollout);
criterion_main!(benches);
