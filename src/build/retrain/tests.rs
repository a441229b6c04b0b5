use super::*;
use crate::api::MAX_NAME_LENGTH;
use crate::naming::ANNOTATION_SPEC_HASH;

const TEMPLATE: &str = r#"
  remediation:
    onDrift: Retrain
    retraining:
      timeout: 2h
      historyLimit: 2
      schedule: '0 3 * * *'
      timeZone: Europe/Berlin
      jobTemplate:
        metadata:
          labels: {team: risk, drover.dev/retraining: forged}
          annotations: {note: nightly}
        spec:
          template:
            metadata:
              labels: {app: trainer, drover.dev/model: sneaky, drover.dev/revision: abc}
            spec:
              initContainers:
                - name: fetch
                  image: 'fetch:1'
                  env: [{name: DROVER_MODEL_NAME, value: from-template}]
              containers:
                - name: train
                  image: 'train:1'
                  env:
                    - {name: DATA, value: 's3://data/$(DROVER_MODEL_NAME)'}
                    - {name: DROVER_TRIGGER_REASON, value: from-template}
                  securityContext:
                    allowPrivilegeEscalation: true
                    capabilities: {add: [NET_BIND_SERVICE]}
                - name: report
                  image: 'report:1'
"#;

fn md_with(name: &str, extra: &str) -> ModelDeployment {
    let yaml = format!(
        "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: {name}, namespace: ml, uid: u-1}}\nspec:\n  model: {{version: '1.4.0', image: 'registry.example.com/fraud:1.4.0'}}\n{extra}"
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

fn md() -> ModelDeployment {
    md_with("fraud", TEMPLATE)
}

fn drift() -> Trigger {
    Trigger {
        reason: TriggerReason::Drift,
        report: r#"{"features":[{"name":"amount","score":0.4}]}"#.into(),
    }
}

fn pod(spec: &JobSpec) -> &PodSpec {
    spec.template.spec.as_ref().unwrap()
}

fn all_containers(pod: &PodSpec) -> impl Iterator<Item = &Container> {
    pod.containers
        .iter()
        .chain(pod.init_containers.iter().flatten())
}

fn env_value<'a>(c: &'a Container, name: &str) -> Vec<&'a EnvVar> {
    c.env.iter().flatten().filter(|e| e.name == name).collect()
}

#[test]
fn no_retraining_no_job() {
    let plain = md_with("fraud", "");
    assert!(job(&plain, "fraud-retrain-1", &drift()).is_none());
    assert!(cron_job(&plain).is_none());
}

#[test]
fn the_trigger_reaches_every_container_and_replaces_template_entries() {
    let j = job(&md(), "fraud-retrain-29000000", &drift()).unwrap();
    let pod = pod(j.spec.as_ref().unwrap());
    let expected = [
        (ENV_TRIGGER_REASON, "Drift"),
        (
            ENV_TRIGGER_REPORT,
            r#"{"features":[{"name":"amount","score":0.4}]}"#,
        ),
        (ENV_MODEL_NAME, "fraud"),
        (ENV_MODEL_NAMESPACE, "ml"),
        (ENV_MODEL_VERSION, "1.4.0"),
        (ENV_MODEL_IMAGE, "registry.example.com/fraud:1.4.0"),
        (ENV_JOB_NAME, "fraud-retrain-29000000"),
    ];
    assert_eq!(all_containers(pod).count(), 3);
    for c in all_containers(pod) {
        for (name, value) in expected {
            let found = env_value(c, name);
            assert_eq!(found.len(), 1, "{name} once in {}", c.name);
            assert_eq!(
                found[0].value.as_deref(),
                Some(value),
                "{name} in {}",
                c.name
            );
        }
        // Drover's first, so the template's may refer to them.
        let names: Vec<&str> = c.env.iter().flatten().map(|e| e.name.as_str()).collect();
        assert_eq!(
            &names[..expected.len()],
            expected.map(|(n, _)| n).as_slice()
        );
    }
    let train = &pod.containers[0];
    assert_eq!(
        env_value(train, "DATA")[0].value.as_deref(),
        Some("s3://data/$(DROVER_MODEL_NAME)"),
        "the template's own entries are kept"
    );
}

