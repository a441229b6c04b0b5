//! `drover operator`: wires the watches, the controller, leader election and the admin server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, future};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, ListParams};
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{Controller, Predicate, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource};
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::admin::{self, Health};
use crate::api::{ModelDeployment, Phase};
use crate::collect;
use crate::controller::cached::{
    self, CachedAutoscaler, CachedDeployment, CachedJob, CachedPod, CachedService,
};
use crate::controller::{self, Context, Stores};
use crate::leader::{LeaderElector, LeaseTiming, WriteGate};
use crate::metrics::Metrics;
use crate::naming::MANAGED_SELECTOR;
use crate::plan;

/// Settings of `drover operator`.
#[derive(clap::Args, Debug, Clone)]
pub struct OperatorArgs {
    /// Namespaces to watch (repeat or comma-separate); none means every namespace.
    #[arg(
        long = "namespace",
        env = "DROVER_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "DROVER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Hold a Lease so that only one instance writes.
    #[arg(long, env = "DROVER_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader Lease (defaults to the pod's namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "drover-system")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "DROVER_LEASE_NAME", default_value = "drover-leader")]
    pub lease_name: String,
    /// Identity in the Lease (defaults to the pod name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// ModelDeployments reconciled at once.
    #[arg(long, env = "DROVER_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,
    /// Monitor report scrapes in flight at once, over every ModelDeployment.
    #[arg(long, env = "DROVER_SCRAPE_CONCURRENCY", default_value_t = 64)]
    pub scrape_concurrency: u16,
    /// Timeout of one monitor report scrape, in milliseconds.
    #[arg(long, env = "DROVER_SCRAPE_TIMEOUT_MS", default_value_t = 2000)]
    pub scrape_timeout_ms: u64,
    /// Runtime worker threads: 1 runs everything on the current-thread scheduler (the operator
    /// waits on the API far more than it computes), 0 means one per core of the node.
    #[arg(long, env = "DROVER_OPERATOR_THREADS", default_value_t = 1)]
    pub threads: usize,
    /// Image of the monitor sidecar in new revisions (the Helm chart passes its own image, so a
    /// mirrored or digest-pinned install runs the same image for both).
    #[arg(long, env = "DROVER_MONITOR_IMAGE", default_value = plan::DEFAULT_MONITOR_IMAGE)]
    pub monitor_image: String,
}

/// The runtime `drover operator` runs on: `threads` workers, 1 being the current-thread
/// scheduler. One thread measured ~4 MiB less resident memory than two or more workers at 1,000
/// ModelDeployments (benches/operator_memory.rs); without a CPU limit, tokio's default would
/// start one worker per core of the node.
pub fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        0 => tokio::runtime::Builder::new_multi_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    builder.enable_all().build()
}

/// Runs the operator until SIGTERM/SIGINT, or until the Lease is lost (then exits non-zero so
/// the pod restarts as a standby).
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .map_err(|e| anyhow::Error::msg(format!("no Kubernetes client configuration: {e}")))?;
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(shutdown_on_signal(stop_tx));
    run_with_client(client, args, stop_rx).await
}

