//! The `autoscaling/v2` HorizontalPodAutoscaler of the serving revision.
//!
//! The default CPU target is a `ContainerResource` metric on the model container, so the
//! monitor sidecar's CPU never skews it. User `metrics` and `behavior` pass through as written.

use k8s_openapi::api::autoscaling::v2::{
    ContainerResourceMetricSource, CrossVersionObjectReference, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
};
use kube::ResourceExt;

use super::deployment::MODEL_CONTAINER;
use super::{child_meta, stamp_spec_hash};
use crate::api::{AutoscalingSpec, ModelDeployment};
use crate::naming;

/// CPU utilisation target when the spec names none.
pub const DEFAULT_CPU_TARGET: i32 = 80;

/// Builds the HPA scaling the Deployment `target`.
pub fn build(
    md: &ModelDeployment,
    autoscaling: &AutoscalingSpec,
    target: &str,
) -> HorizontalPodAutoscaler {
    let metrics = if autoscaling.metrics.is_empty() {
        vec![MetricSpec {
            type_: "ContainerResource".into(),
            container_resource: Some(ContainerResourceMetricSource {
                container: MODEL_CONTAINER.into(),
                name: "cpu".into(),
                target: MetricTarget {
                    type_: "Utilization".into(),
                    average_utilization: Some(
                        autoscaling
                            .target_cpu_utilization_percentage
                            .unwrap_or(DEFAULT_CPU_TARGET),
                    ),
                    ..MetricTarget::default()
                },
            }),
            ..MetricSpec::default()
        }]
    } else {
        autoscaling.metrics.clone()
    };
    let mut hpa = HorizontalPodAutoscaler {
        metadata: child_meta(md, naming::autoscaler(&md.name_any())),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: target.into(),
            },
            min_replicas: Some(autoscaling.min_replicas),
            max_replicas: autoscaling.max_replicas,
            metrics: Some(metrics),
            behavior: autoscaling.behavior.clone(),
        }),
        status: None,
    };
    stamp_spec_hash(&mut hpa, |h| &mut h.metadata);
    hpa
}
