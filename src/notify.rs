//! Notifications: what happens to a model (rollouts, drift, retraining, candidates) posted to a
//! webhook, as generic JSON or a Slack message.
//!
//! Reconciles never wait on a receiver: [`Notifier::send`] puts the notification on a bounded
//! queue of its receiver and returns at once. One worker per receiver URL delivers in order,
//! with a per-attempt timeout and retries with exponential backoff; a receiver that is slow or
//! dead only holds up its own queue, and when that queue is full new notifications for it are
//! dropped and counted. What went wrong is kept per ModelDeployment for condition
//! `NotificationsDelivered`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::api::{NotificationEvent, NotificationsSpec, WebhookFormat};
use crate::metrics::Metrics;

/// One thing worth telling.
#[derive(Clone, Debug, PartialEq)]
pub struct Notification {
    /// What it is about.
    pub event: NotificationEvent,
    /// The Event reason it came from (e.g. `CanaryRolledBack`).
    pub reason: String,
    /// A Warning (rollback, drift, failure) or not.
    pub warning: bool,
    /// The ModelDeployment's namespace.
    pub namespace: String,
    /// The ModelDeployment's name.
    pub name: String,
    /// `spec.model.version`.
    pub version: String,
    /// What happened, for a person.
    pub message: String,
    /// When.
    pub at: Timestamp,
}

/// The notification event an Event reason belongs to, if any.
pub fn event_of(reason: &str) -> Option<NotificationEvent> {
    use crate::plan::{reason as plan, retraining_reason as retraining, steady_reason as steady};
    use crate::rollout::machine::reason as canary;
    use NotificationEvent as E;
    // The planner's own reason constants, so a renamed reason cannot silently stop notifying.
    Some(match reason {
        canary::STARTED | plan::ROLLOUT_STARTED => E::RolloutStarted,
        canary::PROMOTED | canary::PROMOTED_BY_HAND | plan::ROLLOUT_COMPLETE => E::Promoted,
        canary::ROLLED_BACK | canary::BAKE_ROLLBACK | canary::ABORTED | canary::DEADLINE => {
            E::RolledBack
        }
        steady::DRIFT_DETECTED => E::DriftDetected,
        steady::SLO_BREACHED => E::SLOBreached,
        retraining::STARTED => E::RetrainingStarted,
        retraining::SUCCEEDED | retraining::FAILED => E::RetrainingFinished,
        retraining::CANDIDATE_ACCEPTED => E::CandidateAccepted,
        retraining::CANDIDATE_REJECTED => E::CandidateRejected,
        steady::PERFORMANCE_DROPPED => E::PerformanceDropped,
        _ => return None,
    })
}

/// Whether `spec` asks for `event` (an empty list asks for all).
pub fn wanted(spec: &NotificationsSpec, event: NotificationEvent) -> bool {
    spec.events.is_empty() || spec.events.contains(&event)
}

fn event_name(event: NotificationEvent) -> String {
    serde_json::to_value(event)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// The body posted for `n` in `format`.
pub fn body(format: WebhookFormat, n: &Notification) -> Value {
    let event = event_name(n.event);
    let severity = if n.warning { "warning" } else { "info" };
    match format {
        WebhookFormat::Generic => json!({
            "version": 1,
            "event": event,
            "reason": n.reason,
            "severity": severity,
            "model": {"namespace": n.namespace, "name": n.name, "version": n.version},
            "message": n.message,
            "at": n.at.to_string(),
        }),
        WebhookFormat::Slack => {
            let icon = if n.warning {
                ":warning:"
            } else {
                ":information_source:"
            };
            let title = format!(
                "{icon} *{event}* {}/{} ({})",
                n.namespace, n.name, n.version
            );
            json!({
                "text": format!("{event}: {}/{}: {}", n.namespace, n.name, n.message),
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": title}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": escape_slack(&n.message)}},
                    {"type": "context", "elements": [{"type": "mrkdwn", "text": format!("{} · {}", n.reason, n.at)}]},
                ],
            })
        }
    }
}

