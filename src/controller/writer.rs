//! The thin client layer: every write Drover makes goes through here, and none goes out
//! without the leader gate open.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ObjectReference, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::Error;
use crate::api::{ModelDeployment, ModelDeploymentStatus};
use crate::build::route::HttpRoute;
use crate::build::{Child, ChildKind, ChildRef};
use crate::leader::WriteGate;
use crate::metrics::Metrics;
use crate::naming::{FIELD_MANAGER, SCALE_FIELD_MANAGER};

/// Field manager of the `spec.model` patch that deploys an accepted candidate.
pub const RETRAINING_FIELD_MANAGER: &str = "drover-retraining";

/// What became of a Job create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobCreated {
    /// Created now.
    Created,
    /// A Job of that name existed.
    Existed,
    /// The API server refused the object (its message).
    Refused(String),
}

/// The API server refused the object itself: invalid (400, 422), or an admission webhook or
/// policy said no (403 naming admission). An RBAC 403 is not: that is Drover's own
/// misconfiguration, retried with backoff like any API error.
fn refused_object(status: &kube::core::Status) -> bool {
    matches!(status.code, 400 | 422) || (status.code == 403 && status.message.contains("admission"))
}

/// Writes for one ModelDeployment's namespace.
pub struct Writer<'a> {
    /// API client.
    pub client: &'a Client,
    /// Namespace of the ModelDeployment.
    pub namespace: &'a str,
    /// Leader gate.
    pub gate: &'a WriteGate,
    /// Metrics.
    pub metrics: &'a Metrics,
    /// Event recorder.
    pub recorder: &'a Recorder,
}

fn apply_params(manager: &str) -> PatchParams {
    PatchParams::apply(manager).force()
}

