//! Reading features out of requests and predictions and confidence out of responses, for every
//! payload shape a model server commonly takes. Pure: bytes in, observations out; anything it
//! cannot read is reported as unparsed and the payload passes through untouched.
//!
//! Requests (detected by shape, whatever `spec.model.protocol` says):
//! - a named-feature object `{"age": 31, "channel": "online"}` (a FastAPI pydantic body),
//!   optionally wrapped as `{"features": {...}}`; an array of such objects is a batch;
//! - `{"instances": [...]}` (rows as objects, or positional arrays) and `{"inputs": ...}`
//!   (rows, or columns `{"inputs": {"age": [..]}}`);
//! - Open Inference Protocol v2: `{"inputs": [{"name", "shape", "datatype", "data"}]}`; a
//!   tensor of shape `[n]`/`[n,1]` is one column, a single tensor of shape `[n,k]` is k
//!   positional features.
//!
//! Positional features take their names from the reference profile's column order, else
//! `f0`, `f1`, …. Responses: `prediction`/`predictions`/`label(s)`, v2 `outputs`; confidence
//! from `confidence`, `probability` (binary: max(p, 1-p)), `probabilities`/`proba`/`scores`
//! (row maximum), or a v2 output whose name mentions `prob` or `score`.

use serde_json::{Map, Value};

/// Deepest JSON nesting accepted before a payload counts as unparsed (serde_json's own
/// recursion limit is 128; this keeps the walk cheap and bounded).
pub const MAX_ROWS: usize = 100_000;

/// One value of one feature in one row.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Observation<'a> {
    /// A number (NaN and infinities included; the histogram counts them apart).
    Number(f64),
    /// A category.
    Category(&'a str),
    /// A boolean, recorded as the category `true`/`false`.
    Bool(bool),
    /// `null`.
    Missing,
    /// A nested object or array where a scalar was expected.
    Unsupported,
}

impl<'a> Observation<'a> {
    /// The value as JSON (`None` for missing and unsupported values): what a prediction
    /// token carries.
    pub fn to_value(&self) -> Option<Value> {
        match self {
            Observation::Number(n) => serde_json::Number::from_f64(*n).map(|n| {
                // Whole numbers as integers, so class 1 reads back as 1, not 1.0.
                if n.as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.abs() < 1e15)
                {
                    Value::from(n.as_f64().unwrap_or_default() as i64)
                } else {
                    Value::Number(n)
                }
            }),
            Observation::Category(c) => Some(Value::String((*c).to_string())),
            Observation::Bool(b) => Some(Value::Bool(*b)),
            Observation::Missing | Observation::Unsupported => None,
        }
    }

    fn of(value: &'a Value) -> Self {
        match value {
            Value::Number(n) => n
                .as_f64()
                .map(Observation::Number)
                .unwrap_or(Observation::Unsupported),
            Value::String(s) => Observation::Category(s),
            Value::Bool(b) => Observation::Bool(*b),
            Value::Null => Observation::Missing,
            _ => Observation::Unsupported,
        }
    }
}

/// Which feature a value belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureKey<'a> {
    /// Named in the payload.
    Named(&'a str),
    /// The j-th value of a positional row (named through the reference profile's column
    /// order, else `f<j>`).
    Position(usize),
}

/// Why a payload could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unreadable {
    /// Not JSON (or not UTF-8).
    NotJson,
    /// JSON of a shape no supported protocol has.
    UnknownShape,
    /// More rows than [`MAX_ROWS`].
    TooManyRows,
}

/// Calls `sink(row, feature, value)` for every feature of every row of a request; returns the
/// row count.
pub fn read_request<'a>(
    body: &'a Value,
    mut sink: impl FnMut(usize, FeatureKey<'a>, Observation<'a>),
) -> Result<usize, Unreadable> {
    match body {
        Value::Object(map) => {
            if let Some(instances) = map.get("instances") {
                return read_rows(instances, &mut sink);
            }
            if let Some(inputs) = map.get("inputs") {
                if is_v2_tensors(inputs) {
                    return read_v2_inputs(inputs, &mut sink);
                }
                if let Value::Object(columns) = inputs {
                    return read_columns(columns, &mut sink);
                }
                return read_rows(inputs, &mut sink);
            }
            if let Some(features) = map.get("features")
                && (features.is_object() || features.is_array())
            {
                return read_rows(features, &mut sink);
            }
            read_named_row(0, map, &mut sink);
            Ok(1)
        }
        Value::Array(_) => read_rows(body, &mut sink),
        _ => Err(Unreadable::UnknownShape),
    }
}

