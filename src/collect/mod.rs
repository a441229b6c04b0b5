//! Collection: every `scrapeInterval` the operator fetches `/drover/report` from every ready pod
//! of the revisions a rollout judges, keeps per-revision windows over those cumulative reports
//! ([`window`]), and asks for a reconcile; the reconcile takes the windows its rollout state
//! names as evidence ([`Collector::evidence`]).
//!
//! Which revisions and windows are wanted is decided from status alone ([`wanted`]), so the
//! collector needs no state of its own beyond the reports: a restarted operator opens new
//! windows at its first scrape, and the judgement waits for enough requests in them.
//!
//! Outside a rollout, the serving revision is scraped for the steady-state watch
//! ([`steady_window`]): consecutive windows of `spec.monitoring.window`, each handed to the
//! reconcile once when it ends ([`Collector::close_steady`]).
//!
//! With `spec.monitoring.performance`, each scrape also reads the monitor's feedback log, and
//! a label whose token another pod already counted is taken out before the report reaches its
//! window ([`dedup`]).

pub mod dedup;
pub mod scrape;
pub mod window;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::error_boundary::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::api::{ModelDeployment, ModelDeploymentStatus, RolloutPhase};
use crate::build::deployment::{ADMIN_PORT, TOKEN_KEY};
use crate::controller::cached::CachedPod;
use crate::leader::WriteGate;
use crate::metrics::Metrics;
use crate::monitor::report::Report;
use crate::naming::{LABEL_MODEL, LABEL_REVISION};
use crate::plan::{CollectionProblem, ObservedEvidence};
use dedup::{Checked, FeedbackCheck, FeedbackCursor, FeedbackDedup};
use scrape::{ScrapeFailure, Scraper};
use window::{Recorded, RevisionWindow};

/// A revision and the window over it that a judgement uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WindowRef {
    /// Revision hash.
    pub revision: String,
    /// What opened the window: the step (and when it started) or the bake window.
    pub key: String,
}

/// The windows a ModelDeployment's rollout judges on now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The canary over the current step.
    pub canary: Option<WindowRef>,
    /// Stable over the same step.
    pub stable: Option<WindowRef>,
    /// The promoted revision since promotion.
    pub bake: Option<WindowRef>,
}

impl Wanted {
    /// Revisions to scrape.
    pub fn revisions(&self) -> Vec<&str> {
        let mut out: Vec<&str> = [&self.canary, &self.stable, &self.bake]
            .into_iter()
            .flatten()
            .map(|w| w.revision.as_str())
            .collect();
        out.dedup();
        out
    }

    /// Nothing to collect.
    pub fn is_empty(&self) -> bool {
        self.canary.is_none() && self.stable.is_none() && self.bake.is_none()
    }
}

/// The windows `status` calls for: a running step's (canary and stable, keyed by the step and
/// its start), or the bake window's (keyed by its end). A rollout that waits for its canary's
/// pods still scrapes both, so the step's window can open at once.
pub fn wanted(status: &ModelDeploymentStatus) -> Wanted {
    let Some(rollout) = status.rollout.as_ref() else {
        return Wanted::default();
    };
    match rollout.phase {
        RolloutPhase::Progressing | RolloutPhase::Paused => {
            let key = match &rollout.step_started_at {
                Some(t) => format!("step {} from {}", rollout.step, t.0),
                None => format!("step {} pending", rollout.step),
            };
            let stable = status
                .stable
                .as_ref()
                .filter(|s| s.hash != rollout.revision)
                .map(|s| WindowRef {
                    revision: s.hash.clone(),
                    key: key.clone(),
                });
            Wanted {
                canary: Some(WindowRef {
                    revision: rollout.revision.clone(),
                    key,
                }),
                stable,
                bake: None,
            }
        }
        RolloutPhase::Baking => Wanted {
            bake: Some(WindowRef {
                revision: rollout.revision.clone(),
                key: format!(
                    "bake until {}",
                    rollout
                        .bake_until
                        .as_ref()
                        .map(|t| t.0.to_string())
                        .unwrap_or_default()
                ),
            }),
            ..Wanted::default()
        },
        RolloutPhase::Complete | RolloutPhase::RolledBack => Wanted::default(),
    }
}

/// Prefix of the steady-state watch's window keys (`watch <index>`).
pub const STEADY_KEY_PREFIX: &str = "watch ";

