//! What the monitor has seen: counters, the latency sketch and the histograms, behind one short
//! lock per request; the report and the Prometheus metrics are read from the same state.
//!
//! Bins come from the reference profile. Without one, each column's bins are learned from its
//! first [`LEARN_ROWS`] values (ten quantile bins if nine in ten values are numbers, else the
//! twenty most frequent categories plus "other"); until then the column is not reported.
//! Learned bins differ between pods, so reports without a profile cannot be merged across pods:
//! ship a profile (`drover profile`) for anything but a quick look.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use serde_json::Value;

use super::feedback::log::FeedbackRing;
use super::feedback::{FeedbackError, Labelled};
use super::payload::{self, FeatureKey, Observation, Unreadable};
use super::report::{Counters, REPORT_VERSION, Report, StatusClasses};
use crate::profile::{ProfiledColumn, ReferenceProfile};
use crate::stats::{BinLayout, FeatureHistogram, LatencySketch};

/// Values a column without a profile collects before its bins are fixed.
pub const LEARN_ROWS: usize = 1000;
/// Columns tracked without a profile (more names are counted as unknown): bounds memory and
/// metric labels whatever clients send.
pub const MAX_LEARNED_COLUMNS: usize = 64;
/// Features given their own Prometheus label; the rest only appear in the report.
pub const MAX_FEATURE_LABELS: usize = 32;
/// Fixed confidence bins.
pub const CONFIDENCE_EDGES: [f64; 9] = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9];
/// Latency buckets of the Prometheus histogram (seconds), read off the sketch.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One column's histogram, or its first values while its bins are learned.
#[derive(Debug)]
enum Column {
    Ready(FeatureHistogram),
    Learning(Vec<Owned>),
}

#[derive(Debug, Clone)]
enum Owned {
    Number(f64),
    Category(String),
    Missing,
}

impl Column {
    fn from_profile(c: &ProfiledColumn) -> Self {
        FeatureHistogram::new(c.layout.clone())
            .map(Column::Ready)
            .unwrap_or_else(|_| Column::Learning(Vec::new()))
    }

    fn observe(&mut self, value: Observation<'_>) {
        match self {
            Column::Ready(h) => observe(h, value),
            Column::Learning(buffer) => {
                buffer.push(match value {
                    Observation::Number(x) => Owned::Number(x),
                    Observation::Category(s) => Owned::Category(s.to_string()),
                    Observation::Bool(b) => Owned::Category(b.to_string()),
                    Observation::Missing | Observation::Unsupported => Owned::Missing,
                });
                if buffer.len() >= LEARN_ROWS {
                    match learn(buffer) {
                        Some(learned) => *self = Column::Ready(learned),
                        // Cannot happen with the layouts `learn` builds; start over rather
                        // than grow without bound.
                        None => buffer.clear(),
                    }
                }
            }
        }
    }

    fn histogram(&self) -> Option<&FeatureHistogram> {
        match self {
            Column::Ready(h) => Some(h),
            Column::Learning(_) => None,
        }
    }
}

fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x}")
    }
}

/// [`format_number`] of a whole number, written on the stack: class labels such as
/// `{"prediction": 1}` are counted on every response without allocating a string.
fn whole_number(x: f64, buffer: &mut [u8; 20]) -> Option<&str> {
    if !(x.fract() == 0.0 && x.abs() < 1e15) {
        return None;
    }
    let n = x as i64;
    let mut magnitude = n.unsigned_abs();
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if n < 0 {
        at -= 1;
        buffer[at] = b'-';
    }
    std::str::from_utf8(&buffer[at..]).ok()
}

fn observe(h: &mut FeatureHistogram, value: Observation<'_>) {
    let numeric = h.layout().is_numeric();
    match value {
        Observation::Number(x) if numeric => h.observe_number(x),
        Observation::Number(x) => match whole_number(x, &mut [0; 20]) {
            Some(label) => h.observe_category(label),
            None => h.observe_category(&format_number(x)),
        },
        Observation::Category(s) if numeric => match s.trim().parse::<f64>() {
            Ok(x) => h.observe_number(x),
            Err(_) => h.observe_category(s),
        },
        Observation::Category(s) => h.observe_category(s),
        Observation::Bool(b) if numeric => h.observe_number(if b { 1.0 } else { 0.0 }),
        Observation::Bool(b) => h.observe_category(if b { "true" } else { "false" }),
        Observation::Missing => h.observe_missing(),
        Observation::Unsupported if numeric => h.observe_category("<unsupported>"),
        Observation::Unsupported => h.observe_missing(),
    }
}