fn read_rows<'a>(
    rows: &'a Value,
    sink: &mut impl FnMut(usize, FeatureKey<'a>, Observation<'a>),
) -> Result<usize, Unreadable> {
    match rows {
        Value::Object(map) => {
            read_named_row(0, map, sink);
            Ok(1)
        }
        Value::Array(items) => {
            if items.len() > MAX_ROWS {
                return Err(Unreadable::TooManyRows);
            }
            // A flat array of scalars is one positional row.
            if !items.is_empty() && items.iter().all(|v| !v.is_array() && !v.is_object()) {
                read_positional_row(0, items, sink);
                return Ok(1);
            }
            for (i, row) in items.iter().enumerate() {
                match row {
                    Value::Object(map) => read_named_row(i, map, sink),
                    Value::Array(values) => read_positional_row(i, values, sink),
                    _ => return Err(Unreadable::UnknownShape),
                }
            }
            Ok(items.len())
        }
        _ => Err(Unreadable::UnknownShape),
    }
}

fn read_named_row<'a>(
    row: usize,
    map: &'a Map<String, Value>,
    sink: &mut impl FnMut(usize, FeatureKey<'a>, Observation<'a>),
) {
    for (name, value) in map {
        sink(
            row,
            FeatureKey::Named(name.as_str()),
            Observation::of(value),
        );
    }
}

fn read_positional_row<'a>(
    row: usize,
    values: &'a [Value],
    sink: &mut impl FnMut(usize, FeatureKey<'a>, Observation<'a>),
) {
    for (j, value) in values.iter().enumerate() {
        sink(row, FeatureKey::Position(j), Observation::of(value));
    }
}

fn read_columns<'a>(
    columns: &'a Map<String, Value>,
    sink: &mut impl FnMut(usize, FeatureKey<'a>, Observation<'a>),
) -> Result<usize, Unreadable> {
    let mut rows = 0;
    for (name, column) in columns {
        match column {
            Value::Array(values) => {
                if values.len() > MAX_ROWS {
                    return Err(Unreadable::TooManyRows);
                }
                rows = rows.max(values.len());
                for (i, v) in values.iter().enumerate() {
                    sink(i, FeatureKey::Named(name.as_str()), Observation::of(v));
                }
            }
            scalar => {
                rows = rows.max(1);
                sink(0, FeatureKey::Named(name.as_str()), Observation::of(scalar));
            }
        }
    }
    Ok(rows)
}

fn is_v2_tensors(inputs: &Value) -> bool {
    inputs.as_array().is_some_and(|items| {
        !items.is_empty()
            && items
                .iter()
                .all(|t| t.get("name").is_some_and(Value::is_string) && t.get("data").is_some())
    })
}

/// Flattens nested arrays (v2 `data` may be nested or flat) into scalars.
fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) -> Result<(), Unreadable> {
    match value {
        Value::Array(items) => {
            for item in items {
                if out.len() > MAX_ROWS * 64 {
                    return Err(Unreadable::TooManyRows);
                }
                flatten(item, out)?;
            }
            Ok(())
        }
        scalar => {
            out.push(scalar);
            Ok(())
        }
    }
}

