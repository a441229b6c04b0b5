//! The reconcile loop against a mocked Kubernetes API (tower-test): every request is recorded
//! with its method, path, field manager and typed body, and answered like an API server would.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::api::ModelDeployment;
use drover::build::{self, Child};
use drover::controller::cached::{CachedAutoscaler, CachedDeployment, CachedService};
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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
}

type Log = Arc<Mutex<Vec<Seen>>>;

fn mock_client(md: &ModelDeployment, script: Script) -> (Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let seen = log.clone();
    let md_json = serde_json::to_value(md).unwrap();
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
            } else if entry.method == "GET" && entry.path.contains("/secrets/") {
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
    deployments: Writer<CachedDeployment>,
    services: Writer<CachedService>,
    autoscalers: Writer<CachedAutoscaler>,
}

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + secs).unwrap()
}

fn harness(client: Client, gate: WriteGate) -> Harness {
    let (deployments_r, mut deployments) = reflector::store();
    let (services_r, mut services) = reflector::store();
    let (autoscalers_r, mut autoscalers) = reflector::store();
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
    };
    let clock: controller::Clock = Arc::new(|| at(0));
    let ctx = Arc::new(Context::new(
        client,
        recorder,
        Metrics::default(),
        gate,
        stores,
        clock,
    ));
    Harness {
        ctx,
        deployments,
        services,
        autoscalers,
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
                Action::Scale { .. } | Action::Delete(_) => {}
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
                .map(|s| plan::ObservedService {
                    spec_hash: spec_hash(&s.metadata),
                    serving_revision:
                        s.spec.as_ref().unwrap().selector.as_ref().unwrap()["drover.dev/revision"]
                            .clone()
                            .into(),
                }),
            autoscaler: h.ctx.stores.autoscalers.state().first().map(|a| {
                plan::ObservedAutoscaler {
                    spec_hash: spec_hash(&a.metadata),
                    target: a.spec.as_ref().unwrap().scale_target_ref.name.clone(),
                }
            }),
            reference: plan::ReferenceState::NotReferenced,
        };
    }
}

/// `drover.dev/spec-hash` of a cached child.
fn spec_hash(meta: &ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()
        .and_then(|a| a.get(drover::naming::ANNOTATION_SPEC_HASH).cloned())
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
    let mut md = model("  autoscaling: {minReplicas: 2, maxReplicas: 10}\n");
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
    let built = build::deployment::build(&md, &new, None, plan::DEFAULT_MONITOR_IMAGE);
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
    let built = build::deployment::build(&md, &rev, Some(1), plan::DEFAULT_MONITOR_IMAGE);
    h.deployments
        .apply_watcher_event(&watcher::Event::Apply((&built).into()));
    h.services.apply_watcher_event(&watcher::Event::Apply(
        (&build::service::build(&md, &rev)).into(),
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
