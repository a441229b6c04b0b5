//! The reconcile loop against a mocked Kubernetes API (tower-test): every request is recorded
//! with its method, path, field manager and typed body, and answered like an API server would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::api::ModelDeployment;
use drover::build::{self, Child};
use drover::controller::cached::{CachedAutoscaler, CachedDeployment, CachedJob, CachedService};
use drover::controller::{self, Context, Stores};
use drover::leader::WriteGate;
use drover::metrics::Metrics;
use drover::plan::{self, Action, Observed};
use drover::revision::revision_of;
use http::{Request, Response, StatusCode};
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::client::Body;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::{Value, json};

/// One request the mock API saw.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    query: String,
    body: Value,
}

impl Seen {
    fn field_manager(&self) -> Option<String> {
        self.query
            .split('&')
            .find_map(|kv| kv.strip_prefix("fieldManager=").map(str::to_string))
    }
    fn is_event(&self) -> bool {
        self.path.contains("/events")
    }
}

/// How the mock answers.
#[derive(Clone, Default)]
struct Script {
    /// Answer PATCHes of paths containing this with a 500.
    fail_patch_containing: Option<&'static str>,
    /// The NetworkPolicy does not exist (GET answers 404).
    no_policy: bool,
    /// POSTs of Jobs are refused as invalid (422).
    refuse_jobs: bool,
    /// What a list of pods answers (a retraining Job's pods).
    pods: Option<Value>,
    /// Secret `hook` (the webhook URL), if it exists.
    webhook_secret: Option<Value>,
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn mock_client(md: &ModelDeployment, script: Script) -> (Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let seen = log.clone();
    let md_json = serde_json::to_value(md).unwrap();
    let policy_json =
        serde_json::to_value(build::network_policy::build(md, "drover-system")).unwrap();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .unwrap()
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let entry = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or_default().to_string(),
                body: body.clone(),
            };
            seen.lock().unwrap().push(entry.clone());
            let (status, answer) = if entry.method == "PATCH"
                && script
                    .fail_patch_containing
                    .is_some_and(|p| entry.path.contains(p))
            {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "etcd is sad", "reason": "InternalError", "code": 500}),
                )
            } else if entry.method == "GET"
                && entry.path.contains("/networkpolicies/")
                && !script.no_policy
            {
                (StatusCode::OK, policy_json.clone())
            } else if entry.method == "GET" && entry.path.contains("/networkpolicies/") {
                (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found", "details": {"name": "fraud", "group": "networking.k8s.io", "kind": "networkpolicies"}}),
                )
            } else if entry.method == "POST" && entry.path.ends_with("/jobs") && script.refuse_jobs
            {
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Invalid", "code": 422, "message": "Job.batch \"x\" is invalid: spec.template.spec.containers: Required value"}),
                )
            } else if entry.method == "GET" && entry.path.ends_with("/pods") {
                (
                    StatusCode::OK,
                    script.pods.clone().unwrap_or(
                        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}),
                    ),
                )
            } else if entry.method == "GET"
                && entry.path.ends_with("/secrets/hook")
                && script.webhook_secret.is_some()
            {
                (
                    StatusCode::OK,
                    script.webhook_secret.clone().unwrap_or_default(),
                )
            } else if entry.method == "GET"
                && (entry.path.contains("/secrets/") || entry.path.contains("/cronjobs/"))
            {
                (
                    StatusCode::NOT_FOUND,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
                )
            } else if entry.path.contains("/modeldeployments/") {
                let mut md = md_json.clone();
                md["status"] = body["status"].clone();
                (StatusCode::OK, md)
            } else if entry.method == "DELETE" {
                (
                    StatusCode::OK,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                )
            } else {
                let mut echo = body.clone();
                echo["metadata"]["resourceVersion"] = json!("2");
                (StatusCode::OK, echo)
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (Client::new(service, "ml"), log)
}

struct Harness {
    ctx: Arc<Context>,
    /// Seconds after `at(0)` the reconcile's clock reads.
    now: Arc<std::sync::atomic::AtomicI64>,
    deployments: Writer<CachedDeployment>,
    services: Writer<CachedService>,
    autoscalers: Writer<CachedAutoscaler>,
    jobs: Writer<CachedJob>,
    /// Deployments as last applied (the stores keep only a slice of them).
    applied: std::collections::HashMap<String, Deployment>,
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn harness(client: Client, gate: WriteGate) -> Harness {
    harness_with(client, gate, None)
}

fn harness_with(
    client: Client,
    gate: WriteGate,
    notifier: Option<drover::notify::Notifier>,
) -> Harness {
    let (deployments_r, mut deployments) = reflector::store();
    let (services_r, mut services) = reflector::store();
    let (autoscalers_r, mut autoscalers) = reflector::store();
    let (jobs_r, mut jobs) = reflector::store();
    jobs.apply_watcher_event(&watcher::Event::<CachedJob>::Init);
    jobs.apply_watcher_event(&watcher::Event::<CachedJob>::InitDone);
    // The watches have listed (nothing yet): the stores are ready.
    deployments.apply_watcher_event(&watcher::Event::<CachedDeployment>::Init);
    deployments.apply_watcher_event(&watcher::Event::<CachedDeployment>::InitDone);
    services.apply_watcher_event(&watcher::Event::<CachedService>::Init);
    services.apply_watcher_event(&watcher::Event::<CachedService>::InitDone);
    autoscalers.apply_watcher_event(&watcher::Event::<CachedAutoscaler>::Init);
    autoscalers.apply_watcher_event(&watcher::Event::<CachedAutoscaler>::InitDone);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "drover".into(),
            instance: Some("test".into()),
        },
    );
    let stores = Stores {
        deployments: deployments_r,
        services: services_r,
        autoscalers: autoscalers_r,
        jobs: jobs_r,
    };
    let now = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let read = now.clone();
    let clock: controller::Clock =
        Arc::new(move || at(read.load(std::sync::atomic::Ordering::SeqCst)));
    let mut ctx = Context::new(client, recorder, Metrics::default(), gate, stores, clock);
    if let Some(n) = notifier {
        ctx = ctx.with_notifier(n);
    }
    let ctx = Arc::new(ctx);
    Harness {
        ctx,
        now,
        applied: std::collections::HashMap::new(),
        deployments,
        services,
        autoscalers,
        jobs,
    }
}

fn model(extra: &str) -> ModelDeployment {
    let yaml = format!(
        "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: 6f1c-uid, generation: 3, resourceVersion: '7'}}\nspec:\n  model: {{version: '1.0.0', image: 'registry.example.com/fraud:1.0.0'}}\n{extra}"
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

/// A Deployment as the API server would show it once its pods are ready.
fn ready(mut d: Deployment, replicas: i32) -> Deployment {
    d.metadata.generation = Some(1);
    d.metadata.uid = Some(format!("{}-uid", d.metadata.name.clone().unwrap()));
    d.spec.as_mut().unwrap().replicas = Some(replicas);
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        conditions: Some(vec![DeploymentCondition {
            type_: "Available".into(),
            status: "True".into(),
            ..DeploymentCondition::default()
        }]),
        ..DeploymentStatus::default()
    });
    d
}

