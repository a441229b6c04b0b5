//! The planner: from a ModelDeployment, what exists, and the time, decide what to apply, scale
//! and delete, and what the status says. Pure: no client, no clock.
//!
//! Until canary analysis lands, every strategy rolls out immediately: the new revision's
//! Deployment is created next to the stable one (at the stable's replica count), and once every
//! replica is ready, the Service and the HPA move to it and the previous revision is removed.
//! A condition says so when the spec asked for a canary.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::{
    ConditionStatus, ModelDeployment, ModelDeploymentStatus, Phase, RevisionStatus, RolloutStrategy,
};
use crate::build::service::Selection;
use crate::build::{self, Child, ChildKind, ChildRef};
use crate::conditions::{
    self, DEGRADED, IMMEDIATE_FALLBACK, PROGRESSING, READY, RECONCILING, STALLED,
};
use crate::monitor::report::Report;
use crate::naming;
use crate::profile::ReferenceProfile;
#[cfg(test)]
use crate::revision::revision_of;
use crate::validate::{self, Validated};

/// What the controller saw of a ModelDeployment's children (only those it owns as controller).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The revision Deployments.
    pub revisions: Vec<ObservedRevision>,
    /// Service `<name>`.
    pub service: Option<ObservedService>,
    /// The HorizontalPodAutoscaler.
    pub autoscaler: Option<ObservedAutoscaler>,
    /// Whether the referenced profile exists.
    pub reference: ReferenceState,
    /// What the monitors reported, for a canary's judgement.
    pub evidence: ObservedEvidence,
    /// Services besides `<name>`: `<name>-stable` and `<name>-canary` (Gateway API traffic).
    pub side_services: Vec<ObservedChild>,
    /// The NetworkPolicy.
    pub network_policy: Option<ObservedChild>,
    /// The HTTPRoute (looked up only in Gateway API mode).
    pub route: RouteState,
    /// Retraining Jobs, the CronJob, and what finished runs reported.
    pub retraining: ObservedRetraining,
    /// Batch scoring: its CronJob and the Jobs it started.
    pub batch: ObservedBatch,
    /// What the MLflow registry answered for a `models:/` uri.
    pub registry: RegistryState,
}

/// A `models:/` uri as the observe step resolved it (through a cache, with bounded retries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RegistryState {
    /// The uri names no registry model (or was not looked up, as offline).
    #[default]
    NotUsed,
    /// The registry named a version and where its files are.
    Resolved {
        /// Version number.
        version: String,
        /// Where the files are.
        location: String,
    },
    /// The registry could not say.
    Unresolved {
        /// It may answer later (down, unreachable): the last resolution in status stands.
        transient: bool,
        /// What went wrong, for a person.
        message: String,
    },
}

/// A child known by name and `drover.dev/spec-hash`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObservedChild {
    /// Name.
    pub name: String,
    /// `drover.dev/spec-hash`.
    pub spec_hash: Option<String>,
    /// An object of that name exists that this ModelDeployment does not control: Drover leaves
    /// it alone.
    pub foreign: bool,
}

/// HTTPRoute `<name>` as observed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RouteState {
    /// Not looked up (the spec does not use Gateway API traffic).
    #[default]
    NotLookedUp,
    /// The cluster does not serve `gateway.networking.k8s.io/v1` HTTPRoutes.
    ApiMissing,
    /// No route of that name.
    Absent,
    /// Drover's route.
    Owned {
        /// `drover.dev/spec-hash`.
        spec_hash: Option<String>,
        /// A parent Gateway that did not accept it: reason and message.
        not_accepted: Option<(String, String)>,
    },
    /// A route of that name that this ModelDeployment does not control.
    Foreign,
}

/// The monitors' reports, merged per revision by the operator's collector, over the windows the
/// rollout machine judges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedEvidence {
    /// The canary's report over the current step's window (`None`: no pod answered).
    pub canary: Option<Report>,
    /// Stable's report over the same window.
    pub stable: Option<Report>,
    /// The promoted revision's report since promotion (bake window).
    pub bake: Option<Report>,
    /// The reference profile the spec names, parsed.
    pub profile: Option<Arc<ReferenceProfile>>,
    /// The steady-state window of the serving revision that just ended, if one did.
    pub steady: Option<crate::collect::ClosedWindow>,
    /// Why the last scrape round got no reports, if it did not.
    pub problem: Option<CollectionProblem>,
}

/// Why reports could not be collected: something a person can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollectionProblem {
    /// Secret `<name>-monitor-token` does not exist (deleted by hand?).
    TokenMissing,
    /// Secret `<name>-monitor-token` exists without a usable `token` key.
    TokenInvalid,
    /// The monitors refuse the token (401/403): the Secret changed under running pods.
    Unauthorized {
        /// Revision whose pods refused.
        revision: String,
    },
    /// Ready pods exist, none answered.
    Unreachable {
        /// Revision whose pods did not answer.
        revision: String,
        /// How many ready pods did not answer.
        pods: usize,
    },
}

