//! `ModelDeployment` (`drover.dev/v1alpha1`): what a platform team writes.
//!
//! Every section of the design is typed here, with its defaults, even where its behaviour lands
//! in a later part of Drover. Cross-field rules are CEL `x-kubernetes-validations` so that
//! `kubectl apply` refuses a bad spec before any controller sees it; every list or string a rule
//! reads carries a `maxItems`/`maxLength` so the API server's CEL cost estimate accepts the CRD.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{HorizontalPodAutoscalerBehavior, MetricSpec};
use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::GoDuration;
use super::status::ModelDeploymentStatus;

/// Longest ModelDeployment name: every derived child name (`<name>-<revision>`,
/// `<name>-canary`, `<name>-retrain-<n>`, …) must stay a valid 63-character DNS label.
pub const MAX_NAME_LENGTH: usize = 45;

/// The desired state of a served model.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "drover.dev",
    version = "v1alpha1",
    kind = "ModelDeployment",
    plural = "modeldeployments",
    singular = "modeldeployment",
    shortname = "md",
    shortname = "mdeploy",
    category = "drover",
    namespaced,
    status = "ModelDeploymentStatus",
    derive = "PartialEq",
    cel,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.model.image","priority":1}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".spec.model.version"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Weight","type":"integer","jsonPath":".status.canary.weight"}"#,
    printcolumn = r#"{"name":"Drift","type":"string","jsonPath":".status.conditions[?(@.type==\"DriftDetected\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("size(self.metadata.name) <= 45").message("metadata.name must be at most 45 characters so that every child name derived from it stays within 63"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas").message("spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas").field_path(".autoscaling.minReplicas"),
    validation = Rule::new("self.remediation.onDrift != 'Retrain' || has(self.remediation.retraining)").message("spec.remediation.retraining is required when spec.remediation.onDrift is Retrain").field_path(".remediation"),
)]
pub struct ModelDeploymentSpec {
    /// What is served. A change here (or in `pod`) makes a new revision.
    pub model: ModelSpec,

    /// Pod-level settings for every serving pod (scheduling, identity, volumes, metadata).
    /// Part of the revision: a change here rolls out like a model change.
    #[serde(default, skip_serializing_if = "PodOverrides::is_empty")]
    pub pod: PodOverrides,

    /// Replicas of the serving Deployment when `autoscaling` is not set.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub replicas: i32,

    /// Horizontal autoscaling of the serving Deployment; absent means a fixed `replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// How a new revision goes in.
    #[serde(default)]
    pub rollout: RolloutSpec,

    /// What the serving pods measure and how the operator collects it.
    #[serde(default)]
    pub monitoring: MonitoringSpec,

    /// What Drover does when the served model drifts.
    #[serde(default)]
    pub remediation: RemediationSpec,

    /// The NetworkPolicy Drover keeps for the serving pods.
    #[serde(default, skip_serializing_if = "NetworkPolicySpec::is_default")]
    pub network_policy: NetworkPolicySpec,
    /// Where Drover posts what happens to this model (rollouts, drift, retraining).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationsSpec>,
    /// Scheduled batch scoring with the serving model's image (a CronJob).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<BatchSpec>,
}

/// Batch scoring: the model image runs on a schedule over an input location and writes to an
/// output location. The image decides what to do with them; Drover gives them as
/// `DROVER_BATCH_INPUT` and `DROVER_BATCH_OUTPUT` (with `MODEL_NAME`, `MODEL_VERSION` and
/// `MODEL_URI` as the serving container gets them).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.deadline) >= duration('1m')").message("spec.batch.deadline must be at least 1m").field_path(".deadline"),
)]
pub struct BatchSpec {
    /// When to run (cron syntax or a macro such as `@daily`).
    #[schemars(length(min = 1, max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')").message("spec.batch.schedule must be a cron schedule of five fields or a macro such as @daily"))]
    pub schedule: String,
    /// Time zone of `schedule` (an IANA name; default the kube-controller-manager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// Where to read the data to score (e.g. `s3://bucket/transactions/`).
    #[schemars(length(min = 1, max = 2048))]
    pub input: String,
    /// Where to write the predictions.
    #[schemars(length(min = 1, max = 2048))]
    pub output: String,
    /// Command of the scoring container (default: the image's entrypoint).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Arguments of the scoring container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// What happens when a run is due while the last one still runs.
    #[serde(default)]
    pub concurrency_policy: BatchConcurrency,
    /// Longest a run may take (`activeDeadlineSeconds`).
    #[serde(default = "default_batch_deadline")]
    pub deadline: GoDuration,
    /// Retries of a failed run's pod.
    #[serde(default = "default_batch_backoff")]
    #[schemars(range(min = 0, max = 10))]
    pub backoff_limit: i32,
    /// Resources of the scoring container (default: the model container's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Stop scheduling runs (a running one finishes).
    #[serde(default)]
    pub suspend: bool,
}

