//! `drover simulate`: the rollout engine on a virtual clock against a scenario. The same state
//! machine and judgement code the operator uses; the traffic comes from the scenario instead of
//! monitors. Deterministic for a seed.
//!
//! Traffic per scrape interval is generated in aggregate (a few dozen samples per revision and
//! interval, weighted to the request count), so a day at 10 s resolution runs in well under a
//! second.

pub mod plot;
pub mod scenario;
pub mod steady;

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::Serialize;

use crate::api::{ModelDeployment, RolloutPhase, RolloutState, Verdict};
use crate::monitor::report::{Counters, REPORT_VERSION, Report, StatusClasses};
use crate::profile::{ProfiledColumn, ReferenceProfile};
use crate::revision::revision_of;
use crate::rollout::judgement::Evidence;
use crate::rollout::machine::{self, BakeLimits, Controls, RevisionRef, Tick, Timing};
use crate::stats::{BinLayout, FeatureHistogram, LatencySketch};
use scenario::{Behaviour, Scenario};

/// Samples drawn per revision and interval; their weights add up to the request count.
const SAMPLES_PER_INTERVAL: u64 = 48;
/// Edges of the simulated input feature (standard normal deciles).
const FEATURE_EDGES: [f64; 9] = [
    -1.2816, -0.8416, -0.5244, -0.2533, 0.0, 0.2533, 0.5244, 0.8416, 1.2816,
];

/// One line of the timeline.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// Seconds since the start.
    pub t: u64,
    /// Rollout phase (`Stable` before/after a rollout without state).
    pub phase: String,
    /// Step index.
    pub step: i32,
    /// Requested canary weight.
    pub requested_weight: i32,
    /// Actual canary weight from the replica split.
    pub actual_weight: i32,
    /// Canary requests in the current window.
    pub window_requests: u64,
    /// Canary error rate in the current window.
    pub error_rate: Option<f64>,
    /// Canary p99 latency in the current window, seconds.
    pub p99: Option<f64>,
    /// Verdict of the judgement made at this tick, if any changed.
    pub verdict: Option<Verdict>,
    /// Why.
    pub reason: String,
    /// Events raised at this tick (`Reason: note`).
    pub events: Vec<String>,
}

/// The result of a simulation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Simulation {
    /// Every tick.
    pub rows: Vec<Row>,
    /// The revision serving at the end.
    pub final_stable: String,
    /// The rollout's phase at the end.
    pub final_phase: String,
    /// The last judgement's reason.
    pub final_reason: String,
    /// Thresholds, for the plot.
    pub max_error_rate: f64,
    /// p99 limit, seconds.
    pub max_latency_p99: f64,
}

/// Cumulative simulated traffic of one revision, in the monitor's report shape.
struct Traffic {
    requests: StatusClasses,
    latency: LatencySketch,
    prediction: [u64; 3],
    confidence: Vec<u64>,
    feature: Vec<u64>,
    feature_sum: f64,
    feature_sum_sq: f64,
    confidence_sum: f64,
    carry: f64,
}

impl Traffic {
    fn new() -> Self {
        Self {
            requests: StatusClasses::default(),
            latency: LatencySketch::new(),
            prediction: [0; 3],
            confidence: vec![0; 10],
            feature: vec![0; FEATURE_EDGES.len() + 1],
            feature_sum: 0.0,
            feature_sum_sq: 0.0,
            confidence_sum: 0.0,
            carry: 0.0,
        }
    }

    fn serve(&mut self, rng: &mut fastrand::Rng, b: &Behaviour, expected: f64) {
        let exact = expected + self.carry;
        let n = exact.floor().max(0.0) as u64;
        self.carry = exact - n as f64;
        if n == 0 {
            return;
        }
        let errors = binomial(rng, n, b.error_rate);
        self.requests.server_error += errors;
        self.requests.success += n - errors;
        let k = n.min(SAMPLES_PER_INTERVAL);
        let (per, extra) = (n / k, n % k);
        let sigma = ((b.p99.max(1e-6)).ln() - (b.p50.max(1e-6)).ln()) / 2.3263;
        for i in 0..k {
            let weight = per + u64::from(i < extra);
            let latency = (b.p50.max(1e-6).ln() + sigma * normal(rng)).exp();
            self.latency.record_many(latency, weight);
            let x = b.feature_shift + normal(rng);
            let bin = FEATURE_EDGES.iter().filter(|e| **e < x).count();
            self.feature[bin] += weight;
            self.feature_sum += x * weight as f64;
            self.feature_sum_sq += x * x * weight as f64;
            let c = (b.confidence + 0.05 * normal(rng)).clamp(0.0, 1.0);
            let cbin = ((c * 10.0).ceil() as usize).saturating_sub(1).min(9);
            self.confidence[cbin] += weight;
            self.confidence_sum += c * weight as f64;
        }
        let positives = binomial(rng, n, b.positive_rate);
        self.prediction[1] += positives;
        self.prediction[0] += n - positives;
    }