/// Slack's mrkdwn treats `&`, `<` and `>` as control characters.
fn escape_slack(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// How deliveries are made.
#[derive(Clone, Debug)]
pub struct DeliverySettings {
    /// Notifications waiting per receiver; more are dropped.
    pub queue: usize,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Attempts per notification (first try included).
    pub attempts: u32,
    /// Wait before the first retry; doubles each time.
    pub backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            queue: 256,
            timeout: Duration::from_secs(5),
            attempts: 5,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// How deliveries for one ModelDeployment have gone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryState {
    /// Notifications delivered.
    pub delivered: u64,
    /// Notifications given up on (all attempts failed, refused, or dropped from a full queue)
    /// since the last delivery.
    pub failures: u64,
    /// Why the last one failed.
    pub last_error: Option<String>,
}

type HttpsClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

type Item = (WebhookFormat, Notification);

struct Inner {
    targets: Mutex<HashMap<String, mpsc::Sender<Item>>>,
    states: Mutex<HashMap<(String, String), DeliveryState>>,
    settings: DeliverySettings,
    metrics: Metrics,
    client: Result<HttpsClient, String>,
}

/// Delivers notifications in the background; cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

/// Why a notification was not queued.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotQueued {
    /// The receiver's queue is full (it is slow or down).
    #[error("the receiver's queue is full ({0} waiting): notification dropped")]
    QueueFull(usize),
    /// The URL cannot be used.
    #[error("{0}")]
    BadUrl(String),
}