/// Puts into the stores exactly what the planner would apply for `md`, and gives `md` the
/// status it would write: a settled ModelDeployment.
fn settle(h: &mut Harness, md: &mut ModelDeployment, replicas: i32) {
    let mut observed = Observed::default();
    for _ in 0..3 {
        let p = plan::plan(md, &observed, &plan::Settings::default(), at(0));
        for action in &p.actions {
            match action {
                Action::Apply(Child::Deployment(d)) => {
                    let d = ready(d.as_ref().clone(), replicas);
                    h.deployments
                        .apply_watcher_event(&watcher::Event::Apply((&d).into()));
                }
                Action::Apply(Child::Service(s)) => h
                    .services
                    .apply_watcher_event(&watcher::Event::Apply(s.as_ref().into())),
                Action::Apply(Child::Autoscaler(a)) => h
                    .autoscalers
                    .apply_watcher_event(&watcher::Event::Apply(a.as_ref().into())),
                Action::Apply(Child::NetworkPolicy(_) | Child::Route(_) | Child::CronJob(_))
                | Action::Scale { .. }
                | Action::Delete(_)
                | Action::CreateJob(_)
                | Action::DeployCandidate(_) => {}
            }
        }
        md.status = Some(p.status.clone());
        observed = Observed {
            revisions: h
                .ctx
                .stores
                .deployments
                .state()
                .iter()
                .map(|d| controller::observed_revision(d))
                .collect(),
            service: h
                .ctx
                .stores
                .services
                .state()
                .first()
                .map(|s| controller::observed_service(s)),
            autoscaler: h
                .ctx
                .stores
                .autoscalers
                .state()
                .first()
                .map(|a| controller::observed_autoscaler(a)),
            reference: plan::ReferenceState::NotReferenced,
            evidence: plan::ObservedEvidence::default(),
            // What the mock API answers for the NetworkPolicy: the one the planner builds.
            network_policy: Some(plan::ObservedChild {
                name: "fraud".into(),
                spec_hash: Child::NetworkPolicy(Box::new(build::network_policy::build(
                    md,
                    "drover-system",
                )))
                .spec_hash()
                .map(str::to_string),
                foreign: false,
            }),
            ..Observed::default()
        };
    }
}

async fn reconcile(
    h: &Harness,
    md: &ModelDeployment,
) -> Result<kube::runtime::controller::Action, controller::Error> {
    let guard = Arc::new(DeserializeGuard(Ok(md.clone())));
    tokio::time::timeout(
        Duration::from_secs(10),
        controller::reconcile(guard, h.ctx.clone()),
    )
    .await
    .expect("reconcile must not hang")
}

/// Writes to children and status (Events and the monitor token are looked at apart).
fn writes(log: &Log) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| !s.is_event() && s.method != "GET" && !s.path.contains("/secrets"))
        .cloned()
        .collect()
}

fn secret_writes(log: &Log) -> Vec<Seen> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.path.contains("/secrets") && s.method != "GET")
        .cloned()
        .collect()
}

#[tokio::test]
async fn first_apply_creates_children_with_field_manager_and_owner_references_then_writes_status() {
    let md = model("  autoscaling: {minReplicas: 2, maxReplicas: 6}\n");
    let rev = revision_of(&md.spec);
    let (client, log) = mock_client(&md, Script::default());
    let h = harness(client, WriteGate::always_open());
    reconcile(&h, &md).await.unwrap();

    // The monitor token Secret comes first: the pods mount it.
    let secrets = secret_writes(&log);
    assert_eq!(secrets.len(), 1);
    assert_eq!(
        (secrets[0].method.as_str(), secrets[0].path.as_str()),
        ("POST", "/api/v1/namespaces/ml/secrets")
    );
    let secret: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(secrets[0].body.clone()).unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("fraud-monitor-token"));
    assert_eq!(
        secret.metadata.owner_references.as_ref().unwrap()[0].uid,
        "6f1c-uid"
    );
    let token = &secret.string_data.as_ref().unwrap()["token"];
    assert_eq!(token.len(), 64);
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(secret.immutable, Some(true));

    let w = writes(&log);
    let summary: Vec<_> = w
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str(), s.field_manager()))
        .collect();
    let dep_path = format!("/apis/apps/v1/namespaces/ml/deployments/fraud-{rev}");
    assert_eq!(
        summary,
        vec![
            ("PATCH", dep_path.as_str(), Some("drover".to_string())),
            ("PATCH", dep_path.as_str(), Some("drover-scale".to_string())),
            (
                "PATCH",
                "/api/v1/namespaces/ml/services/fraud",
                Some("drover".to_string())
            ),
            (
                "PATCH",
                "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers/fraud",
                Some("drover".to_string())
            ),
            (
                "PATCH",
                "/apis/drover.dev/v1alpha1/namespaces/ml/modeldeployments/fraud/status",
                Some("drover".to_string())
            ),
        ]
    );
    assert!(
        w.iter().all(|s| s.query.contains("force=true")),
        "server-side apply with force"
    );

    let deployment: Deployment = serde_json::from_value(w[0].body.clone()).unwrap();
    let owner = &deployment.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ModelDeployment", "fraud", "6f1c-uid")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    assert_eq!(
        deployment.spec.as_ref().unwrap().replicas,
        None,
        "the HPA owns replicas: never in Drover's apply"
    );
    assert_eq!(
        w[1].body["spec"]["replicas"],
        json!(2),
        "starts at minReplicas under the scale manager"
    );

    let service: Service = serde_json::from_value(w[2].body.clone()).unwrap();
    assert_eq!(
        service.spec.unwrap().selector.unwrap()["drover.dev/revision"],
        rev
    );
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(w[3].body.clone()).unwrap();
    let hpa_spec = hpa.spec.unwrap();
    assert_eq!(hpa_spec.scale_target_ref.name, format!("fraud-{rev}"));
    assert_eq!(hpa_spec.metrics.unwrap()[0].type_, "ContainerResource");

    let status: drover::api::ModelDeploymentStatus =
        serde_json::from_value(w[4].body["status"].clone()).unwrap();
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.phase, Some(drover::api::Phase::Progressing));
    let events: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.is_event())
        .map(|s| s.body["reason"].clone())
        .collect();
    assert!(events.contains(&json!("Created")), "{events:?}");
    assert!(events.contains(&json!("RolloutStarted")), "{events:?}");
}

#[tokio::test]
async fn an_unchanged_object_makes_no_writes_at_all() {
    let mut md = model("  autoscaling: {minReplicas: 2, maxReplicas: 6}\n");
    let (client, log) = mock_client(&md, Script::default());
    let mut h = harness(client, WriteGate::always_open());
    settle(&mut h, &mut md, 2);
    // A fresh operator reads the (unwatched) NetworkPolicy once, and writes nothing.
    reconcile(&h, &md).await.unwrap();
    let seen: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        seen,
        vec!["GET /apis/networking.k8s.io/v1/namespaces/ml/networkpolicies/fraud"]
    );
    log.lock().unwrap().clear();
    reconcile(&h, &md).await.unwrap();
    let seen = log.lock().unwrap().clone();
    assert!(seen.is_empty(), "expected no request, got {seen:#?}");
}

