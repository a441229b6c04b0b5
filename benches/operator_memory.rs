//! Resident memory of `drover operator` with N ModelDeployments and their children flowing
//! through the real watch → reflector → controller path.
//!
//! `cargo bench --bench operator_memory` (flags after `--`: `--models 0,100,1000`,
//! `--children-first`, `--timeout 60`, and every `drover operator` flag, e.g. `--concurrency 4`,
//! `--threads 2`). The child runs with `MALLOC_ARENA_MAX=2` as in the image (set it to measure
//! otherwise); `DROVER_BENCH_WRAP="heaptrack -o /tmp/op"` runs it under a profiler (the memory
//! columns are then the wrapper's: read the profile).
//!
//! The bench process is the driver and the fake Kubernetes API server (axum on 127.0.0.1). For
//! every model count it re-executes itself with `DROVER_BENCH_ROLE=operator`: that child runs
//! `drover::operator::run_with_client` against the fake API and nothing else, so its
//! `/proc/<pid>/status` (VmRSS, VmHWM, RssAnon) is the operator's memory alone, measured in a
//! fresh process per count. The driver waits (250 ms polls, bounded by `--timeout`) until every
//! watched kind has a watch open, `drover_reconciles_total` has reached the model count, and
//! RSS has been stable for 2 s; then it reads memory, asks the child for `malloc_trim(0)`
//! (diagnostic column), probes `/readyz`, and stops the child by closing its stdin.
//!
//! What the fake API serves, per ModelDeployment (spread over 20 namespaces):
//! * the ModelDeployment, with a settled status (computed with the planner, as `settle()` in
//!   tests/reconcile_mock.rs does, and checked: the planner run on the served JSON asks for
//!   nothing), a `kubectl.kubernetes.io/last-applied-configuration` annotation and
//!   client-side-apply + status managedFields;
//! * 2 Deployments: the settled stable revision (owned, complete, with a full pod template and
//!   server defaults), and an older revision still labelled for the model but whose controller
//!   ownerReference carries an earlier uid (a previous incarnation of the same ModelDeployment,
//!   not yet garbage-collected). `is_child()` skips that one, so the planner does not delete it
//!   and the run stays write-free, yet it is in the watch cache like any labelled Deployment;
//! * 1 Service and 1 HorizontalPodAutoscaler (with status), as the planner built them;
//! * 4 Pods (2 per Deployment), watched like the children (the collector's scrape targets,
//!   cached lean: labels, readiness, IPs);
//! * 1 monitor-token Secret, answered to the operator's GET (not watched), and the
//!   NetworkPolicy, answered to the one GET per resync that reads it back.
//!
//! Every object carries managedFields of several managers (nested fieldsV1 derived from the
//! object, 0.5–5 KB). Lists honour `limit`/`continue` (kube sends the operator's page size,
//! `limit=100`, and then drops the
//! `resourceVersion=0` of `any_semantic()`), except `resourceVersion=0` lists, which a 1.33
//! API server answers whole from its watch cache. Watches get one BOOKMARK and are then held
//! open; `sendInitialEvents=true` (streaming lists) gets ADDED events and the
//! `k8s.io/initial-events-end` bookmark. The leader Lease is kept (get/create/replace). Any
//! other write is counted and answered 200/201 with the stored object or an echo.
//!
//! Found with it (src/operator.rs, kube-runtime 5):
//! * `--leader-elect=false` halts the controller at once: the Lease-lost sender is moved into
//!   the `elector.map(..)` closure, dropped when there is no elector, so `lost.changed()` in
//!   `halt` resolves immediately. The bench therefore runs with leader election on.
//! * Reconciles start when the ModelDeployment store is ready, not the child stores: a model
//!   reconciled before the Deployment/Service/HPA lists are in re-applies its children and
//!   rewrites its status (the writes column). `--children-first` answers the ModelDeployment
//!   list only after the child watches started, which removes those writes.
//! * The `synced` task and the Controller both await the ModelDeployment store's readiness;
//!   kube-runtime's `DelayedInit` keeps one waker, so when that store is ready last (e.g. with
//!   `--children-first`), `synced` is never woken: `/readyz` stays 503 and the stop hangs.
//!
//! Memory at 1,000 models (`--models 0,1000`, MALLOC_ARENA_MAX=2, 2-core machine; ranges over
//! 3–5 runs, the interleaving of the four concurrent initial lists moves the peak):
//! * before: VmRSS 110–169 MiB (VmHWM the same), 13.5 MiB at 0 models. heaptrack: peak heap
//!   79 MiB, of which 36 MiB was one list page of 500 Deployments being parsed (managedFields
//!   parsed as `serde_json::Value` alone ~50 KB per Deployment; `.modify()` strips only after the
//!   whole page is parsed) and 5 MiB that page's response text;
//! * list pages of 100 (`LIST_PAGE`, src/operator.rs): 71–78 MiB;
//! * children parsed straight into the slices `observe` reads (src/controller/cached.rs): 45–49
//!   MiB; with pages of 500 it would be 68–71 MiB, so both changes count;
//! * kubectl's last-applied-configuration dropped from cached ModelDeployments: within noise;
//! * the current-thread runtime (`--threads 1`, the default now): 42–43 MiB (VmHWM 43–44);
//!   2, 8 or 16 workers measure alike, 46–48 MiB;
//! * measured and not kept: streaming lists (`sendInitialEvents`) 41.4–41.8 MiB, i.e. 1 MiB for
//!   a dependency on the API server's WatchList feature; mimalloc 81–85 MiB with its defaults,
//!   45 MiB with `MIMALLOC_PURGE_DELAY=0 MIMALLOC_ARENA_EAGER_COMMIT=0`; malloc_trim after the
//!   sync (the trimmed column) gives back 0.5–1.5 MiB, glibc keeps little free heap now.
//! * what is left (heaptrack, peak heap 27 MiB): the ModelDeployment store ~10 MiB (a
//!   `DeserializeGuard<ModelDeployment>` is ~4.9 KB inline before its heap), the child stores
//!   ~8 MiB (inline `ObjectMeta`, labels, owner references), hyper's read buffers while lists
//!   stream ~4 MiB. At 0 models RSS is mostly the mapped binary (RssAnon 1.4 MiB).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::Response;
use clap::Parser;
use drover::api::ModelDeployment;
use drover::build::{self, Child};
use drover::controller;
use drover::controller::cached::{CachedAutoscaler, CachedDeployment, CachedService};
use drover::operator::OperatorArgs;
use drover::plan::{self, Action, Observed, ReferenceState};
use drover::revision::revision_of;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const NAMESPACES: usize = 20;
const TARGET_MIB: f64 = 64.0;
const STABLE_FOR: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(250);

/// Memory benchmark of `drover operator` against a fake API server.
#[derive(Parser, Debug)]
#[command(name = "operator_memory", args_override_self = true)]
struct Cli {
    /// ModelDeployment counts to measure, each in a fresh operator process.
    #[arg(long, value_delimiter = ',', default_value = "0,100,1000")]
    models: Vec<usize>,
    /// Answer the ModelDeployment list only after the Deployment, Service and HPA watches have
    /// started (their stores are then ready): the startup order a fix in Drover would enforce.
    #[arg(long)]
    children_first: bool,
    /// Upper bound, in seconds, of the wait for a settled operator.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
    #[command(flatten)]
    operator: OperatorArgs,
}