fn default_batch_deadline() -> GoDuration {
    GoDuration::new("2h")
}
fn default_batch_backoff() -> i32 {
    1
}

/// A CronJob's `concurrencyPolicy`.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BatchConcurrency {
    /// Skip a run while the last one runs.
    #[default]
    Forbid,
    /// Stop the running one and start the new one.
    Replace,
    /// Run both.
    Allow,
}

/// Notifications: a webhook receives a JSON document for each event asked for.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NotificationsSpec {
    /// The receiver.
    pub webhook: WebhookSpec,
    /// The events to send; empty: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub events: Vec<NotificationEvent>,
}

/// A webhook receiver.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    /// The Secret key holding the URL (`http://` or `https://`): URLs often carry a token, so
    /// they live in a Secret.
    pub url_secret_ref: SecretKeyRef,
    /// `Generic` JSON, or `Slack` (an incoming-webhook message with `text` and `blocks`).
    #[serde(default)]
    pub format: WebhookFormat,
}

/// Body format of a webhook delivery.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// `{"event", "reason", "severity", "model": {...}, "message", "at"}`.
    #[default]
    Generic,
    /// Slack incoming webhook: `{"text", "blocks"}`.
    Slack,
}

/// What a notification is about.
#[derive(
    JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
pub enum NotificationEvent {
    /// A new revision started rolling out.
    RolloutStarted,
    /// A canary was promoted (or an immediate rollout completed).
    Promoted,
    /// A canary was rolled back (failed judgement, deadline, abort, bake-window breach).
    RolledBack,
    /// Drift was declared on the serving revision.
    DriftDetected,
    /// The serving revision breached its SLO.
    SLOBreached,
    /// A retraining run started.
    RetrainingStarted,
    /// A retraining run finished (succeeded or failed).
    RetrainingFinished,
    /// A retrained model passed the acceptance gate.
    CandidateAccepted,
    /// A retrained model failed the acceptance gate.
    CandidateRejected,
    /// Model performance measured from ground-truth labels dropped below its threshold.
    PerformanceDropped,
}

fn default_replicas() -> i32 {
    1
}

/// The NetworkPolicy `<name>` over the model's pods: clients reach the serving port (the
/// monitor), the operator (and `adminFrom`) the monitor's admin port, and nobody the model's own
/// port — the monitor reaches it over the pod's loopback, which no policy governs. Policies
/// add up, so this keeps a default-deny namespace working.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Keep the NetworkPolicy (default true); false deletes it.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Who may call the serving port; everyone when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub serving_from: Vec<NetworkPolicyPeer>,
    /// Who besides the operator may reach the admin port (e.g. Prometheus for `/metrics`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub admin_from: Vec<NetworkPolicyPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            serving_from: Vec::new(),
            admin_from: Vec::new(),
        }
    }
}