fn learn(buffer: &[Owned]) -> Option<FeatureHistogram> {
    let numbers: Vec<f64> = buffer
        .iter()
        .filter_map(|v| match v {
            Owned::Number(x) if x.is_finite() => Some(*x),
            _ => None,
        })
        .collect();
    let present = buffer
        .iter()
        .filter(|v| !matches!(v, Owned::Missing))
        .count();
    let layout = if present > 0 && numbers.len() * 10 >= present * 9 {
        BinLayout::learn_numeric(&numbers, 10)
    } else {
        let mut freq: HashMap<String, u64> = HashMap::new();
        for v in buffer {
            let key = match v {
                Owned::Number(x) => format_number(*x),
                Owned::Category(s) => s.clone(),
                Owned::Missing => continue,
            };
            *freq.entry(key).or_default() += 1;
        }
        let mut ranked: Vec<(String, u64)> = freq.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(20);
        BinLayout::Categorical {
            categories: ranked.into_iter().map(|(k, _)| k).collect(),
        }
    };
    let mut h = FeatureHistogram::new(layout).ok()?;
    for v in buffer {
        match v {
            Owned::Number(x) => observe(&mut h, Observation::Number(*x)),
            Owned::Category(s) => observe(&mut h, Observation::Category(s)),
            Owned::Missing => h.observe_missing(),
        }
    }
    Some(h)
}

/// Up to this many columns, comparing the names beats hashing the one looked up.
const NAME_SCAN_LIMIT: usize = 16;

fn column_of(names: &[String], index: &HashMap<String, usize>, name: &str) -> Option<usize> {
    if names.len() <= NAME_SCAN_LIMIT {
        names.iter().position(|n| n == name)
    } else {
        index.get(name).copied()
    }
}

/// What one proxied exchange contributes.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// Status sent to the client.
    pub status: u16,
    /// Time from request received to response ready.
    pub latency: Duration,
    /// The parsed request, or why it could not be read (`None`: no body was read, e.g. a GET).
    pub request: Option<Result<&'a Value, Unreadable>>,
    /// The parsed response, or why it could not be read (`None`: not read).
    pub response: Option<Result<&'a Value, Unreadable>>,
    /// The pod was terminating: count it apart, do not hold it against the revision.
    pub terminating: bool,
}

/// A request body as the recorder reads it.
#[derive(Clone, Copy)]
enum RequestRef<'a, 'b> {
    Tree(&'a Value),
    Row(&'a payload::FlatRow<'b>),
}

struct State {
    requests: StatusClasses,
    rows: u64,
    counters: Counters,
    latency: LatencySketch,
    names: Vec<String>,
    columns: Vec<Column>,
    index: HashMap<String, usize>,
    profiled: bool,
    prediction: Column,
    confidence: Option<FeatureHistogram>,
    performance: Option<crate::monitor::feedback::Performance>,
    /// Every label counted into `performance` (from the first one on).
    feedback_log: Option<FeedbackRing>,
}

/// The monitor's shared state.
pub struct Recorder {
    instance: String,
    start_time: String,
    model_version: String,
    state: Mutex<State>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("instance", &self.instance)
            .finish()
    }
}

/// Which counter an outcome of the options bumps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Confidence floor: answered 422.
    Rejected,
    /// Confidence floor: answered with the fallback.
    Fallback,
    /// Body over the limit: 413.
    TooLarge,
    /// The model did not answer in time: 504.
    UpstreamTimeout,
    /// The model could not be reached: 502.
    UpstreamError,
    /// Missing or wrong API key: 401.
    Unauthorized,
    /// Written to the sampled log.
    Logged,
}

