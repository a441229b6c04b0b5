//! The reconcile loop: observe → plan (pure) → apply → status → Events.
//!
//! `reconcile` is a short wrapper (timer, metrics, failure Event); the work is in named
//! functions. Reads come from the in-memory stores the watches fill, so an unchanged
//! ModelDeployment costs no API request at all.

pub mod cached;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{ModelDeployment, ModelDeploymentStatus};
use crate::build::{ChildKind, ChildRef};
use crate::leader::WriteGate;
use crate::metrics::{FailureCategory, Metrics};
use crate::naming::{ANNOTATION_SPEC_HASH, LABEL_MODEL, LABEL_REVISION, LABEL_VERSION};
use crate::plan::{
    self, Action, Observed, ObservedAutoscaler, ObservedRevision, ObservedService, ReferenceState,
};
use cached::{CachedAutoscaler, CachedDeployment, CachedService};
use writer::Writer;

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Api(#[from] kube::Error),
    /// A write was attempted without the leader Lease.
    #[error("not the leader: write refused")]
    NotLeader,
    /// Something that is not the API's fault.
    #[error("{0}")]
    Internal(String),
}

impl Error {
    /// Bounded category for metrics and Events.
    pub fn category(&self) -> FailureCategory {
        match self {
            Error::Api(_) => FailureCategory::Api,
            Error::NotLeader => FailureCategory::NotLeader,
            Error::Internal(_) => FailureCategory::Internal,
        }
    }
}

/// The in-memory views of what Drover manages, filled by label-selected watches with only the
/// fields `observe` reads (see [`cached`]).
#[derive(Clone)]
pub struct Stores {
    /// Revision Deployments.
    pub deployments: Store<CachedDeployment>,
    /// Services.
    pub services: Store<CachedService>,
    /// HorizontalPodAutoscalers.
    pub autoscalers: Store<CachedAutoscaler>,
}

/// Source of "now"; a test pins it.
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Everything a reconcile needs, built once.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// Leader gate every write checks.
    pub gate: WriteGate,
    /// Watched children.
    pub stores: Stores,
    /// Wall clock.
    pub clock: Clock,
    /// Operator configuration the planner needs.
    pub settings: plan::Settings,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<DeserializeGuard<ModelDeployment>>, u32>>,
    /// The status this instance last wrote, by object uid. The watch can deliver a child's
    /// event before the echo of our own status write; planning from that stale status would
    /// repeat notices and writes. Only the leader writes status, so its own last write is
    /// the truth until the store catches up.
    written: Mutex<HashMap<String, ModelDeploymentStatus>>,
    /// ModelDeployments (by uid) whose monitor token Secret is known to exist, and since when.
    tokens: Mutex<HashMap<String, std::time::Instant>>,
}

impl Context {
    /// A context over `client` and the given stores.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        gate: WriteGate,
        stores: Stores,
        clock: Clock,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            gate,
            stores,
            clock,
            settings: plan::Settings::default(),
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The same context with other planner settings.
    pub fn with_settings(mut self, settings: plan::Settings) -> Self {
        self.settings = settings;
        self
    }

    fn writer<'a>(&'a self, namespace: &'a str) -> Writer<'a> {
        Writer {
            client: &self.client,
            namespace,
            gate: &self.gate,
            metrics: &self.metrics,
            recorder: &self.recorder,
        }
    }

    fn failures_of(&self, key: &ObjectRef<DeserializeGuard<ModelDeployment>>, failed: bool) -> u32 {
        let Ok(mut map) = self.failures.lock() else {
            return 0;
        };
        if failed {
            let n = map.entry(key.clone()).or_insert(0);
            *n = n.saturating_add(1);
            *n
        } else {
            map.remove(key);
            0
        }
    }
}

/// Resolves once `store` has seen its first complete list. Polls with a short timeout because a
/// store wakes only one of several concurrent waiters.
pub async fn store_ready<K>(store: &Store<K>)
where
    K: kube::runtime::reflector::Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
            .await
            .is_ok()
        {
            return;
        }
    }
}

/// Resync period of a settled ModelDeployment.
pub const RESYNC: Duration = Duration::from_secs(600);

/// Reconciles one ModelDeployment (or reports one that could not be read).
pub async fn reconcile(
    guard: Arc<DeserializeGuard<ModelDeployment>>,
    ctx: Arc<Context>,
) -> Result<Requeue, Error> {
    let started = std::time::Instant::now();
    let key = ObjectRef::from_obj(guard.as_ref());
    let result = match &guard.0 {
        Ok(md) => reconcile_model(md, &ctx).await,
        Err(invalid) => {
            // One malformed object is reported and skipped; it never stalls the watch.
            warn!(name = ?invalid.metadata.name, namespace = ?invalid.metadata.namespace, error = %invalid.error, "malformed ModelDeployment");
            ctx.metrics.failed(FailureCategory::InvalidObject);
            Ok(Requeue::await_change())
        }
    };
    ctx.metrics.reconciled(started.elapsed());
    match &result {
        Ok(_) => {
            ctx.failures_of(&key, false);
        }
        Err(e) => {
            ctx.failures_of(&key, true);
            ctx.metrics.failed(e.category());
            if let Ok(md) = &guard.0
                && !matches!(e, Error::NotLeader)
            {
                let ns = md.namespace().unwrap_or_default();
                let reason = match e.category() {
                    FailureCategory::Api => "ApiError",
                    _ => "ReconcileFailed",
                };
                // Best effort: the API may be what is failing.
                let _ = ctx
                    .writer(&ns)
                    .event(
                        &md.object_ref(&()),
                        true,
                        reason,
                        "Reconcile",
                        e.to_string(),
                    )
                    .await;
            }
        }
    }
    result
}

