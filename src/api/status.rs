//! `ModelDeployment.status`: decisions and transitions, never live values (those are gauges).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What Drover last decided about a ModelDeployment.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelDeploymentStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Summary of where the ModelDeployment is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// One line a person reads first: why the phase is what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Conditions, keyed by `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The revision that serves traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<RevisionStatus>,
    /// The revision being rolled out, while a rollout is in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<RevisionStatus>,
    /// The canary rollout's state machine (decisions, not live values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutState>,
    /// The last rollouts and how they ended, newest first (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<RolloutRecord>,
    /// The steady-state watch of the serving revision (counters kept so a restarted operator
    /// resumes; live scores are gauges).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftStatus>,
    /// Retraining runs and the candidates they reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraining: Option<RetrainingStatus>,
    /// Scheduled batch scoring: the last run that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchStatus>,
    /// What a `models:/` URI resolved to (the version is part of the revision, so an alias
    /// that moves rolls out a new revision instead of changing a running one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSourceStatus>,
}

/// A registry model as resolved.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelSourceStatus {
    /// `spec.model.uri` as resolved.
    pub uri: String,
    /// The registry version it named.
    pub version: String,
    /// Where that version's files are (what the initializer downloads).
    pub location: String,
}

/// Batch scoring runs.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BatchStatus {
    /// The run in progress, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<String>,
    /// The last run that finished (`reason` is `Scheduled`; `result` `Succeeded` or `Failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<RetrainingRun>,
    /// When a run last succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Time>,
}

/// The steady-state watch. Written when a counter or the verdict changes, not every window:
/// counters stop at `consecutiveWindows`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DriftStatus {
    /// The revision watched; the counters start again when another revision serves.
    pub revision: String,
    /// Consecutive judged windows that drifted (at most `consecutiveWindows`).
    #[serde(default)]
    pub drifted_windows: i32,
    /// Consecutive judged windows that did not (at most `consecutiveWindows`).
    #[serde(default)]
    pub clean_windows: i32,
    /// Drift is declared (condition `DriftDetected`).
    #[serde(default)]
    pub detected: bool,
    /// When drift was last declared or cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The highest-scoring features when drift was declared (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub features: Vec<FeatureScore>,
    /// Prediction drift when drift was declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prediction: Option<FeatureScore>,
    /// Fall of the mean confidence below the reference when drift was declared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence_drop: Option<f64>,
    /// The SLO breach of the last judged window, values against thresholds (condition
    /// `Degraded`, reason `SLOBreached`); cleared by a window within the SLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo_breach: Option<String>,
    /// The performance drop of the last judged window (labels below `monitoring.performance`
    /// thresholds); remediated like drift, cleared by a window within them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance_drop: Option<String>,
}

/// A column's drift score.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FeatureScore {
    /// Feature name (`prediction` for the prediction distribution).
    pub name: String,
    /// Score with the configured measure.
    pub score: f64,
    /// (window mean − reference mean) / reference standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_shift: Option<f64>,
    /// window standard deviation / reference standard deviation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std_ratio: Option<f64>,
    /// Above the threshold.
    #[serde(default)]
    pub drifted: bool,
}

/// Retraining: what runs, what ran, and what came of it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetrainingStatus {
    /// The run in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<RetrainingRun>,
    /// The last run that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<RetrainingRun>,
    /// Starts within the last 24 hours (RFC 3339), for `maxRunsPerDay`; kept here because
    /// finished Jobs beyond `historyLimit` are deleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 48))]
    pub starts: Vec<String>,
    /// Why no run starts although drift is declared (cooldown, budget, a run in progress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
    /// The API server refused the Job built from the template: not tried again until the spec
    /// changes or the cooldown passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<RefusedJob>,
    /// Models reported by successful runs, newest first (at most 5).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub candidates: Vec<Candidate>,
}

/// One retraining run.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RetrainingRun {
    /// Job name.
    pub job: String,
    /// `Drift` or `Scheduled`.
    pub reason: String,
    /// When the Job was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Time>,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<Time>,
    /// `Running`, `Succeeded` or `Failed`.
    pub result: String,
    /// What happened (the Job's failure reason, or what it reported).
    #[serde(default)]
    pub message: String,
}

/// A Job the API server refused.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RefusedJob {
    /// The spec generation the Job was built from.
    pub generation: i64,
    /// When.
    pub at: Time,
    /// The API server's message.
    pub message: String,
}

/// A model a retraining run reported.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    /// Model version.
    pub version: String,
    /// Image, if the run built one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Artifact URI, if the run reported one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Evaluation metrics the run reported.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, f64>,
    /// The Job that reported it.
    pub job: String,
    /// When it was judged.
    pub at: Time,
    /// `Accepted` or `Rejected`.
    pub verdict: String,
    /// Why (each acceptance rule with the values compared).
    #[serde(default)]
    pub reason: String,
    /// Drover set `spec.model` to it (`autoDeploy`).
    #[serde(default)]
    pub deployed: bool,
}

