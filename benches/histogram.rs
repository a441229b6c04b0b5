//! Cost per value of the monitor's histograms, and of recording one whole request.
//!
//! - `observe_number` on a 10-bin numeric layout (the fraud profile's `amount` edges) and
//!   `observe_category` on a 6-category layout, over 4,096 prepared values per iteration, so the
//!   figures read as time per value (`Throughput::Elements`);
//! - baseline in the same run: summing the same f64 values into an accumulator (the least any
//!   per-value loop costs), so the histogram figures read as a multiple of it;
//! - `Recorder::record` of one parsed request and response with the fraud profile loaded (the
//!   work the proxy does under the recorder's lock), and the same with the JSON parsing of both
//!   bodies that precedes it in the proxy.
//!
//! Target: at most 50 ns per value.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use drover::monitor::payload::parse_json;
use drover::monitor::recorder::{Exchange, Recorder};
use drover::profile::ReferenceProfile;
use drover::stats::{BinLayout, FeatureHistogram};

const VALUES: usize = 4096;

/// The fraud profile's `amount` edges: 9 cut points, 10 bins.
const AMOUNT_EDGES: [f64; 9] = [
    12.34, 18.95, 26.02, 35.15, 43.795, 60.0, 80.0, 122.676, 235.553,
];
const CATEGORIES: [&str; 6] = [
    "grocery",
    "restaurant",
    "fuel",
    "electronics",
    "travel",
    "gaming",
];

/// The body the proxy benchmark sends (`benches/proxy/post.lua`): the fraud example's seven
/// features plus two fields the profile does not know.
const REQUEST: &str = r#"{"transaction_id": "3d9c1724-1738-48d1-ecad-d3ac0f21ddb6", "timestamp": "2026-11-27T08:36:07.970Z", "amount": 12.5, "age": 25, "account_age_days": 2364, "transactions_24h": 6, "distance_km": 0.61, "merchant_category": "restaurant", "channel": "pos"}"#;
const RESPONSE: &str = r#"{"prediction":1,"probability":0.93}"#;

/// Amounts spread over every bin, in an order the branch predictor cannot learn (a fixed
/// xorshift sequence, so every run sees the same values).
fn amounts() -> Vec<f64> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..VALUES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // Log-uniform over about 1..1000, like transaction amounts.
            10f64.powf((state >> 11) as f64 / (1u64 << 53) as f64 * 3.0)
        })
        .collect()
}

/// Mostly known categories, one value in eight unknown (the "other" bin).
fn categories() -> Vec<&'static str> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..VALUES)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            match state % 8 {
                7 => "crypto",
                i => CATEGORIES[(i as usize) % CATEGORIES.len()],
            }
        })
        .collect()
}

fn fraud_recorder() -> Recorder {
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/models/fraud/profile.json"
    ))
    .expect("examples/models/fraud/profile.json");
    let profile = ReferenceProfile::from_json(&text).expect("the fraud profile");
    Recorder::new(
        Some(&profile),
        "1.0.0",
        "bench".into(),
        "2026-01-01T00:00:00Z".into(),
    )
}

fn exchange<'a>(request: &'a serde_json::Value, response: &'a serde_json::Value) -> Exchange<'a> {
    Exchange {
        status: 200,
        latency: Duration::from_micros(420),
        request: Some(Ok(request)),
        response: Some(Ok(response)),
        terminating: false,
    }
}

fn per_value(c: &mut Criterion) {
    let amounts = amounts();
    let categories = categories();
    let mut group = c.benchmark_group("per value");
    group.throughput(Throughput::Elements(VALUES as u64));

    group.bench_function("baseline: sum f64 into an accumulator", |b| {
        b.iter(|| {
            let mut acc = 0.0;
            for &x in black_box(&amounts) {
                acc += x;
            }
            black_box(acc)
        })
    });

    let numeric = BinLayout::numeric(AMOUNT_EDGES.to_vec()).expect("valid edges");
    let mut h = FeatureHistogram::new(numeric).expect("a histogram");
    group.bench_function("observe_number, 10 bins", |b| {
        b.iter(|| {
            for &x in black_box(&amounts) {
                h.observe_number(x);
            }
        })
    });
    black_box(&h);

    let layout = BinLayout::categorical(CATEGORIES.iter().map(|s| s.to_string()).collect())
        .expect("distinct categories");
    let mut h = FeatureHistogram::new(layout).expect("a histogram");
    group.bench_function("observe_category, 6 categories", |b| {
        b.iter(|| {
            for &s in black_box(&categories) {
                h.observe_category(s);
            }
        })
    });
    black_box(&h);
    group.finish();
}

fn per_request(c: &mut Criterion) {
    let recorder = fraud_recorder();
    let request = parse_json(REQUEST.as_bytes()).expect("JSON");
    let response = parse_json(RESPONSE.as_bytes()).expect("JSON");
    let mut group = c.benchmark_group("per request (fraud profile)");
    group.throughput(Throughput::Elements(1));
    group.bench_function("Recorder::record, parsed request + response", |b| {
        b.iter(|| recorder.record(exchange(black_box(&request), black_box(&response))))
    });
    group.bench_function("parse_json both bodies + Recorder::record", |b| {
        b.iter(|| {
            let request = parse_json(black_box(REQUEST.as_bytes())).expect("JSON");
            let response = parse_json(black_box(RESPONSE.as_bytes())).expect("JSON");
            recorder.record(exchange(&request, &response));
        })
    });
    group.finish();
    let report = recorder.report();
    assert!(report.rows > 0 && report.features.contains_key("amount"));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = per_value, per_request
}
criterion_main!(benches);