#[test]
fn template_security_settings_are_kept_and_the_gaps_filled_restricted() {
    let j = job(&md(), "fraud-retrain-1", &drift()).unwrap();
    let pod = pod(j.spec.as_ref().unwrap());
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    let train = pod.containers[0].security_context.as_ref().unwrap();
    assert_eq!(
        train.allow_privilege_escalation,
        Some(true),
        "the template's"
    );
    let caps = train.capabilities.as_ref().unwrap();
    assert_eq!(
        caps.add.as_deref(),
        Some(&["NET_BIND_SERVICE".to_string()][..])
    );
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    for c in &pod.containers[1..] {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false), "{}", c.name);
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
    }
    let fetch = pod.init_containers.as_ref().unwrap()[0]
        .security_context
        .as_ref()
        .unwrap();
    assert_eq!(fetch.allow_privilege_escalation, Some(false));
}

#[test]
fn settings_the_api_server_or_kubelet_would_refuse_are_not_filled() {
    let template = r#"
  remediation:
    retraining:
      jobTemplate:
        spec:
          template:
            spec:
              securityContext:
                runAsNonRoot: false
                seccompProfile: {type: Unconfined}
              containers:
                - {name: a, image: 'a:1', securityContext: {privileged: true}}
                - {name: b, image: 'b:1', securityContext: {capabilities: {add: [CAP_SYS_ADMIN], drop: []}}}
                - {name: c, image: 'c:1', securityContext: {runAsUser: 0}}
"#;
    let j = job(&md_with("fraud", template), "fraud-retrain-1", &drift()).unwrap();
    let pod = pod(j.spec.as_ref().unwrap());
    let psc = pod.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(false));
    assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "Unconfined");
    let sc = |i: usize| pod.containers[i].security_context.as_ref().unwrap();
    assert_eq!(sc(0).allow_privilege_escalation, None, "privileged");
    assert_eq!(sc(1).allow_privilege_escalation, None, "CAP_SYS_ADMIN");
    assert_eq!(
        sc(1).capabilities.as_ref().unwrap().drop.as_deref(),
        Some(&[][..]),
        "an explicit empty drop list is the template's"
    );
    assert_eq!(sc(2).allow_privilege_escalation, Some(false));

    // Root asked for by a container: no runAsNonRoot at the pod level.
    let root = template.replace(
        "runAsNonRoot: false\n                seccompProfile: {type: Unconfined}",
        "fsGroup: 1000",
    );
    let j = job(&md_with("fraud", &root), "fraud-retrain-1", &drift()).unwrap();
    let psc = pod_of(&j).security_context.clone().unwrap();
    assert_eq!(psc.run_as_non_root, None);
    assert_eq!(psc.seccomp_profile.unwrap().type_, "RuntimeDefault");

    // Windows pods get none of the Linux settings.
    let windows = r#"
  remediation:
    retraining:
      jobTemplate:
        spec:
          template:
            spec:
              os: {name: windows}
              containers: [{name: a, image: 'a:1'}]
"#;
    let j = job(&md_with("fraud", windows), "fraud-retrain-1", &drift()).unwrap();
    let pod = pod_of(&j);
    assert!(pod.security_context.is_none());
    assert!(pod.containers[0].security_context.is_none());
}

fn pod_of(j: &Job) -> &PodSpec {
    pod(j.spec.as_ref().unwrap())
}

#[test]
fn the_job_runs_once_within_the_timeout_and_stays_to_be_read() {
    let j = job(&md(), "fraud-retrain-1", &drift()).unwrap();
    let spec = j.spec.as_ref().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(7200));
    assert_eq!(spec.backoff_limit, Some(1));
    assert_eq!(spec.ttl_seconds_after_finished, None);
    assert_eq!(pod(spec).restart_policy.as_deref(), Some("Never"));

    let own = r#"
  remediation:
    retraining:
      timeout: 2h
      jobTemplate:
        spec:
          activeDeadlineSeconds: 600
          backoffLimit: 4
          ttlSecondsAfterFinished: 0
          template:
            spec:
              restartPolicy: OnFailure
              containers: [{name: a, image: 'a:1'}]