fn shape_of(tensor: &Value) -> Vec<usize> {
    tensor
        .get("shape")
        .and_then(Value::as_array)
        .map(|s| {
            s.iter()
                .filter_map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn read_v2_inputs<'a>(
    inputs: &'a Value,
    sink: &mut impl FnMut(usize, FeatureKey<'a>, Observation<'a>),
) -> Result<usize, Unreadable> {
    let tensors = inputs.as_array().ok_or(Unreadable::UnknownShape)?;
    let mut rows = 0;
    for tensor in tensors {
        let name = tensor
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("input");
        let mut data = Vec::new();
        flatten(tensor.get("data").unwrap_or(&Value::Null), &mut data)?;
        let shape = shape_of(tensor);
        let width = match shape.as_slice() {
            [_, k] if *k > 1 => *k,
            _ => 1,
        };
        let n = data.len() / width.max(1);
        rows = rows.max(n);
        for (idx, v) in data.iter().enumerate() {
            let (row, col) = (idx / width, idx % width);
            let feature = if width == 1 {
                FeatureKey::Named(name)
            } else {
                FeatureKey::Position(col)
            };
            sink(row, feature, Observation::of(v));
        }
    }
    Ok(rows)
}

/// What a response says about the rows it answers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResponseReading<'a> {
    /// One prediction per row.
    pub predictions: Vec<Observation<'a>>,
    /// One confidence per row, in [0, 1], where the response carries one.
    pub confidences: Vec<f64>,
}

/// Reads predictions and confidences from a response body.
pub fn read_response(body: &Value) -> Result<ResponseReading<'_>, Unreadable> {
    let mut out = ResponseReading::default();
    let Value::Object(map) = body else {
        if let Value::Array(items) = body {
            out.predictions = items.iter().map(Observation::of).collect();
            return Ok(out);
        }
        return Err(Unreadable::UnknownShape);
    };
    if let Some(outputs) = map.get("outputs").and_then(Value::as_array) {
        return read_v2_outputs(outputs);
    }
    for key in [
        "predictions",
        "prediction",
        "labels",
        "label",
        "outputs",
        "output",
    ] {
        if let Some(p) = map.get(key) {
            match p {
                Value::Array(items) => {
                    for item in items {
                        match item {
                            // A row of class scores (TF-Serving classifiers): argmax + max.
                            Value::Array(scores) => {
                                let (arg, max) = argmax(scores);
                                out.predictions.push(
                                    arg.map(|a| Observation::Number(a as f64))
                                        .unwrap_or(Observation::Unsupported),
                                );
                                if let Some(m) = max {
                                    out.confidences.push(m);
                                }
                            }
                            scalar => out.predictions.push(Observation::of(scalar)),
                        }
                    }
                }
                scalar => out.predictions.push(Observation::of(scalar)),
            }
            break;
        }
    }
    if out.confidences.is_empty() {
        out.confidences = confidences_of(map);
    }
    if out.predictions.is_empty() && out.confidences.is_empty() {
        return Err(Unreadable::UnknownShape);
    }
    Ok(out)
}

fn confidences_of(map: &Map<String, Value>) -> Vec<f64> {
    if let Some(c) = map.get("confidence").or_else(|| map.get("confidences")) {
        return numbers(c)
            .into_iter()
            .filter(|x| (0.0..=1.0).contains(x))
            .collect();
    }
    if let Some(p) = map.get("probability") {
        // One probability of the positive class per row.
        return numbers(p)
            .into_iter()
            .filter(|x| (0.0..=1.0).contains(x))
            .map(|p| p.max(1.0 - p))
            .collect();
    }
    for key in ["probabilities", "proba", "scores", "predict_proba"] {
        if let Some(v) = map.get(key) {
            return rows_max(v);
        }
    }
    Vec::new()
}

fn numbers(v: &Value) -> Vec<f64> {
    match v {
        Value::Number(n) => n.as_f64().into_iter().collect(),
        Value::Array(items) => items.iter().filter_map(Value::as_f64).collect(),
        _ => Vec::new(),
    }
}

/// Row maxima of `[[p0, p1], …]`, or the maximum of one flat row `[p0, p1]`.
fn rows_max(v: &Value) -> Vec<f64> {
    match v {
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .filter_map(|row| row.as_array().and_then(|r| argmax(r).1))
            .collect(),
        Value::Array(items) => argmax(items).1.into_iter().collect(),
        _ => Vec::new(),
    }
}

fn argmax(values: &[Value]) -> (Option<usize>, Option<f64>) {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in values.iter().enumerate() {
        if let Some(x) = v.as_f64().filter(|x| x.is_finite())
            && best.is_none_or(|(_, b)| x > b)
        {
            best = Some((i, x));
        }
    }
    (
        best.map(|b| b.0),
        best.map(|b| b.1).filter(|x| (0.0..=1.0).contains(x)),
    )
}

