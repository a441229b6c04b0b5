//! The Deployment that serves one revision: `<name>-<revision>`.
//!
//! Pods are never rolled in place: a new revision gets a new Deployment, so its pod template is
//! built once and never changes afterwards. The pod passes Pod Security "restricted" by default.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler,
    ObjectFieldSelector, PersistentVolumeClaimVolumeSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretEnvSource,
    SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{child_meta, stamp_spec_hash};
use crate::api::{BelowFloor, ModelDeployment};
use crate::fetch::uri::{MODEL_ROOT, ModelUri};
use crate::naming::{self, LABEL_REVISION, LABEL_VERSION};

/// Name of the model container (the HPA's `ContainerResource` metric targets it).
pub const MODEL_CONTAINER: &str = "model";
/// Name of the monitor sidecar.
pub const MONITOR_CONTAINER: &str = "monitor";
/// Name of the monitor's serving port, the one the Service targets.
pub const SERVING_PORT_NAME: &str = "http";
/// The monitor's serving port.
pub const SERVING_PORT: i32 = 8000;
/// Name of the monitor's admin port (report, metrics, probes).
pub const ADMIN_PORT_NAME: &str = "admin";
/// The monitor's admin port.
pub const ADMIN_PORT: i32 = 9090;
/// Name of the model container's port (reached only through the monitor, on loopback).
pub const MODEL_PORT_NAME: &str = "model";
/// Annotation pinning the monitor image of a revision: upgrading the operator never rolls
/// running pods; the next revision picks up the new monitor.
pub const ANNOTATION_MONITOR_IMAGE: &str = "drover.dev/monitor-image";
/// Annotation marking a revision whose pods get `spec.model.uri` as files in `/mnt/models`; a
/// revision with a uri but without it was built by an older Drover and is kept as it was.
pub const ANNOTATION_MODEL_FILES: &str = "drover.dev/model-files";
/// Where the report token is mounted.
pub const TOKEN_DIR: &str = "/var/run/drover/token";
/// Where the reference profile is mounted.
pub const PROFILE_DIR: &str = "/var/run/drover/profile";
/// Where the API key is mounted.
pub const API_KEY_DIR: &str = "/var/run/drover/api-key";
/// Where the serving certificate is mounted.
pub const TLS_DIR: &str = "/var/run/drover/tls";
/// Key of the report token in its Secret.
pub const TOKEN_KEY: &str = "token";
/// Name of the storage initializer (`drover fetch-model`), a regular init container.
pub const FETCH_CONTAINER: &str = "fetch-model";
/// Name of the volume holding the model's files (an emptyDir, or the `pvc://` claim).
pub const MODEL_VOLUME: &str = "drover-model";

/// What a revision keeps from when it was first built, so that upgrading Drover (or an alias
/// moving in the registry) never changes the pods of a revision that runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pins<'a> {
    /// The monitor sidecar's image (the storage initializer runs it too).
    pub monitor_image: &'a str,
    /// The version a `models:/NAME@ALIAS` uri resolved to for this revision: the initializer
    /// fetches that version, not whatever the alias names later.
    pub registry_version: Option<&'a str>,
    /// Fetch (or mount) `spec.model.uri` into `/mnt/models`. False only for a revision an older
    /// Drover built, which passed the uri on as `MODEL_URI` and nothing else.
    pub model_files: bool,
}

impl<'a> Pins<'a> {
    /// A new revision's pins: `monitor_image`, no registry version, model files on.
    pub fn new(monitor_image: &'a str) -> Self {
        Self {
            monitor_image,
            registry_version: None,
            model_files: true,
        }
    }
}

