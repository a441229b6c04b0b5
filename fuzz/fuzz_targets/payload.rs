//! Arbitrary bytes through the monitor's payload path, as the proxy takes them: parse as JSON,
//! then read features (`read_request`), predictions and confidence (`read_response`), and record
//! the exchange on a recorder loaded with the fraud example's reference profile.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use drover::monitor::payload::{parse_json, read_request, read_response};
use drover::monitor::recorder::{Exchange, Recorder};
use drover::profile::ReferenceProfile;
use libfuzzer_sys::fuzz_target;

static RECORDER: LazyLock<Recorder> = LazyLock::new(|| {
    let profile =
        ReferenceProfile::from_json(include_bytes!("../../examples/models/fraud/profile.json"))
            .expect("the fraud profile");
    Recorder::new(
        Some(&profile),
        "1.0.0",
        "fuzz".into(),
        "2026-01-01T00:00:00Z".into(),
    )
});

fuzz_target!(|data: &[u8]| {
    let Ok(value) = parse_json(data) else {
        return;
    };
    let _ = read_request(&value, |_, _, _| {});
    let _ = read_response(&value);
    // The same body as request and as response, as the proxy would hand them over.
    RECORDER.record(Exchange {
        status: 200,
        latency: Duration::from_micros(data.len() as u64),
        request: Some(Ok(&value)),
        response: Some(Ok(&value)),
        terminating: false,
    });
    // Now and then read the report, as a scrape would.
    if data.first() == Some(&b' ') {
        let _ = RECORDER.report();
    }
});