fn main() -> anyhow::Result<()> {
    let user: Vec<String> = std::env::args().skip(1).collect();
    if std::env::var("DROVER_BENCH_ROLE").as_deref() == Ok("operator") {
        return operator_role(Cli::parse_from(argv(&user, None)));
    }
    let cli = Cli::parse_from(argv(&user, Some(0)));
    tokio::runtime::Runtime::new()?.block_on(driver(cli, user))
}

/// The operator child's command line: the bench's defaults, then what the user gave.
fn argv(user: &[String], metrics_port: Option<u16>) -> Vec<String> {
    // Leader election stays on (the Lease lives in the fake API): with `--leader-elect=false`,
    // `run_with_client` drops the Lease-lost sender at once, which halts the controller before
    // its first watch (see the module documentation).
    let mut args = vec!["operator_memory".to_string(), "--leader-elect=true".into()];
    if let Some(port) = metrics_port {
        args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
    }
    args.extend(user.iter().cloned());
    args
}

// ---------------------------------------------------------------------------------------------
// The operator child.

fn operator_role(cli: Cli) -> anyhow::Result<()> {
    let url = std::env::var("DROVER_BENCH_API")?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // Same runtime as `drover operator` (src/main.rs).
    let runtime = drover::operator::runtime(cli.operator.threads)?;
    runtime.block_on(async move {
        let client = kube::Client::try_from(kube::Config::new(url.parse()?))?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // The driver writes `trim` to ask for malloc_trim(0), and closes our stdin to ask for a
        // graceful stop.
        std::thread::spawn(move || {
            for line in std::io::stdin().lines() {
                match line.as_deref() {
                    Ok("trim") => trim_heap(),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = stop_tx.send(true);
        });
        drover::operator::run_with_client(client, cli.operator, stop_rx).await
    })
}

/// Gives the allocator's free pages back to the kernel, so that the RSS measured next is close
/// to the live heap (diagnostic only: the main figures are taken before this).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: glibc's malloc_trim only releases free memory; it takes the allocator's locks.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

// ---------------------------------------------------------------------------------------------
// Kinds and routes of the fake API.

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Model,
    Deployment,
    Service,
    Autoscaler,
    Pod,
    Secret,
    NetworkPolicy,
    Job,
}

const N_KINDS: usize = 8;
const KINDS: [Kind; N_KINDS] = [
    Kind::Model,
    Kind::Deployment,
    Kind::Service,
    Kind::Autoscaler,
    Kind::Pod,
    Kind::Secret,
    Kind::NetworkPolicy,
    Kind::Job,
];

impl Kind {
    fn group_path(self) -> &'static str {
        match self {
            Kind::Model => "/apis/drover.dev/v1alpha1",
            Kind::Deployment => "/apis/apps/v1",
            Kind::Service | Kind::Pod | Kind::Secret => "/api/v1",
            Kind::Autoscaler => "/apis/autoscaling/v2",
            Kind::NetworkPolicy => "/apis/networking.k8s.io/v1",
            Kind::Job => "/apis/batch/v1",
        }
    }
    fn plural(self) -> &'static str {
        match self {
            Kind::Model => "modeldeployments",
            Kind::Deployment => "deployments",
            Kind::Service => "services",
            Kind::Autoscaler => "horizontalpodautoscalers",
            Kind::Pod => "pods",
            Kind::Secret => "secrets",
            Kind::NetworkPolicy => "networkpolicies",
            Kind::Job => "jobs",
        }
    }
    fn api_version(self) -> &'static str {
        match self {
            Kind::Model => "drover.dev/v1alpha1",
            Kind::Deployment => "apps/v1",
            Kind::Service | Kind::Pod | Kind::Secret => "v1",
            Kind::Autoscaler => "autoscaling/v2",
            Kind::NetworkPolicy => "networking.k8s.io/v1",
            Kind::Job => "batch/v1",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Model => "ModelDeployment",
            Kind::Deployment => "Deployment",
            Kind::Service => "Service",
            Kind::Autoscaler => "HorizontalPodAutoscaler",
            Kind::Pod => "Pod",
            Kind::Secret => "Secret",
            Kind::NetworkPolicy => "NetworkPolicy",
            Kind::Job => "Job",
        }
    }
    /// Kinds the operator watches (the monitor-token Secrets and NetworkPolicies are only served).
    fn watched(self) -> bool {
        !matches!(self, Kind::Secret | Kind::NetworkPolicy)
    }
    fn idx(self) -> usize {
        self as usize
    }
}

/// `(kind, namespace, name)` of an API path.
fn route(path: &str) -> Option<(Kind, Option<&str>, Option<&str>)> {
    for kind in KINDS {
        let Some(rest) = path.strip_prefix(kind.group_path()) else {
            continue;
        };
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let plural = kind.plural();
        return Some(match segments.as_slice() {
            [p] if *p == plural => (kind, None, None),
            ["namespaces", ns, p] if *p == plural => (kind, Some(*ns), None),
            ["namespaces", ns, p, name, ..] if *p == plural => (kind, Some(*ns), Some(*name)),
            _ => continue,
        });
    }
    None
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                match s
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query(uri: &Uri) -> BTreeMap<String, String> {
    uri.query()
        .unwrap_or_default()
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// One requirement of an equality-based label selector.
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    Missing(String),
}

fn parse_selector(selector: &str) -> Vec<Requirement> {
    selector
        .split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(|r| {
            if let Some((k, v)) = r.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = r.split_once("==").or_else(|| r.split_once('=')) {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some(k) = r.strip_prefix('!') {
                Requirement::Missing(k.trim().into())
            } else {
                Requirement::Exists(r.into())
            }
        })
        .collect()
}

fn selects(requirements: &[Requirement], labels: &BTreeMap<String, String>) -> bool {
    requirements.iter().all(|r| match r {
        Requirement::Equals(k, v) => labels.get(k) == Some(v),
        Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
        Requirement::Exists(k) => labels.contains_key(k),
        Requirement::Missing(k) => !labels.contains_key(k),
    })
}

// ---------------------------------------------------------------------------------------------
// The fake API server.

/// One stored object, serialised once.
struct Item {
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    json: Bytes,
}

#[derive(Default)]
struct Dataset {
    items: [Vec<Item>; N_KINDS],
    bytes: [u64; N_KINDS],
    managed_fields_bytes: [u64; N_KINDS],
    /// Models whose reconcile would write, by the planner run on the served JSON.
    not_settled: Vec<String>,
}

#[derive(Default)]
struct Stats {
    lists: [AtomicU64; N_KINDS],
    watches: [AtomicU64; N_KINDS],
    objects_listed: AtomicU64,
    bytes_sent: AtomicU64,
    writes: AtomicU64,
    /// Writes by `METHOD resource[/subresource]`.
    writes_by: Mutex<BTreeMap<String, u64>>,
    gets: AtomicU64,
    lease_writes: AtomicU64,
    unknown: AtomicU64,
}

struct Server {
    data: Dataset,
    stats: Stats,
    /// The leader Lease(s), by `namespace/name`.
    leases: Mutex<BTreeMap<String, Value>>,
    children_first: bool,
    resource_version: u64,
}

fn json_response(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .expect("a valid response")
}

fn status_body(code: u16, reason: &str, message: &str) -> Vec<u8> {
    let status = if code < 400 { "Success" } else { "Failure" };
    serde_json::to_vec(&json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": status,
        "message": message, "reason": reason, "code": code,
    }))
    .expect("a Status serialises")
}