#[tokio::test]
async fn removing_autoscaling_deletes_the_hpa_and_puts_replicas_back() {
    let mut md = model("  replicas: 3\n  autoscaling: {minReplicas: 2, maxReplicas: 6}\n");
    let (client, log) = mock_client(&md, Script::default());
    let mut h = harness(client, WriteGate::always_open());
    settle(&mut h, &mut md, 3);
    md.spec.autoscaling = None;
    reconcile(&h, &md).await.unwrap();
    let w = writes(&log);
    let deployment: Deployment = serde_json::from_value(w[0].body.clone()).unwrap();
    assert_eq!(deployment.spec.unwrap().replicas, Some(3));
    let delete = w.iter().find(|s| s.method == "DELETE").expect("a delete");
    assert_eq!(
        delete.path,
        "/apis/autoscaling/v2/namespaces/ml/horizontalpodautoscalers/fraud"
    );
    assert_eq!(delete.body["propagationPolicy"], json!("Background"));
}

#[tokio::test]
async fn a_new_revision_under_an_hpa_starts_at_stables_replicas_and_the_hpa_moves_once_available() {
    let mut md = model(
        "  rollout: {strategy: Immediate}\n  autoscaling: {minReplicas: 2, maxReplicas: 10}\n",
    );
    let old = revision_of(&md.spec);
    let (client, log) = mock_client(&md, Script::default());
    let mut h = harness(client, WriteGate::always_open());
    settle(&mut h, &mut md, 5);
    md.spec.model.version = "1.1.0".into();
    let new = revision_of(&md.spec);
    reconcile(&h, &md).await.unwrap();
    let w = writes(&log);
    let new_path = format!("/apis/apps/v1/namespaces/ml/deployments/fraud-{new}");
    assert_eq!(w[0].path, new_path);
    assert_eq!(w[0].body["spec"].get("replicas"), None);
    assert_eq!(
        (w[1].path.as_str(), w[1].field_manager().as_deref()),
        (new_path.as_str(), Some("drover-scale"))
    );
    assert_eq!(
        w[1].body["spec"]["replicas"],
        json!(5),
        "no capacity dip: stable's current count"
    );
    assert!(
        !w.iter()
            .any(|s| s.path.contains("horizontalpodautoscalers")),
        "the HPA stays on stable"
    );

    // The new revision becomes available: the HPA and the Service move, stable goes.
    md.status = Some(serde_json::from_value(w.last().unwrap().body["status"].clone()).unwrap());
    let built = build::deployment::build(
        &md,
        &new,
        None,
        build::deployment::Pins::new(plan::DEFAULT_MONITOR_IMAGE),
    );
    h.deployments
        .apply_watcher_event(&watcher::Event::Apply((&ready(built, 5)).into()));
    log.lock().unwrap().clear();
    reconcile(&h, &md).await.unwrap();
    let w = writes(&log);
    let hpa = w
        .iter()
        .find(|s| s.path.contains("horizontalpodautoscalers"))
        .expect("HPA moved");
    assert_eq!(
        hpa.body["spec"]["scaleTargetRef"]["name"],
        json!(format!("fraud-{new}"))
    );
    assert!(
        w.iter()
            .any(|s| s.method == "DELETE" && s.path.ends_with(&format!("fraud-{old}")))
    );
    let hpa_index = w
        .iter()
        .position(|s| s.path.contains("horizontalpodautoscalers"))
        .unwrap();
    let delete_index = w.iter().position(|s| s.method == "DELETE").unwrap();
    assert!(
        hpa_index < delete_index,
        "the HPA moves before the old revision goes"
    );
}

#[tokio::test]
async fn an_api_error_publishes_an_event_and_backs_off() {
    let md = model("");
    let (client, log) = mock_client(
        &md,
        Script {
            fail_patch_containing: Some("/deployments/"),
            ..Script::default()
        },
    );
    let h = harness(client, WriteGate::always_open());
    let err = reconcile(&h, &md).await.unwrap_err();
    assert!(matches!(err, controller::Error::Api(_)), "{err}");
    let events: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.is_event() && s.body["type"] == json!("Warning"))
        .cloned()
        .collect();
    assert_eq!(events.len(), 1, "one Warning: {events:#?}");
    assert_eq!(events[0].body["reason"], json!("ApiError"));
    assert_eq!(events[0].body["type"], json!("Warning"));
    assert!(
        events[0].body["note"]
            .as_str()
            .unwrap()
            .contains("etcd is sad")
    );
    assert!(
        !writes(&log).iter().any(|s| s.path.contains("/status")),
        "no status after a failed apply"
    );

    let guard = Arc::new(DeserializeGuard(Ok(md.clone())));
    let first = controller::error_policy(guard.clone(), &err, h.ctx.clone());
    let _ = reconcile(&h, &md).await;
    let second = controller::error_policy(guard, &err, h.ctx.clone());
    assert_eq!(
        first,
        kube::runtime::controller::Action::requeue(Duration::from_secs(2))
    );
    assert_eq!(
        second,
        kube::runtime::controller::Action::requeue(Duration::from_secs(4))
    );
}

#[tokio::test(start_paused = true)]
async fn no_write_goes_out_after_the_lease_is_lost() {
    let md = model("");
    let (client, log) = mock_client(&md, Script::default());
    let gate = WriteGate::closed();
    gate.renewed(tokio::time::Instant::now(), Duration::from_secs(10));
    let h = harness(client, gate.clone());
    // Renewals stop; the renew deadline passes.
    tokio::time::advance(Duration::from_secs(11)).await;
    let err = reconcile(&h, &md).await.unwrap_err();
    assert!(matches!(err, controller::Error::NotLeader));
    tokio::task::yield_now().await;
    assert!(log.lock().unwrap().is_empty(), "{:#?}", log.lock().unwrap());
}

