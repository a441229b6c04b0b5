//! Scraping and merging the reports of 1,000 pods per scrape interval: CPU per round as a share
//! of one core, wall time of a round, the memory the scrape state adds, and the time from a
//! round's end to the decision on its evidence.
//!
//! `cargo bench --bench collector` (flags after `--`: `--pods 1000`, `--models 100`,
//! `--rounds 10`, `--interval 30`).
//!
//! The bench re-executes itself as the "pods": one process (DROVER_BENCH_ROLE=pods) answers
//! `/drover/report` on 0.0.0.0:<port> with a realistic report (the fraud example's profile, 20
//! features' histograms, a latency sketch), so the measuring process holds only the collector.
//! Each pod is its own loopback address (127.0.x.y), so every pod is its own connection, as in a
//! cluster. The baseline measured in the same run is the cost of parsing the same report bodies
//! with serde_json alone (what any collector must at least do).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use drover::api::ModelDeployment;
use drover::collect::scrape::Scraper;
use drover::collect::{CollectLoop, CollectSettings, Collector};
use drover::leader::WriteGate;
use drover::metrics::Metrics;
use drover::monitor::recorder::{Exchange, Recorder};
use drover::monitor::report::Report;
use drover::plan::{self, Observed, ObservedRevision};
use drover::profile::ReferenceProfile;
use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};

const TOKEN: &str = "bench-token";

fn flag<T: std::str::FromStr>(name: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A report as a fraud-model pod's monitor would send after `n` requests.
fn sample_report(n: usize) -> Report {
    let profile_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/models/fraud/profile.json"
    );
    let profile = std::fs::read(profile_path)
        .ok()
        .and_then(|b| ReferenceProfile::from_json(&b).ok());
    let r = Recorder::new(profile.as_ref(), "2.0.0", "i-1".into(), "t".into());
    let mut rng = fastrand::Rng::with_seed(7);
    for i in 0..n {
        let category = ["grocery", "travel", "online"][i % 3];
        let req = json!({
            "amount": rng.f64() * 500.0, "age": 20 + rng.u32(0..60), "account_age_days": rng.u32(0..3000),
            "transactions_24h": rng.u32(0..20), "distance_km": rng.f64() * 100.0,
            "merchant_category": category, "channel": "online"
        });
        let resp = json!({"prediction": i % 2, "probability": 0.5 + rng.f64() / 2.0});
        r.record(Exchange {
            status: if i % 100 == 0 { 500 } else { 200 },
            latency: Duration::from_micros(2000 + rng.u64(0..30000)),
            request: Some(Ok(&req)),
            response: Some(Ok(&resp)),
            terminating: false,
        });
    }
    r.report()
}

/// The "pods": one server answering every loopback address.
async fn serve_pods(port: u16) {
    let body = Arc::new(serde_json::to_vec(&sample_report(5000)).unwrap_or_default());
    let app = Router::new().route(
        "/drover/report",
        get(move |headers: HeaderMap| {
            let body = body.clone();
            async move {
                let ok = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v == format!("Bearer {TOKEN}"));
                if ok {
                    (StatusCode::OK, body.as_ref().clone())
                } else {
                    (StatusCode::UNAUTHORIZED, Vec::new())
                }
            }
        }),
    );
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port))
            .await
            .expect("bind the pods' port");
    println!("ready");
    let _ = axum::serve(listener, app).await;
}

fn pod_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn model(i: usize) -> ModelDeployment {
    let mut md: ModelDeployment = serde_json::from_value(json!({
        "apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": format!("m{i}"), "namespace": "ml", "uid": format!("uid-{i}")},
        "spec": {"model": {"version": "2.0.0", "image": "fraud:2.0.0"}, "rollout": {"steps": [50]}},
        "status": {
            "stable": {"hash": "old", "version": "1.0.0", "image": "fraud:1.0.0", "replicas": 5, "readyReplicas": 5},
            "rollout": {"revision": "new", "version": "2.0.0", "previous": "old", "phase": "Progressing",
                        "step": 0, "requestedWeight": 50, "actualWeight": 50,
                        "startedAt": "2026-11-27T10:00:00Z", "progressAt": "2026-11-27T10:00:00Z",
                        "stepStartedAt": "2026-11-27T10:00:05Z", "reason": "bench"}
        }
    }))
    .expect("a valid ModelDeployment");
    let new = drover::revision::revision_of(&md.spec);
    if let Some(r) = md.status.as_mut().and_then(|s| s.rollout.as_mut()) {
        r.revision = new;
    }
    md
}

fn pod(name: String, model: &str, revision: &str, ip: IpAddr) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some("ml".into()),
            labels: Some(
                [
                    ("drover.dev/model".to_string(), model.to_string()),
                    ("drover.dev/revision".to_string(), revision.to_string()),
                ]
                .into(),
            ),
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

fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and reads nothing else.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn dead_client() -> kube::Client {
    // Tokens are remembered up front: the API is never asked.
    let (service, _handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    kube::Client::new(service, "ml")
}

fn main() {
    if std::env::var("DROVER_BENCH_ROLE").as_deref() == Ok("pods") {
        let port = flag("--port", 0u16);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(serve_pods(port));
        return;
    }
    let pods_n = flag("--pods", 1000usize);
    let models_n = flag("--models", 100usize).max(1);
    let rounds = flag("--rounds", 10u32).max(2);
    let interval = Duration::from_secs(flag("--interval", 30u64));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env("DROVER_BENCH_ROLE", "pods")
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("the pods process");
    {
        use std::io::BufRead;
        let mut line = String::new();
        if let Some(out) = child.stdout.as_mut() {
            let _ = std::io::BufReader::new(out).read_line(&mut line);
        }
    }
    // One core for the collector: a current-thread runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let rss_before = rss_kib();
        let (md_reader, mut md_writer) = reflector::store();
        let (pod_reader, mut pod_writer) = reflector::store();
        let collector = Arc::new(Collector::default());
        let per_model = pods_n / models_n;
        let mut models = Vec::new();
        for m in 0..models_n {
            let md = model(m);
            let new = md.status.as_ref().and_then(|s| s.rollout.as_ref()).map(|r| r.revision.clone()).unwrap_or_default();
            for p in 0..per_model {
                let i = m * per_model + p;
                let revision = if p % 2 == 0 { new.as_str() } else { "old" };
                let pod = pod(format!("m{m}-{p}"), &format!("m{m}"), revision, pod_ip(i));
                pod_writer.apply_watcher_event(&watcher::Event::Apply(
                    drover::controller::cached::CachedPod::from(&pod),
                ));
            }
            collector.remember_token(&format!("uid-{m}"), TOKEN);
            md_writer.apply_watcher_event(&watcher::Event::Apply(DeserializeGuard(Ok(md.clone()))));
            models.push(md);
        }
        let (trigger, mut triggered) = tokio::sync::mpsc::channel(models_n * 2 + 16);
        let scrape = CollectLoop {
            collector: collector.clone(),
            models: md_reader,
            pods: pod_reader,
            client: dead_client(),
            gate: WriteGate::always_open(),
            metrics: Metrics::default(),
            trigger,
            settings: CollectSettings {
                admin_port: port,
                concurrency: 64,
                timeout: Duration::from_secs(5),
                ..CollectSettings::default()
            },
        };
        let scraper = Scraper::new(Duration::from_secs(5));
        let rss_stores = rss_kib();
        let start = tokio::time::Instant::now();
        // Round 0 opens connections and windows; not measured.
        scrape.round_at(&scraper, start).await;
        while triggered.try_recv().is_ok() {}
        let mut cpu = Duration::ZERO;
        let mut wall = Duration::ZERO;
        let mut decide = Duration::ZERO;
        for k in 1..rounds {
            let (c0, w0) = (cpu_time(), Instant::now());
            scrape.round_at(&scraper, start + interval * k).await;
            wall += w0.elapsed();
            cpu += cpu_time() - c0;
            // From the round's end to the decision on the evidence (what a reconcile does on
            // the trigger, minus the API writes).
            let t0 = Instant::now();
            while let Ok(r) = triggered.try_recv() {
                let Some(md) = models.iter().find(|m| m.metadata.name.as_deref() == Some(r.name.as_str())) else { continue };
                let status = md.status.clone().unwrap_or_default();
                let uid = md.metadata.uid.clone().unwrap_or_default();
                let evidence = collector.evidence(&uid, &status);
                let observed = Observed {
                    revisions: ["old".to_string(), status.rollout.as_ref().map(|r| r.revision.clone()).unwrap_or_default()]
                        .iter()
                        .map(|h| ObservedRevision { name: format!("m-{h}"), hash: h.clone(), replicas: Some(5), ready_replicas: 5, complete: true, available: true, ..ObservedRevision::default() })
                        .collect(),
                    evidence,
                    ..Observed::default()
                };
                let now: jiff::Timestamp = "2026-11-27T10:00:30Z".parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                std::hint::black_box(plan::plan(md, &observed, &plan::Settings::default(), now));
            }
            decide += t0.elapsed();
        }
        let measured = rounds - 1;
        let rss_after = rss_kib();

        // Baseline, same run: parsing the same report bodies with serde_json alone.
        let body = serde_json::to_vec(&sample_report(5000)).unwrap_or_default();
        let c0 = cpu_time();
        for _ in 0..(pods_n as u32 * measured) {
            let v: Result<Report, _> = serde_json::from_slice(&body);
            std::hint::black_box(v.ok());
        }
        let parse = cpu_time() - c0;
        let _: Result<Value, _> = serde_json::from_slice(&body);

        let per_round = cpu / measured;
        let share = per_round.as_secs_f64() / interval.as_secs_f64();
        println!("pods {pods_n} over {models_n} ModelDeployments, report body {} bytes, {measured} measured rounds", body.len());
        println!("round wall time        {:>10.1} ms", wall.as_secs_f64() * 1000.0 / f64::from(measured));
        println!("round CPU time         {:>10.1} ms  ({:.2}% of one core at a {}s scrape interval)", per_round.as_secs_f64() * 1000.0, share * 100.0, interval.as_secs());
        println!("baseline: parse only   {:>10.1} ms per round  (collector / baseline = {:.2}x)", parse.as_secs_f64() * 1000.0 / f64::from(measured), per_round.as_secs_f64() / (parse.as_secs_f64() / f64::from(measured)).max(1e-9));
        println!("decisions after round  {:>10.2} ms for {models_n} ModelDeployments", decide.as_secs_f64() * 1000.0 / f64::from(measured));
        println!("RSS                    {:>10.1} MiB before, {:.1} MiB with the pod and model stores, {:.1} MiB with the scrape state (+{:.1} MiB for scraping)", rss_before as f64 / 1024.0, rss_stores as f64 / 1024.0, rss_after as f64 / 1024.0, (rss_after.saturating_sub(rss_stores)) as f64 / 1024.0);
    });
    let _ = child.kill();
    let _ = child.wait();
}