async fn handle(
    State(server): State<Arc<Server>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let stats = &server.stats;
    if let Some(rest) = uri.path().strip_prefix(LEASES) {
        return lease(&server, &method, rest, &body);
    }
    if method != Method::GET {
        stats.writes.fetch_add(1, Ordering::Relaxed);
        let manager = query(&uri)
            .remove("fieldManager")
            .map(|m| format!(" ({m})"))
            .unwrap_or_default();
        if let Ok(mut by) = stats.writes_by.lock() {
            *by.entry(format!("{method} {}{manager}", resource_of(uri.path())))
                .or_default() += 1;
        }
        if method == Method::DELETE {
            return json_response(StatusCode::OK, status_body(200, "", "deleted"));
        }
        // An object the API holds answers with itself (a status patch must get the whole
        // ModelDeployment back); anything else with its own body.
        if let Some((kind, Some(ns), Some(name))) = route(uri.path())
            && let Some(it) = server.data.items[kind.idx()]
                .iter()
                .find(|it| it.name == name && it.namespace == ns)
        {
            return json_response(StatusCode::OK, it.json.clone());
        }
        let mut echo: Value = serde_json::from_slice(&body).unwrap_or_else(|_| json!({}));
        if let Some(meta) = echo.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert(
                "resourceVersion".into(),
                json!((server.resource_version + 1).to_string()),
            );
        }
        let status = if method == Method::POST {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        return json_response(status, serde_json::to_vec(&echo).unwrap_or_default());
    }
    let Some((kind, namespace, name)) = route(uri.path()) else {
        stats.unknown.fetch_add(1, Ordering::Relaxed);
        return json_response(
            StatusCode::NOT_FOUND,
            status_body(404, "NotFound", "not served by the fake API"),
        );
    };
    if let Some(name) = name {
        stats.gets.fetch_add(1, Ordering::Relaxed);
        let found = server.data.items[kind.idx()]
            .iter()
            .find(|it| it.name == name && namespace.is_none_or(|ns| it.namespace == ns));
        return match found {
            Some(it) => json_response(StatusCode::OK, it.json.clone()),
            None => json_response(
                StatusCode::NOT_FOUND,
                status_body(
                    404,
                    "NotFound",
                    &format!("{} {name:?} not found", kind.plural()),
                ),
            ),
        };
    }
    let q = query(&uri);
    let selector = parse_selector(q.get("labelSelector").map(String::as_str).unwrap_or(""));
    let matching: Vec<&Item> = server.data.items[kind.idx()]
        .iter()
        .filter(|it| namespace.is_none_or(|ns| it.namespace == ns))
        .filter(|it| selects(&selector, &it.labels))
        .collect();
    let rv = server.resource_version;
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");

    if flag("watch") {
        stats.watches[kind.idx()].fetch_add(1, Ordering::Relaxed);
        let mut chunks: Vec<Bytes> = Vec::new();
        let initial = flag("sendInitialEvents");
        if initial {
            for it in &matching {
                let mut line = Vec::with_capacity(it.json.len() + 32);
                line.extend_from_slice(br#"{"type":"ADDED","object":"#);
                line.extend_from_slice(&it.json);
                line.extend_from_slice(b"}\n");
                chunks.push(line.into());
            }
            stats
                .objects_listed
                .fetch_add(matching.len() as u64, Ordering::Relaxed);
        }
        let annotations = if initial {
            json!({"k8s.io/initial-events-end": "true"})
        } else {
            json!({})
        };
        let bookmark = json!({"type": "BOOKMARK", "object": {
            "apiVersion": kind.api_version(), "kind": kind.kind(),
            "metadata": {"resourceVersion": rv.to_string(), "annotations": annotations},
        }});
        let mut line = serde_json::to_vec(&bookmark).expect("a bookmark serialises");
        line.push(b'\n');
        chunks.push(line.into());
        let sent: usize = chunks.iter().map(Bytes::len).sum();
        stats.bytes_sent.fetch_add(sent as u64, Ordering::Relaxed);
        // Then nothing: the connection stays open until the client goes.
        let stream = futures::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>))
            .chain(futures::stream::pending());
        return json_response(StatusCode::OK, Body::from_stream(stream));
    }

    stats.lists[kind.idx()].fetch_add(1, Ordering::Relaxed);
    let crd_check = q.get("limit").is_some_and(|l| l == "1");
    if server.children_first && kind == Kind::Model && !crd_check {
        // Answer the watcher's ModelDeployment list only once every child watch has started,
        // i.e. once the child stores are ready (the CRD check, `limit=1`, is not held).
        let children = [Kind::Deployment, Kind::Service, Kind::Autoscaler];
        let held = Instant::now();
        while held.elapsed() < Duration::from_secs(30)
            && !children
                .iter()
                .all(|k| stats.watches[k.idx()].load(Ordering::Relaxed) > 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let any_version = q.get("resourceVersion").is_some_and(|v| v == "0");
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
    let start: usize = q.get("continue").and_then(|c| c.parse().ok()).unwrap_or(0);
    // A 1.33 API server ignores `limit` on `resourceVersion=0` (watch cache) lists only.
    let (page, next) = if limit > 0 && !any_version {
        let start = start.min(matching.len());
        let end = (start + limit).min(matching.len());
        (&matching[start..end], (end < matching.len()).then_some(end))
    } else {
        (&matching[..], None)
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some(next) = next {
        metadata["continue"] = json!(next.to_string());
        metadata["remainingItemCount"] = json!(matching.len() - next);
    }
    let size: usize = page.iter().map(|it| it.json.len() + 1).sum();
    let mut out = Vec::with_capacity(size + 256);
    out.extend_from_slice(
        format!(
            r#"{{"apiVersion":"{}","kind":"{}List","metadata":{},"items":["#,
            kind.api_version(),
            kind.kind(),
            metadata
        )
        .as_bytes(),
    );
    for (i, it) in page.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&it.json);
    }
    out.extend_from_slice(b"]}");
    stats
        .objects_listed
        .fetch_add(page.len() as u64, Ordering::Relaxed);
    stats
        .bytes_sent
        .fetch_add(out.len() as u64, Ordering::Relaxed);
    json_response(StatusCode::OK, out)
}