#[tokio::test]
async fn a_malformed_object_is_skipped_without_a_request() {
    let md = model("");
    let (client, log) = mock_client(&md, Script::default());
    let h = harness(client, WriteGate::always_open());
    let bad: DeserializeGuard<ModelDeployment> =
        serde_json::from_value(json!({"apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment", "metadata": {"name": "broken", "namespace": "ml"}, "spec": {"model": "not an object"}}))
            .unwrap();
    assert!(bad.0.is_err());
    let action = controller::reconcile(Arc::new(bad), h.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, kube::runtime::controller::Action::await_change());
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_stale_cache_does_not_repeat_notices() {
    let md = model("");
    let (client, log) = mock_client(&md, Script::default());
    let mut h = harness(client, WriteGate::always_open());
    reconcile(&h, &md).await.unwrap();
    // The children's watch events arrive, but the echo of the status write has not yet:
    // the ModelDeployment in the cache still has no status.
    let rev = revision_of(&md.spec);
    let built = build::deployment::build(
        &md,
        &rev,
        Some(1),
        build::deployment::Pins::new(plan::DEFAULT_MONITOR_IMAGE),
    );
    h.deployments
        .apply_watcher_event(&watcher::Event::Apply((&built).into()));
    h.services.apply_watcher_event(&watcher::Event::Apply(
        (&build::service::build(&md, build::service::Selection::Revision(&rev))).into(),
    ));
    log.lock().unwrap().clear();
    reconcile(&h, &md).await.unwrap();
    let seen = log.lock().unwrap().clone();
    for repeated in ["RolloutStarted", "RolloutComplete"] {
        assert!(
            !seen
                .iter()
                .any(|s| s.is_event() && s.body["reason"] == json!(repeated)),
            "{repeated}: {seen:#?}"
        );
    }
    // What is written now carries only what changed: the replica count is known.
    let status = seen
        .iter()
        .find(|s| s.path.ends_with("/status"))
        .expect("replicas changed");
    assert_eq!(status.body["status"]["canary"]["replicas"], json!(1));
    assert_eq!(status.body["status"]["phase"], json!("Progressing"));
    assert!(
        !seen
            .iter()
            .any(|s| s.body["reason"] == json!("RolloutStarted")),
        "{seen:#?}"
    );
}

/// A report of `ok` 200s and `errors` 500s through a real recorder (one monitor instance).
fn report(instance: &str, ok: usize, errors: usize) -> drover::monitor::report::Report {
    use drover::monitor::recorder::{Exchange, Recorder};
    let r = Recorder::new(None, "1", instance.into(), "t".into());
    let req = json!({"x": 1});
    let resp = json!({"prediction": 0, "probability": 0.9});
    for i in 0..ok + errors {
        r.record(Exchange {
            status: if i < errors { 500 } else { 200 },
            latency: Duration::from_millis(20),
            request: Some(Ok(&req)),
            response: Some(Ok(&resp)),
            terminating: false,
        });
    }
    r.report()
}

fn similar_status(
    a: &Option<drover::api::ModelDeploymentStatus>,
    b: &Option<drover::api::ModelDeploymentStatus>,
) -> String {
    format!("{a:#?}\n----\n{b:#?}")
}

/// The stores catch up with `writes`, every Deployment ready at the size it was given.
fn land(h: &mut Harness, writes: &[Seen]) {
    for w in writes {
        let mut body = w.body.clone();
        body["metadata"]["namespace"] = json!("ml");
        if w.path.contains("/services/") {
            let s: Service = serde_json::from_value(body).unwrap();
            h.services
                .apply_watcher_event(&watcher::Event::Apply((&s).into()));
        } else if w.path.contains("/horizontalpodautoscalers/") {
            let a: HorizontalPodAutoscaler = serde_json::from_value(body).unwrap();
            h.autoscalers
                .apply_watcher_event(&watcher::Event::Apply((&a).into()));
        } else if w.path.contains("/deployments/") {
            let name = w.path.rsplit('/').next().unwrap().to_string();
            let existing = h.applied.get(&name).cloned();
            let replicas = body["spec"]["replicas"].as_i64().map(|r| r as i32);
            let d = if w.field_manager().as_deref() == Some("drover-scale") {
                let Some(d) = existing else { continue };
                d
            } else {
                serde_json::from_value(body).unwrap()
            };
            let n = replicas.or(existing_replicas(h, &name)).unwrap_or(1);
            let d = ready(d, n);
            h.deployments
                .apply_watcher_event(&watcher::Event::Apply((&d).into()));
            h.applied.insert(name, d);
        }
    }
}

fn existing_replicas(h: &Harness, name: &str) -> Option<i32> {
    h.ctx
        .stores
        .deployments
        .state()
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .and_then(|d| d.spec.as_ref().and_then(|s| s.replicas))
}

/// Reasons of the rollout Events posted (not the per-child Created/Updated ones).
fn event_reasons(log: &Log) -> Vec<String> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|s| s.is_event() && s.method == "POST")
        .filter_map(|s| s.body["reason"].as_str().map(str::to_string))
        .filter(|r| !["Created", "Updated", "Deleted"].contains(&r.as_str()))
        .collect()
}

fn set_clock(h: &Harness, secs: i64) {
    h.now.store(secs, std::sync::atomic::Ordering::SeqCst);
}

/// Takes the status the reconcile wrote, and forgets the requests seen so far.
fn take_writes(log: &Log, md: &mut ModelDeployment) -> Vec<Seen> {
    let w = writes(log);
    if let Some(status) = w.iter().rev().find(|s| s.path.ends_with("/status")) {
        md.status = Some(serde_json::from_value(status.body["status"].clone()).unwrap());
    }
    log.lock().unwrap().clear();
    w
}

