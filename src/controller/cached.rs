//! What the watches keep of each child: the fields `observe` and the controller's owner mapping
//! read, and nothing else.
//!
//! These types are deserialized straight from the API's JSON, so managedFields, pod templates,
//! foreign annotations and unread status are skipped by the parser and never allocated, not
//! stripped after the fact: a full `Deployment` with its managedFields costs ~50 KB of heap while
//! it is parsed, its cached slice a few hundred bytes. `From<&Deployment>` (and the others) give
//! the same slice of a typed object, for tests and the benchmark.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use serde::{Deserialize, Deserializer};

/// kubectl's copy of the last applied object: as large as the spec, never read back.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Annotations under this prefix are kept (the spec hash, the monitor image); the others (e.g.
/// kubectl's last-applied-configuration) are dropped.
const KEPT_ANNOTATIONS: &str = "drover.dev/";

/// A revision Deployment as cached: identity, labels, Drover's annotations, replicas, rollout
/// status.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CachedDeployment {
    /// Lean metadata (see [`lean_meta`]).
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    /// `spec.replicas`.
    #[serde(default)]
    pub spec: Option<Replicas>,
    /// What the rollout status says about the revision.
    #[serde(default)]
    pub status: Option<RolloutStatus>,
}

/// `spec.replicas` of a Deployment.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Replicas {
    /// `spec.replicas`.
    #[serde(default)]
    pub replicas: Option<i32>,
}

/// The part of a Deployment's status that tells whether a revision is complete and available.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// `status.observedGeneration`.
    #[serde(default)]
    pub observed_generation: Option<i64>,
    /// `status.updatedReplicas`.
    #[serde(default)]
    pub updated_replicas: Option<i32>,
    /// `status.availableReplicas`.
    #[serde(default)]
    pub available_replicas: Option<i32>,
    /// `status.readyReplicas`.
    #[serde(default)]
    pub ready_replicas: Option<i32>,
    /// `status.conditions`, type and status only.
    #[serde(default)]
    pub conditions: Option<Vec<ConditionStatus>>,
}

/// Type and status of a condition (reason, message and times are not read).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct ConditionStatus {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `status`: `True`, `False` or `Unknown`.
    pub status: String,
}

/// The model's Service as cached: identity, Drover's annotations, selector.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CachedService {
    /// Lean metadata (see [`lean_meta`]).
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    /// `spec.selector`.
    #[serde(default)]
    pub spec: Option<Selector>,
}

/// `spec.selector` of a Service.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct Selector {
    /// `spec.selector`.
    #[serde(default)]
    pub selector: Option<BTreeMap<String, String>>,
}

/// The HorizontalPodAutoscaler as cached: identity, Drover's annotations, target name.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CachedAutoscaler {
    /// Lean metadata (see [`lean_meta`]).
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    /// `spec.scaleTargetRef.name`.
    #[serde(default)]
    pub spec: Option<ScaleTarget>,
}

/// `spec` of an HPA, reduced to its target.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleTarget {
    /// `spec.scaleTargetRef`.
    pub scale_target_ref: TargetName,
}

/// `spec.scaleTargetRef`, reduced to the name.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct TargetName {
    /// `name`.
    pub name: String,
}

/// What a cached ModelDeployment drops (it is kept whole otherwise, and parsed by kube's
/// `DeserializeGuard`): managedFields and kubectl's last-applied copy. Drover's control
/// annotations stay, the watch's annotation predicate needs them.
pub fn strip_model<K: Resource>(md: &mut K) {
    let meta = md.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = meta.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
    }
}

/// The metadata fields anything reads back: identity, resourceVersion (the watcher resumes from
/// it), generation, labels, Drover's annotations, owner references (ownership and the
/// controller's owner mapping).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    uid: Option<String>,
    #[serde(default)]
    resource_version: Option<String>,
    #[serde(default)]
    generation: Option<i64>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "kept_annotations")]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(default)]
    deletion_timestamp: Option<Time>,
    #[serde(default)]
    creation_timestamp: Option<Time>,
}