/// `resource[/subresource]` of an API path, for the write tally.
fn resource_of(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.iter().position(|s| *s == "namespaces") {
        Some(i) if segments.len() > i + 2 => match segments.get(i + 4) {
            Some(sub) => format!("{}/{sub}", segments[i + 2]),
            None => segments[i + 2].to_string(),
        },
        _ => segments.last().copied().unwrap_or_default().to_string(),
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/";

/// A minimal Lease store: what `LeaderElector::round` and `release` need (get, create, replace).
fn lease(server: &Server, method: &Method, rest: &str, body: &Bytes) -> Response {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let Ok(mut leases) = server.leases.lock() else {
        return json_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            status_body(500, "InternalError", "poisoned"),
        );
    };
    let not_found = || {
        json_response(
            StatusCode::NOT_FOUND,
            status_body(404, "NotFound", "leases.coordination.k8s.io not found"),
        )
    };
    let (ns, name) = match (segments.as_slice(), method) {
        ([ns, "leases", name], _) => (*ns, name.to_string()),
        ([ns, "leases"], &Method::POST) => {
            let v: Value = serde_json::from_slice(body).unwrap_or_default();
            (
                *ns,
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        }
        _ => return not_found(),
    };
    let key = format!("{ns}/{name}");
    if *method == Method::GET {
        return match leases.get(&key) {
            Some(v) => json_response(StatusCode::OK, serde_json::to_vec(v).unwrap_or_default()),
            None => not_found(),
        };
    }
    server.stats.lease_writes.fetch_add(1, Ordering::Relaxed);
    let mut v: Value = serde_json::from_slice(body).unwrap_or_default();
    let version = leases
        .get(&key)
        .and_then(|old| {
            old["metadata"]["resourceVersion"]
                .as_str()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(server.resource_version);
    v["metadata"]["namespace"] = json!(ns);
    v["metadata"]["resourceVersion"] = json!((version + 1).to_string());
    v["apiVersion"] = json!("coordination.k8s.io/v1");
    v["kind"] = json!("Lease");
    let created = !leases.contains_key(&key);
    leases.insert(key, v.clone());
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    json_response(status, serde_json::to_vec(&v).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Realistic objects.

fn mix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn uuid(seed: u64) -> String {
    let a = mix(seed);
    let b = mix(a);
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

/// Kubernetes-style random suffix (`generateName`, pod-template-hash).
fn suffix(seed: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = mix(seed);
    (0..len)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x = mix(x);
            c
        })
        .collect()
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_second(second).expect("a valid timestamp")
}

/// `fieldsV1` of the fields present in `v`, as the API server records them.
fn fields_v1(v: &Value) -> Value {
    let nested = |inner: &Value| {
        let mut f = fields_v1(inner);
        if (inner.is_object() || inner.is_array())
            && let Value::Object(m) = &mut f
        {
            m.insert(".".into(), json!({}));
        }
        f
    };
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, inner)| (format!("f:{k}"), nested(inner)))
                .collect(),
        ),
        Value::Array(items) => {
            let mut out = Map::new();
            for (i, item) in items.iter().enumerate() {
                let key = match item {
                    Value::Object(o) => ["uid", "type", "name", "containerPort", "key"]
                        .iter()
                        .find_map(|k| o.get(*k).map(|v| format!("k:{{\"{k}\":{v}}}")))
                        .unwrap_or_else(|| format!("i:{i}")),
                    scalar => format!("v:{scalar}"),
                };
                out.insert(key, nested(item));
            }
            Value::Object(out)
        }
        _ => json!({}),
    }
}

fn managed(
    manager: &str,
    operation: &str,
    api_version: &str,
    time: &str,
    subresource: Option<&str>,
    fields: Value,
) -> Value {
    let mut m = json!({
        "manager": manager, "operation": operation, "apiVersion": api_version, "time": time,
        "fieldsType": "FieldsV1", "fieldsV1": fields_v1(&fields),
    });
    if let Some(s) = subresource {
        m["subresource"] = json!(s);
    }
    m
}

/// A Deployment as the API server shows it once its pods are ready.
fn ready(mut d: Deployment, replicas: i32, uid: String, since: Timestamp) -> Deployment {
    d.metadata.generation = Some(1);
    d.metadata.uid = Some(uid);
    if let Some(spec) = d.spec.as_mut() {
        spec.replicas = Some(replicas);
    }
    let name = d.name_any();
    let condition = |type_: &str, reason: &str, message: String| DeploymentCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_transition_time: Some(Time(since)),
        last_update_time: Some(Time(since)),
    };
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(replicas),
        updated_replicas: Some(replicas),
        ready_replicas: Some(replicas),
        available_replicas: Some(replicas),
        conditions: Some(vec![
            condition(
                "Available",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.".into(),
            ),
            condition(
                "Progressing",
                "NewReplicaSetAvailable",
                format!(
                    "ReplicaSet \"{name}-{}\" has successfully progressed.",
                    suffix(replicas as u64, 10)
                ),
            ),
        ]),
        ..DeploymentStatus::default()
    });
    d
}

#[derive(Default)]
struct Children {
    deployments: Vec<Deployment>,
    service: Option<Service>,
    autoscaler: Option<HorizontalPodAutoscaler>,
    network_policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

impl Children {
    /// What the operator's stores keep of them.
    fn cached(&self) -> Cached {
        Cached {
            deployments: self.deployments.iter().map(Into::into).collect(),
            service: self.service.as_ref().map(Into::into),
            autoscaler: self.autoscaler.as_ref().map(Into::into),
            network_policy: self.network_policy.clone(),
        }
    }
}

/// Children as the operator caches them (src/controller/cached.rs).
#[derive(Default)]
struct Cached {
    deployments: Vec<CachedDeployment>,
    service: Option<CachedService>,
    autoscaler: Option<CachedAutoscaler>,
    /// Not watched: the operator reads it once per resync.
    network_policy: Option<k8s_openapi::api::networking::v1::NetworkPolicy>,
}

/// What `controller::observe` builds from the stores.
fn observe(md: &ModelDeployment, c: &Cached) -> Observed {
    Observed {
        revisions: c
            .deployments
            .iter()
            .filter(|d| controller::is_child(md, *d))
            .map(controller::observed_revision)
            .collect(),
        service: c
            .service
            .as_ref()
            .filter(|s| controller::is_child(md, *s))
            .map(controller::observed_service),
        autoscaler: c
            .autoscaler
            .as_ref()
            .filter(|h| controller::is_child(md, *h))
            .map(controller::observed_autoscaler),
        reference: ReferenceState::NotReferenced,
        network_policy: c.network_policy.as_ref().map(|p| plan::ObservedChild {
            name: p.name_any(),
            spec_hash: p.annotations().get("drover.dev/spec-hash").cloned(),
            foreign: false,
        }),
        ..Observed::default()
    }
}

/// Applies what the planner asks until it asks nothing (as `settle()` in
/// tests/reconcile_mock.rs): children ready, status the planner's own.
fn settle(md: &mut ModelDeployment, replicas: i32, now: Timestamp, seed: u64) -> Children {
    let mut c = Children::default();
    for round in 0..6 {
        let p = plan::plan(
            md,
            &observe(md, &c.cached()),
            &plan::Settings::default(),
            now,
        );
        if p.actions.is_empty() && md.status.as_ref() == Some(&p.status) {
            break;
        }
        for action in p.actions {
            match action {
                Action::Apply(Child::Deployment(d)) => {
                    let d = ready(*d, replicas, uuid(seed + 10 + round), now);
                    c.deployments.retain(|o| o.metadata.name != d.metadata.name);
                    c.deployments.push(d);
                }
                Action::Apply(Child::Service(s)) => c.service = Some(*s),
                Action::Apply(Child::Autoscaler(h)) => c.autoscaler = Some(*h),
                Action::Apply(Child::NetworkPolicy(p)) => c.network_policy = Some(*p),
                Action::Apply(Child::Route(_) | Child::CronJob(_))
                | Action::Scale { .. }
                | Action::CreateJob(_)
                | Action::DeployCandidate(_) => {}
                Action::Delete(r) => c.deployments.retain(|d| d.name_any() != r.name),
            }
        }
        md.status = Some(p.status);
    }
    c
}

/// Server-side fields of a Deployment and its managedFields.
fn deployment_value(d: &Deployment, rv: u64, created: &str) -> Value {
    let mut v = serde_json::to_value(d).expect("a Deployment serialises");
    let mut applied_spec = v["spec"].clone();
    if let Some(spec) = applied_spec.as_object_mut() {
        spec.remove("replicas");
    }
    let applied = json!({
        "metadata": {
            "labels": v["metadata"]["labels"],
            "annotations": v["metadata"]["annotations"],
            "ownerReferences": v["metadata"]["ownerReferences"],
        },
        "spec": applied_spec,
    });
    let status = v["status"].clone();
    {
        let spec = &mut v["spec"];
        spec["progressDeadlineSeconds"] = json!(600);
        spec["strategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}});
        let pod = &mut spec["template"]["spec"];
        pod["dnsPolicy"] = json!("ClusterFirst");
        pod["restartPolicy"] = json!("Always");
        pod["schedulerName"] = json!("default-scheduler");
        pod["terminationGracePeriodSeconds"] = json!(30);
        if let Some(containers) = pod["containers"].as_array_mut() {
            for c in containers {
                c["imagePullPolicy"] = json!("IfNotPresent");
                c["terminationMessagePath"] = json!("/dev/termination-log");
                c["terminationMessagePolicy"] = json!("File");
                for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
                    if let Some(p) = c.get_mut(probe).and_then(Value::as_object_mut) {
                        p.entry("timeoutSeconds").or_insert(json!(1));
                        p.insert("successThreshold".into(), json!(1));
                        if let Some(get) = p.get_mut("httpGet").and_then(Value::as_object_mut) {
                            get.insert("scheme".into(), json!("HTTP"));
                        }
                    }
                }
            }
        }
    }
    let meta = &mut v["metadata"];
    meta["resourceVersion"] = json!(rv.to_string());
    meta["creationTimestamp"] = json!(created);
    meta["annotations"]["deployment.kubernetes.io/revision"] = json!("1");
    meta["managedFields"] = json!([
        managed("drover", "Apply", "apps/v1", created, None, applied),
        managed(
            "drover-scale",
            "Apply",
            "apps/v1",
            created,
            None,
            json!({"spec": {"replicas": 2}})
        ),
        managed(
            "kube-controller-manager",
            "Update",
            "apps/v1",
            created,
            None,
            json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "1"}}})
        ),
        managed(
            "kube-controller-manager",
            "Update",
            "apps/v1",
            created,
            Some("status"),
            json!({"status": status})
        ),
    ]);
    v
}

