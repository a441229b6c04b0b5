//! The CronJob `<name>-batch` of scheduled batch scoring (`spec.batch`): the serving model's
//! image, run over `input` into `output` on a schedule, with the model's environment, pod
//! settings and Pod Security "restricted".
//!
//! Its pods carry `drover.dev/batch-of: <name>`, never `drover.dev/model`: the model's Service
//! and NetworkPolicy select serving pods by that label alone.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use super::retrain::{fill_container_security, fill_pod_security};
use super::{child_meta, stamp_spec_hash};
use crate::api::{BatchConcurrency, ModelDeployment};
use crate::naming::{self, LABEL_BATCH, LABEL_BATCH_OF, LABEL_MANAGED_BY, MANAGED_BY};

/// Where the run reads from.
pub const ENV_INPUT: &str = "DROVER_BATCH_INPUT";
/// Where the run writes to.
pub const ENV_OUTPUT: &str = "DROVER_BATCH_OUTPUT";
/// The scoring container's name.
pub const CONTAINER: &str = "score";

/// Seconds of `spec.batch.deadline`, or two hours if it cannot be read.
fn deadline(spec: &crate::api::BatchSpec) -> i64 {
    spec.deadline
        .parse()
        .ok()
        .map(|d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1))
        .unwrap_or(2 * 3600)
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..EnvVar::default()
    }
}