fn read_v2_outputs(outputs: &[Value]) -> Result<ResponseReading<'_>, Unreadable> {
    let mut out = ResponseReading::default();
    let named = |pred: &dyn Fn(&str) -> bool| {
        outputs.iter().find(|o| {
            o.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| pred(&n.to_ascii_lowercase()))
        })
    };
    let probabilities = named(&|n| n.contains("prob") || n.contains("score"));
    let prediction =
        named(&|n| !n.contains("prob") && !n.contains("score")).or_else(|| outputs.first());
    if let Some(p) = prediction.filter(|p| !std::ptr::eq(*p, probabilities.unwrap_or(&Value::Null)))
    {
        let mut data = Vec::new();
        flatten(p.get("data").unwrap_or(&Value::Null), &mut data)?;
        let shape = shape_of(p);
        match shape.as_slice() {
            [_, k] if *k > 1 => {
                for row in data.chunks(*k) {
                    let owned: Vec<Value> = row.iter().map(|v| (*v).clone()).collect();
                    let (arg, max) = argmax(&owned);
                    out.predictions.push(
                        arg.map(|a| Observation::Number(a as f64))
                            .unwrap_or(Observation::Unsupported),
                    );
                    if let Some(m) = max {
                        out.confidences.push(m);
                    }
                }
            }
            _ => out
                .predictions
                .extend(data.into_iter().map(Observation::of)),
        }
    }
    if let Some(p) = probabilities {
        let mut data = Vec::new();
        flatten(p.get("data").unwrap_or(&Value::Null), &mut data)?;
        let width = match shape_of(p).as_slice() {
            [_, k] => (*k).max(1),
            _ => data.len().max(1),
        };
        out.confidences = data
            .chunks(width)
            .filter_map(|row| {
                row.iter()
                    .filter_map(|v| v.as_f64())
                    .filter(|x| x.is_finite())
                    .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            })
            .filter(|x| (0.0..=1.0).contains(x))
            .collect();
    }
    if out.predictions.is_empty() && out.confidences.is_empty() {
        return Err(Unreadable::UnknownShape);
    }
    Ok(out)
}

/// Parses a body as JSON (UTF-8 checked by serde_json).
pub fn parse_json(bytes: &[u8]) -> Result<Value, Unreadable> {
    serde_json::from_slice(bytes).map_err(|_| Unreadable::NotJson)
}

/// A parsed request body: a flat named-feature object read without building a `Value` tree,
/// or the tree for every other shape.
#[derive(Debug, PartialEq)]
pub enum ParsedRequest<'a> {
    /// One named row (`{"age": 31, "channel": "online"}`) whose keys are none of the
    /// wrappers [`read_request`] looks for.
    Row(FlatRow<'a>),
    /// Any other JSON.
    Tree(Value),
}

/// The features of a flat named row, in the order and with the duplicate handling of
/// serde_json's `Map` (sorted by name, the last of equal names wins), so reading it gives the
/// same observations as reading its `Value`.
#[derive(Debug, PartialEq)]
pub struct FlatRow<'a> {
    fields: Vec<(std::borrow::Cow<'a, str>, Scalar<'a>)>,
}

/// One value of a flat row.
#[derive(Debug, PartialEq)]
enum Scalar<'a> {
    Number(f64),
    Text(std::borrow::Cow<'a, str>),
    Bool(bool),
    Null,
    /// A nested object or array (read as [`Observation::Unsupported`], like its `Value`).
    Nested,
}

impl FlatRow<'_> {
    /// Calls `sink(0, feature, value)` for every feature (what [`read_request`] does for the
    /// same body as a `Value`); the row count is 1.
    pub fn read<'s>(&'s self, mut sink: impl FnMut(usize, FeatureKey<'s>, Observation<'s>)) {
        for (name, value) in &self.fields {
            let value = match value {
                Scalar::Number(n) => Observation::Number(*n),
                Scalar::Text(t) => Observation::Category(t),
                Scalar::Bool(b) => Observation::Bool(*b),
                Scalar::Null => Observation::Missing,
                Scalar::Nested => Observation::Unsupported,
            };
            sink(0, FeatureKey::Named(name), value);
        }
    }
}

