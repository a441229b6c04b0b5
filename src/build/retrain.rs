//! The retraining Job `<name>-retrain-<minutes>` (started on drift) and the CronJob
//! `<name>-cron` (when `retraining.schedule` is set), both from
//! `spec.remediation.retraining.jobTemplate`.
//!
//! The template is the user's: Drover adds what it owes the run (the trigger in the
//! environment, labels, an owner, a deadline) and fills Pod Security "restricted" settings only
//! where the template leaves them unset, so a template that needs more (root, a capability)
//! says so and is obeyed. An image that runs as root must set `runAsUser` (or
//! `runAsNonRoot: false`) in the template, or the kubelet refuses to start it and the run fails
//! at its deadline.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EnvVar, EnvVarSource, ObjectFieldSelector, PodSecurityContext,
    PodSpec, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;
use serde_json::Value;

use super::{child_meta, stamp_spec_hash};
use crate::api::{ModelDeployment, RetrainingSpec};
use crate::naming::{
    self, ANNOTATION_TRIGGER_REASON, LABEL_MANAGED_BY, LABEL_MODEL, LABEL_RETRAINING,
    LABEL_RETRAINING_OF, LABEL_REVISION, MANAGED_BY,
};
use crate::retrain::TriggerReason;

/// `Drift` or `Scheduled`.
pub const ENV_TRIGGER_REASON: &str = "DROVER_TRIGGER_REASON";
/// The drift report as JSON (`{}` for a scheduled run), at most [`MAX_TRIGGER_REPORT`] bytes.
pub const ENV_TRIGGER_REPORT: &str = "DROVER_TRIGGER_REPORT";
/// The ModelDeployment's name.
pub const ENV_MODEL_NAME: &str = "DROVER_MODEL_NAME";
/// The ModelDeployment's namespace.
pub const ENV_MODEL_NAMESPACE: &str = "DROVER_MODEL_NAMESPACE";
/// `spec.model.version` of the model being retrained.
pub const ENV_MODEL_VERSION: &str = "DROVER_MODEL_VERSION";
/// `spec.model.image` of the model being retrained.
pub const ENV_MODEL_IMAGE: &str = "DROVER_MODEL_IMAGE";
/// The Job's own name (to tag what the run produces).
pub const ENV_JOB_NAME: &str = "DROVER_JOB_NAME";

/// Longest `DROVER_TRIGGER_REPORT`. Linux refuses to start a process with a single environment
/// string over 128 KiB (`MAX_ARG_STRLEN`), and the value is copied into every container of a
/// pod stored in etcd; 32 KiB leaves room for both. A longer report is replaced by
/// `{"truncated": true, "bytes": <its length>, "keys": [<its top-level keys>]}`, so the run
/// still learns that it was triggered and what the report held.
pub const MAX_TRIGGER_REPORT: usize = 32 * 1024;

/// The label the Job controller puts on every pod of a Job (Kubernetes 1.27 and later).
const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// How long a run may take when `retraining.timeout` cannot be read (the spec's default): a
/// Job without a deadline could hold retraining forever.
const DEFAULT_DEADLINE_SECONDS: i64 = 6 * 3600;

/// Why a run starts and what it is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// Drift or the schedule.
    pub reason: TriggerReason,
    /// The drift report as JSON (`{}` when scheduled).
    pub report: String,
}

/// Where the run learns its Job's name.
enum JobNameSource<'a> {
    /// Drover names the Job.
    Known(&'a str),
    /// The CronJob controller names each Job; the pod reads the name from the label the Job
    /// controller puts on its pods.
    FromPodLabel,
}

/// The retraining Job `name`, started for `trigger`; `None` when the spec has no
/// `remediation.retraining`. A template without containers still builds: the API server
/// refuses it, and the controller records the refusal.
pub fn job(md: &ModelDeployment, name: &str, trigger: &Trigger) -> Option<Job> {
    let retraining = md.spec.remediation.retraining.as_ref()?;
    let (template_meta, spec) = job_template(md, retraining, trigger, JobNameSource::Known(name));
    let mut metadata = child_meta(md, name.to_string());
    metadata.labels = template_meta.labels;
    metadata.annotations = template_meta.annotations;
    let mut job = Job {
        metadata,
        spec: Some(spec),
        status: None,
    };
    stamp_spec_hash(&mut job, |j| &mut j.metadata);
    Some(job)
}

