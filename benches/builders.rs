//! Building the children of one ModelDeployment, and one whole planning step, in microseconds.
//!
//! Baseline in the same run: serialising the ModelDeployment to JSON once (work any reconcile
//! does at least once), so the figures read as ratios to it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use drover::api::ModelDeployment;
use drover::build;
use drover::plan::{self, Observed};
use drover::revision::revision_of;

fn full_example() -> ModelDeployment {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/full.yaml"))
        .expect("examples/full.yaml");
    let mut md: ModelDeployment = serde_saphyr::from_str(&text).expect("a ModelDeployment");
    md.metadata.uid = Some("bench-uid".into());
    md
}

fn builders(c: &mut Criterion) {
    let md = full_example();
    let rev = revision_of(&md.spec);
    let autoscaling = md
        .spec
        .autoscaling
        .clone()
        .expect("full example autoscales");
    let now = jiff::Timestamp::UNIX_EPOCH;
    c.bench_function("baseline: serialise the ModelDeployment to JSON", |b| {
        b.iter(|| serde_json::to_vec(black_box(&md)))
    });
    c.bench_function("revision hash", |b| {
        b.iter(|| revision_of(black_box(&md.spec)))
    });
    c.bench_function("build Deployment", |b| {
        b.iter(|| {
            build::deployment::build(
                black_box(&md),
                &rev,
                None,
                build::deployment::Pins::new(drover::plan::DEFAULT_MONITOR_IMAGE),
            )
        })
    });
    c.bench_function("build Service", |b| {
        b.iter(|| build::service::build(black_box(&md), build::service::Selection::Revision(&rev)))
    });
    c.bench_function("build HPA", |b| {
        b.iter(|| build::autoscaler::build(black_box(&md), &autoscaling, "x"))
    });
    c.bench_function("plan: first revision (all builders + status)", |b| {
        b.iter(|| {
            plan::plan(
                black_box(&md),
                &Observed::default(),
                &plan::Settings::default(),
                now,
            )
        })
    });
}

criterion_group!(benches, builders);
criterion_main!(benches);
