//! The scenario format of `drover simulate`: how each revision behaves over time.
//!
//! ```yaml
//! duration: 2h            # how long to simulate
//! resolution: 10s         # virtual scrape interval (default: the ModelDeployment's scrapeInterval)
//! seed: 1                 # the simulation is deterministic for a seed
//! rps: 50                 # requests per second over both revisions
//! stableReplicas: 10      # stable's replicas (the canary is sized from them)
//! stable:                 # behaviour segments, each from its `from` until the next one
//!   - {from: 0s, p50: 20ms, p99: 60ms, errorRate: 0.001}
//! canary:                 # fields not given in a segment carry over from the previous one
//!   - {from: 0s, p50: 20ms, p99: 60ms, errorRate: 0.001}
//!   - {from: 20m, errorRate: 0.05}
//!   - {from: 40m, answering: false}       # the canary's pods stop answering (no reports)
//! ```
//!
//! Segment fields: `p50`, `p99` (latency, log-normal between them), `errorRate` (share of 5xx),
//! `rps` (overrides the total request rate from then on, for both revisions), `answering`
//! (false: no report, a metrics outage), `ready` (false: the revision's pods are not ready),
//! `positiveRate` (share of predictions "1"), `confidence` (mean confidence), `featureShift`
//! (added to the input feature's mean, in units of its spread).

use serde::Deserialize;

use crate::api::GoDuration;

/// A scenario as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Scenario {
    /// How long to simulate.
    pub duration: GoDuration,
    /// Virtual scrape interval.
    #[serde(default)]
    pub resolution: Option<GoDuration>,
    /// Random seed.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Requests per second over both revisions.
    #[serde(default = "default_rps")]
    pub rps: f64,
    /// Stable's replicas.
    #[serde(default = "default_replicas")]
    pub stable_replicas: i32,
    /// Stable's behaviour.
    pub stable: Vec<Segment>,
    /// The canary's behaviour (the revision the spec asks for).
    pub canary: Vec<Segment>,
}

fn default_seed() -> u64 {
    1
}
fn default_rps() -> f64 {
    50.0
}
fn default_replicas() -> i32 {
    10
}

/// Behaviour from `from` on.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Segment {
    /// Start of the segment.
    pub from: GoDuration,
    /// Median latency.
    #[serde(default)]
    pub p50: Option<GoDuration>,
    /// 99th percentile latency.
    #[serde(default)]
    pub p99: Option<GoDuration>,
    /// Share of 5xx.
    #[serde(default)]
    pub error_rate: Option<f64>,
    /// Total request rate from here on.
    #[serde(default)]
    pub rps: Option<f64>,
    /// Whether the pods answer the operator (false: no report).
    #[serde(default)]
    pub answering: Option<bool>,
    /// Whether the pods are ready.
    #[serde(default)]
    pub ready: Option<bool>,
    /// Share of predictions "1".
    #[serde(default)]
    pub positive_rate: Option<f64>,
    /// Mean confidence.
    #[serde(default)]
    pub confidence: Option<f64>,
    /// Shift of the input feature's mean, in standard deviations.
    #[serde(default)]
    pub feature_shift: Option<f64>,
}

/// Behaviour at one moment, every field resolved.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Behaviour {
    /// Median latency, seconds.
    pub p50: f64,
    /// p99 latency, seconds.
    pub p99: f64,
    /// Share of 5xx.
    pub error_rate: f64,
    /// Total request rate, if this segment sets it.
    pub rps: Option<f64>,
    /// Answers the operator.
    pub answering: bool,
    /// Ready.
    pub ready: bool,
    /// Share of predictions "1".
    pub positive_rate: f64,
    /// Mean confidence.
    pub confidence: f64,
    /// Input shift.
    pub feature_shift: f64,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            p50: 0.02,
            p99: 0.06,
            error_rate: 0.001,
            rps: None,
            answering: true,
            ready: true,
            positive_rate: 0.1,
            confidence: 0.9,
            feature_shift: 0.0,
        }
    }
}

/// A scenario that cannot be used, with the place to fix.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// Not YAML of the documented shape (the message has line and column).
    #[error("{0}")]
    Parse(String),
    /// A value out of range.
    #[error("{field}: {problem}")]
    Invalid {
        /// Path of the field, e.g. `canary[1].errorRate`.
        field: String,
        /// What is wrong.
        problem: String,
    },
}

