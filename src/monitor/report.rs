//! The monitor's report (`GET /drover/report`): cumulative since the monitor started, like
//! Prometheus counters, so the operator takes deltas between scrapes, survives missed ones and
//! notices a restart by the instance id. Every histogram has a fixed layout, so merging pods is
//! exact addition. Schema: `docs/monitor-report.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::feedback::Performance;
use super::feedback::log::FeedbackLog;
use crate::stats::{FeatureHistogram, LatencySketch, StatsError};

/// Version of the report schema.
pub const REPORT_VERSION: u32 = 1;

/// Responses by status class.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusClasses {
    /// 1xx.
    #[serde(rename = "1xx", default)]
    pub informational: u64,
    /// 2xx.
    #[serde(rename = "2xx", default)]
    pub success: u64,
    /// 3xx.
    #[serde(rename = "3xx", default)]
    pub redirection: u64,
    /// 4xx.
    #[serde(rename = "4xx", default)]
    pub client_error: u64,
    /// 5xx.
    #[serde(rename = "5xx", default)]
    pub server_error: u64,
}

impl StatusClasses {
    /// Counts one response with `status`.
    pub fn count(&mut self, status: u16) {
        match status / 100 {
            1 => self.informational += 1,
            2 => self.success += 1,
            3 => self.redirection += 1,
            4 => self.client_error += 1,
            _ => self.server_error += 1,
        }
    }

    /// All responses.
    pub fn total(&self) -> u64 {
        self.informational + self.success + self.redirection + self.client_error + self.server_error
    }

    fn checked(&self, earlier: &Self) -> Option<Self> {
        Some(Self {
            informational: self.informational.checked_sub(earlier.informational)?,
            success: self.success.checked_sub(earlier.success)?,
            redirection: self.redirection.checked_sub(earlier.redirection)?,
            client_error: self.client_error.checked_sub(earlier.client_error)?,
            server_error: self.server_error.checked_sub(earlier.server_error)?,
        })
    }

    fn plus(&self, other: &Self) -> Self {
        Self {
            informational: self.informational + other.informational,
            success: self.success + other.success,
            redirection: self.redirection + other.redirection,
            client_error: self.client_error + other.client_error,
            server_error: self.server_error + other.server_error,
        }
    }
}

/// What the monitor counted besides responses. Each is a case the monitor handled without
/// changing the model's answer (or, for the options, the case it was told to act on).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Counters {
    /// Requests whose body could not be read as a supported payload (passed through).
    pub unparsed_requests: u64,
    /// Responses whose body could not be read (passed through).
    pub unparsed_responses: u64,
    /// Responses replaced by a 422 because confidence was below the floor.
    pub rejected: u64,
    /// Responses replaced by the configured fallback because confidence was below the floor.
    pub fallbacks: u64,
    /// Requests refused with 413 for exceeding the body limit.
    pub too_large: u64,
    /// Requests answered 504 because the model did not answer in time.
    pub upstream_timeouts: u64,
    /// Requests answered 502 because the model could not be reached.
    pub upstream_errors: u64,
    /// Requests refused with 401 for a missing or wrong API key.
    pub unauthorized: u64,
    /// Feature values whose name is not in the profile (or beyond the feature cap).
    pub unknown_features: u64,
    /// Requests finished while the pod was terminating (not held against the revision).
    pub during_termination: u64,
    /// Request/response pairs written to the sampled log.
    pub logged: u64,
}

impl Counters {
    fn checked(&self, e: &Self) -> Option<Self> {
        Some(Self {
            unparsed_requests: self.unparsed_requests.checked_sub(e.unparsed_requests)?,
            unparsed_responses: self.unparsed_responses.checked_sub(e.unparsed_responses)?,
            rejected: self.rejected.checked_sub(e.rejected)?,
            fallbacks: self.fallbacks.checked_sub(e.fallbacks)?,
            too_large: self.too_large.checked_sub(e.too_large)?,
            upstream_timeouts: self.upstream_timeouts.checked_sub(e.upstream_timeouts)?,
            upstream_errors: self.upstream_errors.checked_sub(e.upstream_errors)?,
            unauthorized: self.unauthorized.checked_sub(e.unauthorized)?,
            unknown_features: self.unknown_features.checked_sub(e.unknown_features)?,
            during_termination: self.during_termination.checked_sub(e.during_termination)?,
            logged: self.logged.checked_sub(e.logged)?,
        })
    }

    fn plus(&self, o: &Self) -> Self {
        Self {
            unparsed_requests: self.unparsed_requests + o.unparsed_requests,
            unparsed_responses: self.unparsed_responses + o.unparsed_responses,
            rejected: self.rejected + o.rejected,
            fallbacks: self.fallbacks + o.fallbacks,
            too_large: self.too_large + o.too_large,
            upstream_timeouts: self.upstream_timeouts + o.upstream_timeouts,
            upstream_errors: self.upstream_errors + o.upstream_errors,
            unauthorized: self.unauthorized + o.unauthorized,
            unknown_features: self.unknown_features + o.unknown_features,
            during_termination: self.during_termination + o.during_termination,
            logged: self.logged + o.logged,
        }
    }
}