fn summary(w: &[Seen]) -> Vec<String> {
    w.iter()
        .map(|s| {
            let kind = s.path.rsplit('/').nth(1).unwrap_or_default().to_string();
            let name = s.path.rsplit('/').next().unwrap_or_default().to_string();
            format!(
                "{} {kind}/{name} {}",
                s.method,
                s.field_manager().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test]
async fn canary_writes_at_start_step_promotion_and_rollback_under_an_hpa() {
    let mut md = model(
        "  autoscaling: {minReplicas: 2, maxReplicas: 10}\n  rollout: {steps: [50], interval: 1m, bakeTime: 5m}\n",
    );
    let old = revision_of(&md.spec);
    let (client, log) = mock_client(&md, Script::default());
    let mut h = harness(client, WriteGate::always_open());
    settle(&mut h, &mut md, 4);
    log.lock().unwrap().clear();
    md.spec.model.version = "2.0.0".into();
    md.spec.model.image = "registry.example.com/fraud:2.0.0".into();
    md.metadata.generation = Some(4);
    let new = revision_of(&md.spec);
    let uid = "6f1c-uid";

    // Canary start: traffic split over every pod of the model, the canary sized from stable's
    // four replicas under the scale manager, the HPA left on stable.
    set_clock(&h, 100);
    reconcile(&h, &md).await.unwrap();
    let w = take_writes(&log, &mut md);
    land(&mut h, &w);
    assert_eq!(
        summary(&w),
        vec![
            "PATCH services/fraud drover".to_string(),
            format!("PATCH deployments/fraud-{new} drover"),
            format!("PATCH deployments/fraud-{new} drover-scale"),
            "PATCH fraud/status drover".to_string(),
        ]
    );
    let selector = &w[0].body["spec"]["selector"];
    assert_eq!(selector["drover.dev/model"], "fraud");
    assert!(selector.get("drover.dev/revision").is_none(), "{selector}");
    assert_eq!(
        w[0].body["metadata"]["annotations"]["drover.dev/stable-revision"],
        json!(old)
    );
    assert!(
        w[1].body["spec"].get("replicas").is_none(),
        "never replicas under an HPA"
    );
    assert_eq!(w[2].body["spec"]["replicas"], json!(4));
    let rollout = &md.status.as_ref().unwrap().rollout.as_ref().unwrap();
    assert_eq!(
        (
            rollout.phase,
            rollout.requested_weight,
            rollout.actual_weight
        ),
        (drover::api::RolloutPhase::Progressing, 50, 50)
    );

    // The canary's pods are ready (land() made them so): the step's window opens; the
    // monitors have served before.
    set_clock(&h, 110);
    reconcile(&h, &md).await.unwrap();
    let w = take_writes(&log, &mut md);
    assert_eq!(summary(&w), vec!["PATCH fraud/status drover".to_string()]);
    let status = md.status.clone().unwrap();
    assert!(status.rollout.as_ref().unwrap().step_started_at.is_some());
    h.ctx.collector.record_round(
        uid,
        &new,
        &["c"],
        vec![("c".into(), report("c1", 10, 0))],
        0,
    );
    h.ctx.collector.record_round(
        uid,
        &old,
        &["s"],
        vec![("s".into(), report("s1", 30, 0))],
        0,
    );
    set_clock(&h, 115);
    let before = md.status.clone();
    reconcile(&h, &md).await.unwrap();
    let w = take_writes(&log, &mut md);
    assert!(
        w.is_empty(),
        "the window opened, nothing judged yet: {:?}\n{}",
        summary(&w),
        similar_status(&before, &md.status)
    );

    // A good step: promotion. The new revision is already at stable's count, so the Service
    // and the HPA move to it at once; the previous revision stays warm (no write to it).
    h.ctx.collector.record_round(
        uid,
        &new,
        &["c"],
        vec![("c".into(), report("c1", 2010, 0))],
        0,
    );
    h.ctx.collector.record_round(
        uid,
        &old,
        &["s"],
        vec![("s".into(), report("s1", 6030, 0))],
        0,
    );
    set_clock(&h, 171);
    reconcile(&h, &md).await.unwrap();
    assert_eq!(event_reasons(&log), vec!["CanaryPromoted"]);
    let w = take_writes(&log, &mut md);
    land(&mut h, &w);
    assert_eq!(
        summary(&w),
        vec![
            "PATCH services/fraud drover".to_string(),
            "PATCH horizontalpodautoscalers/fraud drover".to_string(),
            "PATCH fraud/status drover".to_string(),
        ]
    );
    assert_eq!(
        w[0].body["spec"]["selector"]["drover.dev/revision"],
        json!(new)
    );
    assert_eq!(
        w[1].body["spec"]["scaleTargetRef"]["name"],
        json!(format!("fraud-{new}"))
    );
    let status = md.status.clone().unwrap();
    assert_eq!(
        status.rollout.as_ref().unwrap().phase,
        drover::api::RolloutPhase::Baking
    );
    assert_eq!(status.stable.as_ref().unwrap().hash, new);
    assert_eq!(status.history[0].outcome, "Promoted");

    // A breach in the bake window (10% errors): traffic goes back first, then the HPA, then
    // the promoted revision goes to zero through the scale manager.
    h.ctx.collector.record_round(
        uid,
        &new,
        &["c"],
        vec![("c".into(), report("c1", 2010, 0))],
        0,
    );
    set_clock(&h, 180);
    reconcile(&h, &md).await.unwrap();
    assert!(
        summary(&take_writes(&log, &mut md)).is_empty(),
        "baking quietly"
    );
    h.ctx.collector.record_round(
        uid,
        &new,
        &["c"],
        vec![("c".into(), report("c1", 2550, 60))],
        0,
    );
    set_clock(&h, 210);
    reconcile(&h, &md).await.unwrap();
    assert_eq!(event_reasons(&log), vec!["BakeRolledBack"]);
    let w = take_writes(&log, &mut md);
    assert_eq!(
        summary(&w),
        vec![
            "PATCH services/fraud drover".to_string(),
            "PATCH horizontalpodautoscalers/fraud drover".to_string(),
            format!("PATCH deployments/fraud-{new} drover-scale"),
            "PATCH fraud/status drover".to_string(),
        ]
    );
    assert_eq!(
        w[0].body["spec"]["selector"]["drover.dev/revision"],
        json!(old)
    );
    assert_eq!(
        w[1].body["spec"]["scaleTargetRef"]["name"],
        json!(format!("fraud-{old}"))
    );
    assert_eq!(w[2].body["spec"]["replicas"], json!(0));
    let status = md.status.clone().unwrap();
    assert_eq!(status.phase, Some(drover::api::Phase::RolledBack));
    assert_eq!(status.stable.as_ref().unwrap().hash, old);
    assert_eq!(status.history[0].outcome, "RolledBack");
    // One promotion and one rollback counted, from the status transitions written.
    let mut registry = prometheus_client::registry::Registry::default();
    h.ctx.metrics.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("drover_promotions_total{namespace=\"ml\",name=\"fraud\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("drover_rollbacks_total{namespace=\"ml\",name=\"fraud\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_network_policy_is_applied_once_and_removed_when_disabled() {
    let mut md = model("");
    let (client, log) = mock_client(
        &md,
        Script {
            no_policy: true,
            ..Script::default()
        },
    );
    let mut h = harness(client, WriteGate::always_open());
    settle(&mut h, &mut md, 1);
    reconcile(&h, &md).await.unwrap();
    let w = writes(&log);
    assert_eq!(
        summary(&w),
        vec!["PATCH networkpolicies/fraud drover".to_string()]
    );
    let body = &w[0].body;
    assert_eq!(body["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(body["kind"], "NetworkPolicy");
    assert_eq!(
        body["spec"]["podSelector"]["matchLabels"]["drover.dev/model"],
        "fraud"
    );
    assert_eq!(body["spec"]["ingress"][0]["ports"][0]["port"], json!(8000));
    assert_eq!(body["spec"]["ingress"][1]["ports"][0]["port"], json!(9090));
    assert_eq!(
        body["metadata"]["ownerReferences"][0]["blockOwnerDeletion"],
        json!(true)
    );
    // Applied: the next reconciles neither read nor write it.
    log.lock().unwrap().clear();
    reconcile(&h, &md).await.unwrap();
    assert!(log.lock().unwrap().is_empty());

    md.spec.network_policy.enabled = false;
    reconcile(&h, &md).await.unwrap();
    let w = writes(&log);
    assert_eq!(
        summary(&w),
        vec!["DELETE networkpolicies/fraud ".to_string()]
    );
}

const RETRAINING: &str = "  monitoring:\n    slo: {errorRate: 0.05}\n  remediation:\n    onDrift: Retrain\n    retraining:\n      cooldown: 6h\n      historyLimit: 0\n      autoDeploy: AUTO\n      acceptance:\n        metrics: [{name: accuracy, min: 0.9}]\n      jobTemplate:\n        spec:\n          template:\n            spec:\n              containers: [{name: train, image: 'registry.example.com/fraud-train:1'}]\n";

/// A settled ModelDeployment whose watch has declared drift.
fn drifted(h: &mut Harness, auto_deploy: bool, extra: &str) -> ModelDeployment {
    let spec = RETRAINING.replace("AUTO", if auto_deploy { "true" } else { "false" });
    let mut md = model(&format!("{spec}{extra}"));
    settle(h, &mut md, 2);
    let status = md.status.as_mut().unwrap();
    let drift = status.drift.as_mut().expect("the watch runs with an SLO");
    drift.detected = true;
    md
}

/// The Job the mock saw POSTed, as the Job watch would then show it.
fn observed_job(
    posted: &Value,
    created: i64,
    outcome: Option<&str>,
) -> k8s_openapi::api::batch::v1::Job {
    let mut job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(posted.clone()).unwrap();
    job.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        at(created),
    ));
    if let Some(type_) = outcome {
        job.status = Some(k8s_openapi::api::batch::v1::JobStatus {
            conditions: Some(vec![k8s_openapi::api::batch::v1::JobCondition {
                type_: type_.into(),
                status: "True".into(),
                reason: Some(if type_ == "Failed" {
                    "DeadlineExceeded".into()
                } else {
                    "Completed".into()
                }),
                message: Some("ran".into()),
                last_transition_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    at(created + 600),
                )),
                ..Default::default()
            }]),
            ..Default::default()
        });
    }
    job
}

fn pods_with_message(message: &str) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [{
        "metadata": {"name": "train-abc", "namespace": "ml"},
        "spec": {"containers": [{"name": "train", "image": "x"}]},
        "status": {"phase": "Succeeded", "containerStatuses": [{
            "name": "train", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"terminated": {"exitCode": 0, "message": message}}
        }]}
    }]})
}