/// The pods of a Deployment as the ReplicaSet controller and the kubelet leave them.
fn pod_values(dep: &Value, count: u64, seed: u64, created: &str, rv: u64) -> Vec<Value> {
    let name = dep["metadata"]["name"].as_str().unwrap_or_default();
    let namespace = &dep["metadata"]["namespace"];
    let template_hash = suffix(seed, 10);
    let rs = format!("{name}-{template_hash}");
    (0..count)
        .map(|k| {
            let seed = seed * 8 + k;
            let template = &dep["spec"]["template"];
            let mut labels = template["metadata"]["labels"].clone();
            labels["pod-template-hash"] = json!(template_hash);
            let mut spec = template["spec"].clone();
            spec["nodeName"] = json!(format!("ip-10-0-{}-{}.ec2.internal", seed % 64, seed % 250));
            spec["serviceAccountName"] = json!("default");
            spec["serviceAccount"] = json!("default");
            spec["enableServiceLinks"] = json!(true);
            spec["preemptionPolicy"] = json!("PreemptLowerPriority");
            spec["priority"] = json!(0);
            let mut tolerations = spec["tolerations"].as_array().cloned().unwrap_or_default();
            for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
                tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}));
            }
            spec["tolerations"] = json!(tolerations);
            let ip = format!("10.{}.{}.{}", 64 + seed % 64, (seed / 7) % 250, seed % 250);
            let container = template["spec"]["containers"][0].clone();
            let conditions: Vec<Value> = [
                "PodReadyToStartContainers",
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            ]
            .iter()
            .map(|t| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": created}))
            .collect();
            let status = json!({
                "phase": "Running",
                "conditions": conditions,
                "hostIP": format!("10.0.{}.{}", seed % 64, seed % 250), "hostIPs": [{"ip": format!("10.0.{}.{}", seed % 64, seed % 250)}],
                "podIP": ip, "podIPs": [{"ip": ip}], "startTime": created, "qosClass": "Burstable",
                "containerStatuses": [{
                    "name": container["name"], "image": container["image"],
                    "imageID": format!("{}@sha256:{:016x}{:016x}{:016x}{:016x}", container["image"].as_str().unwrap_or_default(), mix(seed), mix(seed + 1), mix(seed + 2), mix(seed + 3)),
                    "containerID": format!("containerd://{:016x}{:016x}{:016x}{:016x}", mix(seed + 4), mix(seed + 5), mix(seed + 6), mix(seed + 7)),
                    "ready": true, "started": true, "restartCount": 0,
                    "state": {"running": {"startedAt": created}}, "lastState": {},
                }],
            });
            let metadata = json!({
                "name": format!("{rs}-{}", suffix(seed + 99, 5)), "generateName": format!("{rs}-"),
                "namespace": namespace, "uid": uuid(seed + 7_000_000), "resourceVersion": rv.to_string(),
                "creationTimestamp": created, "labels": labels,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": uuid(seed + 8_000_000), "controller": true, "blockOwnerDeletion": true}],
            });
            let mut pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec, "status": status});
            let kcm = json!({"metadata": {"generateName": "", "labels": pod["metadata"]["labels"], "ownerReferences": pod["metadata"]["ownerReferences"]}, "spec": template["spec"]});
            pod["metadata"]["managedFields"] = json!([
                managed("kube-controller-manager", "Update", "v1", created, None, kcm),
                managed("kubelet", "Update", "v1", created, Some("status"), json!({"status": pod["status"]})),
            ]);
            pod
        })
        .collect()
}