/// Backs off exponentially per object: 2s, 4s, … up to 5 minutes.
pub fn error_policy(
    guard: Arc<DeserializeGuard<ModelDeployment>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Requeue {
    let key = ObjectRef::from_obj(guard.as_ref());
    let failures = ctx
        .failures
        .lock()
        .map(|m| m.get(&key).copied().unwrap_or(1))
        .unwrap_or(1);
    let delay = backoff(failures);
    warn!(object = %key, error = %error, retry_in = ?delay, "reconcile failed");
    Requeue::requeue(delay)
}

/// Delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(8);
    Duration::from_secs(2u64 << exp).min(Duration::from_secs(300))
}

async fn reconcile_model(md: &ModelDeployment, ctx: &Context) -> Result<Requeue, Error> {
    if !ctx.gate.is_open() {
        // Not the leader (or the Lease lapsed): do not even read, let alone write.
        return Err(Error::NotLeader);
    }
    // Planning before the children are listed would re-apply what exists (and, under an HPA,
    // reset replicas): wait until every child store has its first list.
    let stores = &ctx.stores;
    futures::join!(
        store_ready(&stores.deployments),
        store_ready(&stores.services),
        store_ready(&stores.autoscalers)
    );
    if md.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children.
        return Ok(Requeue::await_change());
    }
    let uid = md.uid().unwrap_or_default();
    let fresher = ctx.written.lock().ok().and_then(|w| w.get(&uid).cloned());
    let current;
    let md = match fresher {
        Some(status) if md.status.as_ref() != Some(&status) => {
            let mut copy = md.clone();
            copy.status = Some(status);
            current = copy;
            &current
        }
        _ => md,
    };
    let namespace = md.namespace().unwrap_or_default();
    let observed = observe(md, ctx).await?;
    let plan = plan::plan(md, &observed, &ctx.settings, (ctx.clock)());
    let writer = ctx.writer(&namespace);
    let reference = md.object_ref(&());
    if plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Apply(crate::build::Child::Deployment(_))))
    {
        ensure_monitor_token(md, ctx, &writer, &uid).await?;
    }
    for action in &plan.actions {
        match action {
            Action::Apply(child) => {
                writer.apply(child).await?;
                let r = child.reference();
                let existed = exists(&observed, &r);
                let reason = if existed { "Updated" } else { "Created" };
                info!(model = %md.name_any(), kind = r.kind.as_str(), name = %r.name, reason, "applied child");
                let _ = writer
                    .event(
                        &reference,
                        false,
                        reason,
                        "Apply",
                        format!("{} {} {}", reason.to_lowercase(), r.kind.as_str(), r.name),
                    )
                    .await;
            }
            Action::Scale {
                deployment,
                replicas,
            } => {
                writer.scale(deployment, *replicas).await?;
                info!(model = %md.name_any(), deployment, replicas, "set starting replicas");
            }
            Action::Delete(r) => {
                writer.delete(r).await?;
                info!(model = %md.name_any(), kind = r.kind.as_str(), name = %r.name, "deleted child");
                let _ = writer
                    .event(
                        &reference,
                        false,
                        "Deleted",
                        "Delete",
                        format!("deleted {} {}", r.kind.as_str(), r.name),
                    )
                    .await;
            }
        }
    }
    if md.status.as_ref() != Some(&plan.status) {
        writer.apply_status(md, &plan.status).await?;
        if let Ok(mut written) = ctx.written.lock() {
            written.insert(uid, plan.status.clone());
        }
    }
    for notice in &plan.notices {
        let _ = writer
            .event(
                &reference,
                notice.warning,
                notice.reason,
                "Rollout",
                notice.note.clone(),
            )
            .await;
    }
    Ok(match plan.requeue_after {
        Some(after) => Requeue::requeue(after.min(RESYNC)),
        None => Requeue::requeue(RESYNC),
    })
}