impl CollectionProblem {
    /// Stable reason (condition `ReportsAvailable` and the Warning Event).
    pub fn reason(&self) -> &'static str {
        match self {
            CollectionProblem::TokenMissing => reason::MONITOR_TOKEN_MISSING,
            CollectionProblem::TokenInvalid => reason::MONITOR_TOKEN_INVALID,
            CollectionProblem::Unauthorized { .. } => reason::MONITORS_UNAUTHORIZED,
            CollectionProblem::Unreachable { .. } => reason::MONITORS_UNREACHABLE,
        }
    }

    /// What happened and what to do.
    pub fn message(&self, model: &str) -> String {
        match self {
            CollectionProblem::TokenMissing => format!(
                "Secret {} is missing: Drover recreates it; monitors read the new token once the kubelet updates their mounted file",
                naming::monitor_token(model)
            ),
            CollectionProblem::TokenInvalid => format!(
                "Secret {} has no usable key \"token\": delete it, Drover creates a new one (and restart the pods if their monitors keep refusing)",
                naming::monitor_token(model)
            ),
            CollectionProblem::Unauthorized { revision } => format!(
                "the monitors of revision {revision} refuse the token in Secret {}: was it replaced? They read the file again on the next scrape; restart the pods if it persists",
                naming::monitor_token(model)
            ),
            CollectionProblem::Unreachable { revision, pods } => format!(
                "{pods} ready pod(s) of revision {revision} did not answer on the admin port: check NetworkPolicies admitting the operator to port 9090; the rollout waits (frozen) meanwhile"
            ),
        }
    }
}

/// One revision Deployment as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedRevision {
    /// Deployment name.
    pub name: String,
    /// Revision hash (`drover.dev/revision`).
    pub hash: String,
    /// Model version (`app.kubernetes.io/version`).
    pub version: String,
    /// `drover.dev/spec-hash` of what Drover last applied.
    pub spec_hash: Option<String>,
    /// Monitor image the revision was created with (`drover.dev/monitor-image`).
    pub monitor_image: Option<String>,
    /// Built with the model's files in `/mnt/models` (`drover.dev/model-files`).
    pub model_files: bool,
    /// `spec.replicas`.
    pub replicas: Option<i32>,
    /// `status.readyReplicas`.
    pub ready_replicas: i32,
    /// The Deployment controller has seen the latest spec, every replica is updated and
    /// available: the revision can take all the traffic.
    pub complete: bool,
    /// `Available` is true: at least the minimum of replicas serve.
    pub available: bool,
}

/// Service `<name>` as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedService {
    /// `drover.dev/spec-hash`.
    pub spec_hash: Option<String>,
    /// The revision it names as serving: the one its selector picks, or during a replica-ratio
    /// split (selector without a revision) the one its `drover.dev/stable-revision` names.
    pub serving_revision: Option<String>,
}

/// The HPA as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObservedAutoscaler {
    /// `drover.dev/spec-hash`.
    pub spec_hash: Option<String>,
    /// Name of the Deployment it scales.
    pub target: String,
}

/// Whether the reference profile named in `spec.monitoring.reference` can be used.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ReferenceState {
    /// The spec names no profile.
    #[default]
    NotReferenced,
    /// The ConfigMap and key exist.
    Found,
    /// The ConfigMap does not exist.
    MissingConfigMap,
    /// The ConfigMap exists without the key.
    MissingKey,
    /// The key holds no valid profile (the reason).
    Invalid(String),
}

/// One step of a plan, executed in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Server-side apply of a whole child (field manager `drover`, force).
    Apply(Child),
    /// Set `spec.replicas` of a Deployment under the scale field manager (HPA handover).
    Scale {
        /// Deployment name.
        deployment: String,
        /// Replicas to set.
        replicas: i32,
    },
    /// Delete a child (background propagation).
    Delete(ChildRef),
    /// Create a retraining Job (never applied: one name, one run).
    CreateJob(Box<k8s_openapi::api::batch::v1::Job>),
    /// Set `spec.model` to an accepted candidate (`autoDeploy`).
    DeployCandidate(ModelUpdate),
}

/// A transition worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// Stable CamelCase reason.
    pub reason: &'static str,
    /// What happened, for a person.
    pub note: String,
}

/// What the planner needs from the operator's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Monitor image for new revisions (existing ones keep the image they were created with).
    pub monitor_image: String,
    /// Namespace the operator's pods run in (admitted to the monitors' admin port).
    pub operator_namespace: String,
}

/// The monitor image of this build of Drover.
pub const DEFAULT_MONITOR_IMAGE: &str =
    concat!("ghcr.io/drover-dev/drover:", env!("CARGO_PKG_VERSION"));

impl Default for Settings {
    fn default() -> Self {
        Self {
            monitor_image: DEFAULT_MONITOR_IMAGE.to_string(),
            operator_namespace: "drover-system".to_string(),
        }
    }
}

/// The planner's decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Writes to children, in order.
    pub actions: Vec<Action>,
    /// The whole status to apply (written only when it differs from the current one).
    pub status: ModelDeploymentStatus,
    /// Transitions to announce.
    pub notices: Vec<Notice>,
    /// When to look again even if nothing changes (a deadline, a missing reference).
    pub requeue_after: Option<Duration>,
    /// The canary judgement made now (recorded in status only when it changed), for gauges.
    pub judgement: Option<crate::api::Judgement>,
    /// The steady-state window judged now, for gauges.
    pub watch: Option<crate::watch::Judged>,
    /// Verdicts of the candidates judged now (`accepted`, `rejected`), for counters.
    pub candidates_judged: Vec<&'static str>,
}

/// How long to wait before looking again for a missing reference profile.
pub const MISSING_REFERENCE_RETRY: Duration = Duration::from_secs(120);

/// How often a `models:/NAME@ALIAS` is looked up again, so an alias that moves rolls out.
pub const REGISTRY_POLL: Duration = Duration::from_secs(120);

