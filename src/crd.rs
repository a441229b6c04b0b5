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

/// A Markdown reference of every ModelDeployment field (path, type, default, description),
/// generated from the CRD schema so it cannot drift from the code. Embedded Kubernetes types
/// are listed once, not expanded.
pub fn reference_markdown() -> String {
    let crd = model_deployment();
    let mut out = String::from(
        "# ModelDeployment field reference\n\nGenerated from the CRD by `drover crd --reference`; do not edit.\n\n| field | type | default | description |\n| --- | --- | --- | --- |\n",
    );
    let Some(schema) = crd
        .spec
        .versions
        .first()
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
    else {
        return out;
    };
    for root in ["spec", "status"] {
        if let Some(node) = schema.properties.as_ref().and_then(|p| p.get(root)) {
            reference_rows(node, root, &mut out);
        }
    }
    out
}

fn reference_rows(node: &JSONSchemaProps, path: &str, out: &mut String) {
    let embedded = EMBEDDED_KUBERNETES_TYPES
        .iter()
        .any(|p| p.join(".") == path);
    let mut type_ = node.type_.clone().unwrap_or_else(|| "object".into());
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &node.items {
        type_ = format!("[]{}", items.type_.clone().unwrap_or_default());
    }
    if let Some(values) = &node.enum_ {
        let names: Vec<String> = values
            .iter()
            .map(|v| v.0.to_string().replace('"', ""))
            .collect();
        type_ = format!("{type_} ({})", names.join(" \\| "));
    }
    let default = node
        .default
        .as_ref()
        .map(|d| {
            let text = d.0.to_string();
            if text.len() > 40 {
                "(object)".to_string()
            } else {
                format!("`{text}`")
            }
        })
        .unwrap_or_default();
    let description = node
        .description
        .clone()
        .unwrap_or_default()
        .replace('\n', " ")
        .replace('|', "\\|");
    let mut rules: Vec<String> = node
        .x_kubernetes_validations
        .iter()
        .flatten()
        .filter_map(|r| r.message.clone())
        .collect();
    if let Some(min) = node.minimum {
        rules.push(format!("minimum {min}"));
    }
    if let Some(max) = node.maximum {
        rules.push(format!("maximum {max}"));
    }
    let rules = if rules.is_empty() {
        String::new()
    } else {
        format!(" Rules: {}.", rules.join("; "))
    };
    let suffix = if embedded {
        " (Kubernetes type, passed through)"
    } else {
        ""
    };
    out.push_str(&format!(
        "| `{path}` | {type_} | {default} | {description}{rules}{suffix} |\n"
    ));
    if embedded {
        return;
    }
    if let Some(props) = &node.properties {
        for (name, child) in props {
            reference_rows(child, &format!("{path}.{name}"), out);
        }
    }
    if let Some(JSONSchemaPropsOrArray::Schema(items)) = &node.items
        && items.properties.is_some()
    {
        for (name, child) in items.properties.iter().flatten() {
            reference_rows(child, &format!("{path}[].{name}"), out);
        }
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