    fn report(&self, instance: &str) -> Report {
        let rows = self.requests.total();
        let n = rows as f64;
        let feature = FeatureHistogram::from_counts(
            BinLayout::Numeric {
                edges: FEATURE_EDGES.to_vec(),
            },
            self.feature.clone(),
            (rows > 0).then(|| self.feature_sum / n),
            (rows > 0).then(|| {
                (self.feature_sum_sq / n - (self.feature_sum / n).powi(2))
                    .max(0.0)
                    .sqrt()
            }),
        )
        .ok();
        let prediction = FeatureHistogram::from_counts(
            BinLayout::Categorical {
                categories: vec!["0".into(), "1".into()],
            },
            self.prediction.to_vec(),
            None,
            None,
        )
        .ok();
        let confidence = FeatureHistogram::from_counts(
            BinLayout::Numeric {
                edges: crate::monitor::recorder::CONFIDENCE_EDGES.to_vec(),
            },
            self.confidence.clone(),
            (rows > 0).then(|| self.confidence_sum / n),
            None,
        )
        .ok();
        Report {
            version: REPORT_VERSION,
            instance: instance.to_string(),
            start_time: String::new(),
            model_version: String::new(),
            requests: self.requests.clone(),
            rows,
            counters: Counters::default(),
            latency: self.latency.clone(),
            features: feature
                .map(|f| BTreeMap::from([("x".to_string(), f)]))
                .unwrap_or_default(),
            prediction,
            confidence,
            performance: None,
            feedback_log: None,
        }
    }
}