impl From<LeanMeta> for ObjectMeta {
    fn from(m: LeanMeta) -> Self {
        ObjectMeta {
            name: m.name,
            namespace: m.namespace,
            uid: m.uid,
            resource_version: m.resource_version,
            generation: m.generation,
            labels: m.labels,
            annotations: m.annotations,
            owner_references: m.owner_references,
            deletion_timestamp: m.deletion_timestamp,
            creation_timestamp: m.creation_timestamp,
            ..ObjectMeta::default()
        }
    }
}

/// Reads `metadata` keeping only what [`LeanMeta`] names; managedFields are skipped unparsed.
fn lean_meta<'de, D: Deserializer<'de>>(deserializer: D) -> Result<ObjectMeta, D::Error> {
    Ok(LeanMeta::deserialize(deserializer)?.into())
}

/// Reads `annotations`, keeping only Drover's.
fn kept_annotations<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Kept;
    impl<'de> serde::de::Visitor<'de> for Kept {
        type Value = Option<BTreeMap<String, String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of annotations")
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if key.starts_with(KEPT_ANNOTATIONS) {
                    kept.insert(key, map.next_value()?);
                } else {
                    map.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok(Some(kept))
        }
    }
    deserializer.deserialize_option(Kept)
}

/// The same slice of typed metadata.
fn lean(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        generation: meta.generation,
        labels: meta.labels.clone(),
        annotations: meta.annotations.as_ref().map(|a| {
            a.iter()
                .filter(|(k, _)| k.starts_with(KEPT_ANNOTATIONS))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        owner_references: meta.owner_references.clone(),
        deletion_timestamp: meta.deletion_timestamp.clone(),
        creation_timestamp: meta.creation_timestamp.clone(),
        ..ObjectMeta::default()
    }
}

impl From<&Deployment> for CachedDeployment {
    fn from(d: &Deployment) -> Self {
        CachedDeployment {
            metadata: lean(&d.metadata),
            spec: d.spec.as_ref().map(|s| Replicas {
                replicas: s.replicas,
            }),
            status: d.status.as_ref().map(|s| RolloutStatus {
                observed_generation: s.observed_generation,
                updated_replicas: s.updated_replicas,
                available_replicas: s.available_replicas,
                ready_replicas: s.ready_replicas,
                conditions: s.conditions.as_ref().map(|c| {
                    c.iter()
                        .map(|c| ConditionStatus {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                        })
                        .collect()
                }),
            }),
        }
    }
}

impl From<&Service> for CachedService {
    fn from(s: &Service) -> Self {
        CachedService {
            metadata: lean(&s.metadata),
            spec: s.spec.as_ref().map(|s| Selector {
                selector: s.selector.clone(),
            }),
        }
    }
}

impl From<&HorizontalPodAutoscaler> for CachedAutoscaler {
    fn from(h: &HorizontalPodAutoscaler) -> Self {
        CachedAutoscaler {
            metadata: lean(&h.metadata),
            spec: h.spec.as_ref().map(|s| ScaleTarget {
                scale_target_ref: TargetName {
                    name: s.scale_target_ref.name.clone(),
                },
            }),
        }
    }
}

/// A cached slice is the same API resource as the full object: same URL, kind and scope.
macro_rules! same_resource {
    ($cached:ty, $full:ty) => {
        impl Resource for $cached {
            type DynamicType = ();
            type Scope = NamespaceResourceScope;

            fn kind(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::kind(dt)
            }
            fn group(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::group(dt)
            }
            fn version(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::version(dt)
            }
            fn plural(dt: &()) -> Cow<'_, str> {
                <$full as Resource>::plural(dt)
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// A serving pod as cached: identity, labels, whether it is ready, its IPs (where the collector
/// scrapes its monitor).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CachedPod {
    /// Lean metadata (see [`lean_meta`]), with `deletionTimestamp`.
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    /// Readiness and addresses.
    #[serde(default)]
    pub status: Option<PodAddress>,
}

/// The part of a Pod's status the collector reads.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodAddress {
    /// `status.podIP`.
    #[serde(default, rename = "podIP")]
    pub pod_ip: Option<String>,
    /// `status.podIPs`.
    #[serde(default, rename = "podIPs")]
    pub pod_ips: Option<Vec<PodIp>>,
    /// `status.conditions`, each reduced to type and status.
    #[serde(default)]
    pub conditions: Option<Vec<ConditionStatus>>,
}

/// One of `status.podIPs`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct PodIp {
    /// The address.
    pub ip: String,
}

impl CachedPod {
    /// Whether the `Ready` condition is true.
    pub fn ready(&self) -> bool {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    }

    /// The pod's first IP.
    pub fn ip(&self) -> Option<&str> {
        let status = self.status.as_ref()?;
        status
            .pod_ip
            .as_deref()
            .or_else(|| status.pod_ips.as_ref()?.first().map(|p| p.ip.as_str()))
    }
}

impl From<&Pod> for CachedPod {
    fn from(p: &Pod) -> Self {
        CachedPod {
            metadata: lean(&p.metadata),
            status: p.status.as_ref().map(|s| PodAddress {
                pod_ip: s.pod_ip.clone(),
                pod_ips: s
                    .pod_ips
                    .as_ref()
                    .map(|ips| ips.iter().map(|i| PodIp { ip: i.ip.clone() }).collect()),
                conditions: s.conditions.as_ref().map(|c| {
                    c.iter()
                        .map(|c| ConditionStatus {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                        })
                        .collect()
                }),
            }),
        }
    }
}

/// A retraining Job as cached: identity, labels, when it started and how it ended.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct CachedJob {
    /// Lean metadata (see [`lean_meta`]), with `creationTimestamp`.
    #[serde(deserialize_with = "lean_meta")]
    pub metadata: ObjectMeta,
    /// How it ran.
    #[serde(default)]
    pub status: Option<JobProgress>,
}