/// The steady-state watch's window over the serving revision at `now`, if the watch runs: a
/// revision serves, no rollout is in flight (its own windows judge then), and there is
/// something to watch for (a reference profile or an SLO). Windows are aligned to multiples of
/// `spec.monitoring.window` since the Unix epoch, so the key follows from the time alone and a
/// restarted operator agrees with the one before it.
pub fn steady_window(md: &ModelDeployment, now: jiff::Timestamp) -> Option<WindowRef> {
    let status = md.status.as_ref()?;
    let stable = status.stable.as_ref()?;
    let in_flight = status.rollout.as_ref().is_some_and(|r| {
        matches!(
            r.phase,
            RolloutPhase::Progressing | RolloutPhase::Paused | RolloutPhase::Baking
        )
    }) || status.canary.is_some();
    let monitoring = &md.spec.monitoring;
    if in_flight
        || (monitoring.reference.is_none()
            && monitoring.slo.is_none()
            && monitoring.performance.is_none())
    {
        return None;
    }
    let length = monitoring
        .window
        .parse()
        .ok()
        .map(|d: Duration| d.as_secs())
        .filter(|s| *s > 0)?;
    let index = u64::try_from(now.as_second()).ok()? / length;
    Some(WindowRef {
        revision: stable.hash.clone(),
        key: format!("{STEADY_KEY_PREFIX}{index}"),
    })
}

/// A steady-state window that ended: what the serving revision's pods saw in it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClosedWindow {
    /// Its key.
    pub key: String,
    /// The merged reports (`None`: no pod contributed).
    pub report: Option<Report>,
    /// Mean confidence of the window judged before this one (kept in memory only: after a
    /// restart the first window has nothing to compare with).
    pub previous_confidence: Option<f64>,
}

/// A pod to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    /// Pod name.
    pub name: String,
    /// Revision hash.
    pub revision: String,
    /// Pod IP (IPv4 or IPv6).
    pub ip: IpAddr,
}

/// The ready, not terminating pods of `md`'s `revisions` among `pods`.
pub fn targets<'a>(
    md: &ModelDeployment,
    revisions: &[&str],
    pods: impl IntoIterator<Item = &'a CachedPod>,
) -> Vec<PodTarget> {
    let name = md.name_any();
    let namespace = md.namespace();
    pods.into_iter()
        .filter(|p| p.namespace() == namespace && p.metadata.deletion_timestamp.is_none())
        .filter(|p| p.labels().get(LABEL_MODEL) == Some(&name))
        .filter(|p| p.ready())
        .filter_map(|p| {
            let revision = p.labels().get(LABEL_REVISION)?;
            if !revisions.contains(&revision.as_str()) {
                return None;
            }
            Some(PodTarget {
                name: p.name_any(),
                revision: revision.clone(),
                ip: p.ip()?.parse().ok()?,
            })
        })
        .collect()
}

#[derive(Default)]
struct ModelWindows {
    revisions: BTreeMap<String, RevisionWindow>,
    /// Mean confidence of the last closed steady-state window.
    last_confidence: Option<f64>,
    last_round: Option<Instant>,
    /// Why the last round got no reports, if it did not.
    problem: Option<CollectionProblem>,
    /// Consecutive rounds with a problem: one bad round (a timeout) is not worth a condition.
    problem_rounds: u32,
    /// Cross-pod feedback check, only while the ModelDeployment has `monitoring.performance`
    /// (boxed: nothing is allocated for the others).
    feedback: Option<Box<FeedbackDedup>>,
}

/// Rounds a problem must last before it is reported.
pub const PROBLEM_ROUNDS: u32 = 2;

/// Reports collected per ModelDeployment (by uid), shared by the scrape loop and reconciles.
#[derive(Default)]
pub struct Collector {
    models: Mutex<HashMap<String, ModelWindows>>,
    tokens: Mutex<HashMap<String, String>>,
}

impl Collector {
    /// The evidence `status` calls for (the profile is the reconcile's to add).
    pub fn evidence(&self, uid: &str, status: &ModelDeploymentStatus) -> ObservedEvidence {
        let want = wanted(status);
        let Ok(mut models) = self.models.lock() else {
            return ObservedEvidence::default();
        };
        let Some(model) = models.get_mut(uid) else {
            return ObservedEvidence::default();
        };
        let mut window = |w: &Option<WindowRef>| {
            let w = w.as_ref()?;
            model.revisions.get_mut(&w.revision)?.window(&w.key)
        };
        ObservedEvidence {
            canary: window(&want.canary),
            stable: window(&want.stable),
            bake: window(&want.bake),
            profile: None,
            steady: None,
            problem: model
                .problem
                .clone()
                .filter(|_| model.problem_rounds >= PROBLEM_ROUNDS),
        }
    }

