//! The collector against real `drover monitor` processes on loopback addresses (127.0.0.x),
//! each standing in for a pod: scrapes with the token read from the (mocked) API, windows over
//! the cumulative reports, a monitor that restarts, a pod that stops answering, the
//! planner's judgement on the evidence collected, and feedback retried against another pod
//! counted once.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::http::StatusCode;
use axum::routing::{get, post};
use drover::api::ModelDeployment;
use drover::collect::scrape::Scraper;
use drover::collect::{CollectLoop, CollectSettings, Collector};
use drover::leader::WriteGate;
use drover::metrics::Metrics;
use drover::plan::{self, Observed, ObservedRevision, Settings};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::json;
use tokio::net::TcpListener;

const TOKEN: &str = "collector-token-0123456789";

/// The model behind the monitors: `/predict` answers 200, or 500 when `failing`.
async fn model(failing: bool) -> SocketAddr {
    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/predict",
            post(move |_body: AxumBytes| async move {
                if failing {
                    (StatusCode::INTERNAL_SERVER_ERROR, "{\"detail\":\"boom\"}")
                } else {
                    (StatusCode::OK, "{\"prediction\":0,\"probability\":0.9}")
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A `drover monitor` process on `ip`, serving on `serve_port` with its admin on `admin_port`.
struct MonitorProcess {
    child: Child,
    ip: IpAddr,
    serve_port: u16,
    /// The report token file, removed with the process.
    _token: tempfile::TempPath,
}

impl Drop for MonitorProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A report token file for one monitor process (removed when it is dropped).
fn token_file() -> tempfile::TempPath {
    let file = tempfile::Builder::new()
        .prefix("drover-collect-token-")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), TOKEN).unwrap();
    file.into_temp_path()
}

async fn start_monitor(
    ip: IpAddr,
    serve_port: u16,
    admin_port: u16,
    upstream: SocketAddr,
) -> MonitorProcess {
    start_monitor_with(ip, serve_port, admin_port, upstream, &[]).await
}

/// [`start_monitor`] with `extra` arguments.
async fn start_monitor_with(
    ip: IpAddr,
    serve_port: u16,
    admin_port: u16,
    upstream: SocketAddr,
    extra: &[&str],
) -> MonitorProcess {
    let token = token_file();
    let child = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args([
            "monitor",
            "--listen",
            &SocketAddr::new(ip, serve_port).to_string(),
            "--admin-listen",
            &SocketAddr::new(ip, admin_port).to_string(),
            "--upstream",
            &upstream.to_string(),
            "--report-token-file",
            &token.display().to_string(),
            "--model-version",
            "2.0.0",
            "--threads",
            "1",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the drover binary runs");
    // Poll (bounded) until the admin port answers its probe.
    let deadline = Instant::now() + Duration::from_secs(20);
    let url = format!("http://{}/healthz", SocketAddr::new(ip, admin_port));
    loop {
        if get_ok(&url).await {
            break;
        }
        assert!(Instant::now() < deadline, "monitor on {ip} did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    MonitorProcess {
        child,
        ip,
        serve_port,
        _token: token,
    }
}

async fn get_ok(url: &str) -> bool {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    match tokio::time::timeout(Duration::from_secs(1), client.get(url.parse().unwrap())).await {
        Ok(Ok(r)) => r.status().is_success(),
        _ => false,
    }
}

/// `n` prediction requests through the monitor's serving port.
async fn traffic(m: &MonitorProcess, n: usize) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let url = format!("http://{}/predict", SocketAddr::new(m.ip, m.serve_port));
    for _ in 0..n {
        let req = Request::post(&url)
            .header("content-type", "application/json")
            .body(Full::new(bytes::Bytes::from_static(b"{\"amount\": 12.5}")))
            .unwrap();
        let resp = client.request(req).await.unwrap();
        let _ = resp.into_body().collect().await;
    }
}

fn free_port(ip: IpAddr) -> u16 {
    std::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A kube client whose API answers the monitor token Secret (and logs what was asked).
fn api_with_token(seen: Arc<Mutex<Vec<String>>>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let line = format!("{} {}", request.method(), request.uri().path());
            seen.lock().unwrap().push(line.clone());
            let body = if line == "GET /api/v1/namespaces/ml/secrets/fraud-monitor-token" {
                let secret = Secret {
                    metadata: ObjectMeta {
                        name: Some("fraud-monitor-token".into()),
                        namespace: Some("ml".into()),
                        ..ObjectMeta::default()
                    },
                    data: Some(BTreeMap::from([(
                        "token".to_string(),
                        ByteString(TOKEN.as_bytes().to_vec()),
                    )])),
                    ..Secret::default()
                };
                let mut v = serde_json::to_value(secret).unwrap();
                v["apiVersion"] = json!("v1");
                v["kind"] = json!("Secret");
                v
            } else {
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404, "reason": "NotFound"})
            };
            let status = if body["kind"] == "Secret" { 200 } else { 404 };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap(),
            );
        }
    });
    Client::new(service, "default")
}