/// Stable reasons used in conditions and Events.
pub mod reason {
    /// The spec has a value only the controller can refuse.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// The referenced profile ConfigMap or key does not exist.
    pub const REFERENCE_NOT_FOUND: &str = "ReferenceProfileNotFound";
    /// The referenced profile is not a valid profile.
    pub const REFERENCE_INVALID: &str = "ReferenceProfileInvalid";
    /// Gateway API traffic asked for, but the cluster has no HTTPRoute API.
    pub const GATEWAY_API_MISSING: &str = "GatewayAPINotInstalled";
    /// HTTPRoute `<name>` exists and belongs to someone else.
    pub const ROUTE_NOT_OWNED: &str = "RouteNotOwned";
    /// A parent Gateway did not accept the route.
    pub const ROUTE_NOT_ACCEPTED: &str = "RouteNotAccepted";
    /// NetworkPolicy `<name>` exists and belongs to someone else.
    pub const NETWORK_POLICY_NOT_OWNED: &str = "NetworkPolicyNotOwned";
    /// Reports are collected.
    pub const REPORTS_COLLECTED: &str = "ReportsCollected";
    /// The monitor token Secret is missing.
    pub const MONITOR_TOKEN_MISSING: &str = "MonitorTokenMissing";
    /// The monitor token Secret has no usable token.
    pub const MONITOR_TOKEN_INVALID: &str = "MonitorTokenInvalid";
    /// The monitors refuse the token.
    pub const MONITORS_UNAUTHORIZED: &str = "MonitorsUnauthorized";
    /// No ready pod of a revision answered.
    pub const MONITORS_UNREACHABLE: &str = "MonitorsUnreachable";
    /// The new revision did not become ready within `progressDeadline`.
    pub const PROGRESS_DEADLINE: &str = "ProgressDeadlineExceeded";
    /// A new revision's pods are starting.
    pub const ROLLOUT_STARTED: &str = "RolloutStarted";
    /// Waiting for the new revision's replicas to become ready.
    pub const WAITING_FOR_REVISION: &str = "WaitingForRevision";
    /// The new revision took all traffic.
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    /// The stable revision serves.
    pub const AVAILABLE: &str = "Available";
    /// The stable revision has no available replicas.
    pub const STABLE_UNAVAILABLE: &str = "StableUnavailable";
    /// Nothing to do.
    pub const UP_TO_DATE: &str = "UpToDate";
    /// `spec.model.uri` names a registry model the registry could not resolve.
    pub const MODEL_UNRESOLVED: &str = "ModelUnresolved";
    /// The registry is unavailable; the last resolution is kept.
    pub const REGISTRY_UNAVAILABLE: &str = "RegistryUnavailable";
    /// The registry resolved `spec.model.uri`.
    pub const MODEL_RESOLVED: &str = "ModelResolved";
}

/// Decides the next step for `md`.
pub fn plan(
    md: &ModelDeployment,
    observed: &Observed,
    settings: &Settings,
    now: Timestamp,
) -> Plan {
    let old = md.status.clone().unwrap_or_default();
    let mut planner = Planner {
        md,
        observed,
        settings,
        now,
        generation: md.metadata.generation,
        status: ModelDeploymentStatus {
            observed_generation: md.metadata.generation,
            conditions: old.conditions.clone(),
            history: old.history.clone(),
            drift: old.drift.clone(),
            retraining: old.retraining.clone(),
            batch: old.batch.clone(),
            model: old.model.clone(),
            ..ModelDeploymentStatus::default()
        },
        actions: Vec::new(),
        requeue_after: None,
        canary: false,
        announcements: Vec::new(),
        judgement: None,
        watch: None,
        candidates_judged: Vec::new(),
        registry_version: None,
        model_problem: None,
    };
    match validate::validate(&md.spec) {
        Ok(valid) => {
            planner.resolve_model(&old);
            planner.roll_out(&old, &valid);
            planner.route_acceptance();
            planner.foreign_children();
            planner.steady_state(&old, &valid);
            planner.retraining(&old);
            planner.batch(&old);
        }
        Err(problems) => planner.refuse(&old, &problems.join("; ")),
    }
    if is_alias(md) {
        planner.requeue_after = Some(
            planner
                .requeue_after
                .map_or(REGISTRY_POLL, |r| r.min(REGISTRY_POLL)),
        );
    }
    let mut notices = planner.announcements;
    notices.extend(self::notices(&old, &planner.status, planner.canary));
    notices.extend(model_notices(md, &old, &planner.status));
    Plan {
        actions: planner.actions,
        status: planner.status,
        notices,
        requeue_after: planner.requeue_after,
        judgement: planner.judgement,
        watch: planner.watch,
        candidates_judged: planner.candidates_judged,
    }
}

struct Planner<'a> {
    md: &'a ModelDeployment,
    observed: &'a Observed,
    settings: &'a Settings,
    now: Timestamp,
    generation: Option<i64>,
    status: ModelDeploymentStatus,
    actions: Vec<Action>,
    requeue_after: Option<Duration>,
    /// The canary path planned this tick (its announcements replace the generic ones).
    canary: bool,
    /// What the rollout machine announced.
    announcements: Vec<Notice>,
    /// What the rollout machine judged.
    judgement: Option<crate::api::Judgement>,
    /// What the steady-state watch judged.
    watch: Option<crate::watch::Judged>,
    /// Candidates judged.
    candidates_judged: Vec<&'static str>,
    /// The version a `models:/NAME@ALIAS` uri resolved to (part of the target revision).
    registry_version: Option<String>,
    /// Why no new revision may start: the registry could not resolve the uri.
    model_problem: Option<(&'static str, String)>,
}