/// Parses a request body: most bodies are one flat object of named features, read straight
/// from the bytes (names and values borrowed, no `Value` tree of strings and maps); any other
/// shape, or a body that is not valid JSON, goes through [`parse_json`], so the outcome is
/// the same as reading its `Value` with [`read_request`].
pub fn parse_request(bytes: &[u8]) -> Result<ParsedRequest<'_>, Unreadable> {
    use serde::Deserialize as _;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    if let Ok(row) = FlatRowSeed::deserialize(&mut de)
        && de.end().is_ok()
    {
        return Ok(ParsedRequest::Row(row.0));
    }
    parse_json(bytes).map(ParsedRequest::Tree)
}

/// Deserializes a [`FlatRow`]; fails (and the caller falls back to a `Value`) on anything
/// but an object without the wrapper keys [`read_request`] treats specially.
struct FlatRowSeed<'a>(FlatRow<'a>);

impl<'de> serde::Deserialize<'de> for FlatRowSeed<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FlatRowVisitor)
    }
}

struct FlatRowVisitor;

impl<'de> serde::de::Visitor<'de> for FlatRowVisitor {
    type Value = FlatRowSeed<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a flat object of named features")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let mut fields: Vec<(std::borrow::Cow<'de, str>, Scalar<'de>)> =
            Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some(CowStr(name)) = map.next_key::<CowStr<'de>>()? {
            // These keys select another shape in read_request: leave the body to it.
            if matches!(&*name, "instances" | "inputs" | "features") {
                return Err(A::Error::custom("not a flat row"));
            }
            let value = map.next_value::<ScalarSeed<'de>>()?.0;
            fields.push((name, value));
        }
        // serde_json's Map is sorted by name and keeps the last of equal names: a stable sort
        // puts equal names in arrival order, and each later one replaces the kept one.
        if !fields.is_sorted_by(|a, b| a.0 < b.0) {
            fields.sort_by(|a, b| a.0.cmp(&b.0));
            fields.dedup_by(|later, kept| {
                let same = later.0 == kept.0;
                if same {
                    std::mem::swap(later, kept);
                }
                same
            });
        }
        Ok(FlatRowSeed(FlatRow { fields }))
    }
}

/// A string borrowed from the body when it has no escapes, else unescaped into its own.
struct CowStr<'a>(std::borrow::Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(std::borrow::Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

struct ScalarSeed<'a>(Scalar<'a>);