/// The CronJob, or `None` without `spec.batch`. With `spec.model.uri`, each run fetches the
/// model first, as a serving pod does: `fetch_image` is Drover's image, `registry_version` the
/// version an alias resolved to.
pub fn cron_job(
    md: &ModelDeployment,
    fetch_image: &str,
    registry_version: Option<&str>,
) -> Option<CronJob> {
    let batch = md.spec.batch.as_ref()?;
    let model = &md.spec.model;
    let pod = &md.spec.pod;
    let name = md.name_any();

    let mut env_vars = vec![
        env("MODEL_NAME", &name),
        env("MODEL_VERSION", &model.version),
    ];
    if let Some(uri) = &model.uri {
        env_vars.push(env("MODEL_URI", uri));
    }
    let files = super::deployment::model_files(md, fetch_image, registry_version);
    env_vars.extend(files.as_ref().map(|f| f.model_path.clone()));
    env_vars.extend(model.env.iter().cloned());
    // Drover's own last, so they win over a same-named entry of spec.model.env.
    env_vars.retain(|e| e.name != ENV_INPUT && e.name != ENV_OUTPUT);
    env_vars.push(env(ENV_INPUT, &batch.input));
    env_vars.push(env(ENV_OUTPUT, &batch.output));

    let mut container = Container {
        name: CONTAINER.into(),
        image: Some(model.image.clone()),
        command: (!batch.command.is_empty()).then(|| batch.command.clone()),
        args: (!batch.args.is_empty()).then(|| batch.args.clone()),
        env: Some(env_vars),
        resources: batch.resources.clone().or_else(|| model.resources.clone()),
        volume_mounts: {
            let mut mounts: Vec<_> = files
                .as_ref()
                .map(|f| f.mount.clone())
                .into_iter()
                .collect();
            mounts.extend(pod.volume_mounts.iter().cloned());
            (!mounts.is_empty()).then_some(mounts)
        },
        ..Container::default()
    };
    fill_container_security(&mut container);
    let mut volumes: Vec<_> = files
        .as_ref()
        .map(|f| f.volume.clone())
        .into_iter()
        .collect();
    volumes.extend(pod.volumes.iter().cloned());
    let init_containers: Vec<_> = files.and_then(|f| f.init).into_iter().collect();
    let mut pod_spec = PodSpec {
        init_containers: (!init_containers.is_empty()).then_some(init_containers),
        containers: vec![container],
        restart_policy: Some("Never".into()),
        volumes: (!volumes.is_empty()).then_some(volumes),
        ..super::deployment::pod_settings(md)
    };
    fill_pod_security(&mut pod_spec);

    let mut pod_labels = pod.labels.clone();
    pod_labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    pod_labels.insert(LABEL_BATCH_OF.into(), name.clone());
    pod_labels.insert(LABEL_BATCH.into(), "true".into());
    pod_labels.remove(naming::LABEL_MODEL);

    let mut job_labels = naming::common_labels(md);
    job_labels.insert(LABEL_BATCH.into(), "true".into());

    let mut cron = CronJob {
        metadata: child_meta(md, naming::batch_cron(&name)),
        spec: Some(CronJobSpec {
            schedule: batch.schedule.trim().to_string(),
            time_zone: batch.time_zone.clone(),
            concurrency_policy: Some(
                match batch.concurrency_policy {
                    BatchConcurrency::Forbid => "Forbid",
                    BatchConcurrency::Replace => "Replace",
                    BatchConcurrency::Allow => "Allow",
                }
                .into(),
            ),
            suspend: Some(batch.suspend),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            // A run missed by more than ten minutes is skipped, not started late.
            starting_deadline_seconds: Some(600),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(job_labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(batch.backoff_limit.clamp(0, 10)),
                    active_deadline_seconds: Some(deadline(batch)),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            annotations: (!pod.annotations.is_empty())
                                .then(|| pod.annotations.clone()),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod_spec),
                    },
                    ..JobSpec::default()
                }),
            },
        }),
        status: None,
    };
    stamp_spec_hash(&mut cron, |c| &mut c.metadata);
    Some(cron)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(batch: &str) -> ModelDeployment {
        let yaml = format!(
            "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: u-1}}\nspec:\n  model: {{version: '1.0.0', image: 'fraud:1.0.0', uri: 's3://m/1', env: [{{name: DROVER_BATCH_INPUT, value: wrong}}, {{name: WORKERS, value: '2'}}]}}\n  pod: {{labels: {{team: risk, drover.dev/model: nope}}, nodeSelector: {{pool: batch}}}}\n{batch}"
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    #[test]
    fn a_run_fetches_the_model_first_as_a_serving_pod_does() {
        let m = md("  batch: {schedule: '@daily', input: 's3://in/', output: 's3://out/'}\n");
        let cron = cron_job(&m, "drover:1", None).unwrap();
        let pod = cron
            .spec
            .unwrap()
            .job_template
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.name, super::super::deployment::FETCH_CONTAINER);
        assert_eq!(init.image.as_deref(), Some("drover:1"));
        assert!(
            init.args
                .as_ref()
                .unwrap()
                .contains(&"--uri=s3://m/1".to_string())
        );
        let c = &pod.containers[0];
        assert_eq!(
            c.volume_mounts.as_ref().unwrap()[0].mount_path,
            "/mnt/models"
        );
        assert!(
            c.env
                .iter()
                .flatten()
                .any(|e| e.name == "MODEL_PATH" && e.value.as_deref() == Some("/mnt/models/1"))
        );
        assert!(pod.volumes.unwrap().iter().any(|v| v.empty_dir.is_some()));
    }

    #[test]
    fn no_batch_no_cron_job() {
        assert!(cron_job(&md(""), "drover:1", None).is_none());
    }

    #[test]
    fn the_cron_job_runs_the_model_image_over_input_and_output() {
        let m = md(
            "  batch: {schedule: '0 2 * * *', input: 's3://in/', output: 's3://out/', args: [--batch], deadline: 30m, concurrencyPolicy: Replace}\n",
        );
        let cron = cron_job(&m, "drover:1", None).unwrap();
        assert_eq!(cron.metadata.name.as_deref(), Some("fraud-batch"));
        assert!(cron.metadata.owner_references.as_ref().unwrap()[0].controller == Some(true));
        let spec = cron.spec.unwrap();
        assert_eq!(spec.schedule, "0 2 * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Replace"));
        assert_eq!(spec.suspend, Some(false));
        let job = spec.job_template.spec.unwrap();
        assert_eq!(job.active_deadline_seconds, Some(1800));
        assert_eq!(job.backoff_limit, Some(1));
        let labels = spec.job_template.metadata.unwrap().labels.unwrap();
        assert_eq!(labels[LABEL_BATCH], "true");
        assert_eq!(
            labels[naming::LABEL_MODEL],
            "fraud",
            "the Job maps to its model"
        );
        let template = job.template;
        let pod_labels = template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels[LABEL_BATCH_OF], "fraud");
        assert_eq!(pod_labels["team"], "risk");
        assert!(
            !pod_labels.contains_key(naming::LABEL_MODEL),
            "never selected by the Service"
        );
        let pod = template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.node_selector.unwrap()["pool"], "batch");
        assert_eq!(pod.security_context.unwrap().run_as_non_root, Some(true));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("fraud:1.0.0"));
        assert_eq!(c.args.as_ref().unwrap(), &vec!["--batch".to_string()]);
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .allow_privilege_escalation,
            Some(false)
        );
        let env = c.env.as_ref().unwrap();
        let value = |n: &str| {
            env.iter()
                .filter(|e| e.name == n)
                .map(|e| e.value.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            value(ENV_INPUT),
            vec!["s3://in/".to_string()],
            "Drover's value, once"
        );
        assert_eq!(value(ENV_OUTPUT), vec!["s3://out/".to_string()]);
        assert_eq!(value("MODEL_URI"), vec!["s3://m/1".to_string()]);
        assert_eq!(value("WORKERS"), vec!["2".to_string()]);
    }
}