/// The registry reference of `spec.model.uri`, if it is one.
fn registry_ref(md: &ModelDeployment) -> Option<crate::fetch::uri::RegistryRef> {
    use crate::fetch::uri::ModelUri;
    match md.spec.model.uri.as_deref().map(ModelUri::parse) {
        Some(Ok(ModelUri::Registry(r))) => Some(r),
        _ => None,
    }
}

fn is_alias(md: &ModelDeployment) -> bool {
    registry_ref(md).is_some_and(|r| matches!(r.selector, crate::fetch::uri::Selector::Alias(_)))
}

/// Events about the registry: a version an alias names now, a registry that stopped
/// answering (a uri that cannot be resolved at all is announced through `Stalled`).
fn model_notices(
    md: &ModelDeployment,
    old: &ModelDeploymentStatus,
    new: &ModelDeploymentStatus,
) -> Vec<Notice> {
    let mut out = Vec::new();
    if let (Some(was), Some(now)) = (&old.model, &new.model)
        && was.uri == now.uri
        && was.version != now.version
    {
        out.push(Notice {
            warning: false,
            reason: reason::MODEL_RESOLVED,
            note: format!(
                "{} now names version {} (was {}): a new revision rolls out",
                now.uri, now.version, was.version
            ),
        });
    }
    let unavailable = |s: &ModelDeploymentStatus| {
        conditions::get(&s.conditions, conditions::MODEL_RESOLVED)
            .filter(|c| {
                c.status == ConditionStatus::False && c.reason == reason::REGISTRY_UNAVAILABLE
            })
            .map(|c| c.message.clone())
    };
    if let Some(message) = unavailable(new)
        && unavailable(old).is_none()
        && registry_ref(md).is_some()
    {
        out.push(Notice {
            warning: true,
            reason: reason::REGISTRY_UNAVAILABLE,
            note: message,
        });
    }
    out
}

