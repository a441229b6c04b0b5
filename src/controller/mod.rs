//! The reconcile loop: observe → plan (pure) → apply → status → Events.
//!
//! `reconcile` is a short wrapper (timer, metrics, failure Event); the work is in named
//! functions. Reads come from the in-memory stores the watches fill, so an unchanged
//! ModelDeployment costs no API request at all.

pub mod cached;
pub mod registry;
pub mod writer;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::{ModelDeployment, ModelDeploymentStatus};
use crate::build::{ChildKind, ChildRef};
use crate::collect::Collector;
use crate::leader::WriteGate;
use crate::metrics::{FailureCategory, Metrics};
use crate::naming::{ANNOTATION_SPEC_HASH, LABEL_MODEL, LABEL_REVISION, LABEL_VERSION};
use crate::plan::{
    self, Action, Observed, ObservedAutoscaler, ObservedEvidence, ObservedRevision,
    ObservedService, ReferenceState,
};
use crate::profile::ReferenceProfile;
use cached::{CachedAutoscaler, CachedDeployment, CachedJob, CachedService};
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
    /// Retraining Jobs.
    pub jobs: Store<CachedJob>,
}

/// A child's spec hash as last applied or read back (`None`: absent), and when.
type ReadBack = (Option<String>, std::time::Instant);