impl Recorder {
    /// A recorder with the profile's bins (or learning bins when `profile` is `None`).
    pub fn new(
        profile: Option<&ReferenceProfile>,
        model_version: &str,
        instance: String,
        start_time: String,
    ) -> Self {
        let mut names = Vec::new();
        let mut columns = Vec::new();
        let mut index = HashMap::new();
        if let Some(p) = profile {
            for f in &p.features {
                index.insert(f.name.clone(), names.len());
                names.push(f.name.clone());
                columns.push(Column::from_profile(f));
            }
        }
        let prediction = profile
            .and_then(|p| p.prediction.as_ref())
            .map(Column::from_profile)
            .unwrap_or_else(|| Column::Learning(Vec::new()));
        let confidence = FeatureHistogram::new(BinLayout::Numeric {
            edges: CONFIDENCE_EDGES.to_vec(),
        })
        .ok();
        Self {
            instance,
            start_time,
            model_version: model_version.to_string(),
            state: Mutex::new(State {
                requests: StatusClasses::default(),
                rows: 0,
                counters: Counters::default(),
                latency: LatencySketch::new(),
                names,
                columns,
                index,
                profiled: profile.is_some(),
                prediction,
                confidence,
                performance: None,
                feedback_log: None,
            }),
        }
    }

