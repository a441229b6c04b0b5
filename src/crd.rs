//! The CustomResourceDefinitions Drover installs, printed by `drover crd` and checked in under
//! `crds/`.
//!
//! The derived CRD is post-processed in one place: descriptions inside embedded Kubernetes types
//! are stripped (a JobTemplateSpec alone is ~350 KB with them, and plain `kubectl apply` stores
//! the whole object in a 256 KiB annotation), while Drover's own field docs stay.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

use crate::api::ModelDeployment;

/// Fields (paths from the version's `openAPIV3Schema`) whose types come from Kubernetes itself:
/// their own description stays, everything below loses its description.
const EMBEDDED_KUBERNETES_TYPES: &[&[&str]] = &[
    &["spec", "model", "env"],
    &["spec", "model", "resources"],
    &["spec", "pod", "tolerations"],
    &["spec", "pod", "affinity"],
    &["spec", "pod", "imagePullSecrets"],
    &["spec", "pod", "volumes"],
    &["spec", "pod", "volumeMounts"],
    &["spec", "autoscaling", "metrics"],
    &["spec", "autoscaling", "behavior"],
    &["spec", "remediation", "retraining", "jobTemplate"],
];

/// Most bytes the compact JSON of one CRD may take: `kubectl apply` (client-side) keeps it in
/// the `last-applied-configuration` annotation, capped at 256 KiB in total; keep headroom.
pub const MAX_CRD_BYTES: usize = 200 * 1024;

/// Every CRD Drover owns, ready to apply.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![model_deployment()]
}

/// The ModelDeployment CRD.
pub fn model_deployment() -> CustomResourceDefinition {
    let mut crd = ModelDeployment::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        {
            for path in EMBEDDED_KUBERNETES_TYPES {
                if let Some(node) = find(schema, path) {
                    strip_nested_descriptions(node);
                }
            }
        }
    }
    crd
}

/// All CRDs as one multi-document YAML stream, as checked in under `crds/`.
pub fn to_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&crd)?);
    }
    Ok(out)
}

fn find<'a>(mut node: &'a mut JSONSchemaProps, path: &[&str]) -> Option<&'a mut JSONSchemaProps> {
    for key in path {
        node = node.properties.as_mut()?.get_mut(*key)?;
    }
    Some(node)
}

fn strip_nested_descriptions(node: &mut JSONSchemaProps) {
    for_each_child(node, &mut |child| {
        child.description = None;
        strip_nested_descriptions(child);
    });
}

fn for_each_child(node: &mut JSONSchemaProps, f: &mut dyn FnMut(&mut JSONSchemaProps)) {
    if let Some(props) = node.properties.as_mut() {
        props.values_mut().for_each(&mut *f);
    }
    match node.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(s)) => f(s),
        Some(JSONSchemaPropsOrArray::Schemas(v)) => v.iter_mut().for_each(&mut *f),
        None => {}
    }
    if let Some(JSONSchemaPropsOrBool::Schema(s)) = node.additional_properties.as_mut() {
        f(s);
    }
    for list in [&mut node.all_of, &mut node.any_of, &mut node.one_of]
        .into_iter()
        .flatten()
    {
        list.iter_mut().for_each(&mut *f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_in_the_last_applied_annotation() {
        for crd in all() {
            let bytes = serde_json::to_vec(&crd).unwrap().len();
            assert!(
                bytes < MAX_CRD_BYTES,
                "{} is {bytes} bytes",
                crd.metadata.name.unwrap_or_default()
            );
        }
    }

    #[test]
    fn keeps_drover_docs_and_strips_kubernetes_ones() {
        let json = serde_json::to_string(&model_deployment()).unwrap();
        assert!(json.contains("Traffic percent of the canary per step"));
        // A description deep inside the embedded PodSpec of the retraining JobTemplateSpec.
        assert!(
            !json.contains("terminationGracePeriodSeconds is"),
            "embedded docs left in"
        );
    }
}
