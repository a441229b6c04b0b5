//! The monitor's admin port: `/drover/report`, `/metrics` (both behind the per-ModelDeployment
//! bearer token), `/healthz`, `/readyz` (ready when the model answers its health path), and
//! `/drover/prestop`, the model container's preStop hook.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use prometheus_client::registry::Registry;
use subtle::ConstantTimeEq;

use super::recorder::{MetricsCollector, Recorder};

/// How long `/drover/prestop` holds the model's termination, so endpoints stop sending traffic
/// before the model exits (the classic preStop pause).
pub const PRESTOP_PAUSE: Duration = Duration::from_secs(5);
/// How long `/readyz` waits for the model's health path.
pub const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Shared admin state.
#[derive(Clone)]
pub struct AdminState {
    recorder: Arc<Recorder>,
    token: Option<Arc<std::sync::RwLock<Vec<u8>>>>,
    /// Where the token was read from: read again when a presented token does not match (the
    /// Secret may have been recreated; the kubelet updates the mounted file).
    token_file: Option<Arc<TokenFile>>,
    registry: Arc<Registry>,
    health_url: String,
    client: HttpClient<HttpConnector, Empty<Bytes>>,
    /// Set by `/drover/prestop`.
    pub terminating: Arc<AtomicBool>,
    prestop_pause: Duration,
}

impl AdminState {
    /// Admin state over `recorder`, requiring `token` (if any) for report and metrics.
    pub fn new(recorder: Arc<Recorder>, token: Option<Vec<u8>>, health_url: String) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(MetricsCollector(recorder.clone())));
        Self {
            recorder,
            token: token.map(|t| Arc::new(std::sync::RwLock::new(t))),
            token_file: None,
            registry: Arc::new(registry),
            health_url,
            client: HttpClient::builder(hyper_util::rt::TokioExecutor::new())
                .build(HttpConnector::new()),
            terminating: Arc::new(AtomicBool::new(false)),
            prestop_pause: PRESTOP_PAUSE,
        }
    }

    /// Reads the token again from `path` when a presented token does not match (at most once
    /// per [`TOKEN_RELOAD_INTERVAL`]).
    pub fn with_token_file(mut self, path: std::path::PathBuf) -> Self {
        self.token_file = Some(Arc::new(TokenFile {
            path,
            last_read: std::sync::Mutex::new(None),
        }));
        self
    }

    /// Shares the proxy's terminating flag, so `/drover/prestop` marks in-flight traffic.
    pub fn with_terminating(mut self, flag: Arc<AtomicBool>) -> Self {
        self.terminating = flag;
        self
    }

    /// Overrides the preStop pause (tests).
    pub fn with_prestop_pause(mut self, pause: Duration) -> Self {
        self.prestop_pause = pause;
        self
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(given) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        let matches = |t: &std::sync::RwLock<Vec<u8>>| {
            t.read()
                .map(|t| bool::from(given.ct_eq(t.as_slice())))
                .unwrap_or(false)
        };
        if matches(token) {
            return true;
        }
        // A mismatch may be a recreated Secret: read the file again (rate-limited, so a wrong
        // token cannot make the monitor read the disk on every request).
        if let Some(file) = &self.token_file
            && file.due()
            && let Ok(fresh) = std::fs::read(&file.path)
        {
            let fresh = fresh.trim_ascii().to_vec();
            if !fresh.is_empty()
                && let Ok(mut t) = token.write()
            {
                *t = fresh;
            }
            return matches(token);
        }
        false
    }
}

/// Least time between two reads of the token file.
pub const TOKEN_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// The token file and when it was last read again.
struct TokenFile {
    path: std::path::PathBuf,
    last_read: std::sync::Mutex<Option<std::time::Instant>>,
}

impl TokenFile {
    /// Whether a read is allowed now (and, if so, records it).
    fn due(&self) -> bool {
        let Ok(mut last) = self.last_read.lock() else {
            return false;
        };
        let now = std::time::Instant::now();
        if last.is_some_and(|l| now.duration_since(l) < TOKEN_RELOAD_INTERVAL) {
            return false;
        }
        *last = Some(now);
        true
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/drover/report", get(report))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/drover/prestop", get(prestop))
        .with_state(state)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid bearer token is required",
    )
        .into_response()
}

/// `GET /drover/report[?feedbackSince=<seq>[&feedbackInstance=<id>]]`: with `feedbackSince`,
/// the report carries the feedback log after `seq`; a `feedbackInstance` that is not this
/// monitor's (it restarted since the caller's last look) asks for the whole log instead.
async fn report(
    State(state): State<AdminState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let query = match ReportQuery::parse(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(why) => return (StatusCode::BAD_REQUEST, why).into_response(),
    };
    let report = match query.feedback_since {
        Some(seq) => state
            .recorder
            .report_with_feedback(seq, query.feedback_instance.as_deref()),
        None => state.recorder.report(),
    };
    match serde_json::to_vec(&report) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// The report's query parameters.
#[derive(Debug, Default, PartialEq, Eq)]
struct ReportQuery {
    feedback_since: Option<u64>,
    feedback_instance: Option<String>,
}

impl ReportQuery {
    /// Reads the query string; unknown parameters are ignored (as a newer operator may send).
    fn parse(query: &str) -> Result<Self, &'static str> {
        let mut q = ReportQuery::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "feedbackSince" => {
                    q.feedback_since = Some(
                        value
                            .parse()
                            .map_err(|_| "feedbackSince must be a sequence number (0 or more)")?,
                    )
                }
                "feedbackInstance" => q.feedback_instance = Some(value.into_owned()),
                _ => {}
            }
        }
        Ok(q)
    }
}

async fn metrics(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    if !state.authorized(&headers) {
        return unauthorized();
    }
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.terminating.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "terminating").into_response();
    }
    let Ok(uri) = state.health_url.parse::<http::Uri>() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "invalid model health URL").into_response();
    };
    let request = http::Request::get(uri).body(Empty::new());
    let Ok(request) = request else {
        return (StatusCode::SERVICE_UNAVAILABLE, "invalid model health URL").into_response();
    };
    match tokio::time::timeout(READINESS_TIMEOUT, state.client.request(request)).await {
        Ok(Ok(r)) if r.status().is_success() => {
            let _ = r.into_body().collect().await;
            (StatusCode::OK, "ready").into_response()
        }
        Ok(Ok(r)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("model health answered {}", r.status()),
        )
            .into_response(),
        Ok(Err(_)) => (StatusCode::SERVICE_UNAVAILABLE, "model not reachable").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "model health timed out").into_response(),
    }
}

async fn prestop(State(state): State<AdminState>) -> impl IntoResponse {
    state.terminating.store(true, Ordering::Relaxed);
    tokio::time::sleep(state.prestop_pause).await;
    "draining"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_query_is_read_or_refused() {
        assert_eq!(ReportQuery::parse(""), Ok(ReportQuery::default()));
        assert_eq!(
            ReportQuery::parse("feedbackSince=42&feedbackInstance=ab%2Fc&other=1"),
            Ok(ReportQuery {
                feedback_since: Some(42),
                feedback_instance: Some("ab/c".into()),
            })
        );
        assert!(ReportQuery::parse("feedbackSince=-1").is_err());
        assert!(ReportQuery::parse("feedbackSince=x").is_err());
    }
}