    /// Counts one labelled prediction (or why the feedback was refused), and logs it for the
    /// operator's cross-pod check.
    pub fn feedback(
        &self,
        result: Result<Labelled<'_>, &FeedbackError>,
    ) -> Result<(), FeedbackError> {
        let mut guard = self.lock();
        let s = &mut *guard;
        let performance = s.performance.get_or_insert_with(Default::default);
        match result {
            Ok(labelled) => {
                let contribution = match performance.record(
                    labelled.task,
                    &labelled.claims.prediction,
                    labelled.label,
                ) {
                    Ok(c) => c,
                    Err(e) => {
                        performance.refuse(&e);
                        return Err(e);
                    }
                };
                s.feedback_log
                    .get_or_insert_with(FeedbackRing::default)
                    .push(labelled.id, labelled.claims.time, &contribution);
                Ok(())
            }
            Err(e) => {
                performance.refuse(e);
                Ok(())
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave counters half-updated in a way that
        // matters more than losing the monitor; keep serving with what is there.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts an option's outcome.
    pub fn outcome(&self, outcome: Outcome) {
        let mut s = self.lock();
        let c = &mut s.counters;
        match outcome {
            Outcome::Rejected => c.rejected += 1,
            Outcome::Fallback => c.fallbacks += 1,
            Outcome::TooLarge => c.too_large += 1,
            Outcome::UpstreamTimeout => c.upstream_timeouts += 1,
            Outcome::UpstreamError => c.upstream_errors += 1,
            Outcome::Unauthorized => c.unauthorized += 1,
            Outcome::Logged => c.logged += 1,
        }
    }

    /// Records one exchange.
    pub fn record(&self, exchange: Exchange<'_>) {
        let request = exchange.request.map(|r| r.map(RequestRef::Tree));
        self.record_exchange(exchange, request);
    }

    /// Records one exchange whose request was read by [`payload::parse_request`]
    /// (`exchange.request` is not looked at): the same counts as [`Recorder::record`] with
    /// the request's `Value`.
    pub fn record_parsed(
        &self,
        exchange: Exchange<'_>,
        request: Option<Result<&payload::ParsedRequest<'_>, Unreadable>>,
    ) {
        let request = request.map(|r| {
            r.map(|parsed| match parsed {
                payload::ParsedRequest::Row(row) => RequestRef::Row(row),
                payload::ParsedRequest::Tree(tree) => RequestRef::Tree(tree),
            })
        });
        self.record_exchange(exchange, request);
    }

    fn record_exchange(
        &self,
        exchange: Exchange<'_>,
        request: Option<Result<RequestRef<'_, '_>, Unreadable>>,
    ) {
        let mut guard = self.lock();
        let s = &mut *guard;
        if exchange.terminating {
            s.counters.during_termination += 1;
            return;
        }
        s.requests.count(exchange.status);
        s.latency.record(exchange.latency.as_secs_f64());
        let served = (200..300).contains(&exchange.status);
        match request {
            // A request the model refused was not served: its inputs stay out of the histograms.
            Some(Ok(_)) if !served => {}
            Some(Ok(body)) => {
                let State {
                    names,
                    columns,
                    index,
                    profiled,
                    counters,
                    ..
                } = s;
                let sink = |_, key: FeatureKey<'_>, value: Observation<'_>| {
                    let slot = match key {
                        FeatureKey::Named(name) => match column_of(names, index, name) {
                            Some(i) => Some(i),
                            None if !*profiled && columns.len() < MAX_LEARNED_COLUMNS => {
                                index.insert(name.to_string(), columns.len());
                                names.push(name.to_string());
                                columns.push(Column::Learning(Vec::new()));
                                Some(columns.len() - 1)
                            }
                            None => None,
                        },
                        FeatureKey::Position(j) if *profiled => (j < columns.len()).then_some(j),
                        FeatureKey::Position(j) => {
                            let name = format!("f{j}");
                            match index.get(&name) {
                                Some(&i) => Some(i),
                                None if columns.len() < MAX_LEARNED_COLUMNS => {
                                    index.insert(name.clone(), columns.len());
                                    names.push(name);
                                    columns.push(Column::Learning(Vec::new()));
                                    Some(columns.len() - 1)
                                }
                                None => None,
                            }
                        }
                    };
                    match slot.and_then(|i| columns.get_mut(i)) {
                        Some(column) => column.observe(value),
                        None => counters.unknown_features += 1,
                    }
                };
                let result = match body {
                    RequestRef::Tree(tree) => payload::read_request(tree, sink),
                    RequestRef::Row(row) => {
                        row.read(sink);
                        Ok(1)
                    }
                };
                match result {
                    Ok(rows) => s.rows += rows as u64,
                    Err(_) => s.counters.unparsed_requests += 1,
                }
            }
            Some(Err(_)) => s.counters.unparsed_requests += 1,
            None => {}
        }
        match exchange.response {
            Some(Ok(body)) => match payload::read_response(body) {
                Ok(reading) => {
                    for p in reading.predictions {
                        s.prediction.observe(p);
                    }
                    if let Some(h) = s.confidence.as_mut() {
                        for c in reading.confidences {
                            h.observe_number(c);
                        }
                    }
                }
                Err(_) => s.counters.unparsed_responses += 1,
            },
            Some(Err(_)) => s.counters.unparsed_responses += 1,
            None => {}
        }
    }

    /// The cumulative report.
    pub fn report(&self) -> Report {
        self.report_of(&self.lock())
    }

    /// The cumulative report with the feedback log after `seq` (`feedbackSince`), read under
    /// the same lock as the performance counters, so the log accounts for exactly the labels
    /// the report counts. `seq` is a number of `instance` (`feedbackInstance`): when that is
    /// another monitor process (this one restarted since), the whole log comes back.
    pub fn report_with_feedback(&self, seq: u64, instance: Option<&str>) -> Report {
        let seq = if instance.is_none_or(|i| i == self.instance) {
            seq
        } else {
            0
        };
        let s = self.lock();
        let mut report = self.report_of(&s);
        report.feedback_log = Some(match &s.feedback_log {
            Some(ring) => ring.since(seq),
            None => FeedbackRing::default().since(seq),
        });
        report
    }

    fn report_of(&self, s: &State) -> Report {
        Report {
            version: REPORT_VERSION,
            instance: self.instance.clone(),
            start_time: self.start_time.clone(),
            model_version: self.model_version.clone(),
            requests: s.requests.clone(),
            rows: s.rows,
            counters: s.counters.clone(),
            latency: s.latency.clone(),
            features: s
                .names
                .iter()
                .zip(&s.columns)
                .filter_map(|(n, c)| c.histogram().map(|h| (n.clone(), h.clone())))
                .collect(),
            prediction: s.prediction.histogram().cloned(),
            confidence: s.confidence.clone(),
            performance: s.performance.clone(),
            feedback_log: None,
        }
    }
}

/// Exposes the recorder as Prometheus metrics at scrape time (no double bookkeeping).
#[derive(Debug)]
pub struct MetricsCollector(pub std::sync::Arc<Recorder>);

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    let e = encoder.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(e)
}

impl Collector for MetricsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let r = self.0.report();
        {
            let mut family = encoder.encode_descriptor(
                "drover_monitor_requests",
                "Proxied requests by response status class",
                None,
                MetricType::Counter,
            )?;
            for (class, n) in [
                ("1xx", r.requests.informational),
                ("2xx", r.requests.success),
                ("3xx", r.requests.redirection),
                ("4xx", r.requests.client_error),
                ("5xx", r.requests.server_error),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&[("code_class", class)])?)?;
            }
        }
        {
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len());
            for le in LATENCY_BUCKETS {
                let below: u64 = r.latency.zero_count()
                    + r.latency
                        .buckets()
                        .filter(|(i, _)| LatencySketch::bucket_value(*i) <= le)
                        .map(|(_, n)| n)
                        .sum::<u64>();
                buckets.push((le, below));
            }
            // encode_histogram takes per-bucket (not cumulative) counts.
            let mut per_bucket = Vec::with_capacity(buckets.len() + 1);
            let mut previous = 0;
            for (le, cumulative) in &buckets {
                per_bucket.push((*le, cumulative.saturating_sub(previous)));
                previous = *cumulative;
            }
            per_bucket.push((f64::INFINITY, r.latency.count().saturating_sub(previous)));
            let mut e = encoder.encode_descriptor(
                "drover_monitor_request_duration_seconds",
                "Time from request to response, read off the latency sketch",
                None,
                MetricType::Histogram,
            )?;
            e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                r.latency.sum(),
                r.latency.count(),
                &per_bucket,
                None,
            )?;
        }
        counter(
            &mut encoder,
            "drover_monitor_rows",
            "Rows in parsed requests",
            r.rows,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "drover_monitor_unparsed",
                "Payloads passed through without being understood",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(r.counters.unparsed_requests)
                .encode(family.encode_family(&[("direction", "request")])?)?;
            ConstCounter::new(r.counters.unparsed_responses)
                .encode(family.encode_family(&[("direction", "response")])?)?;
        }
        {
            let mut family = encoder.encode_descriptor(
                "drover_monitor_interventions",
                "Responses the monitor produced itself, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, n) in [
                ("confidence_rejected", r.counters.rejected),
                ("confidence_fallback", r.counters.fallbacks),
                ("body_too_large", r.counters.too_large),
                ("upstream_timeout", r.counters.upstream_timeouts),
                ("upstream_unreachable", r.counters.upstream_errors),
                ("unauthorized", r.counters.unauthorized),
            ] {
                ConstCounter::new(n).encode(family.encode_family(&[("reason", reason)])?)?;
            }
        }
        counter(
            &mut encoder,
            "drover_monitor_unknown_feature_values",
            "Feature values not in the profile (or beyond the feature cap)",
            r.counters.unknown_features,
        )?;
        counter(
            &mut encoder,
            "drover_monitor_requests_during_termination",
            "Requests finished while the pod was terminating",
            r.counters.during_termination,
        )?;
        counter(
            &mut encoder,
            "drover_monitor_logged",
            "Exchanges written to the sampled log",
            r.counters.logged,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "drover_monitor_feature_mean",
                "Mean of each numeric feature since start (first 32 features)",
                None,
                MetricType::Gauge,
            )?;
            for (name, h) in r.features.iter().take(MAX_FEATURE_LABELS) {
                if let Some(mean) = h.mean() {
                    ConstGauge::new(mean)
                        .encode(family.encode_family(&[("feature", name.as_str())])?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "drover_monitor_feature_missing",
                "Missing values of each feature (first 32 features)",
                None,
                MetricType::Counter,
            )?;
            for (name, h) in r.features.iter().take(MAX_FEATURE_LABELS) {
                ConstCounter::new(h.missing())
                    .encode(family.encode_family(&[("feature", name.as_str())])?)?;
            }
        }
        if let Some(confidence) = &r.confidence {
            let mut per_bucket: Vec<(f64, u64)> = CONFIDENCE_EDGES
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .zip(confidence.counts().iter().copied())
                .collect();
            if per_bucket.len() != CONFIDENCE_EDGES.len() + 1 {
                per_bucket.clear();
            }
            let mut e = encoder.encode_descriptor(
                "drover_monitor_confidence",
                "Confidence (highest class probability) of each prediction",
                None,
                MetricType::Histogram,
            )?;
            e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                confidence.sum(),
                confidence.count(),
                &per_bucket,
                None,
            )?;
        }
        if let Some(prediction) = &r.prediction
            && let BinLayout::Categorical { categories } = prediction.layout()
        {
            let mut family = encoder.encode_descriptor(
                "drover_monitor_predictions",
                "Predictions by class (first 32 classes, then other)",
                None,
                MetricType::Counter,
            )?;
            let counts = prediction.counts();
            let mut other = counts.last().copied().unwrap_or(0);
            for (i, class) in categories.iter().enumerate() {
                let n = counts.get(i).copied().unwrap_or(0);
                if i < MAX_FEATURE_LABELS {
                    ConstCounter::new(n)
                        .encode(family.encode_family(&[("class", class.as_str())])?)?;
                } else {
                    other += n;
                }
            }
            ConstCounter::new(other).encode(family.encode_family(&[("class", "_other")])?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn recorder(profile: Option<&ReferenceProfile>) -> Recorder {
        Recorder::new(
            profile,
            "1.0.0",
            "test-instance".into(),
            "2026-01-01T00:00:00Z".into(),
        )
    }

    fn exchange<'a>(req: &'a Value, resp: &'a Value) -> Exchange<'a> {
        Exchange {
            status: 200,
            latency: Duration::from_millis(12),
            request: Some(Ok(req)),
            response: Some(Ok(resp)),
            terminating: false,
        }
    }

    #[test]
    fn whole_numbers_are_labelled_as_format_number_does() {
        for x in [
            0.0,
            -0.0,
            1.0,
            -1.0,
            7.0,
            10.0,
            -42.0,
            123456789.0,
            999999999999999.0,
            -1e14,
        ] {
            assert_eq!(
                whole_number(x, &mut [0; 20]),
                Some(format_number(x).as_str()),
                "{x}"
            );
        }
        for x in [0.5, 1e15, -1e15, f64::NAN, f64::INFINITY] {
            assert_eq!(whole_number(x, &mut [0; 20]), None, "{x}");
        }
    }

    #[test]
    fn profile_bins_are_used_and_unknown_features_counted() {
        let profile = ReferenceProfile::from_json(
            br#"{"version":1,"features":[{"name":"amount","kind":"numeric","edges":[10,100],"counts":[1,1,1],"count":3}],
                "prediction":{"name":"prediction","kind":"categorical","categories":["0","1"],"counts":[1,1,0],"count":2}}"#,
        )
        .unwrap();
        let r = recorder(Some(&profile));
        let req = json!({"amount": 50, "unknown": 1});
        let resp = json!({"prediction": 1, "probability": 0.9});
        r.record(exchange(&req, &resp));
        let batch = json!({"instances": [[5], [500]]});
        r.record(exchange(&batch, &json!({"predictions": [0, 1]})));
        let report = r.report();
        assert_eq!(report.rows, 3);
        assert_eq!(report.features["amount"].counts(), &[1, 1, 1]);
        assert_eq!(report.counters.unknown_features, 1);
        assert_eq!(report.prediction.as_ref().unwrap().counts(), &[1, 2, 0]);
        assert_eq!(report.confidence.as_ref().unwrap().count(), 1);
        assert_eq!(report.requests.success, 2);
        assert_eq!(report.latency.count(), 2);
    }

    #[test]
    fn without_a_profile_bins_are_learned_after_the_first_rows() {
        let r = recorder(None);
        let resp = json!({"prediction": 0});
        for i in 0..(LEARN_ROWS + 10) {
            let req = json!({"x": i as f64, "color": if i % 3 == 0 { "red" } else { "blue" }});
            r.record(exchange(&req, &resp));
        }
        let report = r.report();
        let x = &report.features["x"];
        assert!(x.layout().is_numeric());
        assert_eq!(x.count(), (LEARN_ROWS + 10) as u64);
        let color = &report.features["color"];
        assert_eq!(
            color.layout(),
            &BinLayout::Categorical {
                categories: vec!["blue".into(), "red".into()]
            }
        );
    }

    #[test]
    fn learned_columns_are_capped() {
        let r = recorder(None);
        let mut req = serde_json::Map::new();
        for i in 0..(MAX_LEARNED_COLUMNS + 5) {
            req.insert(format!("k{i}"), json!(1));
        }
        r.record(exchange(&Value::Object(req), &json!({"prediction": 1})));
        assert_eq!(r.report().counters.unknown_features, 5);
    }

    #[test]
    fn unparsed_payloads_and_termination_are_counted_apart() {
        let r = recorder(None);
        r.record(Exchange {
            status: 200,
            latency: Duration::from_millis(1),
            request: Some(Err(Unreadable::NotJson)),
            response: Some(Err(Unreadable::NotJson)),
            terminating: false,
        });
        r.record(Exchange {
            status: 503,
            latency: Duration::from_millis(1),
            request: None,
            response: None,
            terminating: true,
        });
        let report = r.report();
        assert_eq!(report.counters.unparsed_requests, 1);
        assert_eq!(report.counters.unparsed_responses, 1);
        assert_eq!(report.counters.during_termination, 1);
        assert_eq!(
            report.requests.total(),
            1,
            "termination is not held against the revision"
        );
    }

    #[test]
    fn counted_labels_are_logged_and_the_log_comes_only_when_asked_for() {
        use crate::monitor::feedback::{self, Claims, Labelled, Task};
        let r = recorder(None);
        assert!(
            r.report_with_feedback(0, None)
                .feedback_log
                .unwrap()
                .records
                .is_empty()
        );
        let key = feedback::key_from_monitor_token("k");
        let mut tokens = Vec::new();
        for nonce in 0..3u64 {
            let claims = Claims {
                revision: "r".into(),
                prediction: json!(nonce % 2),
                time: 1_800_000_000 + nonce as i64,
                nonce,
            };
            let token = feedback::sign(&key, &claims);
            r.feedback(Ok(Labelled {
                task: Task::Classification,
                id: feedback::token_id(&token).unwrap(),
                claims: &claims,
                label: &json!(1),
            }))
            .unwrap();
            tokens.push(token);
        }
        // A refused label is not logged.
        let claims = Claims {
            revision: "r".into(),
            prediction: json!(1),
            time: 0,
            nonce: 9,
        };
        assert!(
            r.feedback(Ok(Labelled {
                task: Task::Classification,
                id: 9,
                claims: &claims,
                label: &json!(0.5),
            }))
            .is_err()
        );
        assert!(r.report().feedback_log.is_none(), "not asked for");
        let report = r.report_with_feedback(1, Some("test-instance"));
        let log = report.feedback_log.unwrap();
        assert_eq!((log.first_seq, log.next_seq, log.start_seq()), (1, 4, 2));
        assert_eq!(
            log.records.iter().map(|x| x.id).collect::<Vec<_>>(),
            tokens[1..]
                .iter()
                .map(|t| feedback::token_id(t).unwrap())
                .collect::<Vec<_>>()
        );
        assert_eq!(log.records[0].time, 1_800_000_001);
        // Taking every logged label out of the report's counters leaves nothing counted.
        let mut p = report.performance.unwrap();
        // Asked by a caller that knew another monitor process: the whole log.
        let log = r
            .report_with_feedback(3, Some("restarted-since"))
            .feedback_log
            .unwrap();
        assert_eq!(log.records.len(), 3);
        for record in &log.records {
            p.unrecord(&log.contribution(record).unwrap()).unwrap();
        }
        assert_eq!(p.labelled, 0);
        assert!(p.classes.is_empty());
    }

    #[test]
    fn deltas_and_merges_of_reports() {
        let a = recorder(None);
        let resp = json!({"prediction": 1});
        let req = json!({"x": 1});
        a.record(exchange(&req, &resp));
        let first = a.report();
        a.record(exchange(&req, &resp));
        a.record(exchange(&req, &resp));
        let d = a.report().delta(&first).unwrap();
        assert_eq!(d.requests.success, 2);
        assert_eq!(d.latency.count(), 2);
        let merged = d.merge(&first).unwrap();
        assert_eq!(merged.requests.success, 3);
        let restarted = Recorder::new(
            None,
            "1.0.0",
            "another-instance".into(),
            "2026-01-01T00:01:00Z".into(),
        );
        assert!(matches!(
            restarted.report().delta(&first),
            Err(crate::monitor::report::ReportError::Restarted)
        ));
    }
}
