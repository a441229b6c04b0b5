//! What a successful retraining run reported, and whether it is good enough to become a
//! candidate (the evaluation gate of `spec.remediation.retraining.acceptance`).
//!
//! # The report
//!
//! A run reports the model it trained in its **termination message**: the container writes
//! one JSON object to `/dev/termination-log` (the container's `terminationMessagePath`) before
//! it exits 0.
//!
//! ```json
//! {
//!   "model": {
//!     "version": "1.5.0",
//!     "image": "registry.example.com/fraud:1.5.0",
//!     "uri": "s3://models/fraud/1.5.0"
//!   },
//!   "metrics": {"accuracy": 0.93, "auc": 0.95}
//! }
//! ```
//!
//! - `model.version` (required): a Kubernetes label value, as `spec.model.version` must be:
//!   at most 63 characters of letters, digits, `.`, `_` and `-`, beginning and ending with a
//!   letter or digit. A string, not a number (`1.50` would arrive as `1.5`).
//! - `model.image` (optional): the image serving the new model; what `autoDeploy` sets
//!   `spec.model.image` to. At most 512 characters, no whitespace.
//! - `model.uri` (optional): the model artifact; what `autoDeploy` sets `spec.model.uri` to
//!   (the serving image reads it as `MODEL_URI`). At most 2048 characters.
//! - `metrics` (optional): at most 32 evaluation metrics, each a finite JSON number under a name
//!   of 1 to 63 characters. The acceptance rules name them.
//!
//! A version alone is a valid report (it is recorded and judged), but there is then nothing to
//! deploy: see [`ReportedModel::is_deployable`]. Other keys, at the top level or in `model`,
//! are ignored, so a run may add its own notes.
//!
//! Kubernetes keeps at most **4096 bytes** of a termination message (and 12 KiB across the
//! containers of a pod); the kubelet cuts anything longer, which leaves broken JSON. Keep the
//! report small: the model's name and its headline metrics, not its evaluation data. NaN and
//! Infinity are not JSON (Python's `json.dumps` writes them unless `allow_nan=False`); report
//! finite numbers only.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value;
use thiserror::Error;

use crate::api::{AcceptanceRule, AcceptanceSpec, Candidate, RetrainingStatus};

/// Most bytes of a termination message Kubernetes keeps (per container).
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;
/// Most metrics a report may carry.
pub const MAX_METRICS: usize = 32;
/// Longest metric name (as long as an acceptance rule's `name` may be).
pub const MAX_METRIC_NAME: usize = 63;
/// Longest `model.image` (as `spec.model.image`).
pub const MAX_IMAGE: usize = 512;
/// Longest `model.uri` (as `spec.model.uri`).
pub const MAX_URI: usize = 2048;
/// `Candidate.verdict` of a model that passed the gate.
pub const ACCEPTED: &str = "Accepted";
/// `Candidate.verdict` of a model that did not.
pub const REJECTED: &str = "Rejected";

/// A model a run reported, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportedModel {
    /// `model.version`: a valid label value.
    pub version: String,
    /// `model.image`, if reported.
    pub image: Option<String>,
    /// `model.uri`, if reported.
    pub uri: Option<String>,
    /// `metrics`: finite values, at most [`MAX_METRICS`].
    pub metrics: BTreeMap<String, f64>,
}

impl ReportedModel {
    /// Whether `autoDeploy` has something to put into `spec.model`: an image, or an artifact URI
    /// for the serving image to load. A version alone names nothing new to run.
    pub fn is_deployable(&self) -> bool {
        self.image.is_some() || self.uri.is_some()
    }

    /// The status entry for this model, reported by `job` and judged at `at`.
    pub fn candidate(&self, job: &str, at: Timestamp, verdict: &GateVerdict) -> Candidate {
        Candidate {
            version: self.version.clone(),
            image: self.image.clone(),
            uri: self.uri.clone(),
            metrics: self.metrics.clone(),
            job: job.to_string(),
            at: Time(at),
            verdict: verdict.as_str().to_string(),
            reason: verdict.reason.clone(),
            deployed: false,
        }
    }
}