async fn retrain_once(auto_deploy: bool, report: &str) -> (ModelDeployment, Log, Harness) {
    let md = model(&RETRAINING.replace("AUTO", "false"));
    let (client, log) = mock_client(
        &md,
        Script {
            pods: Some(pods_with_message(report)),
            ..Script::default()
        },
    );
    let mut h = harness(client, WriteGate::always_open());
    let mut md = drifted(&mut h, auto_deploy, "");
    reconcile(&h, &md).await.unwrap();
    let posted: Vec<Seen> = writes(&log)
        .into_iter()
        .filter(|s| s.method == "POST" && s.path.ends_with("/jobs"))
        .collect();
    assert_eq!(posted.len(), 1, "one Job: {:#?}", summary(&writes(&log)));
    let job = &posted[0];
    assert_eq!(job.path, "/apis/batch/v1/namespaces/ml/jobs");
    let name = job.body["metadata"]["name"].as_str().unwrap().to_string();
    assert_eq!(name, format!("fraud-retrain-{}", 1_700_000_000 / 60));
    assert_eq!(
        job.body["metadata"]["ownerReferences"][0]["kind"],
        "ModelDeployment"
    );
    assert_eq!(
        job.body["metadata"]["labels"]["drover.dev/retraining"],
        "drift"
    );
    let env = job.body["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .clone();
    let var = |n: &str| {
        env.iter()
            .find(|e| e["name"] == n)
            .and_then(|e| e["value"].as_str())
            .map(str::to_string)
    };
    assert_eq!(var("DROVER_TRIGGER_REASON").as_deref(), Some("Drift"));
    assert_eq!(var("DROVER_MODEL_VERSION").as_deref(), Some("1.0.0"));
    let trigger: Value = serde_json::from_str(&var("DROVER_TRIGGER_REPORT").unwrap()).unwrap();
    assert_eq!(trigger["model"]["name"], "fraud");
    assert!(event_reasons(&log).contains(&"RetrainingStarted".to_string()));
    let body = job.body.clone();
    take_writes(&log, &mut md);
    let retraining = md.status.as_ref().unwrap().retraining.clone().unwrap();
    assert_eq!(retraining.active.as_ref().unwrap().job, name);
    assert_eq!(retraining.starts.len(), 1);

    // The Job runs: nothing new starts.
    h.jobs.apply_watcher_event(&watcher::Event::Apply(
        (&observed_job(&body, 0, None)).into(),
    ));
    set_clock(&h, 120);
    reconcile(&h, &md).await.unwrap();
    assert!(
        !writes(&log).iter().any(|s| s.method == "POST"),
        "{:#?}",
        summary(&writes(&log))
    );
    take_writes(&log, &mut md);

    // It succeeds and reports a model.
    h.jobs.apply_watcher_event(&watcher::Event::Apply(
        (&observed_job(&body, 0, Some("Complete"))).into(),
    ));
    set_clock(&h, 700);
    reconcile(&h, &md).await.unwrap();
    assert!(log.lock().unwrap().iter().any(|s| {
        s.method == "GET"
            && s.path == "/api/v1/namespaces/ml/pods"
            && s.query
                .contains("batch.kubernetes.io%2Fjob-name%3Dfraud-retrain")
    }));
    (md, log, h)
}

#[tokio::test]
async fn declared_drift_starts_one_retraining_job_and_an_accepted_candidate_is_announced() {
    let (mut md, log, mut h) = retrain_once(
        false,
        r#"{"model": {"version": "1.1.0", "image": "registry.example.com/fraud:1.1.0"}, "metrics": {"accuracy": 0.93}}"#,
    )
    .await;
    let reasons = event_reasons(&log);
    assert!(
        reasons.contains(&"CandidateAccepted".to_string()),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&"RetrainingSucceeded".to_string()),
        "{reasons:?}"
    );
    let w = take_writes(&log, &mut md);
    // historyLimit 0: the finished Job goes, with its pods.
    assert!(
        summary(&w)
            .iter()
            .any(|s| s.starts_with("DELETE jobs/fraud-retrain-")),
        "{:#?}",
        summary(&w)
    );
    assert!(
        !w.iter()
            .any(|s| s.path.ends_with("/modeldeployments/fraud")),
        "the spec is the user's"
    );
    let retraining = md.status.as_ref().unwrap().retraining.clone().unwrap();
    assert_eq!(retraining.last.as_ref().unwrap().result, "Succeeded");
    assert!(retraining.active.is_none());
    assert_eq!(retraining.candidates[0].version, "1.1.0");
    assert_eq!(retraining.candidates[0].verdict, "Accepted");
    assert!(!retraining.candidates[0].deployed);
    // Drift still declared: held by the cooldown, no second Job.
    assert!(
        retraining
            .held
            .as_deref()
            .unwrap_or_default()
            .contains("cooldown"),
        "{retraining:?}"
    );
    h.jobs.apply_watcher_event(&watcher::Event::Delete(
        h.ctx.stores.jobs.state()[0].as_ref().clone(),
    ));
    set_clock(&h, 3600);
    reconcile(&h, &md).await.unwrap();
    assert!(
        !writes(&log)
            .iter()
            .any(|s| s.method == "POST" && s.path.ends_with("/jobs"))
    );
}

#[tokio::test]
async fn auto_deploy_sets_spec_model_to_an_accepted_candidate_with_a_merge_patch() {
    let (_, log, _) = retrain_once(
        true,
        r#"{"model": {"version": "1.1.0", "image": "registry.example.com/fraud:1.1.0"}, "metrics": {"accuracy": 0.93}}"#,
    )
    .await;
    let patch = writes(&log)
        .into_iter()
        .find(|s| s.method == "PATCH" && s.path.ends_with("/modeldeployments/fraud"))
        .expect("spec.model patched");
    assert_eq!(patch.field_manager().as_deref(), Some("drover-retraining"));
    assert_eq!(
        patch.body,
        json!({"spec": {"model": {"version": "1.1.0", "image": "registry.example.com/fraud:1.1.0"}}})
    );
    assert!(event_reasons(&log).contains(&"CandidateDeployed".to_string()));
}