/// The part of a Job's status that says whether and how it finished.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    /// `status.completionTime`.
    #[serde(default)]
    pub completion_time: Option<Time>,
    /// `status.conditions` (`Complete`, `Failed`, …).
    #[serde(default)]
    pub conditions: Option<Vec<JobConditionSlice>>,
}

/// A Job condition: type, status, reason, message, when.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobConditionSlice {
    /// `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `status`.
    pub status: String,
    /// `reason`.
    #[serde(default)]
    pub reason: Option<String>,
    /// `message`.
    #[serde(default)]
    pub message: Option<String>,
    /// `lastTransitionTime`.
    #[serde(default)]
    pub last_transition_time: Option<Time>,
}

impl From<&k8s_openapi::api::batch::v1::Job> for CachedJob {
    fn from(j: &k8s_openapi::api::batch::v1::Job) -> Self {
        CachedJob {
            metadata: lean(&j.metadata),
            status: j.status.as_ref().map(|s| JobProgress {
                completion_time: s.completion_time.clone(),
                conditions: s.conditions.as_ref().map(|c| {
                    c.iter()
                        .map(|c| JobConditionSlice {
                            type_: c.type_.clone(),
                            status: c.status.clone(),
                            reason: c.reason.clone(),
                            message: c.message.clone(),
                            last_transition_time: c.last_transition_time.clone(),
                        })
                        .collect()
                }),
            }),
        }
    }
}