/// Why a termination message is not a usable report. The message is written to status as is,
/// so every variant says what to fix.
#[derive(Clone, Debug, PartialEq, Error)]
pub enum CandidateError {
    /// Nothing (or only whitespace) was written.
    #[error(
        "the Job wrote no termination message: a successful run reports its model as JSON in /dev/termination-log"
    )]
    Empty,
    /// Not JSON at all.
    #[error("the termination message is not JSON (line {line}, column {column}: {message}){}", if *.cut { "; it is 4096 bytes long, the most Kubernetes keeps: the report was probably cut" } else { "" })]
    NotJson {
        /// Line of the error (1-based).
        line: usize,
        /// Column of the error (1-based).
        column: usize,
        /// serde_json's description.
        message: String,
        /// The message is as long as Kubernetes lets it be, so it was probably truncated.
        cut: bool,
    },
    /// `NaN` or `Infinity` where a number should be (not JSON, but what Python writes).
    #[error(
        "the termination message has {token} at line {line}, column {column}: metrics must be finite numbers (NaN and Infinity are not JSON)"
    )]
    NonFinite {
        /// `NaN`, `Infinity` or `-Infinity`.
        token: &'static str,
        /// Line (1-based).
        line: usize,
        /// Column (1-based).
        column: usize,
    },
    /// The top level, `model` or `metrics` is not a JSON object.
    #[error("{what} in the termination message must be a JSON object, not {found}")]
    NotAnObject {
        /// `the report`, `model` or `metrics`.
        what: &'static str,
        /// What it is instead.
        found: &'static str,
    },
    /// No `model.version`.
    #[error("the termination message has no model.version")]
    NoVersion,
    /// `model.version`, `model.image` or `model.uri` is not a string.
    #[error("model.{field} in the termination message must be a string, not {found}")]
    NotAString {
        /// `version`, `image` or `uri`.
        field: &'static str,
        /// What it is instead.
        found: &'static str,
    },
    /// `model.version` is not a label value.
    #[error(
        "model.version {0:?} is not a valid label value (at most 63 letters, digits, '.', '_' or '-', beginning and ending with a letter or digit)"
    )]
    InvalidVersion(String),
    /// `model.image` is empty, too long or has whitespace.
    #[error("model.image {0:?} is not an image reference (1 to 512 characters, no whitespace)")]
    InvalidImage(String),
    /// `model.uri` is empty or too long.
    #[error("model.uri must be 1 to 2048 characters, not {0}")]
    InvalidUri(usize),
    /// A metric's value is not a number.
    #[error("metric {name:?} must be a number, not {found}")]
    NonNumericMetric {
        /// Metric name.
        name: String,
        /// What it is instead.
        found: &'static str,
    },
    /// A metric's name is empty or longer than [`MAX_METRIC_NAME`].
    #[error("metric name {0:?} must be 1 to 63 characters")]
    InvalidMetricName(String),
    /// More than [`MAX_METRICS`] metrics.
    #[error("the termination message reports {0} metrics, at most 32")]
    TooManyMetrics(usize),
}

/// Reads a run's termination message (the format is in the module docs).
pub fn parse_report(text: &str) -> Result<ReportedModel, CandidateError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(CandidateError::Empty);
    }
    let value: Value = serde_json::from_str(trimmed).map_err(|e| not_json(trimmed, &e))?;
    let Value::Object(report) = value else {
        return Err(CandidateError::NotAnObject {
            what: "the report",
            found: kind(&value),
        });
    };
    let model = match report.get("model") {
        None | Some(Value::Null) => return Err(CandidateError::NoVersion),
        Some(Value::Object(model)) => model,
        Some(other) => {
            return Err(CandidateError::NotAnObject {
                what: "model",
                found: kind(other),
            });
        }
    };
    let version = string_field(model, "version")?.ok_or(CandidateError::NoVersion)?;
    if !is_label_value(&version) {
        return Err(CandidateError::InvalidVersion(excerpt(&version)));
    }
    let image = string_field(model, "image")?;
    if let Some(image) = &image
        && (image.is_empty() || image.len() > MAX_IMAGE || image.contains(char::is_whitespace))
    {
        return Err(CandidateError::InvalidImage(excerpt(image)));
    }
    let uri = string_field(model, "uri")?;
    if let Some(uri) = &uri
        && (uri.is_empty() || uri.len() > MAX_URI)
    {
        return Err(CandidateError::InvalidUri(uri.len()));
    }
    let metrics = match report.get("metrics") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(metrics)) => metrics_of(metrics)?,
        Some(other) => {
            return Err(CandidateError::NotAnObject {
                what: "metrics",
                found: kind(other),
            });
        }
    };
    Ok(ReportedModel {
        version,
        image,
        uri,
        metrics,
    })
}