    /// Records one round of scrapes of a ModelDeployment's `revision`.
    pub fn record_round(
        &self,
        uid: &str,
        revision: &str,
        present: &[&str],
        answers: Vec<(String, Report)>,
        unanswered: usize,
    ) -> Vec<Recorded> {
        let answered = answers.len();
        let outcomes = answers
            .into_iter()
            .filter_map(|(pod, report)| self.record(uid, revision, &pod, report))
            .collect();
        self.end_round(uid, revision, present, answered, unanswered);
        outcomes
    }

    /// Moves `uid`'s steady-state window to `steady` and hands back the steady-state window
    /// that ended, once. A window a rollout opened is not handed back: it judged the canary.
    pub fn close_steady(&self, uid: &str, steady: &WindowRef) -> Option<ClosedWindow> {
        let mut models = self.models.lock().ok()?;
        let model = models.get_mut(uid)?;
        let (key, report) = model
            .revisions
            .get_mut(&steady.revision)?
            .advance(&steady.key)?;
        if !key.starts_with(STEADY_KEY_PREFIX) {
            return None;
        }
        let confidence = report
            .as_ref()
            .and_then(|r| r.confidence.as_ref())
            .and_then(|c| c.mean());
        let previous_confidence = model.last_confidence;
        if confidence.is_some() {
            model.last_confidence = confidence;
        }
        Some(ClosedWindow {
            key,
            report,
            previous_confidence,
        })
    }

    /// Records the report `pod` of `uid`'s `revision` answered (as it arrives: the parsed
    /// report is dropped at once, only its compact form is kept).
    pub fn record(&self, uid: &str, revision: &str, pod: &str, report: Report) -> Option<Recorded> {
        self.record_checked(uid, revision, pod, report, None)
            .map(|(recorded, _)| recorded)
    }

    /// [`record`](Self::record), checking the report's feedback log against what every pod of
    /// `uid` counted when `feedback` is given (the ModelDeployment has
    /// `monitoring.performance`; [`dedup`]).
    pub fn record_checked(
        &self,
        uid: &str,
        revision: &str,
        pod: &str,
        mut report: Report,
        feedback: Option<FeedbackCheck>,
    ) -> Option<(Recorded, Checked)> {
        let mut models = self.models.lock().ok()?;
        let model = models.entry(uid.to_string()).or_default();
        let checked = match feedback {
            Some(check) => model.feedback.get_or_insert_with(Box::default).check(
                revision,
                pod,
                &mut report,
                check,
            ),
            None => {
                // Never kept in a window: it is only read here.
                report.feedback_log = None;
                Checked::default()
            }
        };
        let window = model.revisions.entry(revision.to_string()).or_default();
        Some((window.record(pod, report), checked))
    }

    /// What to ask `pod` of `uid` for with its report (`feedbackSince`, `feedbackInstance`).
    pub fn feedback_cursor(&self, uid: &str, pod: &str) -> FeedbackCursor {
        self.models
            .lock()
            .ok()
            .and_then(|m| m.get(uid)?.feedback.as_ref().map(|f| f.cursor(pod)))
            .unwrap_or_default()
    }

    /// Drops `uid`'s feedback state (its spec no longer asks for performance).
    pub fn forget_feedback(&self, uid: &str) {
        if let Ok(mut models) = self.models.lock()
            && let Some(m) = models.get_mut(uid)
        {
            m.feedback = None;
        }
    }

    /// Ends a round of `uid`'s `revision` (see [`RevisionWindow::end_round`]).
    pub fn end_round(
        &self,
        uid: &str,
        revision: &str,
        present: &[&str],
        answered: usize,
        unanswered: usize,
    ) {
        if let Ok(mut models) = self.models.lock() {
            let model = models.entry(uid.to_string()).or_default();
            let window = model.revisions.entry(revision.to_string()).or_default();
            window.end_round(present, answered, unanswered);
            if let Some(feedback) = model.feedback.as_mut() {
                feedback.end_round(revision, present);
            }
        }
    }