same_resource!(CachedJob, k8s_openapi::api::batch::v1::Job);
same_resource!(CachedPod, Pod);
same_resource!(CachedDeployment, Deployment);
same_resource!(CachedService, Service);
same_resource!(CachedAutoscaler, HorizontalPodAutoscaler);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A Deployment as the API server returns it: managedFields, a foreign annotation, a pod
    /// template, full conditions.
    fn served() -> serde_json::Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "fraud-abc", "namespace": "ml", "uid": "u1", "resourceVersion": "42",
                "generation": 3, "creationTimestamp": "2025-01-01T00:00:00Z",
                "labels": {"drover.dev/model": "fraud", "drover.dev/revision": "abc"},
                "annotations": {
                    "drover.dev/spec-hash": "h1",
                    "drover.dev/monitor-image": "m:1",
                    "deployment.kubernetes.io/revision": "1",
                    "kubectl.kubernetes.io/last-applied-configuration": "{\"big\": true}"
                },
                "ownerReferences": [{"apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment",
                    "name": "fraud", "uid": "md-uid", "controller": true}],
                "managedFields": [{"manager": "drover", "operation": "Apply", "apiVersion": "apps/v1",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"drover.dev/revision": "abc"}},
                "template": {"metadata": {"labels": {"drover.dev/revision": "abc"}},
                    "spec": {"containers": [{"name": "model", "image": "i:1"}]}}
            },
            "status": {
                "observedGeneration": 3, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                "availableReplicas": 2,
                "conditions": [{"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                    "message": "Deployment has minimum availability.",
                    "lastUpdateTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}]
            }
        })
    }

    #[test]
    fn parsing_keeps_what_is_read_and_drops_the_rest() {
        let d: CachedDeployment = serde_json::from_value(served()).unwrap();
        let annotations = d.metadata.annotations.as_ref().unwrap();
        assert_eq!(
            annotations.keys().collect::<Vec<_>>(),
            ["drover.dev/monitor-image", "drover.dev/spec-hash"]
        );
        assert!(d.metadata.managed_fields.is_none());
        assert_eq!(d.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(d.metadata.generation, Some(3));
        assert_eq!(
            d.metadata.owner_references.as_ref().unwrap()[0].uid,
            "md-uid"
        );
        assert_eq!(d.spec.as_ref().unwrap().replicas, Some(2));
        let status = d.status.as_ref().unwrap();
        assert_eq!(status.ready_replicas, Some(2));
        assert_eq!(
            status.conditions.as_ref().unwrap()[0],
            ConditionStatus {
                type_: "Available".into(),
                status: "True".into()
            }
        );
    }

    #[test]
    fn parsing_and_conversion_give_the_same_slice() {
        let full: Deployment = serde_json::from_value(served()).unwrap();
        let parsed: CachedDeployment = serde_json::from_value(served()).unwrap();
        assert_eq!(CachedDeployment::from(&full), parsed);

        let service = json!({"metadata": {"name": "fraud", "namespace": "ml",
            "annotations": {"drover.dev/spec-hash": "h2", "other": "x"}},
            "spec": {"selector": {"drover.dev/revision": "abc"}, "ports": [{"port": 80}]}});
        let full: Service = serde_json::from_value(service.clone()).unwrap();
        let parsed: CachedService = serde_json::from_value(service).unwrap();
        assert_eq!(CachedService::from(&full), parsed);

        let hpa = json!({"metadata": {"name": "fraud", "namespace": "ml", "annotations": null},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "fraud-abc"},
                "maxReplicas": 4},
            "status": {"currentReplicas": 2, "desiredReplicas": 2}});
        let full: HorizontalPodAutoscaler = serde_json::from_value(hpa.clone()).unwrap();
        let parsed: CachedAutoscaler = serde_json::from_value(hpa).unwrap();
        assert_eq!(CachedAutoscaler::from(&full), parsed);
        assert_eq!(parsed.spec.unwrap().scale_target_ref.name, "fraud-abc");
    }

    #[test]
    fn a_cached_model_keeps_its_control_annotations() {
        let mut md: crate::api::ModelDeployment = serde_json::from_value(json!({
            "apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": {"name": "fraud", "namespace": "ml", "annotations": {
                LAST_APPLIED: "{\"spec\": {}}", "drover.dev/pause": "true"},
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "spec": {"model": {"version": "1.0.0", "image": "i:1"}}
        }))
        .unwrap();
        strip_model(&mut md);
        assert!(md.metadata.managed_fields.is_none());
        assert_eq!(
            md.metadata.annotations.unwrap().keys().collect::<Vec<_>>(),
            ["drover.dev/pause"]
        );
    }

    #[test]
    fn same_url_as_the_full_kinds() {
        assert_eq!(
            CachedDeployment::url_path(&(), Some("ml")),
            Deployment::url_path(&(), Some("ml"))
        );
        assert_eq!(
            CachedService::url_path(&(), None),
            Service::url_path(&(), None)
        );
        assert_eq!(
            CachedAutoscaler::api_version(&()),
            HorizontalPodAutoscaler::api_version(&())
        );
        assert_eq!(CachedAutoscaler::kind(&()), "HorizontalPodAutoscaler");
    }
}