/// Builds the Deployment of `revision`. `replicas` is `None` when an HPA owns the count: the
/// apply must then not contain `spec.replicas` at all, or it would reset the HPA's choice.
pub fn build(
    md: &ModelDeployment,
    revision: &str,
    replicas: Option<i32>,
    pins: Pins<'_>,
) -> Deployment {
    let model_name = md.name_any();
    let selector = naming::revision_selector(&model_name, revision);

    let mut labels = naming::common_labels(md);
    labels.insert(LABEL_REVISION.into(), revision.into());
    labels.insert(LABEL_VERSION.into(), md.spec.model.version.clone());

    // User labels first, so Drover's own keys always win.
    let mut pod_labels: BTreeMap<String, String> = md.spec.pod.labels.clone();
    pod_labels.extend(labels.clone());

    let mut meta = child_meta(md, naming::revision_deployment(&model_name, revision));
    meta.labels = Some(labels);
    let mut annotations = BTreeMap::from([(
        ANNOTATION_MONITOR_IMAGE.to_string(),
        pins.monitor_image.to_string(),
    )]);
    let files = pins
        .model_files
        .then(|| model_files(md, pins.monitor_image, pins.registry_version))
        .flatten();
    if files.is_some() {
        annotations.insert(ANNOTATION_MODEL_FILES.to_string(), "true".to_string());
    }
    meta.annotations = Some(annotations);

    let mut deployment = Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas,
            revision_history_limit: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: (!md.spec.pod.annotations.is_empty())
                        .then(|| md.spec.pod.annotations.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(md, pins.monitor_image, files.as_ref())),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    stamp_spec_hash(&mut deployment, |d| &mut d.metadata);
    deployment
}

fn pod_spec(md: &ModelDeployment, monitor_image: &str, files: Option<&ModelFiles>) -> PodSpec {
    let pod = &md.spec.pod;
    let mut volumes = drover_volumes(md);
    volumes.extend(files.map(|f| f.volume.clone()));
    volumes.extend(pod.volumes.iter().cloned());
    let mut init_containers = Vec::new();
    // A regular init container: the model (and its monitor) start only once the files are
    // complete and checked; a failed fetch keeps the pod in Init with the reason in its log.
    init_containers.extend(files.and_then(|f| f.init.clone()));
    // A native sidecar (an init container that keeps running): it starts before the model
    // and stops after it, so no request reaches a pod without its monitor.
    init_containers.push(monitor_container(md, monitor_image));
    PodSpec {
        init_containers: Some(init_containers),
        containers: vec![model_container(md, files)],
        volumes: Some(volumes),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..pod_settings(md)
    }
}

/// The pod-level knobs of `spec.pod` every pod Drover runs the model in gets (serving and
/// batch): scheduling, identity, pull secrets, priority and runtime class.
pub fn pod_settings(md: &ModelDeployment) -> PodSpec {
    let pod = &md.spec.pod;
    PodSpec {
        node_selector: (!pod.node_selector.is_empty()).then(|| pod.node_selector.clone()),
        tolerations: (!pod.tolerations.is_empty()).then(|| pod.tolerations.clone()),
        affinity: pod.affinity.clone(),
        service_account_name: pod.service_account_name.clone(),
        // A model server needs no Kubernetes API token unless the user gave it an identity.
        automount_service_account_token: pod.service_account_name.is_none().then_some(false),
        image_pull_secrets: (!pod.image_pull_secrets.is_empty())
            .then(|| pod.image_pull_secrets.clone()),
        priority_class_name: pod.priority_class_name.clone(),
        runtime_class_name: pod.runtime_class_name.clone(),
        ..PodSpec::default()
    }
}

/// The parsed `spec.model.uri` (`None` without one; a uri that does not parse is refused by
/// validation before anything is built, and gets no initializer here).
fn model_source(md: &ModelDeployment) -> Option<ModelUri> {
    md.spec
        .model
        .uri
        .as_deref()
        .and_then(|u| ModelUri::parse(u).ok())
}

fn model_volume(md: &ModelDeployment, source: &ModelUri) -> Volume {
    let source = match source {
        ModelUri::Pvc { claim, .. } => Volume {
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim.clone(),
                read_only: Some(true),
            }),
            ..Volume::default()
        },
        _ => Volume {
            empty_dir: Some(EmptyDirVolumeSource {
                size_limit: md
                    .spec
                    .model
                    .storage
                    .as_ref()
                    .and_then(|s| s.size_limit.clone()),
                ..EmptyDirVolumeSource::default()
            }),
            ..Volume::default()
        },
    };
    volume(MODEL_VOLUME, source)
}