fn not_json(text: &str, e: &serde_json::Error) -> CandidateError {
    let (line, column) = (e.line(), e.column());
    // serde_json stops at (or just after the sign of) a NaN or Infinity: say what it is, since
    // "expected value" does not tell a Python user their metric was NaN.
    let here = text
        .lines()
        .nth(line.saturating_sub(1))
        .map(|l| {
            let start = column.saturating_sub(2);
            l.char_indices()
                .skip_while(|(i, _)| *i < start)
                .map(|(_, c)| c)
                .take(10)
                .collect::<String>()
        })
        .unwrap_or_default();
    for token in ["-Infinity", "Infinity", "NaN"] {
        if here.contains(token) {
            return CandidateError::NonFinite {
                token,
                line,
                column,
            };
        }
    }
    CandidateError::NotJson {
        line,
        column,
        message: e.to_string(),
        cut: text.len() >= TERMINATION_MESSAGE_LIMIT,
    }
}

fn string_field(
    model: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, CandidateError> {
    match model.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(CandidateError::NotAString {
            field,
            found: kind(other),
        }),
    }
}

fn metrics_of(
    metrics: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, f64>, CandidateError> {
    if metrics.len() > MAX_METRICS {
        return Err(CandidateError::TooManyMetrics(metrics.len()));
    }
    let mut out = BTreeMap::new();
    for (name, value) in metrics {
        if name.is_empty() || name.len() > MAX_METRIC_NAME {
            return Err(CandidateError::InvalidMetricName(excerpt(name)));
        }
        // serde_json refuses numbers out of f64's range, so a number here is finite; the check
        // stays so that a change of parser cannot let one through.
        match value.as_f64() {
            Some(v) if v.is_finite() => {
                out.insert(name.clone(), v);
            }
            _ => {
                return Err(CandidateError::NonNumericMetric {
                    name: excerpt(name),
                    found: kind(value),
                });
            }
        }
    }
    Ok(out)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$`, at most 63 characters: the rule of
/// `spec.model.version`, so an accepted candidate can be written there.
fn is_label_value(s: &str) -> bool {
    let b = s.as_bytes();
    let edge = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= 63
        && b.first().is_some_and(edge)
        && b.last().is_some_and(edge)
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// At most 64 characters of what a run wrote, for an error message bound for status.
fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

/// The gate's verdict on a reported model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GateVerdict {
    /// Every rule held.
    pub accepted: bool,
    /// Each rule with the values compared, failing rules first.
    pub reason: String,
}

impl GateVerdict {
    /// `Accepted` or `Rejected`, as `Candidate.verdict` shows it.
    pub fn as_str(&self) -> &'static str {
        if self.accepted { ACCEPTED } else { REJECTED }
    }
}

/// Judges `reported` against `acceptance`: every rule must hold. `stable` holds the serving
/// model's metrics for `notWorseThanStable` (see [`stable_metrics`]). Without rules nothing is
/// accepted: a candidate that merely exists must not roll out.
pub fn judge(
    acceptance: Option<&AcceptanceSpec>,
    stable: &BTreeMap<String, f64>,
    reported: &ReportedModel,
) -> GateVerdict {
    let rules = acceptance.map(|a| a.metrics.as_slice()).unwrap_or_default();
    if rules.is_empty() {
        return GateVerdict {
            accepted: false,
            reason: "no acceptance thresholds in spec.remediation.retraining.acceptance".into(),
        };
    }
    let checks: Vec<Check> = rules
        .iter()
        .flat_map(|rule| check_rule(rule, stable, reported))
        .collect();
    let accepted = checks.iter().all(|c| c.held);
    let reason = checks
        .iter()
        .filter(|c| !c.held)
        .chain(checks.iter().filter(|c| c.held))
        .map(|c| c.text.as_str())
        .collect::<Vec<_>>()
        .join("; ");
    GateVerdict { accepted, reason }
}

/// One comparison of a rule.
struct Check {
    held: bool,
    text: String,
}

fn check_rule(
    rule: &AcceptanceRule,
    stable: &BTreeMap<String, f64>,
    reported: &ReportedModel,
) -> Vec<Check> {
    let name = &rule.name;
    let Some(&value) = reported.metrics.get(name) else {
        return vec![Check {
            held: false,
            text: format!("{name} not reported"),
        }];
    };
    let mut checks = Vec::new();
    if let Some(min) = rule.min {
        checks.push(compare(name, value, min, true, "min"));
    }
    if let Some(max) = rule.max {
        checks.push(compare(name, value, max, false, "max"));
    }
    if rule.not_worse_than_stable {
        checks.push(match stable.get(name) {
            Some(&s) if rule.lower_is_better => {
                compare(name, value, s, false, "stable, lower is better")
            }
            Some(&s) => compare(name, value, s, true, "stable"),
            None => Check {
                held: false,
                text: format!("stable's {name} unknown: set acceptance.stableMetrics"),
            },
        });
    }
    if checks.is_empty() {
        // The CRD refuses such a rule; one stored under an older CRD must not pass unjudged.
        checks.push(Check {
            held: false,
            text: format!("{name}: the rule sets no min, max or notWorseThanStable"),
        });
    }
    checks
}

/// `value` against `bound`: at least it when `at_least`, else at most it. NaN never holds.
fn compare(name: &str, value: f64, bound: f64, at_least: bool, what: &str) -> Check {
    let held = if at_least {
        value >= bound
    } else {
        value <= bound
    };
    let sign = match (at_least, held) {
        (true, true) => "≥",
        (true, false) => "<",
        (false, true) => "≤",
        (false, false) => ">",
    };
    let (v, b) = pair(value, bound);
    Check {
        held,
        text: format!("{name} {v} {sign} {b} ({what})"),
    }
}

/// Both numbers with three decimals, or as many more as it takes for each to read within 1% of
/// itself and for different numbers to read differently (a loss of 0.0004 against 0.0005 must
/// not read `0.000 ≤ 0.001`).
fn pair(a: f64, b: f64) -> (String, String) {
    let close = |v: f64, text: &str| {
        text.parse::<f64>()
            .is_ok_and(|read| (read - v).abs() <= 0.01 * v.abs())
    };
    for precision in 3..=17 {
        let (x, y) = (format!("{a:.precision$}"), format!("{b:.precision$}"));
        if (a == b || x != y) && close(a, &x) && close(b, &y) {
            return (x, y);
        }
    }
    (a.to_string(), b.to_string())
}

/// The serving model's metrics for `notWorseThanStable`: `acceptance.stableMetrics` when set,
/// else the metrics of the newest accepted candidate whose version is `serving_version` (the
/// model that serves was judged when it was retrained). Empty when neither is known.
pub fn stable_metrics(
    acceptance: Option<&AcceptanceSpec>,
    status: Option<&RetrainingStatus>,
    serving_version: &str,
) -> BTreeMap<String, f64> {
    if let Some(a) = acceptance
        && !a.stable_metrics.is_empty()
    {
        return a.stable_metrics.clone();
    }
    status
        .into_iter()
        .flat_map(|s| s.candidates.iter())
        .filter(|c| c.verdict == ACCEPTED && c.version == serving_version)
        // Candidates are kept newest first; on equal times the first listed wins.
        .reduce(|newest, c| if c.at.0 > newest.at.0 { c } else { newest })
        .map(|c| c.metrics.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
