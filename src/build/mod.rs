//! Pure builders: one per kind of child object. Each takes the ModelDeployment (and what the
//! planner decided) and returns the full object Drover applies. No I/O, no clock.

pub mod autoscaler;
pub mod batch;
pub mod deployment;
pub mod network_policy;
pub mod retrain;
pub mod route;
pub mod secret;
pub mod service;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::api::ModelDeployment;
use crate::naming::{self, ANNOTATION_SPEC_HASH};

/// A child object Drover applies.
#[derive(Clone, Debug, PartialEq)]
pub enum Child {
    /// A revision's Deployment.
    Deployment(Box<Deployment>),
    /// The Service clients call.
    Service(Box<Service>),
    /// The HorizontalPodAutoscaler of the serving revision.
    Autoscaler(Box<HorizontalPodAutoscaler>),
    /// The NetworkPolicy over the model's pods.
    NetworkPolicy(Box<NetworkPolicy>),
    /// The HTTPRoute of Gateway API traffic.
    Route(Box<route::HttpRoute>),
    /// The CronJob of scheduled retraining.
    CronJob(Box<k8s_openapi::api::batch::v1::CronJob>),
}

/// The kinds of child Drover manages; bounded, so usable as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChildKind {
    /// apps/v1 Deployment.
    Deployment,
    /// v1 Service.
    Service,
    /// autoscaling/v2 HorizontalPodAutoscaler.
    Autoscaler,
    /// networking.k8s.io/v1 NetworkPolicy.
    NetworkPolicy,
    /// gateway.networking.k8s.io/v1 HTTPRoute.
    Route,
    /// batch/v1 Job (a retraining run).
    Job,
    /// batch/v1 CronJob (scheduled retraining).
    CronJob,
}

impl ChildKind {
    /// The Kubernetes kind.
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Deployment => "Deployment",
            ChildKind::Service => "Service",
            ChildKind::Autoscaler => "HorizontalPodAutoscaler",
            ChildKind::NetworkPolicy => "NetworkPolicy",
            ChildKind::Route => "HTTPRoute",
            ChildKind::Job => "Job",
            ChildKind::CronJob => "CronJob",
        }
    }
}

/// A child identified by kind and name (namespace is the ModelDeployment's).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChildRef {
    /// Kind of the child.
    pub kind: ChildKind,
    /// Name of the child.
    pub name: String,
}

impl Child {
    /// Kind and name.
    pub fn reference(&self) -> ChildRef {
        let (kind, meta) = match self {
            Child::Deployment(d) => (ChildKind::Deployment, &d.metadata),
            Child::Service(s) => (ChildKind::Service, &s.metadata),
            Child::Autoscaler(h) => (ChildKind::Autoscaler, &h.metadata),
            Child::NetworkPolicy(p) => (ChildKind::NetworkPolicy, &p.metadata),
            Child::Route(r) => (ChildKind::Route, &r.metadata),
            Child::CronJob(c) => (ChildKind::CronJob, &c.metadata),
        };
        ChildRef {
            kind,
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// The hash stamped into the child's `drover.dev/spec-hash` annotation.
    pub fn spec_hash(&self) -> Option<&str> {
        let meta = match self {
            Child::Deployment(d) => &d.metadata,
            Child::Service(s) => &s.metadata,
            Child::Autoscaler(h) => &h.metadata,
            Child::NetworkPolicy(p) => &p.metadata,
            Child::Route(r) => &r.metadata,
            Child::CronJob(c) => &c.metadata,
        };
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(ANNOTATION_SPEC_HASH))
            .map(String::as_str)
    }
}

/// Metadata of a child: name, namespace, labels, owner reference.
pub fn child_meta(md: &ModelDeployment, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: md.namespace(),
        labels: Some(naming::common_labels(md)),
        owner_references: owner_reference(md).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The controller owner reference (with `blockOwnerDeletion`) that makes deleting the
/// ModelDeployment garbage-collect the child.
pub fn owner_reference(md: &ModelDeployment) -> Option<OwnerReference> {
    md.controller_owner_ref(&()).map(|mut o| {
        o.block_owner_deletion = Some(true);
        o
    })
}

/// Stamps `drover.dev/spec-hash` with a hash of the object as built (before the stamp), so the
/// planner can tell an up-to-date child from one that needs an apply without a write.
pub fn stamp_spec_hash<T: Serialize>(object: &mut T, meta: impl Fn(&mut T) -> &mut ObjectMeta) {
    let hash = match serde_json::to_vec(&*object) {
        Ok(bytes) => {
            let digest = Sha256::digest(&bytes);
            digest
                .iter()
                .take(8)
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        }
        Err(_) => return,
    };
    meta(object)
        .annotations
        .get_or_insert_with(Default::default)
        .insert(ANNOTATION_SPEC_HASH.to_string(), hash);
}