/// The storage initializer's arguments (`drover fetch-model`).
pub fn fetch_args(md: &ModelDeployment, registry_version: Option<&str>) -> Vec<String> {
    let model = &md.spec.model;
    let mut args = vec![
        "fetch-model".to_string(),
        format!("--uri={}", model.uri.as_deref().unwrap_or_default()),
        format!("--dest={MODEL_ROOT}"),
    ];
    if let Some(storage) = &model.storage {
        if let Some(sum) = &storage.sha256 {
            args.push(format!("--sha256={sum}"));
        }
        if storage.unpack {
            args.push("--unpack".into());
        }
        if let Some(endpoint) = &storage.endpoint {
            args.push(format!("--endpoint={endpoint}"));
        }
        if let Some(region) = &storage.region {
            args.push(format!("--region={region}"));
        }
    }
    if let Some(registry) = &model.registry {
        args.push(format!("--registry={}", registry.tracking_uri));
    }
    if let Some(version) = registry_version {
        args.push(format!("--registry-version={version}"));
    }
    args
}

fn fetch_container(md: &ModelDeployment, image: &str, registry_version: Option<&str>) -> Container {
    let model = &md.spec.model;
    let mut env_vars = Vec::new();
    if let Some(token) = model
        .registry
        .as_ref()
        .and_then(|r| r.token_secret_ref.as_ref())
    {
        env_vars.push(EnvVar {
            name: crate::fetch::ENV_REGISTRY_TOKEN.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: token.name.clone(),
                    key: token.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        });
    }
    // Only the initializer sees the storage credentials; the model container does not.
    let env_from = model
        .storage
        .as_ref()
        .and_then(|s| s.secret_name.clone())
        .map(|name| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name,
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            }]
        });
    Container {
        name: FETCH_CONTAINER.into(),
        image: Some(image.to_string()),
        args: Some(fetch_args(md, registry_version)),
        env: (!env_vars.is_empty()).then_some(env_vars),
        env_from,
        resources: Some(default_fetch_resources()),
        volume_mounts: Some(vec![VolumeMount {
            name: MODEL_VOLUME.into(),
            mount_path: MODEL_ROOT.into(),
            ..VolumeMount::default()
        }]),
        // `kubectl describe pod` shows why a fetch failed without digging in logs.
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        security_context: Some(restricted_read_only_security_context()),
        ..Container::default()
    }
}

fn default_fetch_resources() -> ResourceRequirements {
    resources("100m", "64Mi", "512Mi")
}

/// What a pod needs to find `spec.model.uri` at `/mnt/models`: the volume, the initializer
/// (none for a claim), the model container's read-only mount and `MODEL_PATH`. The serving
/// Deployment and the batch CronJob use the same.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelFiles {
    /// `drover-model`: an emptyDir, or the claim.
    pub volume: Volume,
    /// `fetch-model`, a regular init container.
    pub init: Option<Container>,
    /// The model container's mount of the volume.
    pub mount: VolumeMount,
    /// `MODEL_PATH`.
    pub model_path: EnvVar,
}

/// The model files of `md` (`None` without a uri), fetched by `image` (Drover's own), of
/// `registry_version` for an alias.
pub fn model_files(
    md: &ModelDeployment,
    image: &str,
    registry_version: Option<&str>,
) -> Option<ModelFiles> {
    let source = model_source(md)?;
    let unpack = md.spec.model.storage.as_ref().is_some_and(|s| s.unpack);
    Some(ModelFiles {
        volume: model_volume(md, &source),
        init: source
            .is_fetched()
            .then(|| fetch_container(md, image, registry_version)),
        mount: VolumeMount {
            name: MODEL_VOLUME.into(),
            mount_path: MODEL_ROOT.into(),
            read_only: Some(true),
            sub_path: match &source {
                ModelUri::Pvc { path, .. } if !path.is_empty() => Some(path.clone()),
                _ => None,
            },
            ..VolumeMount::default()
        },
        model_path: env("MODEL_PATH", source.model_path(unpack)),
    })
}

