//! Names, labels and field managers every part of Drover agrees on.

use std::collections::BTreeMap;

use jiff::Timestamp;
use kube::ResourceExt;

use crate::api::ModelDeployment;

/// Field manager of every server-side apply Drover makes (children and status).
pub const FIELD_MANAGER: &str = "drover";
/// Field manager that hands `spec.replicas` of a Deployment to the HorizontalPodAutoscaler:
/// Drover's main apply never contains `spec.replicas` under autoscaling, so the starting count is
/// written by this second manager, which the HPA then takes the field over from.
pub const SCALE_FIELD_MANAGER: &str = "drover-scale";

/// `app.kubernetes.io/name`.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/managed-by`.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/version`.
pub const LABEL_VERSION: &str = "app.kubernetes.io/version";
/// The ModelDeployment a child belongs to.
pub const LABEL_MODEL: &str = "drover.dev/model";
/// The revision a Deployment or pod serves.
pub const LABEL_REVISION: &str = "drover.dev/revision";
/// Marks a retraining Job (and its pods) with why it started: `drift` or `scheduled`.
pub const LABEL_RETRAINING: &str = "drover.dev/retraining";
/// The ModelDeployment a retraining pod retrains. Not [`LABEL_MODEL`]: the model's Service (in a
/// replica-ratio split) and NetworkPolicy select pods by that label alone, and must never pick a
/// training pod.
pub const LABEL_RETRAINING_OF: &str = "drover.dev/retraining-of";
/// Value of `app.kubernetes.io/managed-by` on everything Drover makes.
pub const MANAGED_BY: &str = "drover";
/// Label selector that finds everything Drover manages (used by every watch).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=drover";

/// Hash of the object Drover last applied, so an unchanged child is never written again.
pub const ANNOTATION_SPEC_HASH: &str = "drover.dev/spec-hash";
/// Why a retraining Job started (`Drift` or `Scheduled`), as status shows it.
pub const ANNOTATION_TRIGGER_REASON: &str = "drover.dev/trigger-reason";

/// Longest CronJob name: the CronJob controller appends `-<minutes>` (up to 11 characters) to
/// name each Job, which must stay a 63-character label.
pub const MAX_CRON_JOB_NAME_LENGTH: usize = 52;

/// Name of the Deployment that serves one revision.
pub fn revision_deployment(model: &str, revision: &str) -> String {
    format!("{model}-{revision}")
}

/// Name of the Service in front of the model (the one clients call).
pub fn service(model: &str) -> String {
    model.to_string()
}

/// Name of the Secret holding the token the monitors' report and metrics require.
pub fn monitor_token(model: &str) -> String {
    format!("{model}-monitor-token")
}

/// Name of the HorizontalPodAutoscaler.
pub fn autoscaler(model: &str) -> String {
    model.to_string()
}

/// Service selecting the stable revision (Gateway API traffic).
pub fn stable_service(model: &str) -> String {
    format!("{model}-stable")
}

/// Service selecting the canary revision (Gateway API traffic).
pub fn canary_service(model: &str) -> String {
    format!("{model}-canary")
}

/// HTTPRoute Drover owns in Gateway API mode.
pub fn route(model: &str) -> String {
    model.to_string()
}

/// NetworkPolicy over the model's pods.
pub fn network_policy(model: &str) -> String {
    model.to_string()
}

/// Name of a retraining Job started at `now`: `<model>-retrain-<minutes since the epoch>`.
/// Unique per minute (the cooldown is at least a minute) and sortable; the minutes stay within
/// nine digits until the year 3870, so the name stays within 63 characters.
pub fn retrain_job(model: &str, now: Timestamp) -> String {
    format!("{model}-retrain-{}", now.as_second().max(0) / 60)
}

/// Name of the CronJob of scheduled retraining: `<model>-cron`.
pub fn retrain_cron(model: &str) -> String {
    format!("{model}-cron")
}

/// CronJob `<model>-batch` of scheduled batch scoring (at most 52 characters, as CronJob names
/// must be).
pub fn batch_cron(model: &str) -> String {
    format!("{model}-batch")
}

/// Label on batch scoring Jobs (`"true"`) and their pods.
pub const LABEL_BATCH: &str = "drover.dev/batch";
/// Label on batch scoring pods naming their ModelDeployment (not `drover.dev/model`: the
/// model's Service and NetworkPolicy must never select a batch pod).
pub const LABEL_BATCH_OF: &str = "drover.dev/batch-of";

/// A start in the year 3776: nine digits of minutes, the longest a Job name gets for centuries.
const FAR_START: Timestamp = Timestamp::constant(57_000_000_000, 0);

/// Every name derived from a ModelDeployment name, longest suffix first; used to prove that
/// `MAX_NAME_LENGTH` keeps each one a valid DNS label.
pub fn derived_names(model: &str) -> Vec<String> {
    vec![
        retrain_job(model, FAR_START),
        // The Jobs the CronJob controller names `<cronjob>-<minutes>`.
        format!("{}-{}", retrain_cron(model), FAR_START.as_second() / 60),
        monitor_token(model),
        revision_deployment(model, "0123456789"),
        stable_service(model),
        canary_service(model),
        format!("{}-{}", batch_cron(model), FAR_START.as_second() / 60),
        retrain_cron(model),
        batch_cron(model),
        service(model),
        autoscaler(model),
    ]
}

/// Labels shared by every child of a ModelDeployment.
pub fn common_labels(md: &ModelDeployment) -> BTreeMap<String, String> {
    let name = md.name_any();
    BTreeMap::from([
        (LABEL_NAME.to_string(), name.clone()),
        (LABEL_INSTANCE.to_string(), name.clone()),
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_MODEL.to_string(), name),
    ])
}

/// The selector that picks the pods of one revision (immutable for its Deployment).
pub fn revision_selector(model: &str, revision: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MODEL.to_string(), model.to_string()),
        (LABEL_REVISION.to_string(), revision.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::MAX_NAME_LENGTH;

    #[test]
    fn every_derived_name_of_the_longest_allowed_name_is_a_dns_label() {
        let longest = "m".repeat(MAX_NAME_LENGTH);
        for name in derived_names(&longest) {
            assert!(name.len() <= 63, "{name} is {} characters", name.len());
        }
    }

    #[test]
    fn the_cron_job_name_leaves_room_for_the_jobs_it_names() {
        let longest = "m".repeat(MAX_NAME_LENGTH);
        let cron = retrain_cron(&longest);
        assert!(cron.len() <= MAX_CRON_JOB_NAME_LENGTH, "{cron}");
        assert!(derived_names(&longest).contains(&cron));
        let batch = batch_cron(&longest);
        assert!(batch.len() <= MAX_CRON_JOB_NAME_LENGTH, "{batch}");
        let job = retrain_job(&longest, FAR_START);
        assert_eq!(job.len(), 63, "{job}");
    }
}