/// One monitor's cumulative report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Schema version ([`REPORT_VERSION`]).
    pub version: u32,
    /// Random id of this monitor process: a new one means the counters restarted.
    pub instance: String,
    /// When this monitor started (RFC 3339).
    pub start_time: String,
    /// `MODEL_VERSION` of the pod.
    #[serde(default)]
    pub model_version: String,
    /// Responses by status class.
    pub requests: StatusClasses,
    /// Rows seen in parsed requests (a batch counts every row).
    pub rows: u64,
    /// Everything else counted.
    pub counters: Counters,
    /// Latency of every proxied request, in seconds (relative error ≤ 1%).
    pub latency: LatencySketch,
    /// Per-feature histograms, on the reference profile's bins (or learned ones).
    pub features: BTreeMap<String, FeatureHistogram>,
    /// Predictions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<FeatureHistogram>,
    /// Confidence (max class probability), on fixed bins of width 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<FeatureHistogram>,
    /// Performance from ground-truth labels (`POST /drover/feedback`), when feedback is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<Performance>,
    /// The labels counted after `feedbackSince`, only when the query asks for them (the
    /// operator's cross-pod check); never part of a delta or merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feedback_log: Option<FeedbackLog>,
}

/// Why two reports cannot be combined.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The earlier report is from another monitor process: counters restarted.
    #[error("the monitor restarted (instance changed)")]
    Restarted,
    /// A counter went backwards within one instance.
    #[error("a counter went backwards")]
    Backwards,
    /// Histograms with different layouts.
    #[error(transparent)]
    Stats(#[from] StatsError),
}

impl Report {
    /// What happened between `earlier` and `self` (same instance), feature by feature; a
    /// feature absent earlier counts from zero.
    pub fn delta(&self, earlier: &Report) -> Result<Report, ReportError> {
        if self.instance != earlier.instance {
            return Err(ReportError::Restarted);
        }
        let mut features = BTreeMap::new();
        for (name, h) in &self.features {
            let d = match earlier.features.get(name) {
                Some(e) => h.delta(e)?,
                None => h.clone(),
            };
            features.insert(name.clone(), d);
        }
        let sub = |now: &Option<FeatureHistogram>,
                   then: &Option<FeatureHistogram>|
         -> Result<_, StatsError> {
            Ok(match (now, then) {
                (Some(n), Some(t)) => Some(n.delta(t)?),
                (n, _) => n.clone(),
            })
        };
        Ok(Report {
            version: self.version,
            instance: self.instance.clone(),
            start_time: self.start_time.clone(),
            model_version: self.model_version.clone(),
            requests: self
                .requests
                .checked(&earlier.requests)
                .ok_or(ReportError::Backwards)?,
            rows: self
                .rows
                .checked_sub(earlier.rows)
                .ok_or(ReportError::Backwards)?,
            counters: self
                .counters
                .checked(&earlier.counters)
                .ok_or(ReportError::Backwards)?,
            latency: self.latency.delta(&earlier.latency)?,
            features,
            prediction: sub(&self.prediction, &earlier.prediction)?,
            confidence: sub(&self.confidence, &earlier.confidence)?,
            performance: match (&self.performance, &earlier.performance) {
                (Some(now), Some(then)) => Some(now.delta(then).ok_or(ReportError::Backwards)?),
                (now, _) => now.clone(),
            },
            feedback_log: None,
        })
    }

    /// Adds `other` (another pod, or the next window) to `self`; histograms must share layouts.
    pub fn merge(&self, other: &Report) -> Result<Report, ReportError> {
        let mut features = self.features.clone();
        for (name, h) in &other.features {
            let merged = match features.get(name) {
                Some(mine) => mine.merge(h)?,
                None => h.clone(),
            };
            features.insert(name.clone(), merged);
        }
        let add =
            |a: &Option<FeatureHistogram>, b: &Option<FeatureHistogram>| -> Result<_, StatsError> {
                Ok(match (a, b) {
                    (Some(a), Some(b)) => Some(a.merge(b)?),
                    (a, b) => a.clone().or_else(|| b.clone()),
                })
            };
        Ok(Report {
            version: self.version,
            instance: self.instance.clone(),
            start_time: self.start_time.clone(),
            model_version: self.model_version.clone(),
            requests: self.requests.plus(&other.requests),
            rows: self.rows + other.rows,
            counters: self.counters.plus(&other.counters),
            latency: self.latency.merge(&other.latency)?,
            features,
            prediction: add(&self.prediction, &other.prediction)?,
            confidence: add(&self.confidence, &other.confidence)?,
            performance: match (&self.performance, &other.performance) {
                (Some(a), Some(b)) => Some(a.merge(b)),
                (a, b) => a.clone().or_else(|| b.clone()),
            },
            feedback_log: None,
        })
    }
}
