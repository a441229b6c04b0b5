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