impl Planner<'_> {
    /// The revision the spec asks for (with the registry version an alias resolved to).
    fn target_revision(&self) -> String {
        crate::revision::revision_with(&self.md.spec, self.registry_version.as_deref())
    }

    /// Takes what the registry answered for a `models:/` uri: the version (for an alias, part
    /// of the revision), status, condition `ModelResolved`, and whether a new revision may
    /// start. A registry that is down keeps the last resolution: what serves is unaffected.
    fn resolve_model(&mut self, old: &ModelDeploymentStatus) {
        use crate::api::ModelSourceStatus;
        use crate::fetch::uri::Selector;
        let Some(reference) = registry_ref(self.md) else {
            conditions::remove(&mut self.status.conditions, conditions::MODEL_RESOLVED);
            self.status.model = None;
            return;
        };
        let uri = reference.to_string();
        let alias = matches!(reference.selector, Selector::Alias(_));
        let before = old.model.clone().filter(|m| m.uri == uri);
        let (version, condition) = match &self.observed.registry {
            RegistryState::Resolved { version, location } => {
                self.status.model = Some(ModelSourceStatus {
                    uri: uri.clone(),
                    version: version.clone(),
                    location: location.clone(),
                });
                let message = format!("{uri} is version {version}, stored at {location}");
                (
                    Some(version.clone()),
                    (ConditionStatus::True, reason::MODEL_RESOLVED, message),
                )
            }
            RegistryState::Unresolved { transient, message } => {
                self.status.model = before.clone();
                match (&before, transient) {
                    (Some(b), true) => (
                        Some(b.version.clone()),
                        (
                            ConditionStatus::False,
                            reason::REGISTRY_UNAVAILABLE,
                            format!("{message}; keeping version {} resolved before", b.version),
                        ),
                    ),
                    _ => {
                        let message = format!("cannot resolve {uri}: {message}");
                        self.model_problem = Some((reason::MODEL_UNRESOLVED, message.clone()));
                        (
                            before.as_ref().map(|b| b.version.clone()),
                            (ConditionStatus::False, reason::MODEL_UNRESOLVED, message),
                        )
                    }
                }
            }
            // Not looked up (offline rendering): what status recorded, if anything.
            RegistryState::NotUsed => {
                self.status.model = before.clone();
                conditions::remove(&mut self.status.conditions, conditions::MODEL_RESOLVED);
                if alias && before.is_none() {
                    let message = format!("{uri} has not been resolved yet");
                    self.model_problem = Some((reason::MODEL_UNRESOLVED, message));
                }
                self.registry_version = before.filter(|_| alias).map(|b| b.version);
                return;
            }
        };
        self.registry_version = version.filter(|_| alias);
        let (status, why, message) = condition;
        self.condition(conditions::MODEL_RESOLVED, status, why, message);
    }

    fn condition(
        &mut self,
        type_: &str,
        status: ConditionStatus,
        reason: &str,
        message: impl Into<String>,
    ) {
        conditions::set(
            &mut self.status.conditions,
            type_,
            status,
            reason,
            message,
            self.generation,
            self.now,
        );
    }

    fn observed_revision(&self, hash: &str) -> Option<&ObservedRevision> {
        self.observed.revisions.iter().find(|r| r.hash == hash)
    }

    /// The revision serving traffic: the one status names, else the one the Service selects
    /// (status can be lost; the objects still tell).
    fn stable_revision(&self, old: &ModelDeploymentStatus) -> Option<String> {
        let from_status = old.stable.as_ref().map(|s| s.hash.clone());
        // The Service points at a first revision before it is ready (there is no traffic to
        // protect), so its selection proves a revision stable only once that revision is
        // available and status does not name it as the one still rolling out.
        let from_service = self
            .observed
            .service
            .as_ref()
            .and_then(|s| s.serving_revision.clone())
            .filter(|h| old.canary.as_ref().map(|c| &c.hash) != Some(h))
            .filter(|h| self.observed_revision(h).is_some_and(|r| r.available));
        [from_status, from_service]
            .into_iter()
            .flatten()
            .find(|hash| self.observed_revision(hash).is_some())
    }

    /// The spec cannot be acted on: keep what serves, change nothing, wait for a new spec.
    fn refuse(&mut self, old: &ModelDeploymentStatus, problem: &str) {
        let stable = self.stable_revision(old);
        self.status.stable = stable.as_deref().map(|h| self.revision_status(h, old));
        self.status.phase = Some(if stable.is_some() {
            Phase::Degraded
        } else {
            Phase::Failed
        });
        self.status.message = Some(format!("spec refused: {problem}"));
        self.condition(
            STALLED,
            ConditionStatus::True,
            reason::INVALID_SPEC,
            problem,
        );
        self.condition(
            DEGRADED,
            ConditionStatus::True,
            reason::INVALID_SPEC,
            problem,
        );
        self.condition(
            RECONCILING,
            ConditionStatus::False,
            reason::INVALID_SPEC,
            "waiting for a spec change",
        );
        self.condition(
            PROGRESSING,
            ConditionStatus::False,
            reason::INVALID_SPEC,
            "waiting for a spec change",
        );
        self.ready_condition();
    }

    fn roll_out(&mut self, old: &ModelDeploymentStatus, valid: &Validated) {
        let md = self.md;
        let target = self.target_revision();
        let stable = self.stable_revision(old);
        let reference_problem = match &self.observed.reference {
            ReferenceState::NotReferenced | ReferenceState::Found => None,
            ReferenceState::Invalid(why) => Some((
                reason::REFERENCE_INVALID,
                format!(
                    "the reference profile named in spec.monitoring.reference is invalid: {why}"
                ),
            )),
            ReferenceState::MissingConfigMap | ReferenceState::MissingKey => {
                let r = md.spec.monitoring.reference.as_ref();
                let (name, key) = r
                    .map(|r| {
                        (
                            r.config_map_ref.name.as_str(),
                            r.config_map_ref.key.as_str(),
                        )
                    })
                    .unwrap_or_default();
                Some((
                    reason::REFERENCE_NOT_FOUND,
                    if self.observed.reference == ReferenceState::MissingConfigMap {
                        format!(
                            "ConfigMap {name:?} named in spec.monitoring.reference does not exist"
                        )
                    } else {
                        format!("ConfigMap {name:?} has no key {key:?} (spec.monitoring.reference)")
                    },
                ))
            }
        };

        let route_problem = match &self.observed.route {
            RouteState::ApiMissing => Some((
                reason::GATEWAY_API_MISSING,
                "spec.rollout.traffic.mode is GatewayAPI, but this cluster serves no gateway.networking.k8s.io/v1 HTTPRoute: install the Gateway API CRDs or use mode Replicas".to_string(),
            )),
            RouteState::Foreign => Some((
                reason::ROUTE_NOT_OWNED,
                format!(
                    "HTTPRoute {:?} exists and is not controlled by this ModelDeployment; Drover never edits a route it does not own: delete or rename it",
                    naming::route(&md.name_any())
                ),
            )),
            _ => None,
        };
        let reference_problem = reference_problem
            .or(route_problem)
            .or(self.model_problem.clone());

        // Drover versions before the canary engine said here that they rolled out immediately.
        conditions::remove(&mut self.status.conditions, IMMEDIATE_FALLBACK);
        let canary = md.spec.rollout.strategy == RolloutStrategy::Canary;
        // A rollout already running for the revision asked for keeps running through a
        // problem (it says so); a new one does not start until the problem is gone. Tearing a
        // running canary down here would delete it, or during a bake window the warm revision.
        let started = old.rollout.as_ref().is_some_and(|r| {
            r.revision == target
                && matches!(
                    r.phase,
                    crate::api::RolloutPhase::Progressing
                        | crate::api::RolloutPhase::Paused
                        | crate::api::RolloutPhase::Baking
                )
        });
        if canary
            && (reference_problem.is_none() || started)
            && let Some(stable) = stable.as_deref()
            && canary::in_flight(old, Some(stable), &target)
        {
            self.roll_out_canary(old, valid, stable, &target);
            if let Some((why, message)) = reference_problem {
                self.condition(STALLED, ConditionStatus::True, why, message);
                self.requeue_after = Some(
                    self.requeue_after
                        .map_or(MISSING_REFERENCE_RETRY, |r| r.min(MISSING_REFERENCE_RETRY)),
                );
            }
            return;
        }
        conditions::remove(
            &mut self.status.conditions,
            crate::conditions::REPORTS_AVAILABLE,
        );
        // A finished rollout of the revision asked for is remembered; any other is over.
        self.status.rollout = old
            .rollout
            .clone()
            .filter(|r| canary && r.revision == target);

        // Which revision is brought up, and which one serves meanwhile.
        let (serving, rolling_out) = match (&stable, &reference_problem) {
            (Some(s), _) if *s == target => (Some(target.clone()), None),
            (Some(s), Some(_)) => (Some(s.clone()), None),
            (Some(s), None) => {
                let done = self.observed_revision(&target).is_some_and(|r| r.complete);
                if done {
                    (Some(target.clone()), None)
                } else {
                    (Some(s.clone()), Some(target.clone()))
                }
            }
            (None, Some(_)) => (None, None),
            (None, None) => {
                let done = self.observed_revision(&target).is_some_and(|r| r.complete);
                if done {
                    (Some(target.clone()), None)
                } else {
                    (None, Some(target.clone()))
                }
            }
        };
        let hpa_target = serving.clone().or_else(|| rolling_out.clone());

        // Deployments: the serving one (rebuilt only if it is the current spec), the one
        // rolling out; everything else goes.
        let serving_replicas = serving
            .as_deref()
            .and_then(|h| self.observed_revision(h))
            .and_then(|r| r.replicas);
        for hash in [serving.as_deref(), rolling_out.as_deref()]
            .into_iter()
            .flatten()
        {
            if hash != target {
                continue;
            }
            self.deployment_actions(hash, hpa_target.as_deref() == Some(hash), serving_replicas);
        }

        // Service and HPA point at what serves (or, for a first revision, what comes up).
        if let Some(hash) = serving.as_deref().or(rolling_out.as_deref()) {
            self.apply_if_changed(Child::Service(Box::new(build::service::build(
                md,
                Selection::Revision(hash),
            ))));
            self.reachability();
        }
        self.gateway_traffic(serving.as_deref().or(rolling_out.as_deref()), None);
        self.autoscaler_on(hpa_target.as_deref());
        let keep: Vec<&str> = [serving.as_deref(), rolling_out.as_deref()]
            .into_iter()
            .flatten()
            .collect();
        self.delete_revisions_except(&keep);

        // Status.
        self.status.stable = serving.as_deref().map(|h| self.revision_status(h, old));
        self.status.canary = rolling_out.as_deref().map(|h| {
            let mut r = self.revision_status(h, old);
            r.since = old
                .canary
                .as_ref()
                .filter(|c| c.hash == h)
                .and_then(|c| c.since.clone())
                .or(Some(Time(self.now)));
            r
        });

        let mut stalled: Option<(&'static str, String)> = None;
        if let Some(problem) = reference_problem {
            stalled = Some(problem);
            self.requeue_after = Some(MISSING_REFERENCE_RETRY);
        } else if let Some(canary) = &self.status.canary {
            let started = canary.since.as_ref().map(|t| t.0).unwrap_or(self.now);
            let elapsed = self.now.duration_since(started).unsigned_abs();
            if elapsed >= valid.progress_deadline {
                stalled = Some((
                    reason::PROGRESS_DEADLINE,
                    format!(
                        "revision {} (version {}) is not ready after {} (spec.rollout.progressDeadline {})",
                        canary.hash,
                        canary.version,
                        humanize(elapsed),
                        md.spec.rollout.progress_deadline
                    ),
                ));
            } else {
                self.requeue_after = Some(valid.progress_deadline - elapsed);
            }
        }

        match &self.status.canary {
            Some(canary) => {
                let message = format!(
                    "rolling out revision {} (version {}): {}/{} replicas ready",
                    canary.hash, canary.version, canary.ready_replicas, canary.replicas
                );
                self.condition(
                    PROGRESSING,
                    ConditionStatus::True,
                    reason::WAITING_FOR_REVISION,
                    message.clone(),
                );
                self.condition(
                    RECONCILING,
                    ConditionStatus::True,
                    reason::WAITING_FOR_REVISION,
                    message.clone(),
                );
                self.status.phase = Some(Phase::Progressing);
                self.status.message = Some(message);
            }
            None => {
                let message = match &self.status.stable {
                    Some(s) => format!(
                        "revision {} (version {}) serves all traffic",
                        s.hash, s.version
                    ),
                    None => "nothing serves yet".to_string(),
                };
                self.condition(
                    PROGRESSING,
                    ConditionStatus::False,
                    reason::ROLLOUT_COMPLETE,
                    message.clone(),
                );
                self.condition(
                    RECONCILING,
                    ConditionStatus::False,
                    reason::UP_TO_DATE,
                    message.clone(),
                );
                self.status.phase = Some(Phase::Healthy);
                self.status.message = Some(message);
            }
        }
        let stable_available = self
            .status
            .stable
            .as_ref()
            .and_then(|s| self.observed_revision(&s.hash))
            .is_some_and(|r| r.available);
        match stalled {
            Some((why, message)) => {
                self.condition(STALLED, ConditionStatus::True, why, message.clone());
                self.condition(DEGRADED, ConditionStatus::True, why, message.clone());
                self.status.phase = Some(if self.status.stable.is_some() {
                    Phase::Degraded
                } else {
                    Phase::Failed
                });
                self.status.message = Some(message);
            }
            None => {
                self.condition(STALLED, ConditionStatus::False, reason::UP_TO_DATE, "");
                if self.status.stable.is_some() && !stable_available {
                    let message = "the serving revision has no available replicas".to_string();
                    self.condition(
                        DEGRADED,
                        ConditionStatus::True,
                        reason::STABLE_UNAVAILABLE,
                        message.clone(),
                    );
                    if self.status.canary.is_none() {
                        self.status.phase = Some(Phase::Degraded);
                        self.status.message = Some(message);
                    }
                } else {
                    self.condition(DEGRADED, ConditionStatus::False, reason::AVAILABLE, "");
                }
            }
        }
        if self.status.stable.is_none()
            && self.status.canary.is_none()
            && self.status.phase == Some(Phase::Healthy)
        {
            self.status.phase = Some(Phase::Progressing);
        }
        self.ready_condition();
    }

    fn ready_condition(&mut self) {
        let stable = self.status.stable.clone();
        match stable {
            Some(s) if self.observed_revision(&s.hash).is_some_and(|r| r.available) => {
                let message = format!("revision {} (version {}) serves", s.hash, s.version);
                self.condition(READY, ConditionStatus::True, reason::AVAILABLE, message);
            }
            Some(s) => {
                let message = format!(
                    "revision {} (version {}) has no available replicas",
                    s.hash, s.version
                );
                self.condition(
                    READY,
                    ConditionStatus::False,
                    reason::STABLE_UNAVAILABLE,
                    message,
                );
            }
            None => {
                self.condition(
                    READY,
                    ConditionStatus::False,
                    reason::WAITING_FOR_REVISION,
                    "no revision serves yet",
                );
            }
        }
    }

    /// Apply (and, under autoscaling, hand over replicas of) the Deployment of the current spec.
    fn deployment_actions(
        &mut self,
        hash: &str,
        is_hpa_target: bool,
        serving_replicas: Option<i32>,
    ) {
        let md = self.md;
        let observed = self.observed_revision(hash).cloned();
        let monitor_image = self.monitor_image(hash);
        let Some(autoscaling) = &md.spec.autoscaling else {
            let deployment = build::deployment::build(
                md,
                hash,
                Some(md.spec.replicas),
                self.pins(hash, &monitor_image),
            );
            self.apply_if_changed(Child::Deployment(Box::new(deployment)));
            return;
        };
        // The HPA owns replicas: never in Drover's apply. Before the HPA scales this
        // Deployment, its starting count is set under the scale field manager: the serving
        // revision's current count (no capacity dip), within the HPA's bounds.
        let clamp = |n: i32| {
            n.clamp(
                autoscaling.min_replicas,
                autoscaling.max_replicas.max(autoscaling.min_replicas),
            )
        };
        let hpa_exists = self.observed.autoscaler.is_some();
        let wanted = if is_hpa_target && hpa_exists {
            None
        } else {
            let base = serving_replicas
                .or(observed.as_ref().and_then(|o| o.replicas))
                .unwrap_or(autoscaling.min_replicas);
            Some(clamp(base))
        };
        // When the HPA is about to be created for a Deployment Drover scaled itself, the scale
        // manager must co-own the count before the main apply drops it, even at the same value.
        let handover = !hpa_exists && observed.is_some();
        let scale =
            wanted.filter(|n| handover || observed.as_ref().and_then(|o| o.replicas) != Some(*n));
        let deployment = build::deployment::build(md, hash, None, self.pins(hash, &monitor_image));
        self.apply_with_scale(deployment, observed.is_some(), scale);
    }

    /// Applies a Deployment whose count is the scale manager's (`replicas`, when it must be
    /// set): an existing one gets its count before the apply that omits it (so it is never
    /// defaulted), a new one after it is created.
    fn apply_with_scale(
        &mut self,
        deployment: k8s_openapi::api::apps::v1::Deployment,
        exists: bool,
        replicas: Option<i32>,
    ) {
        let scale = replicas.map(|replicas| Action::Scale {
            deployment: deployment.metadata.name.clone().unwrap_or_default(),
            replicas,
        });
        match (exists, scale) {
            (true, Some(scale)) => {
                self.actions.push(scale);
                self.apply_if_changed(Child::Deployment(Box::new(deployment)));
            }
            (false, Some(scale)) => {
                self.apply_if_changed(Child::Deployment(Box::new(deployment)));
                self.actions.push(scale);
            }
            (_, None) => self.apply_if_changed(Child::Deployment(Box::new(deployment))),
        }
    }

    /// What the Deployment of `hash` keeps: its monitor image, the registry version, and
    /// whether it gets the model's files (not when an older Drover built it with the uri only
    /// passed on: rebuilding it would restart its pods on an operator upgrade).
    fn pins<'p>(&'p self, hash: &str, monitor_image: &'p str) -> build::deployment::Pins<'p> {
        let built_before_files = self.md.spec.model.uri.is_some()
            && self.observed_revision(hash).is_some_and(|r| !r.model_files);
        build::deployment::Pins {
            monitor_image,
            registry_version: self.registry_version.as_deref(),
            model_files: !built_before_files,
        }
    }

    /// The sidecar image is pinned per revision: the spec's, else the one the revision was
    /// created with, else this operator's.
    fn monitor_image(&self, hash: &str) -> String {
        self.md
            .spec
            .monitoring
            .sidecar
            .image
            .clone()
            .or_else(|| {
                self.observed_revision(hash)
                    .and_then(|o| o.monitor_image.clone())
            })
            .unwrap_or_else(|| self.settings.monitor_image.clone())
    }

    fn apply_if_changed(&mut self, child: Child) {
        let reference = child.reference();
        let observed_hash = match reference.kind {
            ChildKind::Deployment => self
                .observed
                .revisions
                .iter()
                .find(|r| r.name == reference.name)
                .and_then(|r| r.spec_hash.clone()),
            ChildKind::Service if reference.name == naming::service(&self.md.name_any()) => self
                .observed
                .service
                .as_ref()
                .and_then(|s| s.spec_hash.clone()),
            ChildKind::Service => self
                .observed
                .side_services
                .iter()
                .find(|s| s.name == reference.name)
                .and_then(|s| s.spec_hash.clone()),
            ChildKind::NetworkPolicy => self
                .observed
                .network_policy
                .as_ref()
                .and_then(|p| p.spec_hash.clone()),
            ChildKind::Route => match &self.observed.route {
                RouteState::Owned { spec_hash, .. } => spec_hash.clone(),
                _ => None,
            },
            ChildKind::CronJob if reference.name == naming::batch_cron(&self.md.name_any()) => self
                .observed
                .batch
                .cron_job
                .as_ref()
                .and_then(|c| c.spec_hash.clone()),
            ChildKind::CronJob => self
                .observed
                .retraining
                .cron_job
                .as_ref()
                .and_then(|c| c.spec_hash.clone()),
            // Jobs are created, never applied.
            ChildKind::Job => None,
            ChildKind::Autoscaler => self
                .observed
                .autoscaler
                .as_ref()
                .and_then(|h| h.spec_hash.clone()),
        };
        if observed_hash.as_deref() != child.spec_hash() || observed_hash.is_none() {
            self.actions.push(Action::Apply(child));
        }
    }

    fn revision_status(&self, hash: &str, old: &ModelDeploymentStatus) -> RevisionStatus {
        let spec = &self.md.spec;
        let observed = self.observed_revision(hash);
        let known = [old.stable.as_ref(), old.canary.as_ref()]
            .into_iter()
            .flatten()
            .find(|r| r.hash == hash);
        let (version, image) = if hash == self.target_revision() {
            (spec.model.version.clone(), spec.model.image.clone())
        } else {
            (
                known
                    .map(|k| k.version.clone())
                    .or(observed.map(|o| o.version.clone()))
                    .unwrap_or_default(),
                known.map(|k| k.image.clone()).unwrap_or_default(),
            )
        };
        RevisionStatus {
            hash: hash.to_string(),
            version,
            image,
            replicas: observed.and_then(|o| o.replicas).unwrap_or(0),
            ready_replicas: observed.map(|o| o.ready_replicas).unwrap_or(0),
            weight: None,
            since: None,
        }
    }
}