impl NetworkPolicySpec {
    /// Whether every field has its default (left out when serialising).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

fn default_true() -> bool {
    true
}

/// The model container: any HTTP model server.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.image == oldSelf.image || self.version != oldSelf.version").message("spec.model.version must change when spec.model.image changes").field_path(".version"),
    validation = Rule::new("!has(self.uri) || !self.uri.startsWith('models:/') || has(self.registry)").message("spec.model.registry is required when spec.model.uri is a models:/ URI").field_path(".registry"),
    validation = Rule::new("!has(self.storage) || has(self.uri)").message("spec.model.storage needs spec.model.uri").field_path(".storage"),
)]
pub struct ModelSpec {
    /// Version label of the model (e.g. `1.4.0`); shown in status and given as MODEL_VERSION.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$')").message("spec.model.version must be a valid label value (letters, digits, '.', '_', '-')"))]
    pub version: String,

    /// Container image of the model server.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("!self.contains(' ')").message("spec.model.image must not contain spaces"))]
    pub image: String,

    /// Where the model's files are: `s3://`, `gs://`, `azure://` (`az://`), `http(s)://`,
    /// `pvc://CLAIM/PATH`, or `models:/NAME/VERSION` / `models:/NAME@ALIAS` (MLflow registry,
    /// with `registry`). An init container fetches them into `/mnt/models` (a claim is mounted
    /// there) before the model starts; the model gets MODEL_URI and MODEL_PATH (docs/models.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^(s3|gs|azure|az|https?|pvc)://[^/]+|^models:/[^/]')").message("spec.model.uri must start with s3://, gs://, azure://, az://, http(s)://, pvc:// or models:/"))]
    pub uri: Option<String>,

    /// How `uri` is fetched: credentials, checksum, unpacking, S3-compatible endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage: Option<ModelStorage>,

    /// The MLflow tracking server `models:/` URIs are resolved through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<ModelRegistry>,

    /// Port the model server listens on inside the pod.
    #[serde(default = "default_model_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Payload protocol the model speaks; the monitor parses features and predictions with it.
    #[serde(default)]
    pub protocol: Protocol,

    /// Path that answers 200 when the model is loaded (readiness and liveness).
    #[serde(default = "default_health_path")]
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("spec.model.healthPath must start with '/'"))]
    pub health_path: String,

    /// Entrypoint override for the model container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub command: Vec<String>,

    /// Arguments for the model container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128))]
    pub args: Vec<String>,

    /// Extra environment for the model container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// CPU, memory and accelerator requests and limits of the model container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// A Secret key holding the API key every request must carry (`Authorization: Bearer` or
    /// `X-API-Key`); the monitor checks it in constant time before the model sees the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<SecretKeyRef>,
}

/// How the storage initializer fetches `spec.model.uri`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelStorage {
    /// A Secret whose keys become the initializer's environment (only its: the model container
    /// does not see them): `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `GOOGLE_SERVICE_ACCOUNT_KEY`,
    /// `AZURE_STORAGE_ACCOUNT_NAME`/`AZURE_STORAGE_ACCOUNT_KEY`, `HTTP_BEARER_TOKEN`, …
    /// Without it, the pod's identity (`spec.pod.serviceAccountName`) is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub secret_name: Option<String>,
    /// Expected SHA-256 (hex) of the file, of the archive before unpacking, or of a folder's
    /// manifest (docs/models.md); a mismatch keeps the model from starting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{64}$')").message("spec.model.storage.sha256 must be 64 hexadecimal digits"))]
    pub sha256: Option<String>,
    /// Unpack the fetched `.tar.gz`, `.tgz`, `.tar` or `.zip` into `/mnt/models`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unpack: bool,
    /// Endpoint of an S3-compatible store (MinIO, Ceph, …) for `s3://` URIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub endpoint: Option<String>,
    /// Region of the S3 bucket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub region: Option<String>,
    /// Largest size of the model volume (an emptyDir `sizeLimit`, e.g. `20Gi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
}

/// An MLflow tracking server with a model registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ModelRegistry {
    /// Its tracking URI (`http(s)://host[:port][/prefix]`).
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^https?://[^/]+')").message("spec.model.registry.trackingUri must be an http:// or https:// URL"))]
    pub tracking_uri: String,
    /// A Secret key holding the token (sent as `Authorization: Bearer`), read by the operator
    /// to resolve versions and given to the initializer as `MLFLOW_TRACKING_TOKEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key in the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_model_port() -> i32 {
    8080
}

fn default_health_path() -> String {
    "/health".into()
}