impl Notifier {
    /// A notifier; must be created inside a Tokio runtime (workers are spawned on first use).
    pub fn new(settings: DeliverySettings, metrics: Metrics) -> Self {
        let client = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
            .map(|b| {
                let connector = b.https_or_http().enable_http1().build();
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector)
            })
            .map_err(|e| format!("no TLS roots for webhook deliveries: {e}"));
        Self {
            inner: Arc::new(Inner {
                targets: Mutex::new(HashMap::new()),
                states: Mutex::new(HashMap::new()),
                settings,
                metrics,
                client,
            }),
        }
    }

    /// Queues `n` for `url`; never waits.
    pub fn send(&self, url: &str, format: WebhookFormat, n: Notification) -> Result<(), NotQueued> {
        let uri: http::Uri = url
            .parse()
            .map_err(|e| NotQueued::BadUrl(format!("webhook URL is not a URL: {e}")))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            let why =
                NotQueued::BadUrl("webhook URL must be http:// or https:// with a host".into());
            self.failed(&n.namespace, &n.name, why.to_string());
            return Err(why);
        }
        let sender = {
            let Ok(mut targets) = self.inner.targets.lock() else {
                return Err(NotQueued::BadUrl("notifier unavailable".into()));
            };
            targets
                .entry(url.to_string())
                .or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(self.inner.settings.queue.max(1));
                    tokio::spawn(worker(self.clone(), uri, rx));
                    tx
                })
                .clone()
        };
        let (namespace, name) = (n.namespace.clone(), n.name.clone());
        match sender.try_send((format, n)) {
            Ok(()) => Ok(()),
            Err(_) => {
                let why = NotQueued::QueueFull(self.inner.settings.queue);
                self.inner.metrics.notification("dropped");
                self.failed(&namespace, &name, why.to_string());
                Err(why)
            }
        }
    }

    /// How deliveries for `namespace/name` have gone (`None`: nothing sent yet).
    pub fn state(&self, namespace: &str, name: &str) -> Option<DeliveryState> {
        self.inner
            .states
            .lock()
            .ok()?
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Forgets a deleted ModelDeployment.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut states) = self.inner.states.lock() {
            states.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    fn failed(&self, namespace: &str, name: &str, why: String) {
        if let Ok(mut states) = self.inner.states.lock() {
            let s = states
                .entry((namespace.to_string(), name.to_string()))
                .or_default();
            s.failures = s.failures.saturating_add(1);
            s.last_error = Some(why);
        }
    }

    fn delivered(&self, namespace: &str, name: &str) {
        if let Ok(mut states) = self.inner.states.lock() {
            let s = states
                .entry((namespace.to_string(), name.to_string()))
                .or_default();
            s.delivered = s.delivered.saturating_add(1);
            s.failures = 0;
            s.last_error = None;
        }
    }

    /// One attempt: `Ok` on 2xx; `Err((retry, why))` otherwise.
    async fn attempt(&self, uri: &http::Uri, body: &[u8]) -> Result<(), (bool, String)> {
        let client = self.inner.client.as_ref().map_err(|e| (false, e.clone()))?;
        let request = http::Request::post(uri.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("drover/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::copy_from_slice(body)))
            .map_err(|e| (false, format!("cannot build the request: {e}")))?;
        let response = tokio::time::timeout(self.inner.settings.timeout, client.request(request))
            .await
            .map_err(|_| {
                (
                    true,
                    format!("no answer within {:?}", self.inner.settings.timeout),
                )
            })?
            .map_err(|e| (true, format!("cannot reach the receiver: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        // Client errors other than 429 will not get better by asking again.
        let retry = status.is_server_error() || status == http::StatusCode::TOO_MANY_REQUESTS;
        Err((retry, format!("the receiver answered {status}")))
    }
}

/// Delivers one receiver's notifications in order.
async fn worker(notifier: Notifier, uri: http::Uri, mut rx: mpsc::Receiver<Item>) {
    let settings = notifier.inner.settings.clone();
    while let Some((format, n)) = rx.recv().await {
        let body = serde_json::to_vec(&body(format, &n)).unwrap_or_default();
        let mut wait = settings.backoff;
        let mut outcome = Err(String::new());
        for attempt in 1..=settings.attempts.max(1) {
            match notifier.attempt(&uri, &body).await {
                Ok(()) => {
                    outcome = Ok(());
                    break;
                }
                Err((retry, why)) => {
                    debug!(attempt, %why, "webhook delivery failed");
                    outcome = Err(why);
                    if !retry || attempt == settings.attempts {
                        break;
                    }
                    notifier.inner.metrics.notification("retried");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(settings.max_backoff);
                }
            }
        }
        match outcome {
            Ok(()) => {
                notifier.inner.metrics.notification("delivered");
                notifier.delivered(&n.namespace, &n.name);
            }
            Err(why) => {
                warn!(model = %n.name, namespace = %n.namespace, event = ?n.event, %why, "webhook notification not delivered");
                notifier.inner.metrics.notification("failed");
                notifier.failed(&n.namespace, &n.name, why);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note() -> Notification {
        Notification {
            event: NotificationEvent::RolledBack,
            reason: "CanaryRolledBack".into(),
            warning: true,
            namespace: "ml".into(),
            name: "fraud".into(),
            version: "1.1.0".into(),
            message: "error rate 0.08 above 0.01 <p < 0.001>".into(),
            at: Timestamp::from_second(1_800_000_000).unwrap(),
        }
    }

    #[test]
    fn event_reasons_map_to_notification_events() {
        assert_eq!(
            event_of("CanaryRolledBack"),
            Some(NotificationEvent::RolledBack)
        );
        assert_eq!(
            event_of("BakeRolledBack"),
            Some(NotificationEvent::RolledBack)
        );
        assert_eq!(
            event_of("RolloutComplete"),
            Some(NotificationEvent::Promoted)
        );
        assert_eq!(
            event_of("RetrainingFailed"),
            Some(NotificationEvent::RetrainingFinished)
        );
        assert_eq!(event_of("CanaryStepPassed"), None, "not worth a message");
        let only = NotificationsSpec {
            webhook: crate::api::WebhookSpec {
                url_secret_ref: crate::api::SecretKeyRef {
                    name: "hook".into(),
                    key: "url".into(),
                },
                format: WebhookFormat::Generic,
            },
            events: vec![NotificationEvent::DriftDetected],
        };
        assert!(wanted(&only, NotificationEvent::DriftDetected));
        assert!(!wanted(&only, NotificationEvent::Promoted));
        let all = NotificationsSpec {
            events: vec![],
            ..only
        };
        assert!(wanted(&all, NotificationEvent::Promoted));
    }

    #[test]
    fn generic_and_slack_bodies() {
        let g = body(WebhookFormat::Generic, &note());
        assert_eq!(g["event"], "RolledBack");
        assert_eq!(g["severity"], "warning");
        assert_eq!(g["model"]["name"], "fraud");
        assert_eq!(g["at"], "2027-01-15T08:00:00Z");
        let s = body(WebhookFormat::Slack, &note());
        assert!(
            s["text"]
                .as_str()
                .unwrap()
                .starts_with("RolledBack: ml/fraud")
        );
        let blocks = s["blocks"].as_array().unwrap();
        assert!(
            blocks[1]["text"]["text"]
                .as_str()
                .unwrap()
                .contains("&lt;p &lt; 0.001&gt;")
        );
    }
}