    /// Forgets revisions of `uid` not in `keep`, and ModelDeployments not in `alive`.
    fn prune(&self, uid: &str, keep: &[&str]) {
        if let Ok(mut models) = self.models.lock()
            && let Some(m) = models.get_mut(uid)
        {
            m.revisions.retain(|r, _| keep.contains(&r.as_str()));
            if let Some(feedback) = m.feedback.as_mut() {
                feedback.keep_revisions(keep);
            }
        }
    }

    fn forget_except(&self, alive: &[String]) {
        if let Ok(mut models) = self.models.lock() {
            models.retain(|uid, _| alive.contains(uid));
        }
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.retain(|uid, _| alive.contains(uid));
        }
    }

    fn due(&self, uid: &str, every: Duration, now: Instant) -> bool {
        self.models
            .lock()
            .ok()
            .and_then(|m| m.get(uid).and_then(|m| m.last_round))
            .is_none_or(|last| now.duration_since(last) >= every)
    }

    fn mark(&self, uid: &str, now: Instant) {
        if let Ok(mut models) = self.models.lock() {
            models.entry(uid.to_string()).or_default().last_round = Some(now);
        }
    }

    /// Records why the last round of `uid` got no reports (`None`: it did).
    pub fn set_problem(&self, uid: &str, problem: Option<CollectionProblem>) {
        if let Ok(mut models) = self.models.lock() {
            let model = models.entry(uid.to_string()).or_default();
            model.problem_rounds = match &problem {
                Some(_) => model.problem_rounds.saturating_add(1),
                None => 0,
            };
            model.problem = problem;
        }
    }

    /// Remembers the token of `uid` (as if read from its Secret; benchmarks and tests).
    pub fn remember_token(&self, uid: &str, token: &str) {
        if let Ok(mut tokens) = self.tokens.lock() {
            tokens.insert(uid.to_string(), token.to_string());
        }
    }

    fn token(&self, uid: &str) -> Option<String> {
        self.tokens.lock().ok()?.get(uid).cloned()
    }
}

/// The pods of one revision of one ModelDeployment to scrape in a round.
struct Job {
    uid: String,
    revision: String,
    pods: Vec<PodTarget>,
    token: String,
    /// Set when the ModelDeployment has `monitoring.performance`.
    feedback: Option<JobFeedback>,
}

/// The cross-pod feedback check of a job, and whose metrics it counts in.
struct JobFeedback {
    check: FeedbackCheck,
    namespace: String,
    name: String,
}

/// Whole feedback logs read at once (first looks), over all ModelDeployments.
pub const FIRST_LOOKS_AT_ONCE: usize = 2;

/// How `md`'s feedback is checked across pods at `now` (`None`: it has no performance
/// settings, so no monitor accepts feedback).
pub fn feedback_check(md: &ModelDeployment, now: jiff::Timestamp) -> Option<FeedbackCheck> {
    let performance = md.spec.monitoring.performance.as_ref()?;
    // The same default the monitors are started with when the duration does not parse.
    let max_age: Duration = performance
        .max_label_age
        .parse()
        .unwrap_or(Duration::from_secs(7 * 24 * 3600));
    Some(FeedbackCheck {
        max_label_age_seconds: i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX),
        now: now.as_second(),
    })
}

/// How the scrape loop runs.
#[derive(Clone, Debug)]
pub struct CollectSettings {
    /// Scrapes in flight at once, over all ModelDeployments.
    pub concurrency: usize,
    /// Per-request timeout.
    pub timeout: Duration,
    /// How often the loop looks for ModelDeployments whose scrape is due.
    pub tick: Duration,
    /// The monitors' admin port.
    pub admin_port: u16,
}

impl Default for CollectSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            timeout: Duration::from_secs(2),
            tick: Duration::from_secs(1),
            admin_port: ADMIN_PORT as u16,
        }
    }
}

/// What the scrape loop needs from the operator.
pub struct CollectLoop {
    /// Shared with the reconciles.
    pub collector: Arc<Collector>,
    /// The ModelDeployments.
    pub models: Store<DeserializeGuard<ModelDeployment>>,
    /// The pods of every revision, cached lean (labels, readiness, IPs).
    pub pods: Store<CachedPod>,
    /// To read the monitor token Secrets.
    pub client: Client,
    /// Only the leader scrapes.
    pub gate: WriteGate,
    /// Metrics.
    pub metrics: Metrics,
    /// Where to ask for a reconcile after a round.
    pub trigger: mpsc::Sender<ObjectRef<DeserializeGuard<ModelDeployment>>>,
    /// Settings.
    pub settings: CollectSettings,
}