#[tokio::test]
async fn a_candidate_below_the_acceptance_gate_is_never_deployed() {
    let (mut md, log, _) = retrain_once(
        true,
        r#"{"model": {"version": "1.1.0", "image": "registry.example.com/fraud:1.1.0"}, "metrics": {"accuracy": 0.71}}"#,
    )
    .await;
    assert!(event_reasons(&log).contains(&"CandidateRejected".to_string()));
    let w = take_writes(&log, &mut md);
    assert!(
        !w.iter()
            .any(|s| s.path.ends_with("/modeldeployments/fraud")),
        "{:#?}",
        summary(&w)
    );
    let candidate = md.status.unwrap().retraining.unwrap().candidates[0].clone();
    assert_eq!(candidate.verdict, "Rejected");
    assert!(
        candidate.reason.contains("accuracy"),
        "{}",
        candidate.reason
    );
}

#[tokio::test]
async fn a_termination_message_that_is_not_json_is_an_event_not_a_candidate() {
    let (mut md, log, _) = retrain_once(false, "Traceback (most recent call last): oops").await;
    assert!(event_reasons(&log).contains(&"RetrainingReportInvalid".to_string()));
    take_writes(&log, &mut md);
    let retraining = md.status.unwrap().retraining.unwrap();
    assert!(retraining.candidates.is_empty());
    assert!(retraining.last.unwrap().message.contains("no candidate"));
}

#[tokio::test]
async fn a_job_template_the_api_server_refuses_is_a_condition_and_is_not_retried_until_the_spec_changes()
 {
    let md = model(&RETRAINING.replace("AUTO", "false"));
    let (client, log) = mock_client(
        &md,
        Script {
            refuse_jobs: true,
            ..Script::default()
        },
    );
    let mut h = harness(client, WriteGate::always_open());
    let mut md = drifted(&mut h, false, "");
    reconcile(&h, &md).await.unwrap();
    assert!(event_reasons(&log).contains(&"RetrainingJobRefused".to_string()));
    assert!(!event_reasons(&log).contains(&"RetrainingStarted".to_string()));
    take_writes(&log, &mut md);
    let status = md.status.clone().unwrap();
    let retraining = status.retraining.clone().unwrap();
    assert!(
        retraining
            .refused
            .as_ref()
            .unwrap()
            .message
            .contains("Required value")
    );
    assert!(retraining.active.is_none());
    assert!(retraining.starts.is_empty(), "a refused Job is not a run");
    let condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Retraining")
        .unwrap();
    assert_eq!(condition.reason, "RetrainingJobRefused");
    // Reconciles later (same spec) do not try again: no storm of attempts or Events.
    for minute in 1..10 {
        set_clock(&h, minute * 60);
        reconcile(&h, &md).await.unwrap();
    }
    assert!(
        !writes(&log)
            .iter()
            .any(|s| s.method == "POST" && s.path.ends_with("/jobs"))
    );
    // A new spec generation is tried at once.
    md.metadata.generation = Some(4);
    reconcile(&h, &md).await.unwrap();
    assert!(
        writes(&log)
            .iter()
            .any(|s| s.method == "POST" && s.path.ends_with("/jobs"))
    );
}

#[tokio::test]
async fn a_schedule_applies_a_cron_job_and_removing_it_deletes_the_cron_job() {
    let md = model(&RETRAINING.replace("AUTO", "false"));
    let (client, log) = mock_client(&md, Script::default());
    let mut h = harness(client, WriteGate::always_open());
    let mut md = drifted(&mut h, false, "");
    md.spec.remediation.retraining.as_mut().unwrap().schedule = Some("0 3 * * 0".into());
    md.status.as_mut().unwrap().drift.as_mut().unwrap().detected = false;
    reconcile(&h, &md).await.unwrap();
    let w = writes(&log);
    let cron = w
        .iter()
        .find(|s| s.path.ends_with("/cronjobs/fraud-cron"))
        .expect("CronJob applied");
    assert_eq!(cron.method, "PATCH");
    assert_eq!(
        cron.path,
        "/apis/batch/v1/namespaces/ml/cronjobs/fraud-cron"
    );
    assert_eq!(cron.field_manager().as_deref(), Some("drover"));
    assert_eq!(cron.body["spec"]["schedule"], "0 3 * * 0");
    assert_eq!(cron.body["spec"]["concurrencyPolicy"], "Forbid");
    assert!(
        !w.iter().any(|s| s.path.ends_with("/jobs")),
        "no drift, no Job"
    );
    take_writes(&log, &mut md);
    // Unchanged: not applied again.
    reconcile(&h, &md).await.unwrap();
    assert!(!writes(&log).iter().any(|s| s.path.contains("/cronjobs/")));
    // Schedule removed: the CronJob goes.
    md.spec.remediation.retraining.as_mut().unwrap().schedule = None;
    reconcile(&h, &md).await.unwrap();
    assert!(
        summary(&writes(&log)).contains(&"DELETE cronjobs/fraud-cron ".to_string()),
        "{:#?}",
        summary(&writes(&log))
    );
}

#[tokio::test]
async fn notices_go_to_the_webhook_named_in_a_secret_and_a_missing_secret_is_a_condition() {
    // A local receiver.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let got = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let got = got.clone();
            async move {
                got.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/hook");
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook", "namespace": "ml"},
                        "data": {"url": base64(&url)}});
    let notifications = "  notifications:\n    webhook: {urlSecretRef: {name: hook, key: url}}\n    events: [RetrainingStarted]\n";

    for (with_secret, expect_condition) in [(true, "True"), (false, "False")] {
        let md = model(&RETRAINING.replace("AUTO", "false"));
        let (client, log) = mock_client(
            &md,
            Script {
                webhook_secret: with_secret.then(|| secret.clone()),
                ..Script::default()
            },
        );
        let notifier = drover::notify::Notifier::new(
            drover::notify::DeliverySettings::default(),
            Metrics::default(),
        );
        let mut h = harness_with(client, WriteGate::always_open(), Some(notifier.clone()));
        let mut md = drifted(&mut h, false, notifications);
        received.lock().unwrap().clear();
        reconcile(&h, &md).await.unwrap();
        assert!(event_reasons(&log).contains(&"RetrainingStarted".to_string()));
        if with_secret {
            let mut delivered = None;
            for _ in 0..250 {
                if let Some(b) = received.lock().unwrap().first().cloned() {
                    delivered = Some(b);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let body = delivered.expect("delivered to the receiver within 5s");
            assert_eq!(body["event"], "RetrainingStarted");
            assert_eq!(body["model"]["name"], "fraud");
        }
        // The next reconcile reports how deliveries went.
        set_clock(&h, 60);
        take_writes(&log, &mut md);
        reconcile(&h, &md).await.unwrap();
        take_writes(&log, &mut md);
        let status = md.status.clone().unwrap();
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == "NotificationsDelivered")
            .expect("condition NotificationsDelivered");
        assert_eq!(format!("{:?}", c.status), expect_condition, "{c:?}");
        if !with_secret {
            assert_eq!(c.reason, "WebhookSecretUnusable");
            assert!(c.message.contains("hook"), "{}", c.message);
            assert!(received.lock().unwrap().is_empty());
        }
    }
}