/// Payload protocol of the model server.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// Named-feature JSON objects (`{"age": 31, ...}`), as a FastAPI app takes them.
    #[default]
    Json,
    /// TensorFlow-Serving style `{"instances": [...]}`.
    V1,
    /// Open Inference Protocol v2 tensors.
    V2,
}

/// Pod-level knobs for the serving pods: what GPU and enterprise clusters need.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels on the serving pods (the `drover.dev/` and `app.kubernetes.io/` keys are Drover's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations on the serving pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Node labels the serving pods must run on (e.g. a GPU pool).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the serving pods (e.g. `nvidia.com/gpu`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Affinity of the serving pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Service account of the serving pods (e.g. one with object-store access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub service_account_name: Option<String>,
    /// Pull secrets for private registries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// Priority class of the serving pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub priority_class_name: Option<String>,
    /// Runtime class (e.g. `nvidia`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub runtime_class_name: Option<String>,
    /// Extra volumes of the serving pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Mounts of those volumes into the model container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

impl PodOverrides {
    /// True when nothing is overridden.
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// Horizontal autoscaling: an `autoscaling/v2` HorizontalPodAutoscaler on the stable revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Lower bound of replicas.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: i32,
    /// Upper bound of replicas.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: i32,
    /// CPU target of the model container (a `ContainerResource` metric, so the monitor sidecar
    /// does not skew it). Used when `metrics` is empty; defaults to 80.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    #[serde(rename = "targetCPUUtilizationPercentage")]
    pub target_cpu_utilization_percentage: Option<i32>,
    /// HPA v2 metrics, passed through as written; replaces the CPU target.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<MetricSpec>,
    /// HPA v2 scaling behaviour, passed through as written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<HorizontalPodAutoscalerBehavior>,
}

fn default_min_replicas() -> i32 {
    1
}

/// How a new revision goes in.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.interval) >= duration('10s')").message("spec.rollout.interval must be at least 10s").field_path(".interval"),
    validation = Rule::new("duration(self.progressDeadline) >= duration(self.interval)").message("spec.rollout.progressDeadline must be at least spec.rollout.interval").field_path(".progressDeadline"),
    validation = Rule::new("self.traffic.mode != 'GatewayAPI' || has(self.traffic.gatewayAPI)").message("spec.rollout.traffic.gatewayAPI is required when spec.rollout.traffic.mode is GatewayAPI").field_path(".traffic"),
)]
pub struct RolloutSpec {
    /// `Canary` moves traffic in steps judged on evidence; `Immediate` switches at once.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Traffic percent of the canary per step, strictly increasing within 1..=99; promotion
    /// follows the last step that passes.
    #[serde(default = "default_steps")]
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(
        validation = Rule::new("self.all(s, s >= 1 && s <= 99)").message("spec.rollout.steps must be within 1..=99"),
        validation = Rule::new("self.isSorted() && self.all(s, self.exists_one(t, t == s))").message("spec.rollout.steps must be strictly increasing"),
    )]
    pub steps: Vec<i32>,
    /// How long each step runs before it is judged.
    #[serde(default = "default_interval")]
    pub interval: GoDuration,
    /// Failed judgements before the canary is rolled back.
    #[serde(default = "default_max_failed_checks")]
    #[schemars(range(min = 1, max = 100))]
    pub max_failed_checks: i32,
    /// No progress for this long, in any phase, rolls back with a reason.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline: GoDuration,
    /// After promotion the previous revision stays warm this long; a breach rolls back.
    #[serde(default = "default_bake_time")]
    pub bake_time: GoDuration,
    /// How traffic is split between stable and canary.
    #[serde(default)]
    pub traffic: TrafficSpec,
    /// What a canary step is judged on.
    #[serde(default)]
    pub analysis: AnalysisSpec,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            steps: default_steps(),
            interval: default_interval(),
            max_failed_checks: default_max_failed_checks(),
            progress_deadline: default_progress_deadline(),
            bake_time: default_bake_time(),
            traffic: TrafficSpec::default(),
            analysis: AnalysisSpec::default(),
        }
    }
}