/// All objects of model `i`, as `(kind, JSON)`; `Err` if the planner would write for it.
fn model_objects(i: usize, now: Timestamp) -> (Vec<(Kind, Value)>, Result<(), String>) {
    let seed = (i as u64) * 1000;
    let namespace = format!("team-{:02}", i % NAMESPACES);
    let name = format!("model-{i:04}");
    let team = format!("team-{:02}", i % NAMESPACES);
    let version = format!("1.{}.{}", 3 + i % 5, i % 11);
    let image = format!("registry.example.com/ml/{name}:{version}");
    let strategy = if i.is_multiple_of(2) {
        "Canary"
    } else {
        "Immediate"
    };
    let manifest = json!({
        "apiVersion": "drover.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": {"name": name, "namespace": namespace,
            "labels": {"team": team, "environment": "production", "app.kubernetes.io/part-of": "risk-platform"}},
        "spec": {
            "model": {"version": version, "image": image,
                "uri": format!("s3://models-prod/{team}/{name}/{version}/"),
                "port": 8080,
                "env": [{"name": "WORKERS", "value": "4"}, {"name": "LOG_LEVEL", "value": "info"},
                        {"name": "BATCH_SIZE", "value": "32"}, {"name": "FEATURE_STORE_URL", "value": "http://feast.feature-store:6566"}],
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "2Gi"}}},
            "pod": {"labels": {"team": team, "cost-center": format!("cc-{}", 4100 + i % 13)},
                    "nodeSelector": {"node.kubernetes.io/pool": "inference"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"}]},
            "autoscaling": {"minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 70},
            "rollout": {"strategy": strategy},
        },
    });
    let uid = uuid(seed + 1);
    let mut md: ModelDeployment =
        serde_json::from_value(manifest.clone()).expect("a valid ModelDeployment");
    md.metadata.uid = Some(uid);
    md.metadata.generation = Some(3);
    let settled_at = at(now.as_second() - 3_600 - (i as i64 % 600));
    let created = at(settled_at.as_second() - 86_400 * (1 + i as i64 % 90)).to_string();
    let settled = settled_at.to_string();
    let rv = 1_000_000 + seed;
    let mut children = settle(&mut md, 2, settled_at, seed);

    // A previous revision of the same model, owned by an earlier incarnation (other uid).
    let mut previous = md.clone();
    previous.metadata.uid = Some(uuid(seed + 2));
    previous.spec.model.version = format!("{version}-rc1");
    previous.spec.model.image = format!("registry.example.com/ml/{name}:{version}-rc1");
    let old_hash = revision_of(&previous.spec);
    let old = ready(
        build::deployment::build(
            &previous,
            &old_hash,
            None,
            build::deployment::Pins::new(plan::DEFAULT_MONITOR_IMAGE),
        ),
        2,
        uuid(seed + 3),
        at(settled_at.as_second() - 86_400),
    );
    children.deployments.push(old);

    let mut out = Vec::new();
    let mut md_value = serde_json::to_value(&md).expect("a ModelDeployment serialises");
    let status = md_value["status"].clone();
    {
        let meta = &mut md_value["metadata"];
        meta["resourceVersion"] = json!((rv + 1).to_string());
        meta["creationTimestamp"] = json!(created);
        meta["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": format!("{manifest}\n")});
        meta["managedFields"] = json!([
            managed(
                "kubectl-client-side-apply",
                "Update",
                "drover.dev/v1alpha1",
                &created,
                None,
                json!({"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": ""}, "labels": manifest["metadata"]["labels"]}, "spec": manifest["spec"]})
            ),
            managed(
                "drover",
                "Apply",
                "drover.dev/v1alpha1",
                &settled,
                Some("status"),
                json!({"status": status})
            ),
        ]);
    }
    out.push((Kind::Model, md_value));

    // The monitor token Secret, as the operator created it (read with a GET, not watched).
    let token: String = (0..4)
        .map(|k| format!("{:016x}", mix(seed + 40 + k)))
        .collect();
    let mut secret = serde_json::to_value(build::secret::monitor_token(&md, &token))
        .expect("a Secret serialises");
    if let Some(obj) = secret.as_object_mut() {
        obj.remove("stringData");
    }
    secret["data"] = json!({"token": base64(token.as_bytes())});
    let fields = json!({
        "metadata": {"labels": secret["metadata"]["labels"], "ownerReferences": secret["metadata"]["ownerReferences"]},
        "data": {"token": ""}, "immutable": true, "type": "",
    });
    let meta = &mut secret["metadata"];
    meta["uid"] = json!(uuid(seed + 6));
    meta["resourceVersion"] = json!((rv + 7).to_string());
    meta["creationTimestamp"] = json!(created);
    meta["managedFields"] = json!([managed("drover", "Update", "v1", &created, None, fields)]);
    out.push((Kind::Secret, secret));
    // The NetworkPolicy, as the planner builds it (read once per resync, not watched).
    let mut policy = serde_json::to_value(build::network_policy::build(&md, "drover-system"))
        .expect("a NetworkPolicy serialises");
    policy["metadata"]["uid"] = json!(uuid(seed + 7));
    policy["metadata"]["resourceVersion"] = json!((rv + 8).to_string());
    policy["metadata"]["creationTimestamp"] = json!(created);
    out.push((Kind::NetworkPolicy, policy));
    for (k, d) in children.deployments.iter().enumerate() {
        let v = deployment_value(d, rv + 2 + k as u64, &created);
        for pod in pod_values(&v, 2, seed + 20 + k as u64, &created, rv + 10 + k as u64) {
            out.push((Kind::Pod, pod));
        }
        out.push((Kind::Deployment, v));
    }
    if let Some(s) = &children.service {
        let mut v = serde_json::to_value(s).expect("a Service serialises");
        let applied = json!({"metadata": {"labels": v["metadata"]["labels"], "annotations": v["metadata"]["annotations"], "ownerReferences": v["metadata"]["ownerReferences"]}, "spec": v["spec"]});
        let ip = format!(
            "10.96.{}.{}",
            (seed / 1000) / 250 % 250,
            (seed / 1000) % 250 + 2
        );
        let spec = &mut v["spec"];
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
        spec["internalTrafficPolicy"] = json!("Cluster");
        spec["ipFamilies"] = json!(["IPv4"]);
        spec["ipFamilyPolicy"] = json!("SingleStack");
        spec["sessionAffinity"] = json!("None");
        spec["type"] = json!("ClusterIP");
        v["status"] = json!({"loadBalancer": {}});
        let meta = &mut v["metadata"];
        meta["uid"] = json!(uuid(seed + 4));
        meta["resourceVersion"] = json!((rv + 5).to_string());
        meta["creationTimestamp"] = json!(created);
        meta["managedFields"] = json!([
            managed("drover", "Apply", "v1", &created, None, applied),
            // A mesh/cost controller stamping the Service, as enterprise clusters do.
            managed(
                "cost-allocation-controller",
                "Update",
                "v1",
                &created,
                None,
                json!({"metadata": {"annotations": {"cost.example.com/center": "", "cost.example.com/owner": "", "cost.example.com/reviewed-at": ""}}})
            ),
        ]);
        meta["annotations"]["cost.example.com/center"] = json!(format!("cc-{}", 4100 + i % 13));
        meta["annotations"]["cost.example.com/owner"] = json!(format!("{team}@example.com"));
        meta["annotations"]["cost.example.com/reviewed-at"] = json!(created);
        out.push((Kind::Service, v));
    }
    if let Some(h) = &children.autoscaler {
        let mut v = serde_json::to_value(h).expect("an HPA serialises");
        let applied = json!({"metadata": {"labels": v["metadata"]["labels"], "annotations": v["metadata"]["annotations"], "ownerReferences": v["metadata"]["ownerReferences"]}, "spec": v["spec"]});
        let condition = |t: &str, reason: &str, message: &str| json!({"type": t, "status": "True", "reason": reason, "message": message, "lastTransitionTime": created});
        v["spec"]["behavior"] = json!({
            "scaleDown": {"stabilizationWindowSeconds": 300, "selectPolicy": "Max", "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]},
            "scaleUp": {"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]},
        });
        v["status"] = json!({
            "currentReplicas": 2, "desiredReplicas": 2, "lastScaleTime": settled,
            "currentMetrics": [{"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "model", "current": {"averageUtilization": 31 + i % 40, "averageValue": format!("{}m", 150 + i % 200)}}}],
            "conditions": [
                condition("AbleToScale", "ReadyForNewScale", "recommended size matches current size"),
                condition("ScalingActive", "ValidMetricFound", "the HPA was able to successfully calculate a replica count from cpu container resource utilization (percentage of request)"),
                condition("ScalingLimited", "TooFewReplicas", "the desired replica count is less than the minimum replica count"),
            ],
        });
        let status = v["status"].clone();
        let meta = &mut v["metadata"];
        meta["uid"] = json!(uuid(seed + 5));
        meta["resourceVersion"] = json!((rv + 6).to_string());
        meta["creationTimestamp"] = json!(created);
        meta["managedFields"] = json!([
            managed("drover", "Apply", "autoscaling/v2", &created, None, applied),
            managed(
                "kube-controller-manager",
                "Update",
                "autoscaling/v2",
                &settled,
                Some("status"),
                json!({"status": status})
            ),
        ]);
        out.push((Kind::Autoscaler, v));
    }
    let check = quiet(&out, now);
    (out, check)
}

/// The planner, run on the objects as the operator will decode them (children straight into the
/// cached slices), asks for nothing.
fn quiet(objects: &[(Kind, Value)], now: Timestamp) -> Result<(), String> {
    let decode = |kind: Kind| {
        objects
            .iter()
            .filter(move |(k, _)| *k == kind)
            .map(|(_, v)| v)
    };
    let md: ModelDeployment = decode(Kind::Model)
        .next()
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .ok_or("no ModelDeployment")?;
    let c = Cached {
        deployments: decode(Kind::Deployment)
            .filter_map(|v| serde_json::from_value(v.clone()).ok())
            .collect(),
        service: decode(Kind::Service).find_map(|v| serde_json::from_value(v.clone()).ok()),
        autoscaler: decode(Kind::Autoscaler).find_map(|v| serde_json::from_value(v.clone()).ok()),
        network_policy: decode(Kind::NetworkPolicy)
            .find_map(|v| serde_json::from_value(v.clone()).ok()),
    };
    let p = plan::plan(&md, &observe(&md, &c), &plan::Settings::default(), now);
    if !p.actions.is_empty() {
        return Err(format!("{}: actions {:?}", md.name_any(), p.actions));
    }
    if md.status.as_ref() != Some(&p.status) {
        return Err(format!("{}: status would change", md.name_any()));
    }
    Ok(())
}

fn dataset(models: usize) -> Dataset {
    let now = at(Timestamp::now().as_second());
    let mut data = Dataset::default();
    for i in 0..models {
        let (objects, check) = model_objects(i, now);
        if let Err(e) = check {
            data.not_settled.push(e);
        }
        for (kind, v) in objects {
            let mf = serde_json::to_vec(&v["metadata"]["managedFields"]).map_or(0, |b| b.len());
            let json = Bytes::from(serde_json::to_vec(&v).expect("an object serialises"));
            let labels = v["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            data.bytes[kind.idx()] += json.len() as u64;
            data.managed_fields_bytes[kind.idx()] += mf as u64;
            data.items[kind.idx()].push(Item {
                name: v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                namespace: v["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                labels,
                json,
            });
        }
    }
    data
}

// ---------------------------------------------------------------------------------------------
// The driver.

#[derive(Clone, Copy, Default)]
struct Memory {
    rss_kib: u64,
    hwm_kib: u64,
    anon_kib: u64,
}

fn memory_of(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    Some(Memory {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        anon_kib: field("RssAnon:").unwrap_or(0),
    })
}

/// `GET path` on the operator's admin server: the raw HTTP/1.0 response.
async fn scrape(addr: SocketAddr, path: &str) -> Option<String> {
    let get = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut text = String::new();
        stream.read_to_string(&mut text).await.ok()?;
        Some(text)
    };
    tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()
        .flatten()
}

/// Sum of the samples of metric `name` (with or without labels).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with(' ') || r.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

struct Row {
    models: usize,
    held: usize,
    listed: u64,
    bytes_sent: u64,
    memory: Memory,
    reconciles: Option<u64>,
    failures: Option<u64>,
    writes: u64,
    writes_by: BTreeMap<String, u64>,
    trimmed_kib: Option<u64>,
    readyz: String,
    gets: u64,
    lease_writes: u64,
    watches: u64,
    settle_secs: f64,
    timed_out: bool,
    stop: String,
    pod_requests: u64,
    unknown: u64,
    not_settled: Vec<String>,
    mf_avg: [u64; N_KINDS],
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn measure(models: usize, cli: &Cli, user: &[String]) -> anyhow::Result<Row> {
    let generating = Instant::now();
    let mut data = dataset(models);
    let held: usize = data.items.iter().map(Vec::len).sum();
    let held_bytes: u64 = data.bytes.iter().sum();
    eprintln!(
        "[{models} models] generated {held} objects ({:.1} MiB of JSON) in {:.1}s",
        held_bytes as f64 / 1_048_576.0,
        generating.elapsed().as_secs_f64()
    );
    let mut mf_avg = [0; N_KINDS];
    for kind in KINDS {
        let n = data.items[kind.idx()].len() as u64;
        mf_avg[kind.idx()] = data.managed_fields_bytes[kind.idx()]
            .checked_div(n)
            .unwrap_or(0);
    }

    // The operator's command line, and what it resolves to.
    let args = argv(user, Some(free_port()?));
    let resolved = Cli::parse_from(&args);
    let metrics_addr = resolved.operator.metrics_addr;
    let scopes = &resolved.operator.namespaces;
    let expected = data.items[Kind::Model.idx()]
        .iter()
        .filter(|m| scopes.is_empty() || scopes.contains(&m.namespace))
        .count() as u64;
    let watches_needed = scopes.len().max(1) as u64;

    let not_settled = std::mem::take(&mut data.not_settled);
    let server = Arc::new(Server {
        data,
        stats: Stats::default(),
        leases: Mutex::default(),
        children_first: cli.children_first,
        resource_version: 9_000_000,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let app = Router::new().fallback(handle).with_state(server.clone());
    let serving = tokio::spawn(async move { axum::serve(listener, app).await });

    let started = Instant::now();
    // DROVER_BENCH_WRAP (e.g. `heaptrack -o /tmp/op`) runs the child under a profiler; the
    // memory columns are then the wrapper's, only the profile counts.
    let exe = std::env::current_exe()?;
    let wrap = std::env::var("DROVER_BENCH_WRAP").unwrap_or_default();
    let mut words = wrap.split_whitespace();
    let mut command = match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    let mut child = command
        .args(&args[1..])
        .env("DROVER_BENCH_ROLE", "operator")
        .env("DROVER_BENCH_API", format!("http://{api}"))
        // As in the image (Dockerfile), unless the caller chose otherwise.
        .env(
            "MALLOC_ARENA_MAX",
            std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into()),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let pid = child.id();

    let timeout = Duration::from_secs(cli.timeout);
    let mut reference = 0u64;
    let mut stable_since = Instant::now();
    let mut memory;
    let mut metrics_text: Option<String> = None;
    let mut timed_out = false;
    loop {
        tokio::time::sleep(POLL).await;
        if let Some(exit) = child.try_wait()? {
            serving.abort();
            anyhow::bail!("the operator exited early ({exit}) with {models} models");
        }
        let Some(m) = memory_of(pid) else { continue };
        memory = m;
        let now = Instant::now();
        let watched = KINDS
            .iter()
            .filter(|k| k.watched())
            .all(|k| server.stats.watches[k.idx()].load(Ordering::Relaxed) >= watches_needed);
        if metrics_addr.port() != 0 {
            metrics_text = scrape(metrics_addr, "/metrics").await;
        }
        let reconciled = match &metrics_text {
            Some(text) => metric(text, "drover_reconciles_total") >= expected,
            None => metrics_addr.port() == 0,
        };
        let tolerance = (memory.rss_kib / 200).max(256);
        if !(watched && reconciled) || memory.rss_kib.abs_diff(reference) > tolerance {
            reference = memory.rss_kib;
            stable_since = now;
        }
        if now.duration_since(stable_since) >= STABLE_FOR {
            break;
        }
        if started.elapsed() >= timeout {
            timed_out = true;
            break;
        }
    }
    let settle_secs = started.elapsed().as_secs_f64() - STABLE_FOR.as_secs_f64();
    // `/readyz` turns 200 once every store is synced (src/operator.rs `synced`).
    let readyz = if metrics_addr.port() == 0 {
        "n/a".to_string()
    } else {
        scrape(metrics_addr, "/readyz")
            .await
            .and_then(|r| r.split_whitespace().nth(1).map(str::to_string))
            .unwrap_or_else(|| "no answer".into())
    };
    let reconciles = metrics_text
        .as_deref()
        .map(|t| metric(t, "drover_reconciles_total"));
    let failures = metrics_text
        .as_deref()
        .map(|t| metric(t, "drover_reconcile_failures_total"));

    // Diagnostic: how much of that RSS is free heap the allocator keeps.
    let asked = child.stdin.as_mut().is_some_and(|stdin| {
        std::io::Write::write_all(stdin, b"trim\n").is_ok() && std::io::Write::flush(stdin).is_ok()
    });
    let trimmed = if asked {
        tokio::time::sleep(Duration::from_millis(500)).await;
        memory_of(pid).map(|m| m.rss_kib)
    } else {
        None
    };

    // Graceful stop: close stdin, the child flips the stop channel.
    drop(child.stdin.take());
    let stopping = Instant::now();
    let stop = loop {
        if let Some(exit) = child.try_wait()? {
            break if exit.success() {
                format!("stopped in {} ms", stopping.elapsed().as_millis())
            } else {
                format!("exited with {exit}")
            };
        }
        if stopping.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            break "did not stop within 10 s after the stop signal: killed".to_string();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    serving.abort();

    let stats = &server.stats;
    Ok(Row {
        models,
        held,
        listed: stats.objects_listed.load(Ordering::Relaxed),
        bytes_sent: stats.bytes_sent.load(Ordering::Relaxed),
        memory,
        reconciles,
        failures,
        writes: stats.writes.load(Ordering::Relaxed),
        writes_by: stats
            .writes_by
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default(),
        gets: stats.gets.load(Ordering::Relaxed),
        trimmed_kib: trimmed,
        readyz,
        lease_writes: stats.lease_writes.load(Ordering::Relaxed),
        watches: stats
            .watches
            .iter()
            .map(|w| w.load(Ordering::Relaxed))
            .sum(),
        settle_secs,
        timed_out,
        stop,
        pod_requests: stats.lists[Kind::Pod.idx()].load(Ordering::Relaxed)
            + stats.watches[Kind::Pod.idx()].load(Ordering::Relaxed),
        unknown: stats.unknown.load(Ordering::Relaxed),
        not_settled,
        mf_avg,
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

async fn driver(cli: Cli, user: Vec<String>) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for &models in &cli.models {
        rows.push(measure(models, &cli, &user).await?);
    }
    println!();
    println!(
        "Drover operator memory: real watches/reflectors/controller in a child process, MALLOC_ARENA_MAX={}, fake API on 127.0.0.1",
        std::env::var("MALLOC_ARENA_MAX").unwrap_or_else(|_| "2".into())
    );
    println!(
        "per model: 1 ModelDeployment, 2 Deployments (1 owned settled revision + 1 older revision owned by an earlier uid, skipped by is_child), 1 Service, 1 HPA, 4 Pods; served but not watched: 1 monitor-token Secret, 1 NetworkPolicy"
    );
    println!(
        "lists: limit/continue honoured (the operator sends limit=100, and kube then drops any_semantic's resourceVersion=0); watches: 1 BOOKMARK, then held open; ModelDeployment list {}",
        if cli.children_first {
            "held until the child watches run (--children-first)"
        } else {
            "answered at once"
        }
    );
    println!();
    println!(
        "{:>6} | {:>7} | {:>7} | {:>8} | {:>7} | {:>7} | {:>8} | {:>11} | {:>10} | {:>6} | {:>9} | {:>7}",
        "models",
        "objects",
        "listed",
        "MiB sent",
        "RSS MiB",
        "HWM MiB",
        "anon MiB",
        "trimmed MiB",
        "reconciles",
        "writes",
        "RSS/64MiB",
        "ready s"
    );
    for r in &rows {
        println!(
            "{:>6} | {:>7} | {:>7} | {:>8.1} | {:>7.1} | {:>7.1} | {:>8.1} | {:>11} | {:>10} | {:>6} | {:>8.0}% | {:>7.1}{}",
            r.models,
            r.held,
            r.listed,
            r.bytes_sent as f64 / 1_048_576.0,
            mib(r.memory.rss_kib),
            mib(r.memory.hwm_kib),
            mib(r.memory.anon_kib),
            r.trimmed_kib
                .map_or("n/a".into(), |k| format!("{:.1}", mib(k))),
            r.reconciles.map_or("n/a".into(), |n| n.to_string()),
            r.writes,
            100.0 * mib(r.memory.rss_kib) / TARGET_MIB,
            r.settle_secs,
            if r.timed_out { " (timed out)" } else { "" },
        );
    }
    println!(
        "objects: all the fake API holds; listed: objects sent in list responses; RSS, HWM (peak RSS) and anon (RssAnon) of the operator process once settled; trimmed: RSS after malloc_trim(0) (free heap glibc kept); writes: non-Lease writes (expected 0); ready s: spawn to watches + reconciles done"
    );
    println!();
    if let (Some(small), Some(large)) = (
        rows.iter().find(|r| r.models == 100),
        rows.iter().find(|r| r.models == 1000),
    ) {
        let per = |a: u64, b: u64| (b as f64 - a as f64) / 900.0;
        println!(
            "slope 100→1000: {:.1} KiB RSS, {:.1} KiB HWM per ModelDeployment (with its 4 watched children and 1 orphan revision)",
            per(small.memory.rss_kib, large.memory.rss_kib),
            per(small.memory.hwm_kib, large.memory.hwm_kib),
        );
    }
    if let Some(r) = rows.iter().find(|r| r.models > 0) {
        let names = [
            "ModelDeployment",
            "Deployment",
            "Service",
            "HPA",
            "Pod",
            "Secret",
            "NetworkPolicy",
            "Job",
        ];
        let mf: Vec<String> = KINDS
            .iter()
            .map(|k| format!("{} {} B", names[k.idx()], r.mf_avg[k.idx()]))
            .collect();
        println!("managedFields per object (average): {}", mf.join(", "));
    }
    for r in &rows {
        let mut notes = vec![format!("/readyz {}", r.readyz), r.stop.clone()];
        notes.push(format!("{} Lease writes (leader election)", r.lease_writes));
        if r.watches == 0 {
            notes.push(
                "NO WATCH STARTED: the controller halted before its first list (with --leader-elect=false, run_with_client drops the Lease-lost sender)".into(),
            );
        }
        notes.push(format!(
            "pods: {} served by the fake API, {} pod requests",
            r.models * 4,
            r.pod_requests
        ));
        if let Some(f) = r.failures.filter(|f| *f > 0) {
            notes.push(format!("{f} failed reconciles"));
        }
        if r.unknown > 0 {
            notes.push(format!(
                "{} requests outside lists/watches (404)",
                r.unknown
            ));
        }
        if !r.writes_by.is_empty() {
            let by: Vec<String> = r
                .writes_by
                .iter()
                .map(|(what, n)| format!("{what} ×{n}"))
                .collect();
            notes.push(format!("writes: {}", by.join(", ")));
        }
        if r.gets > 0 {
            notes.push(format!("{} single-object GETs", r.gets));
        }
        if !r.not_settled.is_empty() {
            notes.push(format!(
                "{} models not settled, e.g. {}",
                r.not_settled.len(),
                r.not_settled[0]
            ));
        }
        println!("[{} models] {}", r.models, notes.join("; "));
    }
    Ok(())
}