impl Scenario {
    /// Parses and checks a scenario.
    pub fn from_yaml(text: &str) -> Result<Self, ScenarioError> {
        let scenario: Scenario =
            serde_saphyr::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        let invalid = |field: String, problem: &str| ScenarioError::Invalid {
            field,
            problem: problem.to_string(),
        };
        let duration =
            |field: &str, d: &GoDuration| d.parse().map_err(|e| invalid(field.to_string(), &e));
        if duration("duration", &self.duration)?.is_zero() {
            return Err(invalid("duration".into(), "must be positive"));
        }
        if duration("duration", &self.duration)?.as_secs() > 30 * 24 * 3600 {
            return Err(invalid("duration".into(), "must be at most 30 days"));
        }
        if let Some(r) = &self.resolution
            && duration("resolution", r)?.as_secs_f64() < 1.0
        {
            return Err(invalid("resolution".into(), "must be at least 1s"));
        }
        if !(self.rps.is_finite() && self.rps >= 0.0 && self.rps <= 1e6) {
            return Err(invalid("rps".into(), "must be within 0..=1000000"));
        }
        if !(1..=1000).contains(&self.stable_replicas) {
            return Err(invalid("stableReplicas".into(), "must be within 1..=1000"));
        }
        for (name, segments) in [("stable", &self.stable), ("canary", &self.canary)] {
            if segments.is_empty() {
                return Err(invalid(name.into(), "needs at least one segment"));
            }
            let mut last = None;
            for (i, s) in segments.iter().enumerate() {
                let at = |f: &str| format!("{name}[{i}].{f}");
                let from = duration(&at("from"), &s.from)?;
                if last.is_some_and(|l| from < l) {
                    return Err(invalid(at("from"), "segments must be in time order"));
                }
                last = Some(from);
                for (f, v) in [("p50", &s.p50), ("p99", &s.p99)] {
                    if let Some(v) = v {
                        duration(&at(f), v)?;
                    }
                }
                for (f, v, lo, hi) in [
                    ("errorRate", s.error_rate, 0.0, 1.0),
                    ("positiveRate", s.positive_rate, 0.0, 1.0),
                    ("confidence", s.confidence, 0.0, 1.0),
                    ("rps", s.rps, 0.0, 1e6),
                    ("featureShift", s.feature_shift, -100.0, 100.0),
                ] {
                    if let Some(v) = v
                        && !(v.is_finite() && (lo..=hi).contains(&v))
                    {
                        return Err(invalid(at(f), &format!("must be within {lo}..={hi}")));
                    }
                }
            }
        }
        Ok(())
    }

    /// Behaviour of `segments` at `t` seconds: each field from the latest segment that sets it.
    pub fn behaviour(segments: &[Segment], t: f64) -> Behaviour {
        let mut b = Behaviour::default();
        for s in segments {
            let from = s.from.parse().map(|d| d.as_secs_f64()).unwrap_or(0.0);
            if from > t {
                break;
            }
            let secs = |d: &Option<GoDuration>| {
                d.as_ref()
                    .and_then(|d| d.parse().ok())
                    .map(|d| d.as_secs_f64())
            };
            if let Some(v) = secs(&s.p50) {
                b.p50 = v;
            }
            if let Some(v) = secs(&s.p99) {
                b.p99 = v;
            }
            b.error_rate = s.error_rate.unwrap_or(b.error_rate);
            if s.rps.is_some() {
                b.rps = s.rps;
            }
            b.answering = s.answering.unwrap_or(b.answering);
            b.ready = s.ready.unwrap_or(b.ready);
            b.positive_rate = s.positive_rate.unwrap_or(b.positive_rate);
            b.confidence = s.confidence.unwrap_or(b.confidence);
            b.feature_shift = s.feature_shift.unwrap_or(b.feature_shift);
        }
        if b.p99 < b.p50 {
            b.p99 = b.p50;
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_scenarios_name_the_line_or_the_field() {
        let err = Scenario::from_yaml(
            "duration: 1h\nstable: [{from: 0s}]\ncanary: [{from: 0s, errorRate: 2}]\n",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "canary[0].errorRate: must be within 0..=1");
        let err = Scenario::from_yaml(
            "duration: 1h\nstable: [{from: 0s}]\ncanary:\n  - {from: 0s, latency: 3}\n",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("line 4") && text.contains("latency"),
            "{text}"
        );
        let err =
            Scenario::from_yaml("duration: soon\nstable: [{from: 0s}]\ncanary: [{from: 0s}]\n")
                .unwrap_err();
        assert!(err.to_string().starts_with("duration:"), "{err}");
        let err = Scenario::from_yaml(
            "duration: 1h\nstable: [{from: 0s}]\ncanary: [{from: 10m}, {from: 5m}]\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("canary[1].from"), "{err}");
    }

    #[test]
    fn later_segments_override_only_what_they_set() {
        let s = Scenario::from_yaml(
            "duration: 1h\nstable: [{from: 0s}]\ncanary: [{from: 0s, p50: 10ms, errorRate: 0.01}, {from: 10m, errorRate: 0.2}]\n",
        )
        .unwrap();
        let b = Scenario::behaviour(&s.canary, 900.0);
        assert_eq!(b.error_rate, 0.2);
        assert!((b.p50 - 0.01).abs() < 1e-12);
        assert_eq!(Scenario::behaviour(&s.canary, 0.0).error_rate, 0.01);
    }
}
