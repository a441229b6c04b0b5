//! The revision of a ModelDeployment: a stable hash of what is served.
//!
//! The hash covers only the canonical, user-given fields of `spec.model`, `spec.pod`, the monitor
//! sidecar (`spec.monitoring.sidecar`) and the reference profile reference, plus a scheme
//! version; never builder output or server-side defaults. Fields equal to their default
//! and empty lists or maps are left out of the canonical form, so a field added to the API later
//! (with a default) leaves every existing hash alone, and a value the API server defaulted hashes
//! the same as one the user wrote. Upgrading Drover therefore never re-rolls every model. Golden
//! hashes are pinned in the tests: a change to them is a breaking change and needs a new scheme.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::{ModelDeploymentSpec, SidecarSpec};

/// Version of the canonical form; bump only together with a migration story.
pub const HASH_SCHEME: &str = "drover.dev/revision/v1";

/// Length of the hash in hex characters (like a ReplicaSet's pod-template-hash).
pub const HASH_LENGTH: usize = 10;

/// `spec.model` fields and the defaults a canonical form leaves out.
fn model_defaults() -> [(&'static str, Value); 3] {
    [
        ("port", Value::from(8080)),
        ("protocol", Value::from("json")),
        ("healthPath", Value::from("/health")),
    ]
}

/// The revision hash of a spec whose model needs no registry resolution (or whose resolution
/// is not known: see [`revision_with`]).
pub fn revision_of(spec: &ModelDeploymentSpec) -> String {
    revision_with(spec, None)
}

/// The revision hash of a spec whose `models:/NAME@ALIAS` uri resolved to `registry_version`:
/// the version is part of what is served, so an alias that moves makes a new revision (rolled
/// out like any other) instead of silently changing the files a running revision loads. Specs
/// without an alias hash as before.
pub fn revision_with(spec: &ModelDeploymentSpec, registry_version: Option<&str>) -> String {
    let mut canonical = canonical_form(spec);
    if let (Some(version), Value::Object(root)) = (registry_version, &mut canonical) {
        root.insert("registryVersion".into(), Value::from(version));
    }
    let mut hasher = Sha256::new();
    hasher.update(HASH_SCHEME.as_bytes());
    hasher.update(b"\n");
    hasher.update(canonical.to_string().as_bytes());
    let digest = hasher.finalize();
    let mut out = String::with_capacity(HASH_LENGTH);
    for byte in digest.iter() {
        out.push_str(&format!("{byte:02x}"));
        if out.len() >= HASH_LENGTH {
            break;
        }
    }
    out.truncate(HASH_LENGTH);
    out
}

/// The canonical JSON the hash is taken over (keys sorted, defaults and empties dropped).
pub fn canonical_form(spec: &ModelDeploymentSpec) -> Value {
    let mut model = serde_json::to_value(&spec.model).unwrap_or(Value::Null);
    if let Value::Object(fields) = &mut model {
        for (key, default) in model_defaults() {
            if fields.get(key) == Some(&default) {
                fields.remove(key);
            }
        }
    }
    let pod = serde_json::to_value(&spec.pod).unwrap_or(Value::Null);
    let mut root = Map::new();
    root.insert("model".into(), prune(model));
    let pod = prune(pod);
    if !is_empty(&pod) {
        root.insert("pod".into(), pod);
    }
    // The sidecar changes what clients get (floor, fallback, limits) and the profile belongs
    // to the model version: both are part of what is served. Fields equal to the sidecar's
    // defaults are left out, like the model's.
    let mut sidecar = serde_json::to_value(&spec.monitoring.sidecar).unwrap_or(Value::Null);
    let defaults = serde_json::to_value(SidecarSpec::default()).unwrap_or(Value::Null);
    if let (Value::Object(fields), Value::Object(defaults)) = (&mut sidecar, &defaults) {
        fields.retain(|k, v| defaults.get(k) != Some(v));
    }
    let sidecar = prune(sidecar);
    if !is_empty(&sidecar) {
        root.insert("sidecar".into(), sidecar);
    }
    // Feedback changes what clients get (a token header) and what the monitor accepts: part
    // of the revision. Thresholds are not (they only judge).
    if let Some(performance) = &spec.monitoring.performance {
        root.insert(
            "feedback".into(),
            serde_json::json!({
                "task": performance.task,
                "maxLabelAge": performance.max_label_age,
            }),
        );
    }
    if let Some(reference) = &spec.monitoring.reference {
        let reference = prune(serde_json::to_value(reference).unwrap_or(Value::Null));
        root.insert("reference".into(), reference);
    }
    Value::Object(root)
}

fn prune(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, prune(v)))
                .filter(|(_, v)| !is_empty(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(prune).collect()),
        other => other,
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelDeployment;

    fn spec(yaml: &str) -> ModelDeploymentSpec {
        let md: ModelDeployment = serde_saphyr::from_str(yaml).unwrap();
        md.spec
    }

    const MINIMAL: &str = r#"
apiVersion: drover.dev/v1alpha1
kind: ModelDeployment
metadata: {name: fraud}
spec:
  model: {version: "1.4.0", image: "registry.example.com/fraud:1.4.0"}
"#;

    #[test]
    fn feedback_settings_are_part_of_the_revision_thresholds_are_not() {
        let base = revision_of(&spec(MINIMAL));
        let with = |perf: &str| {
            revision_of(&spec(&format!(
                "{MINIMAL}  monitoring: {{performance: {perf}}}\n"
            )))
        };
        let on = with("{minAccuracy: 0.9}");
        assert_ne!(on, base, "turning feedback on changes what pods do");
        assert_eq!(
            with("{minAccuracy: 0.5, minLabels: 10}"),
            on,
            "thresholds only judge"
        );
        assert_ne!(with("{task: Regression}"), on);
        assert_ne!(with("{maxLabelAge: 24h}"), on);
    }

    #[test]
    fn golden_hashes_are_pinned() {
        // Changing these re-rolls every model in every cluster on upgrade: do not, without a
        // new HASH_SCHEME and a migration. Recomputed independently with Python:
        // sha256("drover.dev/revision/v1\n" + json.dumps(canonical, separators=(",", ":"), sort_keys=True))[:10]
        assert_eq!(revision_of(&spec(MINIMAL)), "a300d68b86");
        let with_pod = MINIMAL.to_string() + "  pod: {nodeSelector: {gpu: a100}}\n";
        assert_eq!(revision_of(&spec(&with_pod)), "0cab58325c");
    }

    /// `MINIMAL` with `uri: models:/fraud@champion` (registry `http://mlflow:5000`) resolved
    /// to version 3.
    const GOLDEN_ALIAS_V3: &str = "c0865c0139";

    #[test]
    fn model_sources_are_part_of_the_revision() {
        let base = revision_of(&spec(MINIMAL));
        let with_uri = MINIMAL.replace(
            "fraud:1.4.0\"}",
            "fraud:1.4.0\", uri: \"models:/fraud@champion\", registry: {trackingUri: \"http://mlflow:5000\"}}",
        );
        let aliased = spec(&with_uri);
        let (v3, v4) = (
            revision_with(&aliased, Some("3")),
            revision_with(&aliased, Some("4")),
        );
        assert_ne!(
            v3, v4,
            "an alias resolved to another version is another revision"
        );
        assert_eq!(v3, revision_with(&aliased, Some("3")));
        assert_ne!(base, revision_of(&aliased));
        // The checksum and unpacking change what is served; their absence changes nothing.
        let file = MINIMAL.replace(
            "fraud:1.4.0\"}",
            "fraud:1.4.0\", uri: \"s3://m/fraud.tar.gz\"}",
        );
        let checked = file.replace(
            "fraud.tar.gz\"}",
            "fraud.tar.gz\", storage: {unpack: true, sha256: \"ab\"}}",
        );
        assert_ne!(revision_of(&spec(&file)), revision_of(&spec(&checked)));
        let explicit_default = file.replace(
            "fraud.tar.gz\"}",
            "fraud.tar.gz\", storage: {unpack: false}}",
        );
        assert_eq!(
            revision_of(&spec(&file)),
            revision_of(&spec(&explicit_default))
        );
        assert_eq!(revision_with(&spec(MINIMAL), None), base);
        // Pinned like the golden hashes (recomputed with Python the same way, with
        // "registryVersion": "3" at the root of the canonical form).
        assert_eq!(v3, GOLDEN_ALIAS_V3);
    }

    #[test]
    fn sidecar_defaults_do_not_change_the_hash() {
        let explicit = MINIMAL.to_string()
            + "  monitoring: {sidecar: {belowFloor: Reject, logSampleRate: 0, logMaxBytes: 4096, maxBodyBytes: 10485760, upstreamTimeout: 30s}}\n";
        assert_eq!(revision_of(&spec(MINIMAL)), revision_of(&spec(&explicit)));
    }

    #[test]
    fn server_defaults_do_not_change_the_hash() {
        let defaulted = MINIMAL.replace(
            r#"image: "registry.example.com/fraud:1.4.0"}"#,
            r#"image: "registry.example.com/fraud:1.4.0", port: 8080, protocol: json, healthPath: /health, env: [], command: []}"#,
        );
        assert_eq!(revision_of(&spec(MINIMAL)), revision_of(&spec(&defaulted)));
    }

    #[test]
    fn fields_outside_what_is_served_do_not_change_the_hash() {
        let scaled = MINIMAL.to_string() + "  replicas: 7\n  rollout: {steps: [5, 50]}\n";
        assert_eq!(revision_of(&spec(MINIMAL)), revision_of(&spec(&scaled)));
    }

    #[test]
    fn what_is_served_changes_the_hash() {
        let base = revision_of(&spec(MINIMAL));
        for changed in [
            MINIMAL.to_string() + "  monitoring: {sidecar: {confidenceFloor: 0.5}}\n",
            MINIMAL.to_string() + "  monitoring: {reference: {configMapRef: {name: p}}}\n",
            MINIMAL.replace("1.4.0\"}", "1.4.0\", port: 9000}"),
            MINIMAL.replace("version: \"1.4.0\"", "version: \"1.4.1\""),
            MINIMAL.to_string() + "  pod: {serviceAccountName: reader}\n",
        ] {
            assert_ne!(base, revision_of(&spec(&changed)), "{changed}");
        }
    }
}