/// Makes sure Secret `<name>-monitor-token` exists before pods that mount it are created. The
/// token is random, generated once; it is never rewritten, since running monitors read it.
async fn ensure_monitor_token(
    md: &ModelDeployment,
    ctx: &Context,
    writer: &Writer<'_>,
    uid: &str,
) -> Result<(), Error> {
    let fresh = ctx
        .tokens
        .lock()
        .ok()
        .and_then(|t| t.get(uid).copied())
        .is_some_and(|since| since.elapsed() < RESYNC);
    if fresh {
        return Ok(());
    }
    let name = crate::naming::monitor_token(&md.name_any());
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    if api.get_opt(&name).await?.is_none() {
        let secret = crate::build::secret::monitor_token(md, &random_token()?);
        if writer.create_secret_if_absent(&secret).await? {
            let _ = writer
                .event(
                    &md.object_ref(&()),
                    false,
                    "Created",
                    "Apply",
                    format!("created Secret {name}"),
                )
                .await;
        }
    }
    if let Ok(mut tokens) = ctx.tokens.lock() {
        tokens.insert(uid.to_string(), std::time::Instant::now());
    }
    Ok(())
}

fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| Error::Internal(format!("no randomness for the monitor token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn exists(observed: &Observed, r: &ChildRef) -> bool {
    match r.kind {
        ChildKind::Deployment => observed.revisions.iter().any(|d| d.name == r.name),
        ChildKind::Service => observed.service.is_some(),
        ChildKind::Autoscaler => observed.autoscaler.is_some(),
    }
}

/// True when `obj` is a child of `md`: same namespace, its model label, and `md` as controller.
fn is_child<K: Resource>(md: &ModelDeployment, obj: &K) -> bool {
    let uid = md.meta().uid.as_deref();
    obj.meta().namespace == md.meta().namespace
        && obj.labels().get(LABEL_MODEL).map(String::as_str) == md.meta().name.as_deref()
        && obj
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

fn spec_hash<K: Resource>(obj: &K) -> Option<String> {
    obj.annotations().get(ANNOTATION_SPEC_HASH).cloned()
}

/// Builds what the planner needs from the stores (and the reference ConfigMap, if any).
pub async fn observe(md: &ModelDeployment, ctx: &Context) -> Result<Observed, Error> {
    let stores = &ctx.stores;
    let revisions = stores
        .deployments
        .state()
        .iter()
        .filter(|d| is_child(md, d.as_ref()))
        .map(|d| observed_revision(d))
        .collect();
    let service_name = crate::naming::service(&md.name_any());
    let service = stores
        .services
        .state()
        .iter()
        .find(|s| s.name_any() == service_name && is_child(md, s.as_ref()))
        .map(|s| ObservedService {
            spec_hash: spec_hash(s.as_ref()),
            serving_revision: s
                .spec
                .as_ref()
                .and_then(|spec| spec.selector.as_ref())
                .and_then(|sel| sel.get(LABEL_REVISION).cloned()),
        });
    let autoscaler = stores
        .autoscalers
        .state()
        .iter()
        .find(|h| is_child(md, h.as_ref()))
        .map(|h| ObservedAutoscaler {
            spec_hash: spec_hash(h.as_ref()),
            target: h
                .spec
                .as_ref()
                .map(|s| s.scale_target_ref.name.clone())
                .unwrap_or_default(),
        });
    let reference = match &md.spec.monitoring.reference {
        None => ReferenceState::NotReferenced,
        Some(r) => {
            let api: Api<ConfigMap> =
                Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
            match api.get_opt(&r.config_map_ref.name).await? {
                None => ReferenceState::MissingConfigMap,
                Some(cm) => {
                    let key = &r.config_map_ref.key;
                    let has = cm.data.as_ref().is_some_and(|d| d.contains_key(key))
                        || cm.binary_data.as_ref().is_some_and(|d| d.contains_key(key));
                    if has {
                        ReferenceState::Found
                    } else {
                        ReferenceState::MissingKey
                    }
                }
            }
        }
    };
    Ok(Observed {
        revisions,
        service,
        autoscaler,
        reference,
    })
}

/// What the planner needs of one revision Deployment.
pub fn observed_revision(d: &CachedDeployment) -> ObservedRevision {
    let status = d.status.clone().unwrap_or_default();
    let replicas = d.spec.as_ref().and_then(|s| s.replicas);
    let want = replicas.unwrap_or(1);
    let caught_up = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    let available = status.conditions.as_ref().is_some_and(|c| {
        c.iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
    });
    let complete = caught_up
        && status.updated_replicas.unwrap_or(0) >= want
        && status.available_replicas.unwrap_or(0) >= want
        && status.ready_replicas.unwrap_or(0) >= want;
    ObservedRevision {
        name: d.name_any(),
        hash: d.labels().get(LABEL_REVISION).cloned().unwrap_or_default(),
        version: d.labels().get(LABEL_VERSION).cloned().unwrap_or_default(),
        spec_hash: spec_hash(d),
        monitor_image: d
            .annotations()
            .get(crate::build::deployment::ANNOTATION_MONITOR_IMAGE)
            .cloned(),
        replicas,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        complete,
        available: available && caught_up || (complete && want == 0),
    }
}