fn pod(name: &str, revision: &str, ip: IpAddr) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ml".into()),
            labels: Some(BTreeMap::from([
                ("drover.dev/model".to_string(), "fraud".to_string()),
                ("drover.dev/revision".to_string(), revision.to_string()),
            ])),
            ..ObjectMeta::default()
        },
        spec: None,
        status: Some(PodStatus {
            pod_ip: Some(ip.to_string()),
            conditions: Some(vec![PodCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        }),
    }
}

/// A ModelDeployment whose canary (the spec's revision) runs step 0 beside stable `old`.
fn model_deployment() -> ModelDeployment {
    let mut md: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": "fraud", "namespace": "ml", "uid": "uid-1", "generation": 2},
        "spec": {
            "model": {"version": "2.0.0", "image": "fraud:2.0.0"},
            "replicas": 2,
            "rollout": {"steps": [50], "maxFailedChecks": 1},
            "monitoring": {"scrapeInterval": "5s"}
        },
        "status": {
            "stable": {"hash": "old", "version": "1.0.0", "image": "fraud:1.0.0", "replicas": 2, "readyReplicas": 2},
            "rollout": {
                "revision": "new", "version": "2.0.0", "previous": "old", "phase": "Progressing",
                "step": 0, "requestedWeight": 50, "actualWeight": 50,
                "startedAt": "2026-11-27T10:00:00Z", "progressAt": "2026-11-27T10:00:00Z",
                "stepStartedAt": "2026-11-27T10:00:05Z", "reason": "step 0 running at 50% traffic"
            }
        }
    }))
    .unwrap();
    let new = drover::revision::revision_of(&md.spec);
    if let Some(r) = md.status.as_mut().and_then(|s| s.rollout.as_mut()) {
        r.revision = new;
    }
    md
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_real_monitors_merges_per_revision_survives_restarts_and_counts_silence() {
    let good = model(false).await;
    let bad = model(true).await;
    let ips: Vec<IpAddr> = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let admin_port = free_port(ips[0]);
    let serve_port = free_port(ips[0]);
    let mut canary_a = start_monitor(ips[0], serve_port, admin_port, bad).await;
    let canary_b = start_monitor(ips[1], serve_port, admin_port, bad).await;
    let stable = start_monitor(ips[2], serve_port, admin_port, good).await;

    let md = model_deployment();
    let new = drover::revision::revision_of(&md.spec);
    let (md_reader, mut md_writer) = reflector::store();
    md_writer.apply_watcher_event(&watcher::Event::Apply(
        kube::core::error_boundary::DeserializeGuard(Ok(md.clone())),
    ));
    let (pod_reader, mut pod_writer) = reflector::store();
    for (name, rev, ip) in [
        ("fraud-new-a", new.as_str(), ips[0]),
        ("fraud-new-b", new.as_str(), ips[1]),
        ("fraud-old-a", "old", ips[2]),
    ] {
        pod_writer.apply_watcher_event(&watcher::Event::Apply(
            drover::controller::cached::CachedPod::from(&pod(name, rev, ip)),
        ));
    }
    let seen = Arc::new(Mutex::new(Vec::new()));
    let collector = Arc::new(Collector::default());
    let (trigger, mut triggered) = tokio::sync::mpsc::channel(16);
    let metrics = Metrics::default();
    let scrape = CollectLoop {
        collector: collector.clone(),
        models: md_reader,
        pods: pod_reader,
        client: api_with_token(seen.clone()),
        gate: WriteGate::always_open(),
        metrics: metrics.clone(),
        trigger,
        settings: CollectSettings {
            admin_port,
            timeout: Duration::from_millis(500),
            ..CollectSettings::default()
        },
    };
    let scraper = Scraper::new(Duration::from_millis(500));
    let status = md.status.clone().unwrap();
    // The scrape loop's clock, moved by hand: each "later" is one scrape interval on.
    let start = tokio::time::Instant::now();
    let later = |intervals: u32| start + Duration::from_secs(5) * intervals;

    // Round 1 opens the windows (the monitors already served a few requests before: those
    // are not part of the step).
    traffic(&canary_a, 5).await;
    scrape.round_at(&scraper, start).await;
    assert_eq!(
        triggered.try_recv().unwrap().name,
        "fraud",
        "a round asks for a reconcile"
    );
    let ev = collector.evidence("uid-1", &status);
    assert_eq!(ev.canary.as_ref().unwrap().requests.total(), 0);
    assert_eq!(ev.stable.as_ref().unwrap().requests.total(), 0);
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["GET /api/v1/namespaces/ml/secrets/fraud-monitor-token"],
        "the token is read once, from the Secret"
    );

    // Traffic; one second later the scrape interval (5s) has not passed: nothing is scraped.
    traffic(&canary_a, 60).await;
    traffic(&canary_b, 40).await;
    traffic(&stable, 200).await;
    scrape
        .round_at(&scraper, start + Duration::from_secs(1))
        .await;
    assert!(triggered.try_recv().is_err(), "not due yet");

    // Due: both canary pods merge into one window; stable into its own.
    scrape.round_at(&scraper, later(1)).await;
    assert!(triggered.try_recv().is_ok());
    let ev = collector.evidence("uid-1", &status);
    let canary = ev.canary.clone().unwrap();
    assert_eq!(canary.requests.total(), 100);
    assert_eq!(canary.requests.server_error, 100);
    assert_eq!(ev.stable.as_ref().unwrap().requests.total(), 200);
    assert_eq!(ev.stable.as_ref().unwrap().requests.server_error, 0);

    // The judgement on that evidence: the canary's error rate breaches its limit with
    // enough requests, and a single failed check (maxFailedChecks 1) rolls back at once.
    let observed = Observed {
        revisions: ["old", new.as_str()]
            .iter()
            .map(|h| ObservedRevision {
                name: format!("fraud-{h}"),
                hash: h.to_string(),
                version: if *h == "old" { "1.0.0" } else { "2.0.0" }.into(),
                replicas: Some(2),
                ready_replicas: 2,
                complete: true,
                available: true,
                ..ObservedRevision::default()
            })
            .collect(),
        evidence: ev,
        ..Observed::default()
    };
    let mut judged_md = md.clone();
    judged_md.spec.rollout.analysis.min_requests = 50;
    let now: jiff::Timestamp = "2026-11-27T10:00:20Z".parse().unwrap();
    let decided = Instant::now();
    let p = plan::plan(&judged_md, &observed, &Settings::default(), now);
    let took = decided.elapsed();
    let rollout = p.status.rollout.as_ref().unwrap();
    assert_eq!(
        rollout.phase,
        drover::api::RolloutPhase::RolledBack,
        "{rollout:?}"
    );
    assert!(
        rollout.reason.contains("errorRate 1 (limit 0.01)"),
        "{}",
        rollout.reason
    );
    println!("decision on collected evidence took {took:?}");

    // A monitor restarts (new instance, counters from zero): what it counted stays.
    canary_a.child.kill().unwrap();
    canary_a.child.wait().unwrap();
    let restarted = start_monitor(ips[0], serve_port, admin_port, bad).await;
    drop(std::mem::replace(&mut canary_a, restarted));
    traffic(&canary_a, 10).await;
    scrape.round_at(&scraper, later(2)).await;
    let ev = collector.evidence("uid-1", &status);
    assert_eq!(ev.canary.as_ref().unwrap().requests.total(), 110);

    // A pod stops answering: counted, not guessed; its earlier requests stay in the window.
    drop(canary_b);
    scrape.round_at(&scraper, later(3)).await;
    let ev = collector.evidence("uid-1", &status);
    assert_eq!(ev.canary.as_ref().unwrap().requests.total(), 110);
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("drover_monitor_scrapes_total{outcome=\"connect\"} 1"),
        "{text}"
    );

    // Nobody answers for the canary: frozen (no evidence), never zero.
    drop(canary_a);
    scrape.round_at(&scraper, later(4)).await;
    let ev = collector.evidence("uid-1", &status);
    assert!(ev.canary.is_none());
    assert_eq!(ev.problem, None, "one bad round is not yet a problem");
    scrape.round_at(&scraper, later(5)).await;
    let ev = collector.evidence("uid-1", &status);
    assert!(ev.canary.is_none());
    assert_eq!(
        ev.problem,
        Some(plan::CollectionProblem::Unreachable {
            revision: new.clone(),
            pods: 2
        }),
        "and says so (both canary pods are still listed, neither answers)"
    );
    assert_eq!(ev.stable.as_ref().unwrap().requests.total(), 200);
    drop(stable);
}