fn default_steps() -> Vec<i32> {
    vec![10, 25, 50]
}
fn default_interval() -> GoDuration {
    GoDuration::new("1m")
}
fn default_max_failed_checks() -> i32 {
    2
}
fn default_progress_deadline() -> GoDuration {
    GoDuration::new("30m")
}
fn default_bake_time() -> GoDuration {
    GoDuration::new("10m")
}

/// Rollout strategy.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RolloutStrategy {
    /// Steps of traffic, each judged on evidence.
    #[default]
    Canary,
    /// All traffic to the new revision once it is available.
    Immediate,
}

/// How traffic is split.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct TrafficSpec {
    /// `Replicas` (replica ratio, any cluster) or `GatewayAPI` (weighted HTTPRoute).
    #[serde(default)]
    pub mode: TrafficMode,
    /// The HTTPRoute Drover creates and owns in `GatewayAPI` mode.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiTraffic>,
}

/// Traffic mode.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum TrafficMode {
    /// The canary's share comes from replica counts behind one Service.
    #[default]
    Replicas,
    /// Weighted backends on an HTTPRoute Drover owns.
    #[serde(rename = "GatewayAPI")]
    GatewayApi,
}

/// The HTTPRoute Drover creates in `GatewayAPI` mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiTraffic {
    /// Gateways the route attaches to.
    #[schemars(length(min = 1, max = 16))]
    pub parent_refs: Vec<GatewayParentRef>,
    /// Hostnames the route serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub hostnames: Vec<String>,
}

/// A Gateway the route attaches to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct GatewayParentRef {
    /// Gateway name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Gateway namespace; the ModelDeployment's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,
    /// Listener name on the Gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub section_name: Option<String>,
}

/// What a canary step is judged on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSpec {
    /// Requests a step needs before its judgement counts; fewer is inconclusive.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 1))]
    pub min_requests: i64,
    /// Highest acceptable error rate (5xx share) of the canary.
    #[serde(default = "default_max_error_rate")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: f64,
    /// Highest acceptable p99 latency of the canary.
    #[serde(default = "default_max_latency_p99")]
    pub max_latency_p99: GoDuration,
    /// Highest acceptable prediction drift of the canary against stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_prediction_drift: Option<f64>,
    /// Highest acceptable input drift of the canary against the reference profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_data_drift: Option<f64>,
    /// Lowest acceptable mean confidence of the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_confidence: Option<f64>,
    /// Significance level of the comparisons against stable (Bonferroni-corrected across signals).
    #[serde(default = "default_alpha")]
    #[schemars(range(min = 0.0001, max = 0.5))]
    pub alpha: f64,
    /// How much higher than stable's the canary's error rate may be (absolute, e.g. 0.005 =
    /// half a percentage point) before the comparison fails it.
    #[serde(default = "default_max_error_rate_increase")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate_increase: f64,
    /// How much higher than stable's the canary's p99 latency may be (relative, e.g. 0.2 = 20%)
    /// before a significant rank test fails it.
    #[serde(default = "default_max_latency_increase")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub max_latency_increase: f64,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            min_requests: default_min_requests(),
            max_error_rate: default_max_error_rate(),
            max_latency_p99: default_max_latency_p99(),
            max_prediction_drift: None,
            max_data_drift: None,
            min_confidence: None,
            alpha: default_alpha(),
            max_error_rate_increase: default_max_error_rate_increase(),
            max_latency_increase: default_max_latency_increase(),
        }
    }
}

fn default_min_requests() -> i64 {
    100
}
fn default_max_error_rate() -> f64 {
    0.01
}
fn default_max_latency_p99() -> GoDuration {
    GoDuration::new("300ms")
}
fn default_alpha() -> f64 {
    0.05
}
fn default_max_error_rate_increase() -> f64 {
    0.005
}
fn default_max_latency_increase() -> f64 {
    0.2
}