/// Base64 as Secret data carries it (k8s-openapi's own encoding).
fn base64(text: &str) -> Value {
    serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec())).unwrap()
}

#[tokio::test]
async fn batch_scoring_applies_its_cron_job_records_runs_and_goes_with_the_spec() {
    let batch = "  batch: {schedule: '0 2 * * *', input: 's3://in/', output: 's3://out/'}\n";
    let md = model(batch);
    let (client, log) = mock_client(&md, Script::default());
    let mut h = harness(client, WriteGate::always_open());
    let mut md = md;
    settle(&mut h, &mut md, 2);
    log.lock().unwrap().clear();
    reconcile(&h, &md).await.unwrap();
    let w = writes(&log);
    let cron = w
        .iter()
        .find(|s| s.path == "/apis/batch/v1/namespaces/ml/cronjobs/fraud-batch")
        .unwrap_or_else(|| panic!("{:#?}", summary(&w)));
    assert_eq!(cron.method, "PATCH");
    assert_eq!(cron.field_manager().as_deref(), Some("drover"));
    assert_eq!(cron.body["spec"]["schedule"], "0 2 * * *");
    let container = &cron.body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "registry.example.com/fraud:1.0.0");
    take_writes(&log, &mut md);

    // A run the CronJob started finishes.
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "fraud-batch-29000000", "namespace": "ml",
                     "creationTimestamp": "2023-11-14T22:13:20Z",
                     "labels": {"drover.dev/model": "fraud", "drover.dev/batch": "true", "app.kubernetes.io/managed-by": "drover"},
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "fraud-batch", "uid": "c1", "controller": true}]},
        "status": {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline", "lastTransitionTime": "2023-11-14T23:13:20Z"}]}
    }))
    .unwrap();
    h.jobs
        .apply_watcher_event(&watcher::Event::Apply((&job).into()));
    set_clock(&h, 60);
    reconcile(&h, &md).await.unwrap();
    assert!(event_reasons(&log).contains(&"BatchRunFailed".to_string()));
    take_writes(&log, &mut md);
    let last = md.status.clone().unwrap().batch.unwrap().last.unwrap();
    assert_eq!(last.job, "fraud-batch-29000000");
    assert_eq!(last.result, "Failed");
    assert!(last.message.contains("DeadlineExceeded"));
    // Seen once: no second Event.
    reconcile(&h, &md).await.unwrap();
    assert!(!event_reasons(&log).contains(&"BatchRunFailed".to_string()));

    // spec.batch removed: the CronJob goes.
    md.spec.batch = None;
    reconcile(&h, &md).await.unwrap();
    assert!(
        summary(&writes(&log)).contains(&"DELETE cronjobs/fraud-batch ".to_string()),
        "{:#?}",
        summary(&writes(&log))
    );
}

/// A local stand-in for an MLflow tracking server: alias `champion` names `version` (or does
/// not exist when `None`), every version is stored under s3://mlflow/.
async fn fake_mlflow(version: Option<&'static str>) -> String {
    let app = axum::Router::new()
        .route(
            "/api/2.0/mlflow/registered-models/alias",
            axum::routing::get(move || async move {
                match version {
                    Some(v) => (
                        axum::http::StatusCode::OK,
                        json!({"model_version": {"name": "fraud", "version": v, "source": "models:/m-1"}}).to_string(),
                    ),
                    None => (
                        axum::http::StatusCode::BAD_REQUEST,
                        json!({"error_code": "INVALID_PARAMETER_VALUE", "message": "Registered model alias champion not found."}).to_string(),
                    ),
                }
            }),
        )
        .route(
            "/api/2.0/mlflow/model-versions/get-download-uri",
            axum::routing::get(|| async {
                json!({"artifact_uri": "s3://mlflow/1/models/m-1/artifacts"}).to_string()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn registry_model(tracking: &str) -> ModelDeployment {
    let yaml = format!(
        "apiVersion: drover.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: fraud, namespace: ml, uid: 6f1c-uid, generation: 3, resourceVersion: '7'}}\nspec:\n  model: {{version: '1.0.0', image: 'registry.example.com/fraud:1.0.0', uri: 'models:/fraud@champion', registry: {{trackingUri: '{tracking}'}}}}\n"
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

#[tokio::test]
async fn a_model_uri_the_registry_cannot_resolve_is_a_condition_and_an_event_and_starts_nothing() {
    for tracking in [
        fake_mlflow(None).await,
        // Nothing listens there: the registry is down, and nothing was resolved before.
        format!(
            "http://127.0.0.1:{}",
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        ),
    ] {
        let mut md = registry_model(&tracking);
        let (client, log) = mock_client(&md, Script::default());
        let h = harness(client, WriteGate::always_open());
        reconcile(&h, &md).await.unwrap();
        let events = event_reasons(&log);
        let w = take_writes(&log, &mut md);
        assert!(
            !w.iter().any(|s| s.path.contains("/deployments/")),
            "no revision may start: {:?}",
            summary(&w)
        );
        assert!(
            events.contains(&"ModelUnresolved".to_string()),
            "{events:?}"
        );
        let status = md.status.clone().unwrap();
        let resolved = status
            .conditions
            .iter()
            .find(|c| c.type_ == "ModelResolved")
            .expect("condition ModelResolved");
        assert_eq!(format!("{:?}", resolved.status), "False");
        assert_eq!(resolved.reason, "ModelUnresolved");
        assert!(
            resolved.message.contains("models:/fraud@champion"),
            "{}",
            resolved.message
        );
        let stalled = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Stalled")
            .unwrap();
        assert_eq!(stalled.reason, "ModelUnresolved");
    }
}

#[tokio::test]
async fn a_resolved_alias_pins_its_version_in_the_revision_and_in_status() {
    let tracking = fake_mlflow(Some("2")).await;
    let mut md = registry_model(&tracking);
    let (client, log) = mock_client(&md, Script::default());
    let h = harness(client, WriteGate::always_open());
    reconcile(&h, &md).await.unwrap();
    let w = take_writes(&log, &mut md);
    let rev = drover::revision::revision_with(&md.spec, Some("2"));
    let deployment = w
        .iter()
        .find(|s| s.path.ends_with(&format!("/deployments/fraud-{rev}")))
        .unwrap_or_else(|| panic!("Deployment of revision {rev}: {:?}", summary(&w)));
    let init = &deployment.body["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["name"], "fetch-model");
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"--registry-version=2"), "{args:?}");
    let model = md.status.clone().unwrap().model.unwrap();
    assert_eq!(model.version, "2");
    assert_eq!(model.location, "s3://mlflow/1/models/m-1/artifacts");
}