/// A webhook URL read from its Secret (or why it could not be), and when.
type CachedUrl = (Result<String, String>, std::time::Instant);

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
    /// The monitors' reports, collected by the scrape loop.
    pub collector: Arc<Collector>,
    /// Consecutive failures per object, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<DeserializeGuard<ModelDeployment>>, u32>>,
    /// The status this instance last wrote, by object uid. The watch can deliver a child's
    /// event before the echo of our own status write; planning from that stale status would
    /// repeat notices and writes. Only the leader writes status, so its own last write is
    /// the truth until the store catches up.
    written: Mutex<HashMap<String, ModelDeploymentStatus>>,
    /// ModelDeployments (by uid) whose monitor token Secret is known to exist, and since when.
    tokens: Mutex<HashMap<String, std::time::Instant>>,
    /// Children read back from the API at most once per resync instead of watched (the
    /// NetworkPolicy, the retraining and batch CronJobs): the spec hash last seen or applied,
    /// by (ModelDeployment uid, kind, name), and when.
    read_back: Mutex<HashMap<(String, ChildKind, String), ReadBack>>,
    /// Webhook deliveries (none: notifications are not sent).
    pub notifier: Option<crate::notify::Notifier>,
    /// Webhook URLs read from Secrets, by (namespace, secret, key), and when.
    webhook_urls: Mutex<HashMap<(String, String, String), CachedUrl>>,
    /// What the MLflow registry answered for `models:/` uris.
    pub registry: registry::RegistryCache,
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
            collector: Arc::new(Collector::default()),
            failures: Mutex::new(HashMap::new()),
            written: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            read_back: Mutex::new(HashMap::new()),
            notifier: None,
            webhook_urls: Mutex::new(HashMap::new()),
            registry: registry::RegistryCache::default(),
        }
    }

    /// The same context delivering notifications through `notifier`.
    pub fn with_notifier(mut self, notifier: crate::notify::Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    /// Forgets what this instance remembers of a ModelDeployment being deleted.
    fn forget(&self, uid: &str) {
        if let Ok(mut w) = self.written.lock() {
            w.remove(uid);
        }
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(uid);
        }
        if let Ok(mut r) = self.read_back.lock() {
            r.retain(|(u, _, _), _| u != uid);
        }
    }

    /// The same context sharing `collector` with a scrape loop.
    pub fn with_collector(mut self, collector: Arc<Collector>) -> Self {
        self.collector = collector;
        self
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
        store_ready(&stores.autoscalers),
        store_ready(&stores.jobs)
    );
    let uid = md.uid().unwrap_or_default();
    if md.meta().deletion_timestamp.is_some() {
        // Owner references let the garbage collector remove the children; what this instance
        // remembers of the object goes.
        ctx.forget(&uid);
        let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
        ctx.metrics.forget_deleted(&namespace, &name);
        if let Some(n) = &ctx.notifier {
            n.forget(&namespace, &name);
        }
        return Ok(Requeue::await_change());
    }
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
    let mut observed = observe(md, ctx).await?;
    let now = (ctx.clock)();
    if let Some(status) = &md.status {
        let profile = observed.evidence.profile.take();
        observed.evidence = ctx.collector.evidence(&uid, status);
        observed.evidence.profile = profile;
    }
    if let Some(steady) = crate::collect::steady_window(md, now) {
        observed.evidence.steady = ctx.collector.close_steady(&uid, &steady);
    }
    let mut plan = plan::plan(md, &observed, &ctx.settings, now);
    rollout_metrics(md, &plan, &ctx.metrics);
    watch_metrics(md, &plan, &ctx.metrics);
    let writer = ctx.writer(&namespace);
    let reference = md.object_ref(&());
    let token_gone = observed.evidence.problem == Some(plan::CollectionProblem::TokenMissing);
    if token_gone && let Ok(mut tokens) = ctx.tokens.lock() {
        // Deleted by hand: look again, and recreate it.
        tokens.remove(&uid);
    }
    if token_gone
        || plan
            .actions
            .iter()
            .any(|a| matches!(a, Action::Apply(crate::build::Child::Deployment(_))))
    {
        ensure_monitor_token(md, ctx, &writer, &uid).await?;
    }
    let actions = std::mem::take(&mut plan.actions);
    for action in &actions {
        match action {
            Action::Apply(child) => {
                writer.apply(child).await?;
                let r = child.reference();
                if READ_BACK.contains(&r.kind) {
                    remember_read_back(ctx, &uid, r.kind, &r.name, child.spec_hash());
                }
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
            Action::CreateJob(job) => {
                let name = job.metadata.name.clone().unwrap_or_default();
                match writer.create_job(job).await? {
                    writer::JobCreated::Created => {
                        info!(model = %md.name_any(), job = %name, "started retraining Job");
                        ctx.metrics.retraining_started(
                            &namespace,
                            &md.name_any(),
                            crate::retrain::TriggerReason::Drift.label_value(),
                        );
                    }
                    writer::JobCreated::Existed => {}
                    writer::JobCreated::Refused(message) => {
                        warn!(model = %md.name_any(), job = %name, %message, "retraining Job refused");
                        refused_job(md, &mut plan, &name, message, now);
                    }
                }
            }
            Action::DeployCandidate(model) => {
                writer.deploy_candidate(md, model).await?;
                info!(model = %md.name_any(), version = %model.version, "deployed retrained candidate (autoDeploy)");
            }
            Action::Delete(r) => {
                writer.delete(r).await?;
                if READ_BACK.contains(&r.kind) {
                    remember_read_back(ctx, &uid, r.kind, &r.name, None);
                }
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
    notifications_condition(md, &mut plan, ctx, now);
    for verdict in &plan.candidates_judged {
        ctx.metrics
            .candidate_judged(&namespace, &md.name_any(), verdict);
    }
    if md.status.as_ref() != Some(&plan.status) {
        writer.apply_status(md, &plan.status).await?;
        count_transitions(md, md.status.as_ref(), &plan.status, &ctx.metrics);
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
    notify(md, &plan.notices, ctx, now).await;
    Ok(match plan.requeue_after {
        Some(after) => Requeue::requeue(after.min(RESYNC)),
        None => Requeue::requeue(RESYNC),
    })
}

/// Posts the notices `spec.notifications` asks for to its webhook (queued: never waits on the
/// receiver).
async fn notify(
    md: &ModelDeployment,
    notices: &[plan::Notice],
    ctx: &Context,
    now: jiff::Timestamp,
) {
    let (Some(spec), Some(notifier)) = (md.spec.notifications.as_ref(), ctx.notifier.as_ref())
    else {
        return;
    };
    let wanted: Vec<(crate::api::NotificationEvent, &plan::Notice)> = notices
        .iter()
        .filter_map(|n| crate::notify::event_of(n.reason).map(|e| (e, n)))
        .filter(|(e, _)| crate::notify::wanted(spec, *e))
        .collect();
    if wanted.is_empty() {
        return;
    }
    let url = match webhook_url(md, ctx, &spec.webhook.url_secret_ref).await {
        Ok(url) => url,
        Err(why) => {
            for _ in &wanted {
                ctx.metrics.notification("unsent");
            }
            warn!(model = %md.name_any(), %why, "notifications not sent");
            return;
        }
    };
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    for (event, notice) in wanted {
        let _ = notifier.send(
            &url,
            spec.webhook.format,
            crate::notify::Notification {
                event,
                reason: notice.reason.to_string(),
                warning: notice.warning,
                namespace: namespace.clone(),
                name: name.clone(),
                version: md.spec.model.version.clone(),
                message: notice.note.clone(),
                at: now,
            },
        );
    }
}

/// How long a webhook URL read from its Secret is used before it is read again.
const WEBHOOK_URL_TTL: Duration = Duration::from_secs(60);

/// The webhook URL in the Secret `reference` names (read at most once a minute).
async fn webhook_url(
    md: &ModelDeployment,
    ctx: &Context,
    reference: &crate::api::SecretKeyRef,
) -> Result<String, String> {
    let namespace = md.namespace().unwrap_or_default();
    let key = (
        namespace.clone(),
        reference.name.clone(),
        reference.key.clone(),
    );
    if let Some((url, _)) = ctx
        .webhook_urls
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned())
        .filter(|(_, at)| at.elapsed() < WEBHOOK_URL_TTL)
    {
        return url;
    }
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let url = match api.get_opt(&reference.name).await {
        Ok(Some(secret)) => secret
            .data
            .as_ref()
            .and_then(|d| d.get(&reference.key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .map(|u| u.trim().to_string())
            .filter(|u| !u.is_empty())
            .ok_or_else(|| {
                format!(
                    "Secret {} has no key {} with a URL (spec.notifications.webhook.urlSecretRef)",
                    reference.name, reference.key
                )
            }),
        Ok(None) => Err(format!(
            "Secret {} named in spec.notifications.webhook.urlSecretRef does not exist",
            reference.name
        )),
        // Transient: not remembered.
        Err(e) => return Err(format!("cannot read Secret {}: {e}", reference.name)),
    };
    if let Ok(mut m) = ctx.webhook_urls.lock() {
        m.insert(key, (url.clone(), std::time::Instant::now()));
    }
    url
}

/// Condition `NotificationsDelivered` from how deliveries have gone (only with
/// `spec.notifications`).
fn notifications_condition(
    md: &ModelDeployment,
    plan: &mut plan::Plan,
    ctx: &Context,
    now: jiff::Timestamp,
) {
    use crate::api::ConditionStatus;
    use crate::conditions::NOTIFICATIONS_DELIVERED;
    let Some(spec) = md.spec.notifications.as_ref() else {
        crate::conditions::remove(&mut plan.status.conditions, NOTIFICATIONS_DELIVERED);
        return;
    };
    let namespace = md.namespace().unwrap_or_default();
    let secret_problem = ctx.webhook_urls.lock().ok().and_then(|m| {
        m.get(&(
            namespace.clone(),
            spec.webhook.url_secret_ref.name.clone(),
            spec.webhook.url_secret_ref.key.clone(),
        ))
        .and_then(|(url, _)| url.clone().err())
    });
    let state = ctx
        .notifier
        .as_ref()
        .and_then(|n| n.state(&namespace, &md.name_any()));
    let (status, reason, message) = match (secret_problem, state) {
        (Some(why), _) => (ConditionStatus::False, "WebhookSecretUnusable", why),
        (None, Some(s)) if s.failures > 0 => (
            ConditionStatus::False,
            "WebhookDeliveryFailed",
            format!(
                "{} notification(s) not delivered since the last success: {}",
                s.failures,
                s.last_error.unwrap_or_default()
            ),
        ),
        _ => (ConditionStatus::True, "Delivered", String::new()),
    };
    crate::conditions::set(
        &mut plan.status.conditions,
        NOTIFICATIONS_DELIVERED,
        status,
        reason,
        message,
        md.metadata.generation,
        now,
    );
}

/// Counts promotions and rollbacks from the status transition that was written (once, even
/// if a failed reconcile is retried).
fn count_transitions(
    md: &ModelDeployment,
    old: Option<&ModelDeploymentStatus>,
    new: &ModelDeploymentStatus,
    metrics: &Metrics,
) {
    use crate::api::RolloutPhase as P;
    let phase_of = |s: Option<&ModelDeploymentStatus>| {
        s.and_then(|s| s.rollout.as_ref())
            .map(|r| (r.revision.clone(), r.phase))
    };
    let (Some((revision, phase)), before) = (phase_of(Some(new)), phase_of(old)) else {
        return;
    };
    let was = before.filter(|(r, _)| *r == revision).map(|(_, p)| p);
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    match (was, phase) {
        (Some(P::Progressing | P::Paused), P::Baking | P::Complete) => {
            metrics.promoted(&namespace, &name)
        }
        (Some(P::Progressing | P::Paused | P::Baking), P::RolledBack) => {
            metrics.rolled_back(&namespace, &name)
        }
        _ => {}
    }
}

/// Live rollout values as gauges (status changes only on judgements and transitions).
fn rollout_metrics(md: &ModelDeployment, plan: &plan::Plan, metrics: &Metrics) {
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    let running = plan.status.rollout.as_ref().filter(|s| {
        matches!(
            s.phase,
            crate::api::RolloutPhase::Progressing | crate::api::RolloutPhase::Paused
        )
    });
    match running {
        Some(state) => {
            metrics.set_weights(
                &namespace,
                &name,
                i64::from(state.requested_weight),
                i64::from(state.actual_weight),
            );
            for signal in plan.judgement.iter().flat_map(|j| &j.signals) {
                metrics.set_signal(
                    &namespace,
                    &name,
                    &signal.name,
                    signal.value,
                    signal.threshold,
                );
            }
        }
        None => metrics.forget_rollout(&namespace, &name),
    }
}

/// The steady-state watch's gauges: the top features' scores of the window judged now, and
/// whether drift is declared.
fn watch_metrics(md: &ModelDeployment, plan: &plan::Plan, metrics: &Metrics) {
    let (namespace, name) = (md.namespace().unwrap_or_default(), md.name_any());
    let Some(state) = plan.status.drift.as_ref() else {
        metrics.forget_drift(&namespace, &name);
        return;
    };
    match &plan.watch {
        Some(crate::watch::Judged::Assessed { assessment, .. }) => {
            let mut scores: Vec<(String, f64)> = assessment
                .features
                .iter()
                .take(crate::watch::TOP_FEATURES)
                .map(|f| (f.name.clone(), f.score))
                .collect();
            if let Some(p) = &assessment.prediction {
                scores.push(("prediction".into(), p.score));
            }
            metrics.set_drift(&namespace, &name, &scores, state.detected);
        }
        _ => metrics.set_drift_detected(&namespace, &name, state.detected),
    }
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
        ChildKind::NetworkPolicy => observed.network_policy.is_some(),
        ChildKind::Route => matches!(observed.route, plan::RouteState::Owned { .. }),
        ChildKind::Job => observed.retraining.jobs.iter().any(|j| j.name == r.name),
        ChildKind::CronJob => [&observed.retraining.cron_job, &observed.batch.cron_job]
            .into_iter()
            .flatten()
            .any(|c| c.name == r.name),
    }
}

/// The API server refused the retraining Job: status says so (and the run that did not start
/// is not counted), the Event says why, and [`crate::retrain::decide`] holds further attempts
/// until the spec changes or the cooldown passes.
fn refused_job(
    md: &ModelDeployment,
    plan: &mut plan::Plan,
    job: &str,
    message: String,
    now: jiff::Timestamp,
) {
    let note = format!("the API server refused retraining Job {job}: {message}");
    if let Some(state) = plan.status.retraining.as_mut() {
        if state.active.as_ref().is_some_and(|a| a.job == job) {
            state.active = None;
        }
        let started = now.to_string();
        if let Some(i) = state.starts.iter().rposition(|s| *s == started) {
            state.starts.remove(i);
        }
        state.refused = Some(crate::api::RefusedJob {
            generation: md.metadata.generation.unwrap_or(0),
            at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now),
            message: message.clone(),
        });
    }
    crate::conditions::set(
        &mut plan.status.conditions,
        crate::conditions::RETRAINING,
        crate::api::ConditionStatus::False,
        plan::retraining_reason::REFUSED,
        format!("{note} (fix spec.remediation.retraining.jobTemplate)"),
        md.metadata.generation,
        now,
    );
    plan.notices
        .retain(|n| n.reason != plan::retraining_reason::STARTED);
    plan.notices.push(plan::Notice {
        warning: true,
        reason: plan::retraining_reason::REFUSED,
        note,
    });
}

/// True when `obj` is a child of `md`: same namespace, its model label, and `md` as controller.
pub fn is_child<K: Resource>(md: &ModelDeployment, obj: &K) -> bool {
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
        .map(|s| observed_service(s));
    let autoscaler = stores
        .autoscalers
        .state()
        .iter()
        .find(|h| is_child(md, h.as_ref()))
        .map(|h| observed_autoscaler(h));
    let side_services: Vec<plan::ObservedChild> = stores
        .services
        .state()
        .iter()
        .filter(|s| s.name_any() != service_name && is_child(md, s.as_ref()))
        .map(|s| plan::ObservedChild {
            name: s.name_any(),
            spec_hash: spec_hash(s.as_ref()),
            foreign: false,
        })
        .collect();
    let had_side_services = !side_services.is_empty();
    let mut profile = None;
    let reference = match &md.spec.monitoring.reference {
        None => ReferenceState::NotReferenced,
        Some(r) => {
            let api: Api<ConfigMap> =
                Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
            match api.get_opt(&r.config_map_ref.name).await? {
                None => ReferenceState::MissingConfigMap,
                Some(cm) => {
                    let key = &r.config_map_ref.key;
                    let text = cm
                        .data
                        .as_ref()
                        .and_then(|d| d.get(key))
                        .map(|t| t.as_bytes().to_vec())
                        .or_else(|| {
                            cm.binary_data
                                .as_ref()
                                .and_then(|d| d.get(key))
                                .map(|b| b.0.clone())
                        });
                    match text.map(|t| ReferenceProfile::from_json(&t)) {
                        None => ReferenceState::MissingKey,
                        Some(Ok(p)) => {
                            profile = Some(Arc::new(p));
                            ReferenceState::Found
                        }
                        Some(Err(e)) => ReferenceState::Invalid(e.to_string()),
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
        evidence: ObservedEvidence {
            profile,
            ..ObservedEvidence::default()
        },
        side_services,
        network_policy: observe_network_policy(md, ctx).await?,
        route: observe_route(md, ctx, had_side_services).await?,
        retraining: observe_retraining(md, ctx).await?,
        batch: observe_batch(md, ctx).await?,
        registry: registry::observe(md, &ctx.client, &ctx.registry).await,
    })
}

/// A batch scoring Job of `md`: labelled for it and as a batch run, started by its CronJob.
pub fn is_batch_job(md: &ModelDeployment, job: &CachedJob) -> bool {
    let cron = crate::naming::batch_cron(&md.name_any());
    job.meta().namespace == md.meta().namespace
        && job.labels().get(LABEL_MODEL).map(String::as_str) == md.meta().name.as_deref()
        && job.labels().contains_key(crate::naming::LABEL_BATCH)
        && job
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && o.kind == "CronJob" && o.name == cron)
}

/// The batch CronJob (read back like the retraining one) and the Jobs it started.
async fn observe_batch(md: &ModelDeployment, ctx: &Context) -> Result<plan::ObservedBatch, Error> {
    let jobs: Vec<crate::retrain::ObservedJob> = ctx
        .stores
        .jobs
        .state()
        .iter()
        .filter(|j| is_batch_job(md, j))
        .map(|j| observed_job(j))
        .collect();
    let ever = md.status.as_ref().is_some_and(|s| s.batch.is_some());
    let cron_job = observe_cron_job(
        md,
        ctx,
        &crate::naming::batch_cron(&md.name_any()),
        md.spec.batch.is_some() || ever || !jobs.is_empty(),
    )
    .await?;
    Ok(plan::ObservedBatch { cron_job, jobs })
}

/// A retraining Job of `md`: in its namespace, labelled for it and as a retraining run, and
/// controlled by it or by its CronJob.
pub fn is_retraining_job(md: &ModelDeployment, job: &CachedJob) -> bool {
    let name = md.meta().name.as_deref();
    let uid = md.meta().uid.as_deref();
    let cron = crate::naming::retrain_cron(&md.name_any());
    job.meta().namespace == md.meta().namespace
        && job.labels().get(LABEL_MODEL).map(String::as_str) == name
        && job.labels().contains_key(crate::naming::LABEL_RETRAINING)
        && job.owner_references().iter().any(|o| {
            o.controller == Some(true)
                && (Some(o.uid.as_str()) == uid || (o.kind == "CronJob" && o.name == cron))
        })
}

/// What the planner needs of a retraining Job.
pub fn observed_job(job: &CachedJob) -> crate::retrain::ObservedJob {
    use crate::retrain::{JobOutcome, ObservedJob, TriggerReason};
    let started = job
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let terminal = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
    };
    let finished_at = |c: &cached::JobConditionSlice| {
        c.last_transition_time
            .as_ref()
            .or(job.status.as_ref().and_then(|s| s.completion_time.as_ref()))
            .map(|t| t.0)
            .unwrap_or(started)
    };
    let outcome = if let Some(c) = terminal("Complete") {
        JobOutcome::Succeeded {
            finished: finished_at(c),
        }
    } else if let Some(c) = terminal("Failed") {
        JobOutcome::Failed {
            finished: finished_at(c),
            message: [c.reason.as_deref(), c.message.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(": "),
        }
    } else {
        JobOutcome::Running
    };
    ObservedJob {
        name: job.name_any(),
        started,
        reason: job
            .labels()
            .get(crate::naming::LABEL_RETRAINING)
            .and_then(|v| TriggerReason::from_label(v)),
        outcome,
    }
}

/// The retraining Jobs (from the watch), the CronJob (read back at most once per resync), and
/// the termination messages of successful runs status does not hold yet (read from their pods,
/// once: the next status records the outcome).
async fn observe_retraining(
    md: &ModelDeployment,
    ctx: &Context,
) -> Result<plan::ObservedRetraining, Error> {
    let jobs: Vec<crate::retrain::ObservedJob> = ctx
        .stores
        .jobs
        .state()
        .iter()
        .filter(|j| is_retraining_job(md, j))
        .map(|j| observed_job(j))
        .collect();
    let schedule = md
        .spec
        .remediation
        .retraining
        .as_ref()
        .is_some_and(|r| r.schedule.is_some());
    let ever = md.status.as_ref().is_some_and(|s| s.retraining.is_some());
    let cron_job = observe_cron_job(
        md,
        ctx,
        &crate::naming::retrain_cron(&md.name_any()),
        schedule || ever,
    )
    .await?;
    let mut reports = std::collections::BTreeMap::new();
    let status = md.status.as_ref().and_then(|s| s.retraining.as_ref());
    for job in plan::unrecorded(&jobs, status) {
        if matches!(job.outcome, crate::retrain::JobOutcome::Succeeded { .. }) {
            reports.insert(
                job.name.clone(),
                termination_message(md, ctx, &job.name).await?,
            );
        }
    }
    Ok(plan::ObservedRetraining {
        jobs,
        cron_job,
        reports,
    })
}

/// The termination message a Job's pod left: of the pod that succeeded, the first container
/// (in spec order) that wrote one.
async fn termination_message(
    md: &ModelDeployment,
    ctx: &Context,
    job: &str,
) -> Result<Result<String, String>, Error> {
    use k8s_openapi::api::core::v1::Pod;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    let pods = api
        .list(
            &kube::api::ListParams::default()
                .labels(&format!("batch.kubernetes.io/job-name={job}")),
        )
        .await?;
    let mut pods: Vec<&Pod> = pods.items.iter().collect();
    // The pod that succeeded first, then any other.
    pods.sort_by_key(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Succeeded"));
    for pod in pods {
        let order: Vec<String> = pod
            .spec
            .as_ref()
            .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
        let statuses = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.clone())
            .unwrap_or_default();
        for name in &order {
            let message = statuses
                .iter()
                .find(|c| &c.name == name)
                .and_then(|c| c.state.as_ref())
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.message.clone())
                .filter(|m| !m.trim().is_empty());
            if let Some(m) = message {
                return Ok(Ok(m));
            }
        }
    }
    Ok(Err(format!(
        "no container of Job {job} wrote a termination message (write the report to /dev/termination-log)"
    )))
}

/// The kinds read back at most once per resync instead of watched.
const READ_BACK: [ChildKind; 2] = [ChildKind::NetworkPolicy, ChildKind::CronJob];

/// CronJob `name` (retraining, batch); not looked up at all unless `wanted` (the spec asks for
/// it, or one may be left to delete).
async fn observe_cron_job(
    md: &ModelDeployment,
    ctx: &Context,
    name: &str,
    wanted: bool,
) -> Result<Option<plan::ObservedChild>, Error> {
    observe_read_back::<k8s_openapi::api::batch::v1::CronJob>(
        md,
        ctx,
        ChildKind::CronJob,
        name,
        wanted,
    )
    .await
}

/// NetworkPolicy `<name>` (one object per ModelDeployment that rarely changes).
async fn observe_network_policy(
    md: &ModelDeployment,
    ctx: &Context,
) -> Result<Option<plan::ObservedChild>, Error> {
    let name = crate::naming::network_policy(&md.name_any());
    observe_read_back::<NetworkPolicy>(md, ctx, ChildKind::NetworkPolicy, &name, true).await
}

/// Child `name` of `kind`: from what this instance applied or read within the last resync,
/// else read from the API, and only when `wanted` (the spec asks for it, or one may be left
/// to delete).
async fn observe_read_back<K>(
    md: &ModelDeployment,
    ctx: &Context,
    kind: ChildKind,
    name: &str,
    wanted: bool,
) -> Result<Option<plan::ObservedChild>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let uid = md.uid().unwrap_or_default();
    let cached = ctx
        .read_back
        .lock()
        .ok()
        .and_then(|c| c.get(&(uid.clone(), kind, name.to_string())).cloned())
        .filter(|(_, at)| at.elapsed() < RESYNC);
    if let Some((hash, _)) = cached {
        return Ok(hash.map(|spec_hash| plan::ObservedChild {
            name: name.to_string(),
            spec_hash: Some(spec_hash),
            foreign: false,
        }));
    }
    if !wanted {
        return Ok(None);
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    let found = api.get_opt(name).await?;
    let observed = found.map(|c| plan::ObservedChild {
        name: name.to_string(),
        spec_hash: spec_hash(&c),
        foreign: !is_child(md, &c),
    });
    // A foreign object is looked at again every time (rare; it may be removed any moment).
    if !observed.as_ref().is_some_and(|c| c.foreign) {
        let hash = observed.as_ref().and_then(|c| c.spec_hash.as_deref());
        remember_read_back(ctx, &uid, kind, name, hash);
    }
    Ok(observed)
}

fn remember_read_back(ctx: &Context, uid: &str, kind: ChildKind, name: &str, hash: Option<&str>) {
    if let Ok(mut c) = ctx.read_back.lock() {
        c.insert(
            (uid.to_string(), kind, name.to_string()),
            (hash.map(str::to_string), std::time::Instant::now()),
        );
    }
}

/// HTTPRoute `<name>`, looked up only in Gateway API mode (to read its owner and whether the
/// Gateways accepted it). A 404 naming the route means there is none; a 404 for the resource
/// type means the Gateway API is not installed.
async fn observe_route(
    md: &ModelDeployment,
    ctx: &Context,
    had_side_services: bool,
) -> Result<plan::RouteState, Error> {
    use crate::build::route::{HttpRoute, not_accepted};
    let traffic = &md.spec.rollout.traffic;
    let gateway =
        traffic.mode == crate::api::TrafficMode::GatewayApi && traffic.gateway_api.is_some();
    // Outside Gateway API mode the route is looked up only while the mode's Services remain:
    // the mode was switched, and Drover's route goes with them.
    if !gateway && !had_side_services {
        return Ok(plan::RouteState::NotLookedUp);
    }
    let api: Api<HttpRoute> =
        Api::namespaced(ctx.client.clone(), &md.namespace().unwrap_or_default());
    let name = crate::naming::route(&md.name_any());
    match api.get(&name).await {
        Ok(route) if is_child(md, &route) => Ok(plan::RouteState::Owned {
            spec_hash: spec_hash(&route),
            not_accepted: not_accepted(&route),
        }),
        Ok(_) => Ok(plan::RouteState::Foreign),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            // An object that does not exist is named in the answer's details; a resource type
            // the server does not serve is not.
            let names_the_route = status.details.as_ref().is_some_and(|d| d.name == name);
            Ok(if names_the_route {
                plan::RouteState::Absent
            } else {
                plan::RouteState::ApiMissing
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// What the planner needs of Service `<name>`.
pub fn observed_service(s: &CachedService) -> ObservedService {
    ObservedService {
        spec_hash: spec_hash(s),
        serving_revision: s
            .spec
            .as_ref()
            .and_then(|spec| spec.selector.as_ref())
            .and_then(|sel| sel.get(LABEL_REVISION).cloned())
            .or_else(|| {
                s.annotations()
                    .get(crate::build::service::ANNOTATION_STABLE_REVISION)
                    .cloned()
            }),
    }
}

/// What the planner needs of the HPA.
pub fn observed_autoscaler(h: &CachedAutoscaler) -> ObservedAutoscaler {
    ObservedAutoscaler {
        spec_hash: spec_hash(h),
        target: h
            .spec
            .as_ref()
            .map(|s| s.scale_target_ref.name.clone())
            .unwrap_or_default(),
    }
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
        model_files: d
            .annotations()
            .contains_key(crate::build::deployment::ANNOTATION_MODEL_FILES),
        replicas,
        ready_replicas: status.ready_replicas.unwrap_or(0),
        complete,
        available: available && caught_up || (complete && want == 0),
    }
}