/// What the serving pods measure and how the operator collects it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.scrapeInterval) >= duration('5s')").message("spec.monitoring.scrapeInterval must be at least 5s").field_path(".scrapeInterval"),
    validation = Rule::new("duration(self.window) >= duration(self.scrapeInterval)").message("spec.monitoring.window must be at least spec.monitoring.scrapeInterval").field_path(".window"),
)]
pub struct MonitoringSpec {
    /// How often the operator collects each pod's report.
    #[serde(default = "default_scrape_interval")]
    pub scrape_interval: GoDuration,
    /// Rolling window the steady-state watch judges drift over.
    #[serde(default = "default_window")]
    pub window: GoDuration,
    /// The reference profile built from the model's training data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<ReferenceProfile>,
    /// Input-drift detection.
    #[serde(default)]
    pub drift: DriftSpec,
    /// Service-level objectives of the stable revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slo: Option<SloSpec>,
    /// Performance from ground-truth labels: the monitors sign predictions and accept
    /// `POST /drover/feedback`; windows below these thresholds are remediated like drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance: Option<PerformanceSpec>,
    /// The monitor sidecar in every serving pod. Part of the revision: a change rolls out
    /// like a model change.
    #[serde(default, skip_serializing_if = "SidecarSpec::is_default")]
    pub sidecar: SidecarSpec,
}

/// Performance from delayed ground truth.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.maxLabelAge) >= duration('1m')").message("spec.monitoring.performance.maxLabelAge must be at least 1m").field_path(".maxLabelAge"),
)]
pub struct PerformanceSpec {
    /// How labels compare with predictions.
    #[serde(default)]
    pub task: PerformanceTask,
    /// The positive class for precision, recall and F1 (default: averaged over classes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 63))]
    pub positive_class: Option<String>,
    /// Oldest prediction a label is accepted for.
    #[serde(default = "default_max_label_age")]
    pub max_label_age: GoDuration,
    /// Labels a window needs before it is judged.
    #[serde(default = "default_min_labels")]
    #[schemars(range(min = 1))]
    pub min_labels: i64,
    /// Lowest acceptable accuracy (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_accuracy: Option<f64>,
    /// Lowest acceptable F1 (classification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub min_f1: Option<f64>,
    /// Highest acceptable mean absolute error (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_mae: Option<f64>,
    /// Highest acceptable root mean squared error (regression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub max_rmse: Option<f64>,
}

fn default_max_label_age() -> GoDuration {
    GoDuration::new("168h")
}
fn default_min_labels() -> i64 {
    100
}

/// What labels are.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PerformanceTask {
    /// Classes: accuracy, precision, recall, F1.
    #[default]
    Classification,
    /// Numbers: MAE, RMSE.
    Regression,
}

/// The monitor sidecar: a recording reverse proxy in front of the model container.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.belowFloor != 'Fallback' || has(self.fallbackResponse)").message("spec.monitoring.sidecar.fallbackResponse is required when belowFloor is Fallback").field_path(".fallbackResponse"),
    validation = Rule::new("duration(self.upstreamTimeout) >= duration('100ms')").message("spec.monitoring.sidecar.upstreamTimeout must be at least 100ms").field_path(".upstreamTimeout"),
)]
pub struct SidecarSpec {
    /// Image of the monitor (defaults to the operator's own image, pinned per revision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub image: Option<String>,
    /// Resources of the monitor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Confidence below which a response is rejected (422) or replaced by the fallback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub confidence_floor: Option<f64>,
    /// What happens below the floor.
    #[serde(default)]
    pub below_floor: BelowFloor,
    /// JSON answered instead of a prediction below the floor (with `belowFloor: Fallback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub fallback_response: Option<String>,
    /// Share of exchanges logged as JSON lines on the monitor's stdout.
    #[serde(default)]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub log_sample_rate: f64,
    /// Most bytes of each logged body.
    #[serde(default = "default_log_max_bytes")]
    #[schemars(range(min = 64, max = 1048576))]
    pub log_max_bytes: i32,
    /// Field names whose values are redacted in logged bodies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub log_redact: Vec<String>,
    /// Largest request body (413 beyond).
    #[serde(default = "default_max_body_bytes")]
    #[schemars(range(min = 1024, max = 1073741824))]
    pub max_body_bytes: i64,
    /// How long the model may take to answer (504 beyond).
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout: GoDuration,
    /// A `kubernetes.io/tls` Secret: the serving port terminates TLS with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub tls_secret_name: Option<String>,
}