"#;
    let j = job(&md_with("fraud", own), "fraud-retrain-1", &drift()).unwrap();
    let spec = j.spec.as_ref().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(600));
    assert_eq!(spec.backoff_limit, Some(4));
    assert_eq!(
        spec.ttl_seconds_after_finished, None,
        "Drover must read the finished Job"
    );
    assert_eq!(pod(spec).restart_policy.as_deref(), Some("OnFailure"));

    // A timeout that slipped past the CRD: the spec's default, never no deadline.
    let mut broken = md();
    broken.spec.remediation.retraining.as_mut().unwrap().timeout =
        crate::api::GoDuration::new("forever");
    let j = job(&broken, "fraud-retrain-1", &drift()).unwrap();
    assert_eq!(j.spec.unwrap().active_deadline_seconds, Some(6 * 3600));
}

#[test]
fn the_job_is_owned_labelled_and_annotated() {
    let j = job(&md(), "fraud-retrain-1", &drift()).unwrap();
    assert_eq!(j.metadata.name.as_deref(), Some("fraud-retrain-1"));
    assert_eq!(j.metadata.namespace.as_deref(), Some("ml"));
    let owner = &j.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(owner.uid, "u-1");
    assert_eq!(owner.kind, "ModelDeployment");
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    let labels = j.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["team"], "risk", "the template's labels");
    assert_eq!(labels[LABEL_RETRAINING], "drift", "Drover's win");
    assert_eq!(labels[LABEL_MODEL], "fraud");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
    let annotations = j.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[ANNOTATION_TRIGGER_REASON], "Drift");
    assert_eq!(annotations["note"], "nightly");
    assert!(annotations.contains_key(ANNOTATION_SPEC_HASH));
    assert!(crate::controller::is_child(&md(), &j));
}

#[test]
fn retraining_pods_are_labelled_apart_from_serving_pods() {
    let j = job(&md(), "fraud-retrain-1", &drift()).unwrap();
    let labels = j.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(labels["app"], "trainer");
    assert_eq!(labels[LABEL_RETRAINING], "drift");
    assert_eq!(labels[LABEL_RETRAINING_OF], "fraud");
    assert_eq!(labels[LABEL_MANAGED_BY], MANAGED_BY);
    // The Service and NetworkPolicy select on the model label: a training pod has none.
    assert!(!labels.contains_key(LABEL_MODEL), "{labels:?}");
    assert!(!labels.contains_key(LABEL_REVISION), "{labels:?}");
}

#[test]
fn a_long_report_is_replaced_by_a_summary_of_it() {
    let big = serde_json::json!({
        "features": vec!["x".repeat(100); 400],
        "prediction": {"score": 0.3},
    })
    .to_string();
    assert!(big.len() > MAX_TRIGGER_REPORT);
    let summary: Value = serde_json::from_str(&capped_report(&big)).unwrap();
    assert_eq!(summary["truncated"], true);
    assert_eq!(summary["bytes"], big.len());
    assert_eq!(
        summary["keys"],
        serde_json::json!(["features", "prediction"])
    );
    let not_json = "y".repeat(MAX_TRIGGER_REPORT + 1);
    let summary: Value = serde_json::from_str(&capped_report(&not_json)).unwrap();
    assert_eq!(summary["keys"], serde_json::json!([]));
    let exact = "z".repeat(MAX_TRIGGER_REPORT);
    assert_eq!(capped_report(&exact), exact, "up to the cap, as is");

    let trigger = Trigger {
        report: big,
        ..drift()
    };
    let j = job(&md(), "fraud-retrain-1", &trigger).unwrap();
    for c in all_containers(pod_of(&j)) {
        let report = env_value(c, ENV_TRIGGER_REPORT)[0]
            .value
            .as_deref()
            .unwrap();
        assert!(report.len() < 1024, "{report}");
    }
}