impl CollectLoop {
    /// Runs until the trigger's receiver (the controller) is gone.
    pub async fn run(self) {
        let scraper = Scraper::new(self.settings.timeout);
        let mut ticker = tokio::time::interval(self.settings.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            if self.trigger.is_closed() {
                return;
            }
            if !self.gate.is_open() {
                continue;
            }
            self.round(&scraper).await;
        }
    }

    /// One pass: every ModelDeployment whose scrape is due gets one round.
    pub async fn round(&self, scraper: &Scraper) {
        self.round_at(scraper, Instant::now()).await
    }

    /// [`round`](Self::round) as if the time were `now` (tests move time by hand).
    pub async fn round_at(&self, scraper: &Scraper, now: Instant) {
        let models = self.models.state();
        let alive: Vec<String> = models
            .iter()
            .filter_map(|g| g.0.as_ref().ok().and_then(|m| m.uid()))
            .collect();
        self.collector.forget_except(&alive);
        let pods = self.pods.state();
        let wall = jiff::Timestamp::now();
        let mut jobs: Vec<Job> = Vec::new();
        let mut due_models = Vec::new();
        for guard in &models {
            let Ok(md) = &guard.0 else { continue };
            let (Some(uid), Some(status)) = (md.uid(), md.status.as_ref()) else {
                continue;
            };
            let want = wanted(status);
            let steady = steady_window(md, wall);
            if want.is_empty() && steady.is_none() {
                self.collector.prune(&uid, &[]);
                continue;
            }
            let every = md
                .spec
                .monitoring
                .scrape_interval
                .parse()
                .unwrap_or(Duration::from_secs(30));
            if !self.collector.due(&uid, every, now) {
                continue;
            }
            self.collector.mark(&uid, now);
            let mut revisions = want.revisions();
            if let Some(steady) = &steady
                && !revisions.contains(&steady.revision.as_str())
            {
                revisions.push(steady.revision.as_str());
            }
            self.collector.prune(&uid, &revisions);
            let found = targets(md, &revisions, pods.iter().map(|p| p.as_ref()));
            let token = match self.token_of(md, &uid).await {
                Ok(t) => t,
                Err(problem) => {
                    // Counted as a round: the reconcile it triggers says what is wrong.
                    if let Some(problem) = problem {
                        self.collector.set_problem(&uid, Some(problem));
                        due_models.push(ObjectRef::from_obj(guard.as_ref()));
                    }
                    continue;
                }
            };
            let feedback = feedback_check(md, wall);
            if feedback.is_none() {
                self.collector.forget_feedback(&uid);
            }
            for revision in &revisions {
                let of_revision: Vec<PodTarget> = found
                    .iter()
                    .filter(|t| t.revision == *revision)
                    .cloned()
                    .collect();
                jobs.push(Job {
                    uid: uid.clone(),
                    revision: revision.to_string(),
                    pods: of_revision,
                    token: token.clone(),
                    feedback: feedback.map(|check| JobFeedback {
                        check,
                        namespace: md.namespace().unwrap_or_default(),
                        name: md.name_any(),
                    }),
                });
            }
            due_models.push(ObjectRef::from_obj(guard.as_ref()));
        }
        if jobs.is_empty() {
            return;
        }
        // Every pod of every due revision, with bounded concurrency over all of them; with
        // feedback on, each asks for the feedback log after what was checked of it.
        let requests: Vec<(usize, PodTarget, String, Option<FeedbackCursor>)> = jobs
            .iter()
            .enumerate()
            .flat_map(|(i, job)| {
                job.pods.iter().map(move |p| {
                    let cursor = job
                        .feedback
                        .as_ref()
                        .map(|_| self.collector.feedback_cursor(&job.uid, &p.name));
                    (i, p.clone(), job.token.clone(), cursor)
                })
            })
            .collect();
        let port = self.settings.admin_port;
        // A first look reads a pod's whole feedback log (up to ~4 MB of JSON): a few at a time,
        // so an operator starting among many busy pods does not hold dozens at once.
        let first_looks = Arc::new(tokio::sync::Semaphore::new(FIRST_LOOKS_AT_ONCE));
        let mut results = futures::stream::iter(requests)
            .map(|(job, pod, token, cursor)| {
                let scraper = scraper.clone();
                let first_looks = first_looks.clone();
                async move {
                    let _permit = match &cursor {
                        Some(c) if c.instance.is_none() => first_looks.acquire_owned().await.ok(),
                        _ => None,
                    };
                    let r = scraper
                        .fetch_report(pod.ip, port, &token, cursor.as_ref())
                        .await;
                    (job, pod.name, r)
                }
            })
            .buffer_unordered(self.settings.concurrency.max(1));
        let mut answered = vec![0usize; jobs.len()];
        let mut unanswered = vec![0usize; jobs.len()];
        let mut problems: BTreeMap<String, Option<CollectionProblem>> = BTreeMap::new();
        let mut stale_token = Vec::new();
        while let Some((i, pod, result)) = results.next().await {
            let Some(job) = jobs.get(i) else {
                continue;
            };
            let revision = job.revision.as_str();
            match result {
                Ok(report) => {
                    self.metrics.scraped("ok");
                    if let Some(n) = answered.get_mut(i) {
                        *n += 1;
                    }
                    let recorded = self.collector.record_checked(
                        &job.uid,
                        revision,
                        &pod,
                        report,
                        job.feedback.as_ref().map(|f| f.check),
                    );
                    if let Some((outcome, checked)) = recorded {
                        match outcome {
                            Recorded::Restarted => self.metrics.scraped("restarted"),
                            Recorded::Rejected(why) => {
                                warn!(revision, why, "report not combinable with the window")
                            }
                            Recorded::New | Recorded::Updated => {}
                        }
                        if let Some(f) = &job.feedback {
                            self.metrics
                                .feedback_checked(&f.namespace, &f.name, checked);
                        }
                    }
                }
                Err(failure) => {
                    self.metrics.scraped(failure.as_str());
                    debug!(pod, failure = failure.as_str(), "monitor did not answer");
                    if failure == ScrapeFailure::Unauthorized {
                        stale_token.push(i);
                    }
                    if let Some(n) = unanswered.get_mut(i) {
                        *n += 1;
                    }
                }
            }
        }
        drop(results);
        for (i, job) in jobs.iter().enumerate() {
            let (uid, revision, pods) = (&job.uid, &job.revision, &job.pods);
            let present: Vec<&str> = pods.iter().map(|p| p.name.as_str()).collect();
            let unanswered = unanswered.get(i).copied().unwrap_or(0);
            self.collector.end_round(
                uid,
                revision,
                &present,
                answered.get(i).copied().unwrap_or(0),
                unanswered,
            );
            if stale_token.contains(&i)
                && let Ok(mut tokens) = self.collector.tokens.lock()
            {
                // Read the Secret again next round: it may have been recreated.
                tokens.remove(uid);
            }
            // Pods there, none answered: a problem a person can act on.
            let entry = problems.entry(uid.clone()).or_insert(None);
            if entry.is_none() && unanswered > 0 && unanswered == pods.len() {
                *entry = Some(if stale_token.contains(&i) {
                    CollectionProblem::Unauthorized {
                        revision: revision.clone(),
                    }
                } else {
                    CollectionProblem::Unreachable {
                        revision: revision.clone(),
                        pods: unanswered,
                    }
                });
            }
        }
        for (uid, problem) in problems {
            self.collector.set_problem(&uid, problem);
        }
        for r in due_models {
            if self.trigger.send(r).await.is_err() {
                return;
            }
        }
    }