/// POSTs `body` to `path` on `m`'s serving port: the status and the prediction token, if any.
async fn post_to(m: &MonitorProcess, path: &str, body: String) -> (StatusCode, Option<String>) {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<bytes::Bytes>>();
    let url = format!("http://{}{path}", SocketAddr::new(m.ip, m.serve_port));
    let req = Request::post(&url)
        .header("content-type", "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    let resp = client.request(req).await.unwrap();
    let token = resp
        .headers()
        .get("x-drover-prediction-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    (status, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_retried_against_another_pod_is_counted_once_by_the_scrape_loop() {
    let good = model(false).await;
    let ips: Vec<IpAddr> = ["127.0.0.5", "127.0.0.6"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let admin_port = free_port(ips[0]);
    let serve_port = free_port(ips[0]);
    let flags = ["--feedback", "--revision", "canary"];
    let a = start_monitor_with(ips[0], serve_port, admin_port, good, &flags).await;
    let b = start_monitor_with(ips[1], serve_port, admin_port, good, &flags).await;

    let mut md = model_deployment();
    md.spec.monitoring.performance = Some(serde_json::from_value(json!({"minLabels": 1})).unwrap());
    let new = drover::revision::revision_of(&md.spec);
    if let Some(r) = md.status.as_mut().and_then(|s| s.rollout.as_mut()) {
        r.revision = new.clone();
    }
    let (md_reader, mut md_writer) = reflector::store();
    md_writer.apply_watcher_event(&watcher::Event::Apply(
        kube::core::error_boundary::DeserializeGuard(Ok(md.clone())),
    ));
    let (pod_reader, mut pod_writer) = reflector::store();
    for (name, ip) in [("fraud-new-a", ips[0]), ("fraud-new-b", ips[1])] {
        pod_writer.apply_watcher_event(&watcher::Event::Apply(
            drover::controller::cached::CachedPod::from(&pod(name, &new, ip)),
        ));
    }
    let collector = Arc::new(Collector::default());
    let (trigger, _triggered) = tokio::sync::mpsc::channel(16);
    let metrics = Metrics::default();
    let scrape = CollectLoop {
        collector: collector.clone(),
        models: md_reader,
        pods: pod_reader,
        client: api_with_token(Arc::new(Mutex::new(Vec::new()))),
        gate: WriteGate::always_open(),
        metrics: metrics.clone(),
        trigger,
        settings: CollectSettings {
            admin_port,
            timeout: Duration::from_secs(2),
            ..CollectSettings::default()
        },
    };
    let scraper = Scraper::new(Duration::from_secs(2));
    let status = md.status.clone().unwrap();
    let start = tokio::time::Instant::now();

    // First look: both logs are read; the judgement's first look opens the window.
    scrape.round_at(&scraper, start).await;
    collector.evidence("uid-1", &status);
    assert!(
        collector
            .feedback_cursor("uid-1", "fraud-new-a")
            .instance
            .is_some(),
        "the next scrape asks for what follows"
    );

    // Two predictions through A; the first is labelled on A and, retried, on B.
    let (status_a, t1) = post_to(&a, "/predict", "{\"amount\": 12.5}".into()).await;
    let (_, t2) = post_to(&a, "/predict", "{\"amount\": 12.5}".into()).await;
    assert_eq!(status_a, StatusCode::OK);
    let label = |t: &Option<String>| json!({"token": t.clone().unwrap(), "label": 0}).to_string();
    assert_eq!(
        post_to(&a, "/drover/feedback", label(&t1)).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post_to(&b, "/drover/feedback", label(&t1)).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post_to(&b, "/drover/feedback", label(&t1)).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(
        post_to(&b, "/drover/feedback", label(&t2)).await.0,
        StatusCode::ACCEPTED
    );

    scrape
        .round_at(&scraper, start + Duration::from_secs(5))
        .await;
    let ev = collector.evidence("uid-1", &status);
    let performance = ev
        .canary
        .and_then(|r| r.performance)
        .expect("labels in the canary window");
    assert_eq!(performance.labelled, 2, "{performance:?}");
    assert_eq!(performance.correct, 2);
    assert_eq!(performance.duplicates, 1);
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("drover_feedback_duplicates_total{namespace=\"ml\",name=\"fraud\"} 1"),
        "{text}"
    );

    // Nothing new: the next round checks nothing twice.
    scrape
        .round_at(&scraper, start + Duration::from_secs(10))
        .await;
    let ev = collector.evidence("uid-1", &status);
    assert_eq!(ev.canary.and_then(|r| r.performance).unwrap().labelled, 2);
    drop((a, b));
}
