//! The CRD as the API server will see it: checked in, structural, small enough for plain
//! `kubectl apply`, and refusing every invalid example with a message that names the field
//! (schema checks with a JSON-schema validator, CEL rules with kube's client-side CEL).

use std::path::Path;

use drover::api::ModelDeployment;
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = drover::crd::model_deployment();
    serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap()
}

#[test]
fn checked_in_crds_match_the_code() {
    let checked_in = std::fs::read_to_string("crds/drover.dev_modeldeployments.yaml").unwrap();
    assert!(
        checked_in == drover::crd::to_yaml().unwrap(),
        "crds/ is stale: run `cargo run -- crd > crds/drover.dev_modeldeployments.yaml`"
    );
}

#[test]
fn checked_in_field_reference_matches_the_code() {
    let checked_in = std::fs::read_to_string("docs/api-reference.md").unwrap();
    assert!(
        checked_in == drover::crd::reference_markdown(),
        "docs/api-reference.md is stale: run `cargo run -- crd --reference > docs/api-reference.md`"
    );
}

#[test]
fn checked_in_rbac_matches_the_code() {
    let checked_in = std::fs::read_to_string("deploy/base/rbac.yaml").unwrap();
    assert!(
        checked_in == drover::rbac::to_yaml("drover", "drover-system", &[]).unwrap(),
        "deploy/base/rbac.yaml is stale: run `cargo run -- rbac > deploy/base/rbac.yaml`"
    );
}

/// Structural-schema rules the API server enforces (and the ones this project adds).
fn check_structural(node: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(obj) = node.as_object() else { return };
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    if !obj.contains_key("type") && !preserve && !int_or_string {
        problems.push(format!("{path}: no type"));
    }
    if let Some(format) = obj.get("format").and_then(Value::as_str)
        && format.starts_with("uint")
    {
        problems.push(format!("{path}: format {format} is not accepted"));
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        if let Some(branches) = obj.get(key).and_then(Value::as_array) {
            for b in branches {
                for forbidden in [
                    "type",
                    "default",
                    "description",
                    "nullable",
                    "additionalProperties",
                ] {
                    if b.get(forbidden).is_some() {
                        problems.push(format!(
                            "{path}.{key}: {forbidden} inside a logical junctor"
                        ));
                    }
                }
            }
        }
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            check_structural(v, &format!("{path}.{k}"), problems);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}[]"), problems);
    }
    if let Some(ap) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        check_structural(ap, &format!("{path}{{}}"), problems);
    }
}

#[test]
fn the_schema_is_structural() {
    let mut problems = Vec::new();
    check_structural(&schema(), "", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
    let conditions = &schema()["properties"]["status"]["properties"]["conditions"];
    assert_eq!(conditions["x-kubernetes-list-type"], json!("map"));
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn the_crd_fits_plain_kubectl_apply() {
    let bytes = serde_json::to_vec(&drover::crd::model_deployment())
        .unwrap()
        .len();
    // kubectl's last-applied-configuration annotation: 256 KiB for all annotations together.
    assert!(bytes < 256 * 1024 * 3 / 4, "CRD is {bytes} bytes");
    println!("CRD JSON size: {bytes} bytes");
}

/// The openAPIV3Schema as a JSON Schema a standard validator reads (nullable → null allowed;
/// Kubernetes extensions dropped).
fn as_json_schema(node: &Value) -> Value {
    match node {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            for (k, v) in map {
                if k.starts_with("x-kubernetes-") || k == "nullable" || k == "format" {
                    continue;
                }
                out.insert(k.clone(), as_json_schema(v));
            }
            if map.get("nullable") == Some(&json!(true))
                && let Some(t) = out.get("type").cloned()
            {
                out.insert("type".into(), json!([t, "null"]));
            }
            if map.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
                out.insert("type".into(), json!(["integer", "string"]));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(as_json_schema).collect()),
        other => other.clone(),
    }
}

/// Every refusal the API server would give for `object` (schema first, then CEL).
fn refusals(object: &Value, old: Option<&Value>) -> Vec<String> {
    let schema = schema();
    let validator = jsonschema::validator_for(&as_json_schema(&schema)).unwrap();
    let mut out: Vec<String> = validator
        .iter_errors(object)
        .map(|e| {
            let path = e
                .instance_path()
                .to_string()
                .trim_start_matches('/')
                .replace('/', ".");
            format!("{path}: {e}")
        })
        .collect();
    if out.is_empty()
        && let Err(errors) = kube::core::cel::Validator::new().validate(&schema, object, old)
    {
        out.extend(errors.iter().map(|e| e.to_string()));
    }
    out
}

fn yaml_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_saphyr::from_multiple::<Value>(&text).unwrap()
}

#[test]
fn every_example_is_accepted_and_renders() {
    let files = yaml_files("examples");
    assert!(files.len() >= 2, "a minimal and a full example");
    for file in files {
        for doc in documents(&file) {
            let problems = refusals(&doc, None);
            assert!(problems.is_empty(), "{}: {problems:#?}", file.display());
            let md: ModelDeployment = serde_json::from_value(doc).unwrap();
            drover::render::render(&md).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        }
    }
}

#[test]
fn every_invalid_example_is_refused_naming_the_field() {
    let files = yaml_files("examples/invalid");
    assert!(files.len() >= 10, "the invalid examples cover every rule");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{}: first line must be `# expect: <text>`", file.display()));
        for doc in documents(&file) {
            let problems = refusals(&doc, None);
            assert!(
                problems.iter().any(|p| p.contains(expect)),
                "{}: expected a refusal containing {expect:?}, got {problems:#?}",
                file.display()
            );
        }
    }
}

#[test]
fn changing_the_image_without_the_version_is_refused() {
    let old = json!({
        "apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "m"},
        "spec": {"model": {"version": "1.0.0", "image": "example/model:1.0.0"}}
    });
    let mut new = old.clone();
    new["spec"]["model"]["image"] = json!("example/model:1.0.1");
    let problems = refusals(&new, Some(&old));
    assert!(
        problems
            .iter()
            .any(|p| p.contains("spec.model.version must change when spec.model.image changes")),
        "{problems:#?}"
    );
    new["spec"]["model"]["version"] = json!("1.0.1");
    assert!(refusals(&new, Some(&old)).is_empty());
}