    /// The token of `md`; `Err(Some(problem))` when it cannot be had, `Err(None)` on a
    /// transient API error (tried again next round).
    async fn token_of(
        &self,
        md: &ModelDeployment,
        uid: &str,
    ) -> Result<String, Option<CollectionProblem>> {
        if let Some(t) = self.collector.token(uid) {
            return Ok(t);
        }
        let api: Api<Secret> =
            Api::namespaced(self.client.clone(), &md.namespace().unwrap_or_default());
        let name = crate::naming::monitor_token(&md.name_any());
        match api.get_opt(&name).await {
            Ok(Some(secret)) => {
                let token = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(TOKEN_KEY))
                    .and_then(|b| String::from_utf8(b.0.clone()).ok())
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
                    .ok_or(Some(CollectionProblem::TokenInvalid))?;
                if let Ok(mut tokens) = self.collector.tokens.lock() {
                    tokens.insert(uid.to_string(), token.clone());
                }
                Ok(token)
            }
            Ok(None) => {
                warn!(
                    secret = name,
                    "monitor token Secret missing; the reconcile recreates it"
                );
                Err(Some(CollectionProblem::TokenMissing))
            }
            Err(e) => {
                warn!(secret = name, error = %e, "cannot read the monitor token");
                Err(None)
            }
        }
    }
}