impl<'de> serde::Deserialize<'de> for ScalarSeed<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> serde::de::Visitor<'de> for ScalarVisitor {
    type Value = ScalarSeed<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    // Numbers convert as serde_json's `Number::as_f64` does.
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ScalarSeed(Scalar::Number(v as f64)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ScalarSeed(Scalar::Number(v as f64)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(ScalarSeed(Scalar::Number(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(ScalarSeed(Scalar::Bool(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(ScalarSeed(Scalar::Null))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ScalarSeed(Scalar::Text(std::borrow::Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ScalarSeed(Scalar::Text(std::borrow::Cow::Owned(
            v.to_owned(),
        ))))
    }
    // Nested values are read into a `Value` and dropped: rare in a flat row, and it keeps
    // serde_json's nesting limit and validation exactly as for the whole tree.
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
        Ok(ScalarSeed(Scalar::Nested))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        use serde::Deserialize as _;
        Value::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
        Ok(ScalarSeed(Scalar::Nested))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(body: Value) -> (usize, Vec<(usize, String, String)>) {
        let mut seen = Vec::new();
        let n = read_request(&body, |row, key, value| {
            let name = match key {
                FeatureKey::Named(n) => n.to_string(),
                FeatureKey::Position(j) => format!("f{j}"),
            };
            seen.push((row, name, format!("{value:?}")))
        })
        .unwrap();
        (n, seen)
    }

    #[test]
    fn named_features_as_fastapi_takes_them() {
        let (n, seen) =
            rows(json!({"age": 31, "channel": "online", "vip": true, "income": null, "tags": [1]}));
        assert_eq!(n, 1);
        assert!(seen.contains(&(0, "age".into(), "Number(31.0)".into())));
        assert!(seen.contains(&(0, "channel".into(), "Category(\"online\")".into())));
        assert!(seen.contains(&(0, "vip".into(), "Bool(true)".into())));
        assert!(seen.contains(&(0, "income".into(), "Missing".into())));
        assert!(seen.contains(&(0, "tags".into(), "Unsupported".into())));
    }

    #[test]
    fn batches_count_every_row() {
        assert_eq!(
            rows(json!({"instances": [{"a": 1}, {"a": 2}, {"a": 3}]})).0,
            3
        );
        assert_eq!(rows(json!([{"a": 1}, {"a": 2}])).0, 2);
        let (n, seen) = rows(json!({"instances": [[1, 2], [3, 4]]}));
        assert_eq!(n, 2);
        assert!(seen.contains(&(1, "f1".into(), "Number(4.0)".into())));
        assert_eq!(
            rows(json!({"inputs": {"a": [1, 2, 3, 4], "b": ["x", "y", "z", "w"]}})).0,
            4
        );
        assert_eq!(rows(json!({"features": {"a": 1}})).0, 1);
    }

    #[test]
    fn open_inference_protocol_v2_tensors() {
        let body = json!({"inputs": [
            {"name": "age", "shape": [3], "datatype": "FP32", "data": [31, 42, 53]},
            {"name": "channel", "shape": [3, 1], "datatype": "BYTES", "data": [["a"], ["b"], ["c"]]}
        ]});
        let (n, seen) = rows(body);
        assert_eq!(n, 3);
        assert!(seen.contains(&(2, "age".into(), "Number(53.0)".into())));
        assert!(seen.contains(&(1, "channel".into(), "Category(\"b\")".into())));
        let matrix = json!({"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP32", "data": [1, 2, 3, 4, 5, 6]}]});
        let (n, seen) = rows(matrix);
        assert_eq!(n, 2);
        assert!(seen.contains(&(1, "f2".into(), "Number(6.0)".into())));
    }

    #[test]
    fn unreadable_requests_are_reported_not_guessed() {
        assert_eq!(
            read_request(&json!(42), |_, _, _| {}),
            Err(Unreadable::UnknownShape)
        );
        assert_eq!(
            read_request(&json!({"instances": 7}), |_, _, _| {}),
            Err(Unreadable::UnknownShape)
        );
        assert_eq!(parse_json(b"{\"a\": "), Err(Unreadable::NotJson));
        assert_eq!(parse_json(&[0xff, 0xfe, b'{']), Err(Unreadable::NotJson));
    }

    #[test]
    fn predictions_and_confidence_from_common_responses() {
        let b1 = json!({"prediction": 1, "probability": 0.2});
        let r = read_response(&b1).unwrap();
        assert_eq!(r.predictions, vec![Observation::Number(1.0)]);
        assert_eq!(r.confidences, vec![0.8]);
        let b2 = json!({"predictions": [0, 1], "probabilities": [[0.9, 0.1], [0.3, 0.7]]});
        let r = read_response(&b2).unwrap();
        assert_eq!(r.predictions.len(), 2);
        assert_eq!(r.confidences, vec![0.9, 0.7]);
        let b3 = json!({"predictions": [[0.2, 0.8]]});
        let r = read_response(&b3).unwrap();
        assert_eq!(r.predictions, vec![Observation::Number(1.0)]);
        assert_eq!(r.confidences, vec![0.8]);
        let b4 = json!({"prediction": "fraud", "confidence": 0.97});
        let r = read_response(&b4).unwrap();
        assert_eq!(r.predictions, vec![Observation::Category("fraud")]);
        assert_eq!(r.confidences, vec![0.97]);
        assert!(read_response(&json!({"detail": "x"})).is_err());
    }

    #[test]
    fn v2_outputs() {
        let body = json!({"model_name": "m", "outputs": [
            {"name": "predict", "shape": [2], "datatype": "INT64", "data": [0, 1]},
            {"name": "predict_proba", "shape": [2, 2], "datatype": "FP64", "data": [0.6, 0.4, 0.1, 0.9]}
        ]});
        let r = read_response(&body).unwrap();
        assert_eq!(
            r.predictions,
            vec![Observation::Number(0.0), Observation::Number(1.0)]
        );
        assert_eq!(r.confidences, vec![0.6, 0.9]);
    }
}
