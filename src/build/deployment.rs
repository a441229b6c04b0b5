//! The Deployment that serves one revision: `<name>-<revision>`.
//!
//! Pods are never rolled in place: a new revision gets a new Deployment, so its pod template is
//! built once and never changes afterwards. The pod passes Pod Security "restricted" by default.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, HTTPGetAction, PodSecurityContext, PodSpec,
    PodTemplateSpec, Probe, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{child_meta, stamp_spec_hash};
use crate::api::ModelDeployment;
use crate::naming::{self, LABEL_REVISION, LABEL_VERSION};

/// Name of the model container (the HPA's `ContainerResource` metric targets it).
pub const MODEL_CONTAINER: &str = "model";
/// Name of the serving port the Service targets.
pub const SERVING_PORT_NAME: &str = "http";

/// Builds the Deployment of `revision`. `replicas` is `None` when an HPA owns the count: the
/// apply must then not contain `spec.replicas` at all, or it would reset the HPA's choice.
pub fn build(md: &ModelDeployment, revision: &str, replicas: Option<i32>) -> Deployment {
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
                spec: Some(pod_spec(md)),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };
    stamp_spec_hash(&mut deployment, |d| &mut d.metadata);
    deployment
}

fn pod_spec(md: &ModelDeployment) -> PodSpec {
    let pod = &md.spec.pod;
    PodSpec {
        containers: vec![model_container(md)],
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
        volumes: (!pod.volumes.is_empty()).then(|| pod.volumes.clone()),
        security_context: Some(PodSecurityContext {
            run_as_non_root: Some(true),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                ..SeccompProfile::default()
            }),
            ..PodSecurityContext::default()
        }),
        ..PodSpec::default()
    }
}

fn model_container(md: &ModelDeployment) -> Container {
    let model = &md.spec.model;
    let mut env = vec![
        env("MODEL_NAME", md.name_any()),
        env("MODEL_VERSION", model.version.clone()),
    ];
    if let Some(uri) = &model.uri {
        env.push(env_var("MODEL_URI", uri));
    }
    env.extend(model.env.iter().cloned());

    let http_get = |path: &str| HTTPGetAction {
        path: Some(path.to_string()),
        port: IntOrString::String(SERVING_PORT_NAME.into()),
        ..HTTPGetAction::default()
    };
    Container {
        name: MODEL_CONTAINER.into(),
        image: Some(model.image.clone()),
        command: (!model.command.is_empty()).then(|| model.command.clone()),
        args: (!model.args.is_empty()).then(|| model.args.clone()),
        ports: Some(vec![ContainerPort {
            name: Some(SERVING_PORT_NAME.into()),
            container_port: model.port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]),
        env: Some(env),
        resources: model.resources.clone(),
        volume_mounts: (!md.spec.pod.volume_mounts.is_empty())
            .then(|| md.spec.pod.volume_mounts.clone()),
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
