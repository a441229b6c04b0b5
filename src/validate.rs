//! What only the controller can refuse in a spec.
//!
//! The CRD's schema and CEL rules refuse bad specs at `kubectl apply`; this repeats the checks
//! whose failure would otherwise become a panic or a nonsense plan (an object stored under an
//! older CRD, or written with validation off), and turns durations into numbers once.

use std::time::Duration;

use crate::api::{GoDuration, ModelDeploymentSpec};

/// The parsed, checked durations of a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validated {
    /// `spec.rollout.interval`.
    pub interval: Duration,
    /// `spec.rollout.progressDeadline`.
    pub progress_deadline: Duration,
    /// `spec.rollout.bakeTime`.
    pub bake_time: Duration,
    /// `spec.monitoring.scrapeInterval`.
    pub scrape_interval: Duration,
    /// `spec.monitoring.window`.
    pub window: Duration,
    /// `spec.rollout.analysis.maxLatencyP99`.
    pub max_latency_p99: Duration,
    /// `spec.monitoring.slo.latencyP99`, when set.
    pub slo_latency_p99: Option<Duration>,
}

/// Checks `spec`; every problem is reported, each naming its field.
pub fn validate(spec: &ModelDeploymentSpec) -> Result<Validated, Vec<String>> {
    let mut problems = Vec::new();
    let mut duration = |field: &str, d: &GoDuration, min: Duration| -> Duration {
        match d.parse() {
            Ok(v) if v >= min => v,
            Ok(_) => {
                problems.push(format!(
                    "{field} must be at least {}",
                    GoDuration::new(format!("{}s", min.as_secs()))
                ));
                min
            }
            Err(e) => {
                problems.push(format!("{field}: {e}"));
                min
            }
        }
    };
    let rollout = &spec.rollout;
    let validated = Validated {
        interval: duration(
            "spec.rollout.interval",
            &rollout.interval,
            Duration::from_secs(10),
        ),
        progress_deadline: duration(
            "spec.rollout.progressDeadline",
            &rollout.progress_deadline,
            Duration::from_secs(10),
        ),
        bake_time: duration("spec.rollout.bakeTime", &rollout.bake_time, Duration::ZERO),
        scrape_interval: duration(
            "spec.monitoring.scrapeInterval",
            &spec.monitoring.scrape_interval,
            Duration::from_secs(5),
        ),
        window: duration(
            "spec.monitoring.window",
            &spec.monitoring.window,
            Duration::from_secs(5),
        ),
        max_latency_p99: duration(
            "spec.rollout.analysis.maxLatencyP99",
            &rollout.analysis.max_latency_p99,
            Duration::from_millis(1),
        ),
        slo_latency_p99: spec.monitoring.slo.as_ref().and_then(|slo| {
            slo.latency_p99.as_ref().map(|d| {
                duration(
                    "spec.monitoring.slo.latencyP99",
                    d,
                    Duration::from_millis(1),
                )
            })
        }),
    };
    if let Some(retraining) = &spec.remediation.retraining {
        duration(
            "spec.remediation.retraining.cooldown",
            &retraining.cooldown,
            Duration::from_secs(60),
        );
    }
    if rollout.steps.is_empty() || rollout.steps.iter().any(|s| !(1..=99).contains(s)) {
        problems.push("spec.rollout.steps must be a non-empty list within 1..=99".into());
    }
    if rollout.steps.windows(2).any(|w| w[0] >= w[1]) {
        problems.push("spec.rollout.steps must be strictly increasing".into());
    }
    if let Some(a) = &spec.autoscaling
        && a.min_replicas > a.max_replicas
    {
        problems.push(
            "spec.autoscaling.minReplicas must not exceed spec.autoscaling.maxReplicas".into(),
        );
    }
    if !(1..=65535).contains(&spec.model.port) {
        problems.push("spec.model.port must be within 1..=65535".into());
    }
    if spec.model.image.trim().is_empty() {
        problems.push("spec.model.image must not be empty".into());
    }
    if spec.model.version.trim().is_empty() {
        problems.push("spec.model.version must not be empty".into());
    }
    if spec.replicas < 0 {
        problems.push("spec.replicas must not be negative".into());
    }
    model_source(&spec.model, &mut problems);
    if validated.progress_deadline < validated.interval {
        problems
            .push("spec.rollout.progressDeadline must be at least spec.rollout.interval".into());
    }
    if problems.is_empty() {
        Ok(validated)
    } else {
        Err(problems)
    }
}