/// Where a canary rollout is. Everything the engine needs to resume after a restart.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutState {
    /// Revision being rolled out (or just promoted, while baking).
    pub revision: String,
    /// Its model version.
    #[serde(default)]
    pub version: String,
    /// The revision that served before (kept warm while baking, target of a rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Phase of the rollout.
    pub phase: RolloutPhase,
    /// Index of the current step in `spec.rollout.steps`.
    #[serde(default)]
    pub step: i32,
    /// Traffic percent asked for the canary.
    #[serde(default)]
    pub requested_weight: i32,
    /// Traffic percent the replica split actually gives.
    #[serde(default)]
    pub actual_weight: i32,
    /// Failed judgements so far.
    #[serde(default)]
    pub failed_checks: i32,
    /// When the rollout started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the current step's window started (none until the canary is available).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Last progress (start, step advance, resume): the progress deadline counts from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_at: Option<Time>,
    /// End of the bake window after promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake_until: Option<Time>,
    /// Why the phase is what it is.
    #[serde(default)]
    pub reason: String,
    /// The last judgement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_judgement: Option<Judgement>,
    /// Control tokens already acted on.
    #[serde(default)]
    pub controls: AppliedControls,
}

/// Phase of a canary rollout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum RolloutPhase {
    /// Steps are running.
    #[default]
    Progressing,
    /// Paused by a control; nothing moves.
    Paused,
    /// Promoted; the previous revision stays warm until the bake window ends.
    Baking,
    /// Promoted and baked.
    Complete,
    /// Rolled back; the revision stays rejected until the spec changes or a retry.
    RolledBack,
}

/// The last token of each control acted on: a control is applied exactly once.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AppliedControls {
    /// `drover.dev/promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub promote: Option<String>,
    /// `drover.dev/abort`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub abort: Option<String>,
    /// `drover.dev/retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub retry: Option<String>,
    /// `drover.dev/pause`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub pause: Option<String>,
    /// `drover.dev/resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub resume: Option<String>,
}

/// How a rollout ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutRecord {
    /// Revision.
    pub revision: String,
    /// Model version.
    #[serde(default)]
    pub version: String,
    /// `Promoted`, `RolledBack`, `Aborted` or `Superseded`.
    pub outcome: String,
    /// Why.
    #[serde(default)]
    pub reason: String,
    /// When (RFC 3339).
    #[serde(default)]
    pub at: String,
}

/// Summary phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// A revision is being rolled out.
    Progressing,
    /// The stable revision is available and nothing is in flight.
    Healthy,
    /// The stable revision serves, but something needs attention (see conditions).
    Degraded,
    /// The newest revision was rolled back; stable keeps serving.
    RolledBack,
    /// Drover cannot act on the spec until it changes.
    Failed,
}

impl Phase {
    /// Every phase, for metrics that report a gauge per phase.
    pub const ALL: [Phase; 5] = [
        Phase::Progressing,
        Phase::Healthy,
        Phase::Degraded,
        Phase::RolledBack,
        Phase::Failed,
    ];

    /// The name as it appears in status.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Progressing => "Progressing",
            Phase::Healthy => "Healthy",
            Phase::Degraded => "Degraded",
            Phase::RolledBack => "RolledBack",
            Phase::Failed => "Failed",
        }
    }
}

/// A revision of the model: one Deployment `<name>-<hash>`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RevisionStatus {
    /// The revision hash (also the `drover.dev/revision` label).
    pub hash: String,
    /// `spec.model.version` of the revision.
    pub version: String,
    /// `spec.model.image` of the revision.
    pub image: String,
    /// Replicas the revision's Deployment asks for.
    #[serde(default)]
    pub replicas: i32,
    /// Replicas that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Traffic percent requested for the revision (canary only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// When this revision started rolling out (the progress deadline counts from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
}

/// A condition in the shape of Kubernetes API conventions (`metav1.Condition`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Type, e.g. `Ready`.
    #[schemars(length(min = 1, max = 316))]
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// A CamelCase reason a user can grep.
    #[schemars(length(min = 1, max = 1024))]
    pub reason: String,
    /// What a person should know.
    #[serde(default)]
    #[schemars(length(max = 32768))]
    pub message: String,
    /// When `status` last changed.
    pub last_transition_time: Time,
    /// The `metadata.generation` the condition was set for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Status of a condition.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Drover cannot tell.
    Unknown,
}

/// A judgement of a canary step: every signal with its value, threshold, test statistic and
/// verdict, so "why did it roll back?" has an answer.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    /// The overall verdict.
    pub verdict: Verdict,
    /// One line for a person.
    pub reason: String,
    /// When it was made (RFC 3339).
    #[serde(default)]
    pub at: String,
    /// The canary step it judged (0-based).
    #[serde(default)]
    pub step: i32,
    /// Canary requests in the window.
    #[serde(default)]
    pub canary_requests: i64,
    /// Stable requests in the window.
    #[serde(default)]
    pub stable_requests: i64,
    /// Every signal judged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub signals: Vec<SignalJudgement>,
}

/// One signal of a judgement.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SignalJudgement {
    /// Signal name (`errorRate`, `latencyP99`, `errorRateVsStable`, `latencyVsStable`,
    /// `predictionDrift`, `dataDrift`, `confidence`).
    pub name: String,
    /// Measured value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The limit it was held against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// Test statistic (z of a test, or a bound of an interval).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<f64>,
    /// p-value of a test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The signal's verdict.
    pub verdict: Verdict,
    /// What the numbers mean.
    #[serde(default)]
    pub note: String,
}

/// Verdict of a judgement or signal.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub enum Verdict {
    /// Measured and within limits.
    Pass,
    /// Measured bad behaviour.
    Fail,
    /// Too little data or power: wait.
    #[default]
    Inconclusive,
    /// No report from the canary: metrics outage, the rollout freezes.
    Frozen,
}

impl Verdict {
    /// The name as it appears in status and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "Pass",
            Verdict::Fail => "Fail",
            Verdict::Inconclusive => "Inconclusive",
            Verdict::Frozen => "Frozen",
        }
    }
}