impl Default for SidecarSpec {
    fn default() -> Self {
        Self {
            image: None,
            resources: None,
            confidence_floor: None,
            below_floor: BelowFloor::default(),
            fallback_response: None,
            log_sample_rate: 0.0,
            log_max_bytes: default_log_max_bytes(),
            log_redact: Vec::new(),
            max_body_bytes: default_max_body_bytes(),
            upstream_timeout: default_upstream_timeout(),
            tls_secret_name: None,
        }
    }
}

impl SidecarSpec {
    /// True when nothing differs from the defaults.
    pub fn is_default(&self) -> bool {
        self == &Self::default()
    }
}

fn default_log_max_bytes() -> i32 {
    4096
}
fn default_max_body_bytes() -> i64 {
    10 * 1024 * 1024
}
fn default_upstream_timeout() -> GoDuration {
    GoDuration::new("30s")
}

/// What the monitor does below the confidence floor.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BelowFloor {
    /// Answer 422 with the confidence and the floor.
    #[default]
    Reject,
    /// Answer 200 with `fallbackResponse`.
    Fallback,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            scrape_interval: default_scrape_interval(),
            window: default_window(),
            reference: None,
            drift: DriftSpec::default(),
            slo: None,
            performance: None,
            sidecar: SidecarSpec::default(),
        }
    }
}

fn default_scrape_interval() -> GoDuration {
    GoDuration::new("30s")
}
fn default_window() -> GoDuration {
    GoDuration::new("15m")
}

/// Where the reference profile lives.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceProfile {
    /// A key of a ConfigMap in the ModelDeployment's namespace.
    pub config_map_ref: ConfigMapKeyRef,
}

/// A key of a ConfigMap in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// ConfigMap name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key holding the profile JSON.
    #[serde(default = "default_profile_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_profile_key() -> String {
    "profile.json".into()
}

/// Input-drift detection.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftSpec {
    /// Drift measure per feature.
    #[serde(default)]
    pub method: DriftMethod,
    /// Score above which a feature counts as drifted.
    #[serde(default = "default_drift_threshold")]
    #[schemars(range(min = 0.0))]
    pub threshold: f64,
    /// Samples a window needs before it is judged.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1))]
    pub min_samples: i64,
    /// Consecutive drifted windows before `DriftDetected` is set (and as many clean ones
    /// before it is cleared).
    #[serde(default = "default_consecutive_windows")]
    #[schemars(range(min = 1, max = 100))]
    pub consecutive_windows: i32,
    /// A window whose mean confidence is lower than the reference's by more than this counts as
    /// drifted. The reference is the profile's confidence distribution, else the last judged
    /// window. Unset: confidence is not watched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_confidence_drop: Option<f64>,
}

impl Default for DriftSpec {
    fn default() -> Self {
        Self {
            method: DriftMethod::default(),
            threshold: default_drift_threshold(),
            min_samples: default_min_samples(),
            consecutive_windows: default_consecutive_windows(),
            max_confidence_drop: None,
        }
    }
}

fn default_drift_threshold() -> f64 {
    0.2
}
fn default_min_samples() -> i64 {
    500
}
fn default_consecutive_windows() -> i32 {
    3
}

/// Drift measure.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum DriftMethod {
    /// Population stability index.
    #[default]
    Psi,
    /// Kolmogorov–Smirnov statistic.
    Ks,
    /// Jensen–Shannon distance.
    JensenShannon,
    /// Wasserstein distance, normalised by the reference's spread.
    Wasserstein,
}

/// Service-level objectives of the stable revision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SloSpec {
    /// Highest acceptable p99 latency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<GoDuration>,
    /// Highest acceptable error rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub error_rate: Option<f64>,
}

/// What Drover does when the served model drifts.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RemediationSpec {
    /// `Alert` records and announces drift; `Retrain` also starts the retraining Job.
    #[serde(default)]
    pub on_drift: DriftAction,
    /// The retraining Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retraining: Option<RetrainingSpec>,
}