fn model_container(md: &ModelDeployment, files: Option<&ModelFiles>) -> Container {
    let model = &md.spec.model;
    let mut env = vec![
        env("MODEL_NAME", md.name_any()),
        env("MODEL_VERSION", model.version.clone()),
    ];
    if let Some(uri) = &model.uri {
        env.push(env_var("MODEL_URI", uri));
    }
    env.extend(files.map(|f| f.model_path.clone()));
    env.extend(model.env.iter().cloned());
    let mut mounts: Vec<VolumeMount> = files.map(|f| f.mount.clone()).into_iter().collect();
    mounts.extend(md.spec.pod.volume_mounts.iter().cloned());

    let http_get = |path: &str| HTTPGetAction {
        path: Some(path.to_string()),
        port: IntOrString::String(MODEL_PORT_NAME.into()),
        ..HTTPGetAction::default()
    };
    Container {
        name: MODEL_CONTAINER.into(),
        image: Some(model.image.clone()),
        command: (!model.command.is_empty()).then(|| model.command.clone()),
        args: (!model.args.is_empty()).then(|| model.args.clone()),
        ports: Some(vec![ContainerPort {
            name: Some(MODEL_PORT_NAME.into()),
            container_port: model.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        // Hold termination while endpoints stop sending traffic; the monitor counts what still
        // arrives apart, so it is not held against the revision.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                http_get: Some(HTTPGetAction {
                    path: Some("/drover/prestop".into()),
                    port: IntOrString::String(ADMIN_PORT_NAME.into()),
                    ..HTTPGetAction::default()
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        env: Some(env),
        resources: model.resources.clone(),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        // Loading a large model can take minutes: the startup probe gives it up to 10 minutes
        // before liveness starts counting.
        startup_probe: Some(Probe {
            http_get: Some(http_get(&model.health_path)),
            period_seconds: Some(5),
            failure_threshold: Some(120),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(http_get(&model.health_path)),
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(http_get(&model.health_path)),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            timeout_seconds: Some(5),
            ..Probe::default()
        }),
        security_context: Some(restricted_container_security_context()),
        ..Container::default()
    }
}

fn volume(name: &str, source: Volume) -> Volume {
    Volume {
        name: name.into(),
        ..source
    }
}

fn drover_volumes(md: &ModelDeployment) -> Vec<Volume> {
    let name = md.name_any();
    let secret = |secret_name: String, items: Option<Vec<KeyToPath>>| Volume {
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret_name),
            items,
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    };
    let mut out = vec![volume(
        "drover-token",
        secret(naming::monitor_token(&name), None),
    )];
    if let Some(reference) = &md.spec.monitoring.reference {
        out.push(volume(
            "drover-profile",
            Volume {
                config_map: Some(ConfigMapVolumeSource {
                    name: reference.config_map_ref.name.clone(),
                    items: Some(vec![KeyToPath {
                        key: reference.config_map_ref.key.clone(),
                        path: "profile.json".into(),
                        ..KeyToPath::default()
                    }]),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
        ));
    }
    if let Some(key) = &md.spec.model.api_key {
        let items = vec![KeyToPath {
            key: key.key.clone(),
            path: "key".into(),
            ..KeyToPath::default()
        }];
        out.push(volume(
            "drover-api-key",
            secret(key.name.clone(), Some(items)),
        ));
    }
    if let Some(tls) = &md.spec.monitoring.sidecar.tls_secret_name {
        out.push(volume("drover-tls", secret(tls.clone(), None)));
    }
    out
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }
}

/// The monitor sidecar's arguments, from the ModelDeployment.
pub fn monitor_args(md: &ModelDeployment) -> Vec<String> {
    let model = &md.spec.model;
    let sidecar = &md.spec.monitoring.sidecar;
    let mut args = vec![
        "monitor".to_string(),
        format!("--listen=0.0.0.0:{SERVING_PORT}"),
        format!("--admin-listen=0.0.0.0:{ADMIN_PORT}"),
        format!("--upstream=127.0.0.1:{}", model.port),
        format!("--model-health-path={}", model.health_path),
        format!("--report-token-file={TOKEN_DIR}/{TOKEN_KEY}"),
        format!("--max-body-bytes={}", sidecar.max_body_bytes),
        format!("--upstream-timeout={}", sidecar.upstream_timeout),
    ];
    if md.spec.monitoring.reference.is_some() {
        args.push(format!("--profile={PROFILE_DIR}/profile.json"));
    }
    if model.api_key.is_some() {
        args.push(format!("--api-key-file={API_KEY_DIR}/key"));
    }
    if let Some(floor) = sidecar.confidence_floor {
        args.push(format!("--confidence-floor={floor}"));
        if sidecar.below_floor == BelowFloor::Fallback {
            args.push("--below-floor=fallback".into());
            if let Some(body) = &sidecar.fallback_response {
                args.push(format!("--fallback-response={body}"));
            }
        }
    }
    if sidecar.log_sample_rate > 0.0 {
        args.push(format!("--log-sample-rate={}", sidecar.log_sample_rate));
        args.push(format!("--log-max-bytes={}", sidecar.log_max_bytes));
        if !sidecar.log_redact.is_empty() {
            args.push(format!("--log-redact={}", sidecar.log_redact.join(",")));
        }
    }
    if sidecar.tls_secret_name.is_some() {
        args.push(format!("--tls-cert={TLS_DIR}/tls.crt"));
        args.push(format!("--tls-key={TLS_DIR}/tls.key"));
    }
    if let Some(performance) = &md.spec.monitoring.performance {
        // The revision comes from the pod's own label (DROVER_MONITOR_REVISION, downward API).
        args.push("--feedback".into());
        args.push(format!(
            "--feedback-task={}",
            match performance.task {
                crate::api::PerformanceTask::Classification => "classification",
                crate::api::PerformanceTask::Regression => "regression",
            }
        ));
        if let Ok(age) = performance.max_label_age.parse() {
            args.push(format!(
                "--feedback-max-age-seconds={}",
                age.as_secs().max(1)
            ));
        }
    }
    args
}

fn monitor_container(md: &ModelDeployment, image: &str) -> Container {
    let sidecar = &md.spec.monitoring.sidecar;
    let mut mounts = vec![mount("drover-token", TOKEN_DIR)];
    if md.spec.monitoring.reference.is_some() {
        mounts.push(mount("drover-profile", PROFILE_DIR));
    }
    if md.spec.model.api_key.is_some() {
        mounts.push(mount("drover-api-key", API_KEY_DIR));
    }
    if sidecar.tls_secret_name.is_some() {
        mounts.push(mount("drover-tls", TLS_DIR));
    }
    let admin_get = |path: &str| HTTPGetAction {
        path: Some(path.to_string()),
        port: IntOrString::String(ADMIN_PORT_NAME.into()),
        ..HTTPGetAction::default()
    };
    let port = |name: &str, port: i32| ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    };
    Container {
        name: MONITOR_CONTAINER.into(),
        image: Some(image.to_string()),
        args: Some(monitor_args(md)),
        restart_policy: Some("Always".into()),
        ports: Some(vec![
            port(SERVING_PORT_NAME, SERVING_PORT),
            port(ADMIN_PORT_NAME, ADMIN_PORT),
        ]),
        env: Some({
            let mut e = vec![env("MODEL_VERSION", md.spec.model.version.clone())];
            if md.spec.monitoring.performance.is_some() {
                e.push(EnvVar {
                    name: "DROVER_MONITOR_REVISION".into(),
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: format!(
                                "metadata.labels['{}']",
                                crate::naming::LABEL_REVISION
                            ),
                            ..ObjectFieldSelector::default()
                        }),
                        ..EnvVarSource::default()
                    }),
                    ..EnvVar::default()
                });
            }
            e
        }),
        resources: Some(
            sidecar
                .resources
                .clone()
                .unwrap_or_else(default_monitor_resources),
        ),
        volume_mounts: Some(mounts),
        // Ready when the model answers its health path through loopback.
        readiness_probe: Some(Probe {
            http_get: Some(admin_get("/readyz")),
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..Probe::default()
        }),
        liveness_probe: Some(Probe {
            http_get: Some(admin_get("/healthz")),
            period_seconds: Some(10),
            failure_threshold: Some(3),
            ..Probe::default()
        }),
        security_context: Some(restricted_read_only_security_context()),
        ..Container::default()
    }
}