/// Events worth publishing: transitions between the old and the new status only, so an
/// unchanged object never produces one.
fn notices(old: &ModelDeploymentStatus, new: &ModelDeploymentStatus, canary: bool) -> Vec<Notice> {
    let mut out = Vec::new();
    if let Some(canary) = new.canary.as_ref().filter(|_| !canary)
        && old.canary.as_ref().map(|c| &c.hash) != Some(&canary.hash)
    {
        out.push(Notice {
            warning: false,
            reason: reason::ROLLOUT_STARTED,
            note: format!(
                "rolling out revision {} (version {})",
                canary.hash, canary.version
            ),
        });
    }
    if let Some(stable) = new.stable.as_ref().filter(|_| !canary)
        && old.stable.as_ref().map(|s| &s.hash) != Some(&stable.hash)
    {
        out.push(Notice {
            warning: false,
            reason: reason::ROLLOUT_COMPLETE,
            note: format!(
                "revision {} (version {}) serves all traffic",
                stable.hash, stable.version
            ),
        });
    }
    let stalled = |s: &ModelDeploymentStatus| {
        conditions::get(&s.conditions, STALLED)
            .filter(|c| c.status == ConditionStatus::True)
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some((why, message)) = stalled(new)
        && stalled(old).as_ref() != Some(&(why.clone(), message.clone()))
    {
        let reason = [
            reason::INVALID_SPEC,
            reason::REFERENCE_NOT_FOUND,
            reason::REFERENCE_INVALID,
            reason::GATEWAY_API_MISSING,
            reason::ROUTE_NOT_OWNED,
            reason::PROGRESS_DEADLINE,
            reason::MODEL_UNRESOLVED,
        ]
        .into_iter()
        .find(|r| *r == why)
        .unwrap_or(reason::INVALID_SPEC);
        out.push(Notice {
            warning: true,
            reason,
            note: message,
        });
    }
    let reports_missing = |s: &ModelDeploymentStatus| {
        conditions::get(&s.conditions, crate::conditions::REPORTS_AVAILABLE)
            .filter(|c| c.status == ConditionStatus::False)
            .map(|c| c.reason.clone())
    };
    if let Some(why) = reports_missing(new)
        && reports_missing(old).as_ref() != Some(&why)
        && let Some(reason) = [
            reason::MONITOR_TOKEN_MISSING,
            reason::MONITOR_TOKEN_INVALID,
            reason::MONITORS_UNAUTHORIZED,
            reason::MONITORS_UNREACHABLE,
        ]
        .into_iter()
        .find(|r| *r == why)
    {
        out.push(Notice {
            warning: true,
            reason,
            note: conditions::get(&new.conditions, crate::conditions::REPORTS_AVAILABLE)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        });
    }
    let ready = |s: &ModelDeploymentStatus| conditions::is_true(&s.conditions, READY);
    if ready(old) && !ready(new) {
        out.push(Notice {
            warning: true,
            reason: reason::STABLE_UNAVAILABLE,
            note: conditions::get(&new.conditions, READY)
                .map(|c| c.message.clone())
                .unwrap_or_default(),
        });
    }
    out
}

fn humanize(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, (secs % 3600) / 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

mod batch;
mod canary;
mod retraining;
mod steady;
mod traffic;
pub use batch::{ObservedBatch, batch_reason};
pub use canary::{HISTORY_LIMIT, canary_reason};
pub use retraining::{ModelUpdate, ObservedRetraining, retraining_reason, unrecorded};
pub use steady::steady_reason;

#[cfg(test)]
mod canary_tests;
#[cfg(test)]
mod retraining_tests;
#[cfg(test)]
mod steady_tests;
#[cfg(test)]
mod tests;
