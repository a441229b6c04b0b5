//! Property: whatever JSON a client or a model server sends, reading it and recording it never
//! panics. Random values nest objects, arrays, strings and numbers, with keys drawn partly from
//! the names the readers look for (`instances`, `inputs`, `outputs`, `shape`, `data`, ...) so the
//! generated bodies reach every protocol branch, not only the named-feature fallback.

use std::sync::LazyLock;
use std::time::Duration;

use drover::monitor::payload::{
    ParsedRequest, Unreadable, parse_json, parse_request, read_request, read_response,
};
use drover::monitor::recorder::{Exchange, Recorder};
use drover::profile::ReferenceProfile;
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

const KEYS: &[&str] = &[
    "instances",
    "inputs",
    "features",
    "outputs",
    "output",
    "name",
    "shape",
    "datatype",
    "data",
    "predictions",
    "prediction",
    "labels",
    "label",
    "confidence",
    "confidences",
    "probability",
    "probabilities",
    "proba",
    "scores",
    "predict_proba",
    "amount",
    "age",
    "merchant_category",
    "channel",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-z_]{0,12}",
        1 => any::<String>(),
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..6).prop_map(Value::from),
        (0.0f64..=1.0).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|x| Number::from_f64(x).map_or(Value::Null, Value::Number)),
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        number(),
        key().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 256, 10, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..10).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..10)
                .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// One recorder with the fraud profile and one learning its bins, shared by every case, so
/// state carries over as it does in a long-running monitor.
static PROFILED: LazyLock<Recorder> = LazyLock::new(|| {
    let text = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/models/fraud/profile.json"
    ))
    .expect("examples/models/fraud/profile.json");
    let profile = ReferenceProfile::from_json(&text).expect("the fraud profile");
    recorder(Some(&profile))
});
static LEARNING: LazyLock<Recorder> = LazyLock::new(|| recorder(None));

fn recorder(profile: Option<&ReferenceProfile>) -> Recorder {
    Recorder::new(
        profile,
        "1.0.0",
        "proptest".into(),
        "2026-01-01T00:00:00Z".into(),
    )
}

fn exchange<'a>(request: &'a Value, response: &'a Value) -> Exchange<'a> {
    Exchange {
        status: 200,
        latency: Duration::from_millis(3),
        request: Some(Ok(request)),
        response: Some(Ok(response)),
        terminating: false,
    }
}

/// Every observation a request body gives, as text, and its row count.
fn observations(body: &[u8]) -> Result<(usize, Vec<String>), Unreadable> {
    let mut seen = Vec::new();
    let mut sink = |row, key, value| seen.push(format!("{row} {key:?} {value:?}"));
    let rows = match parse_request(body)? {
        ParsedRequest::Row(row) => {
            row.read(&mut sink);
            1
        }
        ParsedRequest::Tree(tree) => read_request(&tree, &mut sink)?,
    };
    Ok((rows, seen))
}

/// What the same body gives read as a `Value`.
fn observations_of_value(body: &[u8]) -> Result<(usize, Vec<String>), Unreadable> {
    let mut seen = Vec::new();
    let tree = parse_json(body)?;
    let rows = read_request(&tree, |row, key, value| {
        seen.push(format!("{row} {key:?} {value:?}"))
    })?;
    Ok((rows, seen))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_json_never_panics_the_readers_or_the_recorder(request in json(), response in json()) {
        let _ = read_request(&request, |_, _, _| {});
        if let Ok(reading) = read_response(&response) {
            prop_assert!(reading.confidences.iter().all(|c| (0.0..=1.0).contains(c)));
        }
        // The request body as a response and the other way round: both readers see both.
        let _ = read_response(&request);
        let _ = read_request(&response, |_, _, _| {});
        for recorder in [&*PROFILED, &*LEARNING] {
            recorder.record(exchange(&request, &response));
            recorder.record(exchange(&response, &request));
        }
        // And through the bytes the proxy sees.
        let bytes = serde_json::to_vec(&request).expect("serialisable");
        let reparsed = parse_json(&bytes).expect("what serde_json writes, it reads");
        PROFILED.record(exchange(&reparsed, &response));
        let report = LEARNING.report();
        prop_assert!(serde_json::to_string(&report).is_ok());
    }

    #[test]
    fn the_flat_row_reader_sees_what_the_value_reader_sees(request in json()) {
        let bytes = serde_json::to_vec(&request).expect("serialisable");
        prop_assert_eq!(observations(&bytes), observations_of_value(&bytes));
    }

    #[test]
    fn random_bytes_never_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(observations(&bytes), observations_of_value(&bytes));
        if let Ok(value) = parse_json(&bytes) {
            let _ = read_request(&value, |_, _, _| {});
            let _ = read_response(&value);
            PROFILED.record(exchange(&value, &value));
        }
    }
}

#[test]
fn flat_rows_with_duplicates_escapes_and_nesting_read_like_values() {
    for body in [
        r#"{"b": 1, "a": "x", "b": "last wins"}"#,
        r#"{"ch\u0061nnel": "on\nline", "age": -0, "amount": 1e3, "x": 18446744073709551615}"#,
        r#"{"nested": {"a": [1, 2]}, "list": [], "none": null, "flag": true}"#,
        r#"{"features": 3, "age": 1}"#,
        r#"{"features": {"age": 1}}"#,
        r#"{"instances": [{"age": 1}, {"age": 2}]}"#,
        r#"{}"#,
        r#"{"a": 1} trailing"#,
        r#"{"a": 1e999}"#,
        r#"[1, 2]"#,
    ] {
        assert_eq!(
            observations(body.as_bytes()),
            observations_of_value(body.as_bytes()),
            "{body}"
        );
    }
    let deep = format!(r#"{{"a": {}1{}}}"#, "[".repeat(200), "]".repeat(200));
    assert_eq!(
        observations(deep.as_bytes()),
        Err(Unreadable::NotJson),
        "serde_json's nesting limit holds in a flat row too"
    );
    assert!(matches!(
        parse_request(br#"{"age": 31, "channel": "online"}"#),
        Ok(ParsedRequest::Row(_))
    ));
}