fn default_monitor_resources() -> ResourceRequirements {
    resources("50m", "32Mi", "128Mi")
}

/// CPU and memory requests with a memory limit (no CPU limit: throttling a proxy or a download
/// costs more than it protects).
fn resources(cpu: &str, memory: &str, memory_limit: &str) -> ResourceRequirements {
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.into()),
        )])),
        ..ResourceRequirements::default()
    }
}

/// A container security context that passes Pod Security "restricted".
pub fn restricted_container_security_context() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        run_as_non_root: Some(true),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The restricted context with a read-only root filesystem: Drover's own containers (the
/// monitor, the fetcher) write only to the volumes mounted for them.
fn restricted_read_only_security_context() -> SecurityContext {
    SecurityContext {
        read_only_root_filesystem: Some(true),
        ..restricted_container_security_context()
    }
}

fn env(name: &str, value: String) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    }
}

fn env_var(name: &str, value: &str) -> EnvVar {
    env(name, value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(extra: &str) -> ModelDeployment {
        let yaml = format!(
            "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: u}}\nspec:\n  model: {{version: '1.0.0', image: 'fraud:1', port: 8081}}\n{extra}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    /// A ModelDeployment whose `spec.model` is `model` (a YAML flow mapping).
    fn md_model(model: &str) -> ModelDeployment {
        let yaml = format!(
            "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: u}}\nspec:\n  model: {model}\n"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    impl ModelDeployment {
        fn with_uri(mut self, uri: &str, storage: &str) -> Self {
            self.spec.model.uri = Some(uri.into());
            self.spec.model.storage = Some(serde_saphyr::from_str(storage).unwrap());
            self
        }
    }

    fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
        pod.containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .unwrap()
    }

    #[test]
    fn a_uri_is_fetched_by_an_init_container_before_the_model_starts() {
        let m = md_model(
            "{version: '1.0.0', image: 'fraud:1', uri: 's3://models/fraud/model.skops', storage: {secretName: s3-creds, sha256: 'ab', endpoint: 'http://minio:9000'}}",
        );
        let d = build(&m, "abc", None, Pins::new("drover:1"));
        let pod = pod(&d);
        let init: Vec<_> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.restart_policy.as_deref()))
            .collect();
        // The initializer is a regular init container (it runs to completion first); the
        // monitor stays a native sidecar.
        assert_eq!(
            init,
            vec![(FETCH_CONTAINER, None), (MONITOR_CONTAINER, Some("Always"))]
        );
        let fetch = container(pod, FETCH_CONTAINER);
        assert_eq!(fetch.image.as_deref(), Some("drover:1"));
        assert_eq!(
            fetch.args.clone().unwrap(),
            vec![
                "fetch-model",
                "--uri=s3://models/fraud/model.skops",
                "--dest=/mnt/models",
                "--sha256=ab",
                "--endpoint=http://minio:9000",
            ]
        );
        let from = fetch.env_from.as_ref().unwrap()[0]
            .secret_ref
            .as_ref()
            .unwrap();
        assert_eq!(from.name, "s3-creds");
        let sc = fetch.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let rw = &fetch.volume_mounts.as_ref().unwrap()[0];
        assert_eq!(
            (rw.name.as_str(), rw.mount_path.as_str()),
            (MODEL_VOLUME, "/mnt/models")
        );
        assert_ne!(rw.read_only, Some(true));

        let model = container(pod, MODEL_CONTAINER);
        let env: BTreeMap<_, _> = model
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.as_str(), e.value.clone().unwrap_or_default()))
            .collect();
        assert_eq!(env["MODEL_PATH"], "/mnt/models/model.skops");
        assert_eq!(env["MODEL_URI"], "s3://models/fraud/model.skops");
        assert!(
            model.env_from.is_none(),
            "the model never sees the storage credentials"
        );
        let ro = &model.volume_mounts.as_ref().unwrap()[0];
        assert_eq!((ro.name.as_str(), ro.read_only), (MODEL_VOLUME, Some(true)));
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == MODEL_VOLUME)
            .unwrap();
        assert!(volume.empty_dir.is_some());
    }

    #[test]
    fn a_registry_alias_fetches_the_version_the_revision_names() {
        let m = md_model(
            "{version: '1.0.0', image: 'fraud:1', uri: 'models:/fraud@champion', registry: {trackingUri: 'http://mlflow:5000', tokenSecretRef: {name: mlflow, key: token}}}",
        );
        let d = build(
            &m,
            "abc",
            None,
            Pins {
                registry_version: Some("7"),
                ..Pins::new("drover:1")
            },
        );
        let pod = pod(&d);
        let fetch = container(pod, FETCH_CONTAINER);
        let args = fetch.args.clone().unwrap();
        assert!(args.contains(&"--registry=http://mlflow:5000".to_string()));
        assert!(
            args.contains(&"--registry-version=7".to_string()),
            "{args:?}"
        );
        let token = &fetch.env.as_ref().unwrap()[0];
        assert_eq!(token.name, "MLFLOW_TRACKING_TOKEN");
        let key = token
            .value_from
            .as_ref()
            .unwrap()
            .secret_key_ref
            .as_ref()
            .unwrap();
        assert_eq!((key.name.as_str(), key.key.as_str()), ("mlflow", "token"));
        let model = container(pod, MODEL_CONTAINER);
        assert!(
            model
                .env
                .iter()
                .flatten()
                .any(|e| e.name == "MODEL_PATH" && e.value.as_deref() == Some("/mnt/models"))
        );

        // The arguments are what `drover fetch-model` takes.
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(subcommand)]
            command: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            FetchModel(crate::fetch::FetchArgs),
        }
        let parsed =
            Wrap::try_parse_from(std::iter::once("drover".to_string()).chain(args)).unwrap();
        let Sub::FetchModel(a) = parsed.command;
        assert_eq!(a.registry_version.as_deref(), Some("7"));
        assert_eq!(a.uri, "models:/fraud@champion");
    }

    #[test]
    fn a_claim_is_mounted_not_fetched() {
        let m = md_model("{version: '1.0.0', image: 'fraud:1', uri: 'pvc://models/fraud/v1'}");
        let d = build(&m, "abc", None, Pins::new("drover:1"));
        let pod = pod(&d);
        assert!(
            pod.init_containers
                .iter()
                .flatten()
                .all(|c| c.name != FETCH_CONTAINER)
        );
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == MODEL_VOLUME)
            .unwrap();
        let claim = volume.persistent_volume_claim.as_ref().unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("models", Some(true))
        );
        let mount = &container(pod, MODEL_CONTAINER)
            .volume_mounts
            .as_ref()
            .unwrap()[0];
        assert_eq!(mount.sub_path.as_deref(), Some("fraud/v1"));
        assert_eq!(mount.read_only, Some(true));
    }

    #[test]
    fn without_a_uri_nothing_changes() {
        let d = build(&md(""), "abc", None, Pins::new("drover:1"));
        let pod = pod(&d);
        assert_eq!(pod.init_containers.as_ref().unwrap().len(), 1);
        assert!(pod.volumes.iter().flatten().all(|v| v.name != MODEL_VOLUME));
        assert!(container(pod, MODEL_CONTAINER).volume_mounts.is_none());
    }

    fn pod(d: &Deployment) -> &PodSpec {
        d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn feedback_turns_on_the_monitor_s_tokens_with_the_pod_s_revision() {
        let m = md("  monitoring: {performance: {task: Regression, maxLabelAge: 2h, maxMae: 3}}\n");
        let args = monitor_args(&m);
        assert!(args.contains(&"--feedback".to_string()));
        assert!(args.contains(&"--feedback-task=regression".to_string()));
        assert!(args.contains(&"--feedback-max-age-seconds=7200".to_string()));
        let d = build(&m, "abc", Some(1), Pins::new("m:1"));
        let monitor = &pod(&d).init_containers.as_ref().unwrap()[0];
        let revision = monitor
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "DROVER_MONITOR_REVISION")
            .unwrap();
        assert_eq!(
            revision
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['drover.dev/revision']"
        );
        assert!(!monitor_args(&md("")).contains(&"--feedback".to_string()));
    }

    #[test]
    fn the_monitor_is_a_native_sidecar_in_front_of_the_model() {
        let d = build(&md(""), "abc", Some(2), Pins::new("drover:1"));
        let pod = pod(&d);
        let monitor = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(monitor.name, MONITOR_CONTAINER);
        assert_eq!(
            monitor.restart_policy.as_deref(),
            Some("Always"),
            "native sidecar"
        );
        assert_eq!(monitor.image.as_deref(), Some("drover:1"));
        let args = monitor.args.as_ref().unwrap();
        assert!(
            args.contains(&"--upstream=127.0.0.1:8081".to_string()),
            "{args:?}"
        );
        assert!(args.contains(&format!("--report-token-file={TOKEN_DIR}/{TOKEN_KEY}")));
        let ports: Vec<_> = monitor
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| (p.name.clone().unwrap(), p.container_port))
            .collect();
        assert_eq!(
            ports,
            vec![("http".into(), SERVING_PORT), ("admin".into(), ADMIN_PORT)]
        );
        let model = &pod.containers[0];
        assert_eq!(
            model.ports.as_ref().unwrap()[0].name.as_deref(),
            Some(MODEL_PORT_NAME)
        );
        let pre_stop = model.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert_eq!(
            pre_stop.http_get.as_ref().unwrap().path.as_deref(),
            Some("/drover/prestop")
        );
        assert_eq!(
            d.metadata.annotations.as_ref().unwrap()[ANNOTATION_MONITOR_IMAGE],
            "drover:1"
        );
        let volumes: Vec<_> = pod
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .map(|v| v.name.clone())
            .collect();
        assert_eq!(volumes, vec!["drover-token".to_string()]);
    }

    #[test]
    fn every_container_passes_pod_security_restricted() {
        let d = build(
            &md("  monitoring: {sidecar: {tlsSecretName: tls}}\n  pod: {}\n")
                .with_uri("s3://m/fraud.tar.gz", "{secretName: s3, unpack: true}"),
            "abc",
            None,
            Pins::new("drover:1"),
        );
        let pod = pod(&d);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.run_as_non_root, Some(true));
        assert_eq!(
            psc.seccomp_profile.as_ref().unwrap().type_,
            "RuntimeDefault"
        );
        for c in pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
        {
            let sc = c.security_context.as_ref().unwrap();
            assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(
                sc.capabilities.as_ref().unwrap().drop.as_deref(),
                Some(&["ALL".to_string()][..])
            );
            assert_eq!(sc.run_as_non_root, Some(true));
            assert!(
                sc.privileged.is_none() && c.ports.iter().flatten().all(|p| p.host_port.is_none())
            );
        }
        assert!(pod.host_network.is_none() && pod.host_pid.is_none() && pod.host_ipc.is_none());
        for v in pod.volumes.iter().flatten() {
            assert!(v.host_path.is_none(), "restricted forbids hostPath");
        }
    }

    #[test]
    fn options_reach_the_monitor() {
        let d = build(
            &md(
                "  monitoring:\n    reference: {configMapRef: {name: ref}}\n    sidecar: {confidenceFloor: 0.7, belowFloor: Fallback, fallbackResponse: '{\"p\":0}', logSampleRate: 0.1, logRedact: [ssn, name]}\n",
            ),
            "abc",
            None,
            Pins::new("drover:1"),
        );
        let monitor = &pod(&d).init_containers.as_ref().unwrap()[0];
        let args = monitor.args.as_ref().unwrap().join(" ");
        for expected in [
            "--profile=/var/run/drover/profile/profile.json",
            "--confidence-floor=0.7",
            "--below-floor=fallback",
            "--fallback-response={\"p\":0}",
            "--log-sample-rate=0.1",
            "--log-redact=ssn,name",
        ] {
            assert!(args.contains(expected), "{expected} in {args}");
        }
        let mounts: Vec<_> = monitor
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.clone())
            .collect();
        assert!(mounts.contains(&PROFILE_DIR.to_string()));
    }

    #[test]
    fn the_operator_and_the_monitor_agree_on_the_arguments() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrap {
            #[command(subcommand)]
            command: Sub,
        }
        #[derive(clap::Subcommand)]
        enum Sub {
            Monitor(crate::monitor::MonitorArgs),
        }
        let spec = "  monitoring:\n    reference: {configMapRef: {name: ref}}\n    sidecar: {confidenceFloor: 0.7, belowFloor: Fallback, fallbackResponse: '{\"p\":0}', logSampleRate: 0.1, logRedact: [ssn], tlsSecretName: t}\n";
        let mut m = md(spec);
        m.spec.model.api_key = Some(crate::api::SecretKeyRef {
            name: "k".into(),
            key: "key".into(),
        });
        let d = build(&m, "abc", None, Pins::new("drover:1"));
        let args = pod(&d).init_containers.as_ref().unwrap()[0]
            .args
            .clone()
            .unwrap();
        let parsed =
            Wrap::try_parse_from(std::iter::once("drover".to_string()).chain(args)).unwrap();
        let Sub::Monitor(m) = parsed.command;
        assert_eq!(m.upstream, "127.0.0.1:8081");
        assert_eq!(m.confidence_floor, Some(0.7));
        assert_eq!(m.fallback_response.as_deref(), Some("{\"p\":0}"));
        assert_eq!(
            m.api_key_file.unwrap().display().to_string(),
            format!("{API_KEY_DIR}/key")
        );
        assert_eq!(
            m.tls_cert.unwrap().display().to_string(),
            format!("{TLS_DIR}/tls.crt")
        );
        assert_eq!(m.listen.port(), SERVING_PORT as u16);
    }
}