/// The CronJob `<name>-cron` of scheduled retraining; `None` without `retraining.schedule`.
/// Its Jobs are built as [`job`] builds one, with reason `Scheduled` and report `{}`.
pub fn cron_job(md: &ModelDeployment) -> Option<CronJob> {
    let retraining = md.spec.remediation.retraining.as_ref()?;
    let schedule = retraining
        .schedule
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())?;
    let trigger = Trigger {
        reason: TriggerReason::Scheduled,
        report: "{}".into(),
    };
    let (template_meta, spec) = job_template(md, retraining, &trigger, JobNameSource::FromPodLabel);
    let history = retraining.history_limit.clamp(0, 100);
    let mut cron = CronJob {
        metadata: child_meta(md, naming::retrain_cron(&md.name_any())),
        spec: Some(CronJobSpec {
            schedule: schedule.to_string(),
            time_zone: retraining.time_zone.clone(),
            // One scheduled run at a time, as for drift: a run still going when the next is due
            // means the schedule is too tight, and two would compete for the same resources.
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(history),
            failed_jobs_history_limit: Some(history),
            // A run missed by more than five minutes (control plane down) is skipped, not
            // started late; without a deadline, over 100 missed runs stop the CronJob for good.
            starting_deadline_seconds: Some(300),
            job_template: JobTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(spec),
            },
            suspend: None,
        }),
        status: None,
    };
    stamp_spec_hash(&mut cron, |c| &mut c.metadata);
    Some(cron)
}

/// The Job's labels and annotations, and its spec, from the template.
fn job_template(
    md: &ModelDeployment,
    retraining: &RetrainingSpec,
    trigger: &Trigger,
    job_name: JobNameSource<'_>,
) -> (ObjectMeta, JobSpec) {
    let model = md.name_any();
    let template_meta = retraining.job_template.metadata.clone().unwrap_or_default();

    // The template's labels first, so Drover's own keys always win.
    let mut labels = template_meta.labels.unwrap_or_default();
    labels.extend(naming::common_labels(md));
    labels.insert(LABEL_RETRAINING.into(), trigger.reason.label_value().into());
    let mut annotations = template_meta.annotations.unwrap_or_default();
    annotations.insert(
        ANNOTATION_TRIGGER_REASON.into(),
        trigger.reason.as_str().into(),
    );
    let meta = ObjectMeta {
        labels: Some(labels),
        annotations: Some(annotations),
        ..ObjectMeta::default()
    };

    let mut spec = retraining.job_template.spec.clone().unwrap_or_default();
    // Drover reads finished Jobs (their result, their start for the budget) and deletes those
    // beyond `historyLimit` itself; a TTL could remove a run before its result is read.
    spec.ttl_seconds_after_finished = None;
    // A run is expensive: one retry covers a node lost mid-run, more would multiply the cost of
    // a run that is simply broken. The template may ask for more.
    spec.backoff_limit.get_or_insert(1);
    spec.active_deadline_seconds
        .get_or_insert_with(|| deadline_seconds(retraining));

    let pod_meta = spec
        .template
        .metadata
        .get_or_insert_with(ObjectMeta::default);
    let pod_labels = pod_meta.labels.get_or_insert_with(BTreeMap::new);
    // The model's Service (during a replica-ratio split) and its NetworkPolicy select pods by
    // `drover.dev/model` alone: a training pod must never carry it, nor a revision.
    pod_labels.remove(LABEL_MODEL);
    pod_labels.remove(LABEL_REVISION);
    // Managed-by puts the pods in the operator's pod watch; the two others find a model's runs.
    pod_labels.insert(LABEL_MANAGED_BY.into(), MANAGED_BY.into());
    pod_labels.insert(LABEL_RETRAINING_OF.into(), model.clone());
    pod_labels.insert(LABEL_RETRAINING.into(), trigger.reason.label_value().into());

    let env = trigger_env(md, trigger, job_name);
    let pod = spec.template.spec.get_or_insert_with(PodSpec::default);
    pod.restart_policy.get_or_insert_with(|| "Never".into());
    // Windows pods may not carry the Linux settings at all (the API server refuses them).
    let windows = pod.os.as_ref().is_some_and(|os| os.name == "windows");
    if !windows {
        fill_pod_security(pod);
    }
    for container in pod
        .containers
        .iter_mut()
        .chain(pod.init_containers.iter_mut().flatten())
    {
        set_env(container, &env);
        if !windows {
            fill_container_security(container);
        }
    }
    (meta, spec)
}