/// Runs the operator with `client` until `stop` turns true (tests and benchmarks run it
/// in-process this way), or until the Lease is lost.
pub async fn run_with_client(
    client: Client,
    args: OperatorArgs,
    stop_rx: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    ensure_crd_installed(&client, &args.namespaces).await?;

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let registry = Arc::new(registry);
    let health = Arc::new(Health::default());
    health.beat();

    let admin = tokio::spawn(admin::serve(
        args.metrics_addr,
        registry.clone(),
        health.clone(),
        stopped(stop_rx.clone()),
    ));
    info!(addr = %args.metrics_addr, "admin server listening");

    let identity = args
        .identity
        .clone()
        .unwrap_or_else(|| format!("drover-{}", std::process::id()));
    let (gate, mut elector) = if args.leader_elect {
        let api: Api<Lease> = Api::namespaced(client.clone(), &args.lease_namespace);
        let elector = LeaderElector::new(api, &args.lease_name, &identity, LeaseTiming::default());
        (elector.gate(), Some(elector))
    } else {
        (WriteGate::always_open(), None)
    };

    // A standby is live and ready: it is healthy, it just does not write.
    if let Some(el) = elector.as_mut() {
        health.set_ready(true);
        info!(lease = %args.lease_name, %identity, "waiting for leadership");
        let timing = LeaseTiming::default();
        let mut stop = stop_rx.clone();
        loop {
            health.beat();
            el.round().await;
            if gate.is_open() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(timing.retry_period) => {}
                _ = stop.changed() => { return Ok(()); }
            }
        }
        metrics.set_leader(true);
        info!("became leader");
    }
    health.set_ready(false);

    // Leading (or no election): keep renewing, and stop everything when leadership is lost.
    let (lost_tx, lost_rx) = watch::channel(false);
    let renewer = elector.map(|mut el| {
        let health = health.clone();
        let metrics = metrics.clone();
        let gate = gate.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let timing = LeaseTiming::default();
            loop {
                health.beat();
                el.round().await;
                if !gate.is_open() {
                    metrics.set_leader(false);
                    error!("lost the leader Lease: stopping every writer");
                    let _ = lost_tx.send(true);
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(timing.retry_period) => {}
                    _ = stop.changed() => { el.release().await; return; }
                }
            }
        })
    });
    if renewer.is_none() {
        let health = health.clone();
        tokio::spawn(async move {
            loop {
                health.beat();
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        });
    }

    let reporter = Reporter {
        controller: "drover".into(),
        instance: Some(identity.clone()),
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let scopes: Vec<Option<String>> = if args.namespaces.is_empty() {
        vec![None]
    } else {
        args.namespaces.iter().cloned().map(Some).collect()
    };
    let halt = {
        let stop = stop_rx.clone();
        let lost = lost_rx.clone();
        move || {
            let mut stop = stop.clone();
            let mut lost = lost.clone();
            async move {
                // Without leader election nobody holds the sender: a closed channel means
                // "never lost", not "lost now".
                let lost = async {
                    if lost.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = lost => {}
                }
            }
        }
    };
    let mut readers = Vec::new();
    let mut tasks = Vec::new();
    for scope in scopes {
        let (task, reader, synced) = scope_controller(
            client.clone(),
            scope,
            recorder.clone(),
            metrics.clone(),
            gate.clone(),
            args.clone(),
            halt(),
        );
        readers.push(reader);
        tasks.push(tokio::spawn(task));
        let health = health.clone();
        // Not awaited at shutdown: it only flips readiness.
        tokio::spawn(async move {
            synced.await;
            health.set_ready(true);
        });
    }
    tokio::spawn(count_phases(readers, metrics.clone()));
    for t in tasks {
        let _ = t.await;
    }
    let _ = admin.await;
    if *lost_rx.borrow() {
        return Err(anyhow::Error::msg("lost the leader Lease"));
    }
    info!("stopped");
    Ok(())
}

/// Objects per list page. A page is held whole while it is parsed: its response text, then all
/// its objects (ModelDeployments with their managedFields, which `.modify()` strips only
/// afterwards). With kube's default of 500 that transient was the operator's peak.
const LIST_PAGE: u32 = 100;

type Synced = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// One controller over one namespace (or all): watches, stores and the reconcile loop.
fn scope_controller(
    client: Client,
    scope: Option<String>,
    recorder: Recorder,
    metrics: Metrics,
    gate: WriteGate,
    args: OperatorArgs,
    halt: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) -> (
    impl std::future::Future<Output = ()> + Send,
    Store<DeserializeGuard<ModelDeployment>>,
    Synced,
) {
    fn api<K>(client: &Client, scope: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match scope {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let children = watcher::Config::default()
        .labels(MANAGED_SELECTOR)
        .any_semantic()
        .page_size(LIST_PAGE);

    let (md_reader, md_writer) = reflector::store::<DeserializeGuard<ModelDeployment>>();
    let models = watcher(
        api::<DeserializeGuard<ModelDeployment>>(&client, &scope),
        watcher::Config::default()
            .any_semantic()
            .page_size(LIST_PAGE),
    )
    .default_backoff()
    .modify(cached::strip_model)
    .reflect(md_writer)
    .applied_objects()
    // Status writes do not bump generation and must not retrigger; controls are annotations,
    // which do not bump generation either and must get through.
    .predicate_filter(
        predicates::generation.combine(predicates::annotations),
        Default::default(),
    );

    // Children are parsed straight into the slices `observe` reads (src/controller/cached.rs):
    // managedFields, pod templates and foreign annotations are never allocated.
    let (dep_reader, dep_writer) = reflector::store::<CachedDeployment>();
    let deployments = watcher(api::<CachedDeployment>(&client, &scope), children.clone())
        .default_backoff()
        .reflect(dep_writer)
        .touched_objects();
    let (svc_reader, svc_writer) = reflector::store::<CachedService>();
    let services = watcher(api::<CachedService>(&client, &scope), children.clone())
        .default_backoff()
        .reflect(svc_writer)
        .touched_objects();
    let (hpa_reader, hpa_writer) = reflector::store::<CachedAutoscaler>();
    let autoscalers = watcher(api::<CachedAutoscaler>(&client, &scope), children.clone())
        .default_backoff()
        .reflect(hpa_writer)
        .touched_objects();

    // Retraining and batch Jobs (Drover's and its CronJobs'), slimmed to identity and outcome.
    // A Job a CronJob started is owned by the CronJob, so Jobs map to their ModelDeployment by
    // label.
    let (job_reader, job_writer) = reflector::store::<CachedJob>();
    let jobs = watcher(
        api::<CachedJob>(&client, &scope),
        watcher::Config::default()
            .labels(MANAGED_SELECTOR)
            .any_semantic()
            .page_size(LIST_PAGE),
    )
    .default_backoff()
    .reflect(job_writer)
    .touched_objects();

    // Pods, slimmed to what the collector reads (labels, readiness, IPs): the scrape targets.
    let (pod_reader, pod_writer) = reflector::store::<CachedPod>();
    let pods = watcher(api::<CachedPod>(&client, &scope), children)
        .default_backoff()
        .reflect(pod_writer)
        .touched_objects()
        .for_each(|_| future::ready(()));

    let stores = Stores {
        deployments: dep_reader.clone(),
        services: svc_reader.clone(),
        autoscalers: hpa_reader.clone(),
        jobs: job_reader,
    };
    let synced: Synced = {
        let (a, b, c, d) = (md_reader.clone(), dep_reader, svc_reader, hpa_reader);
        Box::pin(async move {
            let _ = futures::join!(
                controller::store_ready(&a),
                controller::store_ready(&b),
                controller::store_ready(&c),
                controller::store_ready(&d)
            );
        })
    };
    let clock: controller::Clock = Arc::new(jiff::Timestamp::now);
    let collector = Arc::new(collect::Collector::default());
    // A finished scrape round asks for a reconcile of its ModelDeployment: the judgement runs
    // at the scrape that shows a breach, not at the next resync.
    let (trigger, triggered) = tokio::sync::mpsc::channel(1024);
    let scraping = collect::CollectLoop {
        collector: collector.clone(),
        models: md_reader.clone(),
        pods: pod_reader,
        client: client.clone(),
        gate: gate.clone(),
        metrics: metrics.clone(),
        trigger,
        settings: collect::CollectSettings {
            concurrency: usize::from(args.scrape_concurrency),
            timeout: Duration::from_millis(args.scrape_timeout_ms),
            ..collect::CollectSettings::default()
        },
    }
    .run();
    let triggered = futures::stream::unfold(triggered, |mut rx| async move {
        rx.recv().await.map(|r| (r, rx))
    });
    let metrics_for_notifier = metrics.clone();
    let ctx = Arc::new(
        Context::new(client, recorder, metrics, gate, stores, clock)
            .with_collector(collector)
            .with_notifier(crate::notify::Notifier::new(
                crate::notify::DeliverySettings::default(),
                metrics_for_notifier,
            ))
            .with_settings(plan::Settings {
                operator_namespace: args.lease_namespace.clone(),
                monitor_image: args.monitor_image.clone(),
            }),
    );
    let controller = Controller::for_stream(models, md_reader.clone())
        .owns_stream(deployments)
        .owns_stream(services)
        .owns_stream(autoscalers)
        .watches_stream(jobs, |job| {
            use kube::ResourceExt;
            let name = job.labels().get(crate::naming::LABEL_MODEL)?.clone();
            let namespace = job.namespace()?;
            Some(kube::runtime::reflector::ObjectRef::new(&name).within(&namespace))
        })
        .reconcile_on(triggered)
        .with_config(kube::runtime::controller::Config::default().concurrency(args.concurrency))
        .graceful_shutdown_on(halt)
        .run(controller::reconcile, controller::error_policy, ctx)
        .for_each(|result| {
            if let Err(e) = result {
                warn!(error = %e, "controller");
            }
            future::ready(())
        });
    // The controller decides when to stop; pods and scrapes stop with it.
    let task = async move {
        tokio::select! {
            _ = controller => {}
            _ = pods => {}
            _ = scraping => {}
        }
    };
    (task, md_reader, synced)
}

/// Refuses to start, with a clear message, when the CRD is not installed.
async fn ensure_crd_installed(client: &Client, namespaces: &[String]) -> anyhow::Result<()> {
    let api: Api<ModelDeployment> = match namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    match api.list_metadata(&ListParams::default().limit(1)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(anyhow::Error::msg(
            "the ModelDeployment CRD (modeldeployments.drover.dev) is not installed: run `kubectl apply -f crds/` (or `drover crd | kubectl apply -f -`) first",
        )),
        Err(e) => Err(anyhow::Error::msg(format!(
            "cannot list ModelDeployments: {e}"
        ))),
    }
}

async fn count_phases(readers: Vec<Store<DeserializeGuard<ModelDeployment>>>, metrics: Metrics) {
    loop {
        let mut counts = std::collections::HashMap::<Phase, i64>::new();
        for reader in &readers {
            for guard in reader.state() {
                if let Ok(md) = &guard.0
                    && let Some(phase) = md.status.as_ref().and_then(|s| s.phase)
                {
                    *counts.entry(phase).or_default() += 1;
                }
            }
        }
        metrics.set_phases(counts);
        tokio::time::sleep(Duration::from_secs(15)).await;
    }
}

async fn shutdown_on_signal(stop: watch::Sender<bool>) {
    wait_for_signal().await;
    info!("shutting down");
    let _ = stop.send(true);
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    // Without a SIGTERM handler, still stop on Ctrl-C (never at once).
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.changed().await;
}