#[test]
fn the_cron_job_runs_the_same_template_on_the_schedule() {
    let cron = cron_job(&md()).unwrap();
    assert_eq!(cron.metadata.name.as_deref(), Some("fraud-cron"));
    assert_eq!(cron.metadata.namespace.as_deref(), Some("ml"));
    assert_eq!(
        cron.metadata.owner_references.as_ref().unwrap()[0].uid,
        "u-1"
    );
    assert!(
        cron.metadata
            .annotations
            .as_ref()
            .unwrap()
            .contains_key(ANNOTATION_SPEC_HASH)
    );
    let spec = cron.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, "0 3 * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(spec.successful_jobs_history_limit, Some(2));
    assert_eq!(spec.failed_jobs_history_limit, Some(2));
    assert_eq!(spec.starting_deadline_seconds, Some(300));
    let meta = spec.job_template.metadata.as_ref().unwrap();
    assert!(meta.name.is_none() && meta.owner_references.is_none());
    assert_eq!(meta.labels.as_ref().unwrap()[LABEL_RETRAINING], "scheduled");
    assert_eq!(meta.labels.as_ref().unwrap()[LABEL_MODEL], "fraud");
    assert_eq!(
        meta.annotations.as_ref().unwrap()[ANNOTATION_TRIGGER_REASON],
        "Scheduled"
    );
    let job_spec = spec.job_template.spec.as_ref().unwrap();
    assert_eq!(job_spec.active_deadline_seconds, Some(7200));
    assert_eq!(job_spec.backoff_limit, Some(1));
    for c in all_containers(pod(job_spec)) {
        assert_eq!(
            env_value(c, ENV_TRIGGER_REASON)[0].value.as_deref(),
            Some("Scheduled")
        );
        assert_eq!(
            env_value(c, ENV_TRIGGER_REPORT)[0].value.as_deref(),
            Some("{}")
        );
        let job_name = env_value(c, ENV_JOB_NAME)[0];
        assert_eq!(job_name.value, None);
        assert_eq!(
            job_name
                .value_from
                .as_ref()
                .unwrap()
                .field_ref
                .as_ref()
                .unwrap()
                .field_path,
            "metadata.labels['batch.kubernetes.io/job-name']"
        );
    }
    // Same template, same build: only the trigger differs.
    let drift_job = job(&md(), "x", &drift()).unwrap().spec.unwrap();
    assert_eq!(
        pod(&drift_job).security_context,
        pod(job_spec).security_context
    );
}

#[test]
fn the_history_limit_is_clamped_and_a_blank_schedule_makes_no_cron_job() {
    let mut m = md();
    m.spec
        .remediation
        .retraining
        .as_mut()
        .unwrap()
        .history_limit = 1000;
    let spec = cron_job(&m).unwrap().spec.unwrap();
    assert_eq!(spec.successful_jobs_history_limit, Some(100));
    m.spec
        .remediation
        .retraining
        .as_mut()
        .unwrap()
        .history_limit = -1;
    let spec = cron_job(&m).unwrap().spec.unwrap();
    assert_eq!(spec.failed_jobs_history_limit, Some(0));
    m.spec.remediation.retraining.as_mut().unwrap().schedule = Some("  ".into());
    assert!(cron_job(&m).is_none());
    m.spec.remediation.retraining.as_mut().unwrap().schedule = None;
    assert!(cron_job(&m).is_none());
}

#[test]
fn names_stay_within_the_limits_for_the_longest_model_name() {
    let longest = "m".repeat(MAX_NAME_LENGTH);
    let m = md_with(&longest, TEMPLATE);
    let at = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let j = job(&m, &naming::retrain_job(&longest, at), &drift()).unwrap();
    assert!(j.metadata.name.as_ref().unwrap().len() <= 63);
    let cron = cron_job(&m).unwrap();
    assert!(cron.metadata.name.as_ref().unwrap().len() <= naming::MAX_CRON_JOB_NAME_LENGTH);
    // Label values are at most 63 characters too.
    for (k, v) in j.spec.unwrap().template.metadata.unwrap().labels.unwrap() {
        assert!(v.len() <= 63, "{k}={v}");
    }
}

#[test]
fn a_template_without_containers_still_builds() {
    let empty = "  remediation:\n    retraining:\n      jobTemplate: {}\n";
    let j = job(&md_with("fraud", empty), "fraud-retrain-1", &drift()).unwrap();
    let spec = j.spec.as_ref().unwrap();
    let pod = pod(spec);
    assert!(pod.containers.is_empty());
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(
        spec.active_deadline_seconds,
        Some(6 * 3600),
        "the default timeout"
    );
    assert!(cron_job(&md_with("fraud", empty)).is_none());
}