fn normal(rng: &mut fastrand::Rng) -> f64 {
    // Box–Muller.
    let u1 = rng.f64().max(1e-300);
    let u2 = rng.f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn binomial(rng: &mut fastrand::Rng, n: u64, p: f64) -> u64 {
    if p <= 0.0 {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if n <= 64 {
        return (0..n).filter(|_| rng.f64() < p).count() as u64;
    }
    let mean = n as f64 * p;
    let sd = (mean * (1.0 - p)).sqrt();
    (mean + sd * normal(rng)).round().clamp(0.0, n as f64) as u64
}

/// The reference profile the simulated revisions are measured against.
pub fn simulated_profile() -> ReferenceProfile {
    ReferenceProfile {
        version: 1,
        model_version: None,
        features: vec![ProfiledColumn {
            name: "x".into(),
            layout: BinLayout::Numeric {
                edges: FEATURE_EDGES.to_vec(),
            },
            counts: vec![100; FEATURE_EDGES.len() + 1],
            count: 1000,
            mean: Some(0.0),
            std: Some(1.0),
        }],
        prediction: None,
        confidence: None,
    }
}

fn empty_window(r: &Report) -> Report {
    r.delta(r).unwrap_or_else(|_| r.clone())
}

/// Runs `scenario` for `md` on a virtual clock.
pub fn simulate(md: &ModelDeployment, scenario: &Scenario) -> Result<Simulation, String> {
    let valid = crate::validate::validate(&md.spec)
        .map_err(|p| format!("the ModelDeployment is refused: {}", p.join("; ")))?;
    let analysis = &md.spec.rollout.analysis;
    let max_latency_p99 = valid.max_latency_p99.as_secs_f64();
    let bake = BakeLimits::of(&md.spec, &valid);
    let dt = match &scenario.resolution {
        Some(r) => r.parse().map_err(|e| format!("resolution: {e}"))?,
        None => valid.scrape_interval,
    };
    let duration = scenario
        .duration
        .parse()
        .map_err(|e| format!("duration: {e}"))?;
    let timing = Timing::of(&valid);
    let old = RevisionRef {
        hash: "stable".into(),
        version: "current".into(),
    };
    let target = RevisionRef {
        hash: revision_of(&md.spec),
        version: md.spec.model.version.clone(),
    };
    let profile = simulated_profile();
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    let start = Timestamp::UNIX_EPOCH;
    let mut traffic: BTreeMap<String, Traffic> = BTreeMap::new();
    traffic.insert(old.hash.clone(), Traffic::new());
    traffic.insert(target.hash.clone(), Traffic::new());
    let mut stable = old.clone();
    let mut state: Option<RolloutState> = None;
    let mut window_base: Option<(Option<Time>, Report, Report)> = None;
    let mut bake_base: Option<Report> = None;
    let mut warm: Option<String> = None;
    let mut rows = Vec::new();
    let controls = Controls::default();
    let steps = dt.as_secs_f64().max(1.0);
    let ticks = (duration.as_secs_f64() / steps).ceil() as u64;
    let behaviour_of = |hash: &str, t: f64| {
        if hash == old.hash {
            Scenario::behaviour(&scenario.stable, t)
        } else {
            Scenario::behaviour(&scenario.canary, t)
        }
    };

    for i in 0..ticks {
        let t0 = i as f64 * steps;
        // Traffic over [t0, t0 + dt) with the current split.
        let canary_share = match state.as_ref() {
            Some(s)
                if stable.hash != target.hash
                    && matches!(s.phase, RolloutPhase::Progressing | RolloutPhase::Paused) =>
            {
                f64::from(s.actual_weight) / 100.0
            }
            _ => 0.0,
        };
        let canary_ready = behaviour_of(&target.hash, t0).ready;
        let rps = behaviour_of(&target.hash, t0)
            .rps
            .or(behaviour_of(&old.hash, t0).rps)
            .unwrap_or(scenario.rps);
        let total = rps * steps;
        let stable_b = behaviour_of(&stable.hash, t0);
        let canary_share = if canary_ready { canary_share } else { 0.0 };
        if let Some(s) = traffic.get_mut(&stable.hash) {
            s.serve(&mut rng, &stable_b, total * (1.0 - canary_share));
        }
        if stable.hash != target.hash && canary_share > 0.0 {
            let b = behaviour_of(&target.hash, t0);
            if let Some(c) = traffic.get_mut(&target.hash) {
                c.serve(&mut rng, &b, total * canary_share);
            }
        }
        let t = t0 + steps;
        let now = start
            .checked_add(SignedDuration::from_secs_f64(t))
            .unwrap_or(start);

        // Evidence: this step's window.
        let canary_now = traffic.get(&target.hash).map(|c| c.report(&target.hash));
        let stable_now = traffic.get(&stable.hash).map(|s| s.report(&stable.hash));
        let step_started = state.as_ref().and_then(|s| s.step_started_at.clone());
        let (canary_window, stable_window) = match (&canary_now, &stable_now, &window_base) {
            (Some(c), Some(s), Some((at, cb, sb)))
                if *at == step_started && step_started.is_some() =>
            {
                (c.delta(cb).ok(), s.delta(sb).ok())
            }
            (Some(c), Some(s), _) => (Some(empty_window(c)), Some(empty_window(s))),
            _ => (None, None),
        };
        let answering = behaviour_of(&target.hash, t).answering;
        let bake_window = match (&bake_base, traffic.get(&stable.hash)) {
            (Some(base), Some(s)) => s.report(&stable.hash).delta(base).ok(),
            _ => None,
        };
        let replicas = scenario.stable_replicas;
        let tick = Tick {
            steps: &md.spec.rollout.steps,
            max_failed_checks: md.spec.rollout.max_failed_checks,
            timing,
            analysis,
            max_latency_p99,
            bake,
            target: &target,
            stable: Some(&stable),
            state: state.as_ref(),
            canary_available: canary_ready,
            evidence: Evidence {
                canary: if answering {
                    canary_window.as_ref()
                } else {
                    None
                },
                stable: stable_window.as_ref(),
                profile: Some(&profile),
            },
            bake_window: bake_window.as_ref(),
            bake_breach: None,
            stable_replicas: replicas,
            split: md.spec.rollout.traffic.mode.into(),
            promoted_full: true,
            previous_present: true,
            controls: &controls,
            now,
        };
        let decision = machine::tick(&tick);
        let before = state.clone();
        state = decision.state.clone();

        // Windows start where the engine says they do.
        let started = state.as_ref().and_then(|s| s.step_started_at.clone());
        if started.is_some()
            && started != step_started
            && let (Some(c), Some(s)) = (&canary_now, &stable_now)
        {
            window_base = Some((started, c.clone(), s.clone()));
        }
        if let Some(new_stable) = &decision.stable
            && *new_stable != stable.hash
        {
            stable = if *new_stable == target.hash {
                target.clone()
            } else {
                old.clone()
            };
            bake_base = traffic.get(&stable.hash).map(|s| s.report(&stable.hash));
        }
        if decision.keep_warm != warm {
            warm = decision.keep_warm.clone();
        }

        let judged = state
            .as_ref()
            .and_then(|s| s.last_judgement.clone())
            .filter(|j| before.as_ref().and_then(|b| b.last_judgement.as_ref()) != Some(j));
        let window = canary_window.as_ref().filter(|_| answering);
        rows.push(Row {
            t: t as u64,
            phase: state
                .as_ref()
                .map(|s| format!("{:?}", s.phase))
                .unwrap_or_else(|| "Stable".into()),
            step: state.as_ref().map(|s| s.step).unwrap_or(0),
            requested_weight: state.as_ref().map(|s| s.requested_weight).unwrap_or(0),
            actual_weight: state.as_ref().map(|s| s.actual_weight).unwrap_or(0),
            window_requests: window.map(|w| w.requests.total()).unwrap_or(0),
            error_rate: window
                .filter(|w| w.requests.total() > 0)
                .map(|w| w.requests.server_error as f64 / w.requests.total() as f64),
            p99: window.and_then(|w| w.latency.quantile(0.99)),
            verdict: judged.as_ref().map(|j| j.verdict),
            reason: judged
                .map(|j| j.reason)
                .unwrap_or_else(|| state.as_ref().map(|s| s.reason.clone()).unwrap_or_default()),
            events: decision
                .announcements
                .iter()
                .map(|a| format!("{}: {}", a.reason, a.note))
                .collect(),
        });
    }
    Ok(Simulation {
        rows,
        final_stable: if stable.hash == target.hash {
            format!("{} (version {})", target.hash, target.version)
        } else {
            "the previous revision".into()
        },
        final_phase: state
            .as_ref()
            .map(|s| format!("{:?}", s.phase))
            .unwrap_or_else(|| "Stable".into()),
        final_reason: state.as_ref().map(|s| s.reason.clone()).unwrap_or_default(),
        max_error_rate: analysis.max_error_rate,
        max_latency_p99,
    })
}

fn clock(t: u64) -> String {
    format!("{:02}:{:02}:{:02}", t / 3600, (t % 3600) / 60, t % 60)
}

/// The timeline as text: a line per tick where something happened.
pub fn timeline(sim: &Simulation) -> String {
    let mut out = String::from(
        "time      phase        step  weight(req/act)  window  errors    p99       verdict       reason / events\n",
    );
    let mut last: Option<(String, i32, i32)> = None;
    for r in &sim.rows {
        let key = (r.phase.clone(), r.step, r.actual_weight);
        if r.events.is_empty() && r.verdict.is_none() && last.as_ref() == Some(&key) {
            continue;
        }
        last = Some(key);
        let pct = |x: Option<f64>| {
            x.map(|v| format!("{:.2}%", v * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        let ms = |x: Option<f64>| {
            x.map(|v| format!("{:.0}ms", v * 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        out.push_str(&format!(
            "{}  {:<11}  {:>4}  {:>6}/{:<6}   {:>7}  {:>8}  {:>8}  {:<12}  {}\n",
            clock(r.t),
            r.phase,
            r.step,
            format!("{}%", r.requested_weight),
            format!("{}%", r.actual_weight),
            r.window_requests,
            pct(r.error_rate),
            ms(r.p99),
            r.verdict.map(|v| v.as_str()).unwrap_or(""),
            r.reason
        ));
        for e in &r.events {
            out.push_str(&format!("          ↳ {e}\n"));
        }
    }
    out.push_str(&format!(
        "\nlimits: error rate {:.2}%, p99 {:.0}ms\nresult: {} — serving {}; {}\n",
        sim.max_error_rate * 100.0,
        sim.max_latency_p99 * 1000.0,
        sim.final_phase,
        sim.final_stable,
        sim.final_reason
    ));
    out
}