/// `spec.model.uri` and what goes with it: a uri the initializer cannot fetch would otherwise
/// only fail inside every new pod.
fn model_source(model: &crate::api::ModelSpec, problems: &mut Vec<String>) {
    use crate::fetch::uri::ModelUri;
    let parsed = match model.uri.as_deref().map(ModelUri::parse) {
        None => None,
        Some(Ok(u)) => Some(u),
        Some(Err(e)) => {
            problems.push(format!("spec.model.uri: {}", e.why));
            return;
        }
    };
    if matches!(parsed, Some(ModelUri::Registry(_))) && model.registry.is_none() {
        problems
            .push("spec.model.registry is required when spec.model.uri is a models:/ URI".into());
    }
    if matches!(parsed, Some(ModelUri::MlflowArtifacts { .. })) && model.registry.is_none() {
        problems.push(
            "spec.model.registry is required when spec.model.uri is an mlflow-artifacts: URI"
                .into(),
        );
    }
    if let Some(storage) = &model.storage {
        if parsed.is_none() {
            problems.push("spec.model.storage needs spec.model.uri".into());
        }
        if let Some(sum) = &storage.sha256
            && let Err(why) = crate::fetch::checksum::parse_expected(sum)
        {
            problems.push(format!("spec.model.storage.sha256: {why}"));
        }
    }
    if let Some(registry) = &model.registry
        && !(registry.tracking_uri.starts_with("http://")
            || registry.tracking_uri.starts_with("https://"))
    {
        problems.push("spec.model.registry.trackingUri must be an http:// or https:// URL".into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ModelDeployment;

    fn spec(extra: &str) -> ModelDeploymentSpec {
        let yaml = format!(
            "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: m}}\nspec:\n  model: {{version: '1', image: img}}\n{extra}"
        );
        serde_saphyr::from_str::<ModelDeployment>(&yaml)
            .unwrap()
            .spec
    }

    #[test]
    fn defaults_are_valid() {
        let v = validate(&spec("")).unwrap();
        assert_eq!(v.interval, Duration::from_secs(60));
        assert_eq!(v.progress_deadline, Duration::from_secs(1800));
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let errs = validate(&spec(
            "  rollout: {steps: [50, 10], interval: 'soon'}\n  autoscaling: {minReplicas: 5, maxReplicas: 2}\n",
        ))
        .unwrap_err();
        let all = errs.join("\n");
        assert!(all.contains("spec.rollout.interval"), "{all}");
        assert!(all.contains("strictly increasing"), "{all}");
        assert!(all.contains("spec.autoscaling.minReplicas"), "{all}");
    }

    #[test]
    fn model_uris_are_checked() {
        let model = |m: &str| {
            let yaml = format!(
                "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: m}}\nspec:\n  model: {m}\n"
            );
            serde_saphyr::from_str::<ModelDeployment>(&yaml)
                .unwrap()
                .spec
        };
        assert!(
            validate(&model(
                "{version: '1', image: img, uri: 's3://b/k', storage: {sha256: 'ab'}}"
            ))
            .unwrap_err()[0]
                .contains("sha256")
        );
        assert!(validate(&model("{version: '1', image: img, uri: 'models:/fraud/latest', registry: {trackingUri: 'http://m'}}")).unwrap_err()[0].contains("not a version number"));
        assert!(
            validate(&model(
                "{version: '1', image: img, uri: 'models:/fraud@prod'}"
            ))
            .unwrap_err()[0]
                .contains("spec.model.registry is required")
        );
        assert!(
            validate(&model(
                "{version: '1', image: img, storage: {unpack: true}}"
            ))
            .unwrap_err()[0]
                .contains("needs spec.model.uri")
        );
        assert!(validate(&model("{version: '1', image: img, uri: 'models:/fraud@prod', registry: {trackingUri: 'http://mlflow:5000'}}")).is_ok());
        assert!(validate(&model("{version: '1', image: img, uri: 'pvc://claim/m'}")).is_ok());
    }
}