impl Writer<'_> {
    fn check(&self) -> Result<(), Error> {
        if self.gate.is_open() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }

    /// Server-side apply of a whole child, field manager `drover`, force.
    pub async fn apply(&self, child: &Child) -> Result<(), Error> {
        self.check()?;
        let r = child.reference();
        let params = apply_params(FIELD_MANAGER);
        match child {
            Child::Deployment(d) => {
                Api::<Deployment>::namespaced(self.client.clone(), self.namespace)
                    .patch(&r.name, &params, &Patch::Apply(d.as_ref()))
                    .await?;
            }
            Child::Service(s) => {
                Api::<Service>::namespaced(self.client.clone(), self.namespace)
                    .patch(&r.name, &params, &Patch::Apply(s.as_ref()))
                    .await?;
            }
            Child::Autoscaler(h) => {
                Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), self.namespace)
                    .patch(&r.name, &params, &Patch::Apply(h.as_ref()))
                    .await?;
            }
            Child::NetworkPolicy(p) => {
                Api::<NetworkPolicy>::namespaced(self.client.clone(), self.namespace)
                    .patch(&r.name, &params, &Patch::Apply(p.as_ref()))
                    .await?;
            }
            Child::Route(route) => {
                Api::<HttpRoute>::namespaced(self.client.clone(), self.namespace)
                    .patch(&r.name, &params, &Patch::Apply(route.as_ref()))
                    .await?;
            }
            Child::CronJob(c) => {
                Api::<CronJob>::namespaced(self.client.clone(), self.namespace)
                    .patch(&r.name, &params, &Patch::Apply(c.as_ref()))
                    .await?;
            }
        }
        self.metrics.wrote(r.kind.as_str(), "apply");
        Ok(())
    }

    /// Sets `spec.replicas` of a Deployment under the scale field manager, so that Drover's main
    /// apply (which omits the field under an HPA) never resets it.
    pub async fn scale(&self, deployment: &str, replicas: i32) -> Result<(), Error> {
        self.check()?;
        let body = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": deployment},
            "spec": {"replicas": replicas},
        });
        Api::<Deployment>::namespaced(self.client.clone(), self.namespace)
            .patch(
                deployment,
                &apply_params(SCALE_FIELD_MANAGER),
                &Patch::Apply(&body),
            )
            .await?;
        self.metrics.wrote(ChildKind::Deployment.as_str(), "scale");
        Ok(())
    }

    /// Deletes a child with background propagation (its dependents, e.g. pods, go too).
    pub async fn delete(&self, child: &ChildRef) -> Result<(), Error> {
        self.check()?;
        let dp = DeleteParams::background();
        let result = match child.kind {
            ChildKind::Deployment => {
                Api::<Deployment>::namespaced(self.client.clone(), self.namespace)
                    .delete(&child.name, &dp)
                    .await
                    .map(|_| ())
            }
            ChildKind::Service => Api::<Service>::namespaced(self.client.clone(), self.namespace)
                .delete(&child.name, &dp)
                .await
                .map(|_| ()),
            ChildKind::Autoscaler => {
                Api::<HorizontalPodAutoscaler>::namespaced(self.client.clone(), self.namespace)
                    .delete(&child.name, &dp)
                    .await
                    .map(|_| ())
            }
            ChildKind::NetworkPolicy => {
                Api::<NetworkPolicy>::namespaced(self.client.clone(), self.namespace)
                    .delete(&child.name, &dp)
                    .await
                    .map(|_| ())
            }
            ChildKind::Route => Api::<HttpRoute>::namespaced(self.client.clone(), self.namespace)
                .delete(&child.name, &dp)
                .await
                .map(|_| ()),
            // A finished Job's pods (and their logs) go with it.
            ChildKind::Job => Api::<Job>::namespaced(self.client.clone(), self.namespace)
                .delete(&child.name, &dp)
                .await
                .map(|_| ()),
            ChildKind::CronJob => Api::<CronJob>::namespaced(self.client.clone(), self.namespace)
                .delete(&child.name, &dp)
                .await
                .map(|_| ()),
        };
        match result {
            Ok(()) => {}
            // Already gone: the goal is reached.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
        self.metrics.wrote(child.kind.as_str(), "delete");
        Ok(())
    }

    /// Creates a retraining Job. A Job of that name that exists already counts as created (a
    /// retried reconcile in the same minute); `Err(Refused(message))` when the API server
    /// refuses the object itself (invalid template, admission), which retrying cannot fix.
    pub async fn create_job(&self, job: &Job) -> Result<JobCreated, Error> {
        self.check()?;
        let api = Api::<Job>::namespaced(self.client.clone(), self.namespace);
        match api.create(&PostParams::default(), job).await {
            Ok(_) => {
                self.metrics.wrote(ChildKind::Job.as_str(), "create");
                Ok(JobCreated::Created)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(JobCreated::Existed),
            Err(kube::Error::Api(status)) if refused_object(&status) => {
                Ok(JobCreated::Refused(status.message.clone()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sets `spec.model` to an accepted candidate (`autoDeploy`), as a JSON merge patch so it
    /// takes no field ownership from whoever applies the spec.
    pub async fn deploy_candidate(
        &self,
        md: &ModelDeployment,
        model: &crate::plan::ModelUpdate,
    ) -> Result<(), Error> {
        self.check()?;
        let mut fields = serde_json::Map::new();
        fields.insert("version".into(), json!(model.version));
        if let Some(image) = &model.image {
            fields.insert("image".into(), json!(image));
        }
        if let Some(uri) = &model.uri {
            fields.insert("uri".into(), json!(uri));
        }
        let body = json!({"spec": {"model": fields}});
        Api::<ModelDeployment>::namespaced(self.client.clone(), self.namespace)
            .patch(
                &md.name_any(),
                &PatchParams {
                    field_manager: Some(RETRAINING_FIELD_MANAGER.into()),
                    ..PatchParams::default()
                },
                &Patch::Merge(&body),
            )
            .await?;
        self.metrics.wrote("ModelDeployment", "patch");
        Ok(())
    }

    /// Creates a Secret unless one of that name exists (its content is then left alone).
    /// Returns whether it was created.
    pub async fn create_secret_if_absent(&self, secret: &Secret) -> Result<bool, Error> {
        self.check()?;
        let api = Api::<Secret>::namespaced(self.client.clone(), self.namespace);
        match api.create(&PostParams::default(), secret).await {
            Ok(_) => {
                self.metrics.wrote("Secret", "create");
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Applies the whole status under field manager `drover`.
    pub async fn apply_status(
        &self,
        md: &ModelDeployment,
        status: &ModelDeploymentStatus,
    ) -> Result<(), Error> {
        self.check()?;
        let body = json!({
            "apiVersion": ModelDeployment::api_version(&()),
            "kind": ModelDeployment::kind(&()),
            "metadata": {"name": md.name_any()},
            "status": status,
        });
        Api::<ModelDeployment>::namespaced(self.client.clone(), self.namespace)
            .patch_status(
                &md.name_any(),
                &apply_params(FIELD_MANAGER),
                &Patch::Apply(&body),
            )
            .await?;
        Ok(())
    }

    /// Publishes an Event about `reference`. Events are writes too: not without the gate.
    pub async fn event(
        &self,
        reference: &ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) -> Result<(), Error> {
        self.check()?;
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(truncate(note, 1000)),
            action: action.to_string(),
            secondary: None,
        };
        self.recorder.publish(&event, reference).await?;
        Ok(())
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}
