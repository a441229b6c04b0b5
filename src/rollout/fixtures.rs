//! Reports for tests: `ok` + `errors` requests through a real recorder.

use std::time::Duration;

use serde_json::json;

use crate::monitor::recorder::{Exchange, Recorder};
use crate::monitor::report::Report;

/// A report of `ok` 200s and `errors` 500s around `ms` milliseconds.
pub(crate) fn report(ok: usize, errors: usize, ms: f64) -> Report {
    let r = Recorder::new(None, "1", "i".into(), "t".into());
    let req = json!({"x": 1});
    let resp = json!({"prediction": 0, "probability": 0.9});
    for i in 0..ok + errors {
        r.record(Exchange {
            status: if i < errors { 500 } else { 200 },
            latency: Duration::from_secs_f64(ms * (1.0 + (i % 7) as f64 / 100.0) / 1000.0),
            request: Some(Ok(&req)),
            response: Some(Ok(&resp)),
            terminating: false,
        });
    }
    r.report()
}

/// The fraud example's reference profile.
pub(crate) fn fraud_profile() -> crate::profile::ReferenceProfile {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/models/fraud/profile.json"
    );
    let bytes = std::fs::read(path).expect("the example profile is in the repository");
    crate::profile::ReferenceProfile::from_json(&bytes).expect("the example profile is valid")
}

/// `n` requests of the fraud example, binned on its profile: `amount` around `amount`,
/// answered with confidence `confidence`, the first `errors` with a 500, each taking
/// `latency_ms`.
pub(crate) fn fraud_traffic(
    n: usize,
    amount: f64,
    confidence: f64,
    errors: usize,
    latency_ms: u64,
) -> Report {
    let p = fraud_profile();
    let r = Recorder::new(Some(&p), "1.0.0", "i".into(), "t".into());
    let mut rng = fastrand::Rng::with_seed(3);
    for i in 0..n {
        let req = json!({"amount": amount * (0.5 + rng.f64()), "age": 30 + (i % 40), "account_age_days": 200 + (i % 2000),
                         "transactions_24h": i % 10, "distance_km": rng.f64() * 40.0,
                         "merchant_category": "grocery", "channel": "online"});
        let resp = json!({"prediction": 0, "probability": confidence});
        r.record(Exchange {
            status: if i < errors { 500 } else { 200 },
            latency: Duration::from_millis(latency_ms),
            request: Some(Ok(&req)),
            response: Some(Ok(&resp)),
            terminating: false,
        });
    }
    r.report()
}