/// `retraining.timeout` in seconds (at least one, as the API requires).
fn deadline_seconds(retraining: &RetrainingSpec) -> i64 {
    match retraining.timeout.parse() {
        Ok(timeout) => i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX).max(1),
        Err(_) => DEFAULT_DEADLINE_SECONDS,
    }
}

fn trigger_env(
    md: &ModelDeployment,
    trigger: &Trigger,
    job_name: JobNameSource<'_>,
) -> Vec<EnvVar> {
    let value = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        value_from: None,
    };
    let job_name = match job_name {
        JobNameSource::Known(name) => value(ENV_JOB_NAME, name.to_string()),
        // The pod's own name is the Job's plus a random suffix; the Job controller labels every
        // pod with the Job's name (unless the template uses `manualSelector`, when this is empty).
        JobNameSource::FromPodLabel => EnvVar {
            name: ENV_JOB_NAME.into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: None,
                    field_path: format!("metadata.labels['{JOB_NAME_LABEL}']"),
                }),
                ..EnvVarSource::default()
            }),
        },
    };
    vec![
        value(ENV_TRIGGER_REASON, trigger.reason.as_str().into()),
        value(ENV_TRIGGER_REPORT, capped_report(&trigger.report)),
        value(ENV_MODEL_NAME, md.name_any()),
        value(ENV_MODEL_NAMESPACE, md.namespace().unwrap_or_default()),
        value(ENV_MODEL_VERSION, md.spec.model.version.clone()),
        value(ENV_MODEL_IMAGE, md.spec.model.image.clone()),
        job_name,
    ]
}

/// Puts Drover's variables first and drops the template's entries of the same names: Drover's
/// values are the truth about the trigger, and a template variable may refer to them as
/// `$(DROVER_MODEL_NAME)`, which Kubernetes expands only from entries listed before it.
/// (`env` also wins over `envFrom`, so a ConfigMap cannot override them either.)
fn set_env(container: &mut Container, drover: &[EnvVar]) {
    let template = container.env.take().unwrap_or_default();
    let mut env = drover.to_vec();
    env.extend(
        template
            .into_iter()
            .filter(|e| drover.iter().all(|d| d.name != e.name)),
    );
    container.env = Some(env);
}

/// The report, or a short JSON saying it was cut (see [`MAX_TRIGGER_REPORT`]).
fn capped_report(report: &str) -> String {
    if report.len() <= MAX_TRIGGER_REPORT {
        return report.to_string();
    }
    // Bounded: at most 64 keys of at most 128 characters each.
    let keys: Vec<String> = match serde_json::from_str::<Value>(report) {
        Ok(Value::Object(map)) => map
            .keys()
            .take(64)
            .map(|k| k.chars().take(128).collect())
            .collect(),
        _ => Vec::new(),
    };
    serde_json::json!({
        "truncated": true,
        "bytes": report.len(),
        "keys": keys,
    })
    .to_string()
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".into(),
        ..SeccompProfile::default()
    }
}

/// `runAsNonRoot` and the `RuntimeDefault` seccomp profile, where the template is silent.
pub(crate) fn fill_pod_security(pod: &mut PodSpec) {
    // A template that asks for uid 0 anywhere would be refused by the kubelet under
    // runAsNonRoot: its request stands.
    let root = |sc: Option<&SecurityContext>| sc.and_then(|s| s.run_as_user) == Some(0);
    let wants_root = pod.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0)
        || pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .any(|c| root(c.security_context.as_ref()));
    let sc = pod
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    if !wants_root {
        sc.run_as_non_root.get_or_insert(true);
    }
    sc.seccomp_profile.get_or_insert_with(runtime_default);
}

/// `allowPrivilegeEscalation: false` and `capabilities.drop: [ALL]`, where the template is
/// silent.
pub(crate) fn fill_container_security(container: &mut Container) {
    let sc = container
        .security_context
        .get_or_insert_with(SecurityContext::default);
    // The API server refuses allowPrivilegeEscalation false beside privileged or CAP_SYS_ADMIN.
    let escalates = sc.privileged == Some(true)
        || sc
            .capabilities
            .as_ref()
            .and_then(|c| c.add.as_ref())
            .is_some_and(|add| add.iter().any(|a| a == "CAP_SYS_ADMIN" || a == "SYS_ADMIN"));
    if !escalates {
        sc.allow_privilege_escalation.get_or_insert(false);
    }
    // Capabilities the template adds still apply after dropping ALL.
    sc.capabilities
        .get_or_insert_with(Capabilities::default)
        .drop
        .get_or_insert_with(|| vec!["ALL".into()]);
}

#[cfg(test)]
mod tests;