/// Action on drift.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DriftAction {
    /// Condition, Event and metrics only.
    #[default]
    Alert,
    /// Also start the retraining Job.
    Retrain,
}

/// The retraining Job.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("duration(self.cooldown) >= duration('1m')").message("spec.remediation.retraining.cooldown must be at least 1m").field_path(".cooldown"),
    validation = Rule::new("duration(self.timeout) >= duration('1m')").message("spec.remediation.retraining.timeout must be at least 1m").field_path(".timeout"),
)]
pub struct RetrainingSpec {
    /// The Job to start (a `batch/v1` JobTemplateSpec). Drover adds the trigger to every
    /// container's environment: `DROVER_TRIGGER_REASON`, `DROVER_TRIGGER_REPORT` (the drift
    /// report as JSON), `DROVER_MODEL_NAME`, `DROVER_MODEL_VERSION`, `DROVER_MODEL_NAMESPACE`.
    pub job_template: JobTemplateSpec,
    /// Least time between two retraining runs.
    #[serde(default = "default_cooldown")]
    pub cooldown: GoDuration,
    /// Finished retraining Jobs kept.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 0, max = 100))]
    pub history_limit: i32,
    /// Most retraining runs started in any 24 hours, whatever the drift says.
    #[serde(default = "default_max_runs_per_day")]
    #[schemars(range(min = 1, max = 48))]
    pub max_runs_per_day: i32,
    /// Longest a run may take (the Job's `activeDeadlineSeconds` unless the template sets one):
    /// a Job that never finishes fails instead of holding retraining forever.
    #[serde(default = "default_retraining_timeout")]
    pub timeout: GoDuration,
    /// Also retrain on a schedule (cron syntax, as a CronJob's `schedule`), drift or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new("self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[^ ]+( +[^ ]+){4})$')").message("spec.remediation.retraining.schedule must be a cron schedule of five fields or a macro such as @daily"))]
    pub schedule: Option<String>,
    /// Time zone of `schedule` (an IANA name such as `Europe/Berlin`; default the
    /// kube-controller-manager's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// What a retrained model must achieve to become a candidate. Without it, every model a
    /// run reports is recorded as rejected ("no acceptance thresholds").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acceptance: Option<AcceptanceSpec>,
    /// Roll an accepted candidate out (by canary) by setting `spec.model` to it. Off by
    /// default: the candidate is announced for whoever owns the spec to commit, which keeps
    /// GitOps the source of truth (see docs/retraining.md).
    #[serde(default)]
    pub auto_deploy: bool,
}

/// The evaluation gate a retrained model passes to become a candidate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AcceptanceSpec {
    /// Every rule must hold.
    #[serde(default)]
    #[schemars(length(min = 1, max = 16))]
    pub metrics: Vec<AcceptanceRule>,
    /// The serving model's evaluation metrics, for rules with `notWorseThanStable`. When unset,
    /// Drover uses the metrics recorded for `spec.model.version` when it was a candidate.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stable_metrics: BTreeMap<String, f64>,
}

/// One metric a candidate must meet.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.min) || has(self.max) || self.notWorseThanStable").message("an acceptance rule needs min, max or notWorseThanStable"),
)]
pub struct AcceptanceRule {
    /// Metric name as the Job reports it (e.g. `accuracy`, `auc`, `logLoss`).
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
    /// The metric must be at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The metric must be at most this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The metric must be at least as good as the serving model's (higher is better unless
    /// `lowerIsBetter`).
    #[serde(default)]
    pub not_worse_than_stable: bool,
    /// For `notWorseThanStable`: lower values are better (losses, error rates).
    #[serde(default)]
    pub lower_is_better: bool,
}

fn default_retraining_timeout() -> GoDuration {
    GoDuration::new("6h")
}

fn default_max_runs_per_day() -> i32 {
    2
}

fn default_cooldown() -> GoDuration {
    GoDuration::new("6h")
}
fn default_history_limit() -> i32 {
    3
}
