//! The serving side: a reverse proxy in front of the model container that records every
//! exchange and never changes a response unless an option says so.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::feedback;
use super::payload::{self, Unreadable};
use super::recorder::{Exchange, Outcome, Recorder};
use super::sampling::ExchangeLog;
use super::upstream::{self, ModelBody, SendError, Upstream};

/// The body type the proxy answers with: buffered bytes, or the model's body streamed through.
pub type ProxyBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// What the monitor does below the confidence floor.
#[derive(Clone, Debug, PartialEq)]
pub enum BelowFloor {
    /// Answer 422 with an explanation.
    Reject,
    /// Answer 200 with this JSON body.
    Fallback(Bytes),
}

/// Settings of the serving side.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// `http://127.0.0.1:<port>` of the model container.
    pub upstream: Uri,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// Largest response body the monitor buffers to read predictions; larger or unsized
    /// responses stream through unread.
    pub max_parsed_response_bytes: u64,
    /// How long the model may take (504 beyond).
    pub upstream_timeout: Duration,
    /// API key every request must carry, if any.
    pub api_key: Option<Vec<u8>>,
    /// Confidence floor and what to do below it.
    pub confidence_floor: Option<(f64, BelowFloor)>,
    /// Prediction tokens and `/drover/feedback`, when on.
    pub feedback: Option<FeedbackSettings>,
}

/// Prediction tokens and feedback.
#[derive(Clone, Debug)]
pub struct FeedbackSettings {
    /// HMAC key shared by every pod of the ModelDeployment.
    pub key: [u8; 32],
    /// The revision this pod serves.
    pub revision: String,
    /// How labels compare with predictions.
    pub task: feedback::Task,
    /// Oldest prediction accepted.
    pub max_age_seconds: i64,
    /// Tokens already counted on this pod.
    pub seen: Arc<std::sync::Mutex<feedback::SeenTokens>>,
}

/// Largest feedback body (a token and a label).
const MAX_FEEDBACK_BYTES: usize = 16 * 1024;

/// The path feedback is posted to (answered by the monitor, never forwarded).
pub const FEEDBACK_PATH: &str = "/drover/feedback";

/// Everything a request needs.
pub struct Proxy {
    /// Settings.
    pub settings: ProxySettings,
    /// Shared state.
    pub recorder: Arc<Recorder>,
    /// Keep-alive connections to the model.
    pub upstream: Arc<Upstream>,
    /// Sampled request/response log.
    pub log: ExchangeLog,
    /// Set once the pod is terminating.
    pub terminating: Arc<AtomicBool>,
}

const HOP_BY_HOP_COUNT: usize = 8;
/// Hop-by-hop headers (RFC 9110 §7.6.1): never forwarded.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names present instead of a hashed removal of every hop-by-hop
    // name: most requests and responses carry at most `Connection: keep-alive`.
    let mut present = [false; HOP_BY_HOP_COUNT];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    // Headers named in Connection are hop-by-hop too. Nearly always it only says `keep-alive`
    // (already in the list) or `close` (no header): then nothing is collected or allocated.
    let only_standard = headers.get_all(header::CONNECTION).iter().all(|v| {
        v.as_bytes().split(|b| *b == b',').all(|token| {
            let token = token.trim_ascii();
            token.eq_ignore_ascii_case(b"keep-alive") || token.eq_ignore_ascii_case(b"close")
        })
    });
    let named: Vec<HeaderName> = if only_standard {
        Vec::new()
    } else {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            .collect()
    };
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
    for name in &named {
        headers.remove(name);
    }
}

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed()
}

fn plain(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({"error": message, "source": "drover-monitor"}).to_string();
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Whether the model's URI has no path prefix, so request targets go to it as they are.
pub fn without_path_prefix(base: &Uri) -> bool {
    let prefix = base.path_and_query().map_or("", |p| p.as_str());
    prefix.is_empty() || prefix == "/"
}

/// The request target sent to the model, in origin form (`/path?query`, what goes on an
/// HTTP/1.1 request line to a server that is not a proxy): the upstream's path prefix, if any,
/// then the request's path and query. `None` when the request's own URI already is that
/// target (the common case: an HTTP/1.1 request to an upstream without a path), so nothing is
/// copied or parsed per request.
fn upstream_target(base: &Uri, request: &Uri) -> Result<Option<Uri>, ()> {
    if let Some(target) = request.path_and_query()
        && without_path_prefix(base)
        && target.as_str().starts_with('/')
    {
        if request.scheme().is_none() && request.authority().is_none() {
            return Ok(None);
        }
        return Ok(Some(Uri::from(target.clone())));
    }
    let full = Uri::try_from(format!(
        "{}{}",
        base.to_string().trim_end_matches('/'),
        request.path_and_query().map_or("/", |p| p.as_str())
    ))
    .map_err(|_| ())?;
    Ok(Some(full.path_and_query().map_or_else(
        || Uri::from_static("/"),
        |p| Uri::from(p.clone()),
    )))
}

impl Proxy {
    /// Handles one request from hyper's server (HTTP/2, and HTTP/1 connections the fast path
    /// in [`super::server`] handed over): screens it, reads its body, answers it.
    pub async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, std::convert::Infallible> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        if let Some(refused) = self.screen(&parts, started) {
            return Ok(refused);
        }
        let is_feedback = self.is_feedback(&parts);
        let limit = if is_feedback {
            MAX_FEEDBACK_BYTES
        } else {
            self.settings.max_body_bytes
        };
        let body = match read_to_end(Limited::new(body, limit)).await {
            Ok(bytes) => bytes,
            Err(e) => {
                let too_large = e
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some();
                if is_feedback {
                    let e = feedback::FeedbackError::Malformed(format!(
                        "body unreadable or over {MAX_FEEDBACK_BYTES} bytes"
                    ));
                    return Ok(self.refuse_feedback(e));
                }
                if too_large {
                    self.record_bare(
                        started,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        Some(Outcome::TooLarge),
                    );
                    return Ok(plain(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "request body too large",
                    ));
                }
                // The client went away or sent a broken body: nothing to forward.
                self.record_bare(started, StatusCode::BAD_REQUEST, None);
                return Ok(plain(
                    StatusCode::BAD_REQUEST,
                    "could not read the request body",
                ));
            }
        };
        let timer = std::pin::pin!(tokio::time::sleep_until(
            tokio::time::Instant::from_std(started) + self.settings.upstream_timeout
        ));
        Ok(self
            .answer(parts, body, started, timer)
            .await
            .into_response())
    }

    /// Whether this is a request the monitor answers before reading its body: a missing or
    /// wrong API key (401), or a declared body over the limit (413). `None`: go on.
    pub fn screen(
        &self,
        parts: &http::request::Parts,
        started: Instant,
    ) -> Option<Response<ProxyBody>> {
        let header = |name: &str| parts.headers.get(name).map(HeaderValue::as_bytes);
        if let Some(refused) = self.check_key(header("authorization"), header("x-api-key"), started)
        {
            return Some(refused);
        }
        if self.is_feedback(parts) {
            // Feedback bodies have their own, smaller limit (checked as they are read).
            return None;
        }
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.settings.max_body_bytes as u64) {
            self.record_bare(
                started,
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(Outcome::TooLarge),
            );
            return Some(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
        None
    }

    fn is_feedback(&self, parts: &http::request::Parts) -> bool {
        self.settings.feedback.is_some()
            && parts.method == http::Method::POST
            && parts.uri.path() == FEEDBACK_PATH
    }

    /// Counts an exchange the model never saw.
    fn record_bare(&self, started: Instant, status: StatusCode, outcome: Option<Outcome>) {
        if let Some(o) = outcome {
            self.recorder.outcome(o);
        }
        self.recorder.record(Exchange {
            status: status.as_u16(),
            latency: started.elapsed(),
            request: None,
            response: None,
            terminating: self.terminating.load(Ordering::Relaxed),
        });
    }

    /// Answers a screened request whose body is in memory (within the limits): feedback is
    /// answered here, everything else goes to the model. `timer` fires at the upstream
    /// deadline (504); the caller owns it so a connection can keep one timer for all its
    /// requests instead of arming one per request.
    pub async fn answer(
        &self,
        mut parts: http::request::Parts,
        body: Bytes,
        started: Instant,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Answer {
        if let Some(fb) = &self.settings.feedback
            && self.is_feedback(&parts)
        {
            if body.len() > MAX_FEEDBACK_BYTES {
                return Answer::Made(self.refuse_feedback(feedback::FeedbackError::Malformed(
                    format!("body unreadable or over {MAX_FEEDBACK_BYTES} bytes"),
                )));
            }
            return Answer::Made(self.feedback(fb, &body));
        }
        let target = match upstream_target(&self.settings.upstream, &parts.uri) {
            Ok(target) => target,
            Err(_) => {
                self.record_bare(started, StatusCode::BAD_REQUEST, None);
                return Answer::Made(plain(StatusCode::BAD_REQUEST, "invalid request target"));
            }
        };
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::CONTENT_LENGTH);
        if !parts.headers.contains_key(header::HOST) {
            parts
                .headers
                .insert(header::HOST, self.upstream.host().clone());
        }
        if let Some(target) = target {
            parts.uri = target;
        }
        let wire = upstream::encode_request(&parts.method, &parts.uri, &parts.headers, &body);
        self.forward(
            Outgoing {
                method: &parts.method,
                path: parts.uri.path(),
                wire: &wire,
                body: &body,
            },
            started,
            timer,
        )
        .await
    }

    /// Checks the API key a request presents (`authorization: Bearer`, else `x-api-key`);
    /// `Some` is the 401 to answer.
    pub fn check_key(
        &self,
        authorization: Option<&[u8]>,
        api_key: Option<&[u8]>,
        started: Instant,
    ) -> Option<Response<ProxyBody>> {
        let key = self.settings.api_key.as_ref()?;
        let presented = match authorization {
            Some(v) => v
                .strip_prefix(b"Bearer ")
                .or_else(|| v.strip_prefix(b"bearer ")),
            None => api_key,
        };
        if presented.is_some_and(|given| bool::from(given.ct_eq(key.as_slice()))) {
            return None;
        }
        self.record_bare(
            started,
            StatusCode::UNAUTHORIZED,
            Some(Outcome::Unauthorized),
        );
        let mut r = plain(StatusCode::UNAUTHORIZED, "missing or invalid API key");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        Some(r)
    }

    /// Sends a request already encoded for the model, records the exchange and answers.
    pub async fn forward(
        &self,
        request: Outgoing<'_>,
        started: Instant,
        timer: std::pin::Pin<&mut tokio::time::Sleep>,
    ) -> Answer {
        let terminating = self.terminating.load(Ordering::Relaxed);
        let record_bare = |status: StatusCode, outcome: Option<Outcome>| {
            self.record_bare(started, status, outcome);
        };
        let Outgoing {
            method,
            path,
            wire,
            body,
        } = request;
        let exchange = async {
            let mut retried = false;
            loop {
                let mut taken = self.upstream.take(retried, started).await?;
                match Upstream::send(&mut taken, wire, method).await {
                    Ok(response) => return Ok((response, taken)),
                    // A kept-alive connection the model closed just as the request went out
                    // (its keep-alive timer and ours raced): nothing was answered, so one retry
                    // on a fresh connection is safe and keeps the model's own idle timeout from
                    // showing as 502s.
                    Err(e) if !retried && closed_before_answer(&e) => retried = true,
                    Err(e) => return Err(e),
                }
            }
        };
        let outcome = tokio::select! {
            biased;
            outcome = exchange => Ok(outcome),
            () = timer => Err(()),
        };
        let (head, taken) = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => {
                record_bare(StatusCode::BAD_GATEWAY, Some(Outcome::UpstreamError));
                return Answer::Made(plain(
                    StatusCode::BAD_GATEWAY,
                    "the model server could not be reached",
                ));
            }
            Err(_) => {
                record_bare(StatusCode::GATEWAY_TIMEOUT, Some(Outcome::UpstreamTimeout));
                return Answer::Made(plain(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the model server did not answer in time",
                ));
            }
        };

        // Inputs the model refused (4xx/5xx) were not served: they would skew the drift
        // histograms, so features are recorded for successful answers only; unreadable
        // payloads are counted either way. An empty body where one belongs is unreadable too.
        let expects_body = matches!(
            *method,
            http::Method::POST | http::Method::PUT | http::Method::PATCH
        );
        let parsed_request = if body.is_empty() {
            expects_body.then_some(Err(Unreadable::NotJson))
        } else {
            Some(payload::parse_request(body))
        };
        let resp_body = ModelBody::new(&head, taken, self.upstream.clone());
        let status = head.status;

        // Responses of unknown or large size stream through unread.
        if head
            .content_length
            .is_none_or(|n| n > self.settings.max_parsed_response_bytes)
        {
            self.recorder.record_parsed(
                Exchange {
                    status: status.as_u16(),
                    latency: started.elapsed(),
                    request: None,
                    response: Some(Err(Unreadable::UnknownShape)),
                    terminating,
                },
                parsed_request.as_ref().map(|r| r.as_ref().map_err(|e| *e)),
            );
            let mut parts = head.to_parts();
            strip_hop_by_hop(&mut parts.headers);
            return Answer::Made(Response::from_parts(parts, resp_body.boxed()));
        }
        // The connection goes back to the idle stack as the body's end is read.
        let bytes = match read_to_end(resp_body).await {
            Ok(bytes) => bytes,
            Err(_) => {
                record_bare(StatusCode::BAD_GATEWAY, Some(Outcome::UpstreamError));
                return Answer::Made(plain(
                    StatusCode::BAD_GATEWAY,
                    "the model server's response broke off",
                ));
            }
        };
        let parsed_response =
            (status.is_success() && !bytes.is_empty()).then(|| payload::parse_json(&bytes));

        let mut replaced = None;
        if let (Some((floor, action)), Some(Ok(value))) =
            (&self.settings.confidence_floor, &parsed_response)
            && let Some(lowest) = lowest_confidence(value)
            && lowest < *floor
        {
            replaced = Some(match action {
                BelowFloor::Reject => {
                    self.recorder.outcome(Outcome::Rejected);
                    let body = serde_json::json!({
                        "error": "prediction confidence below the floor",
                        "confidence": lowest,
                        "floor": floor,
                        "source": "drover-monitor",
                    });
                    let mut r = Response::new(full(body.to_string()));
                    *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r
                }
                BelowFloor::Fallback(fallback) => {
                    self.recorder.outcome(Outcome::Fallback);
                    let mut r = Response::new(full(fallback.clone()));
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r.headers_mut().insert(
                        "x-drover-fallback",
                        HeaderValue::from_static("confidence-below-floor"),
                    );
                    r
                }
            });
        }
        let final_status = replaced.as_ref().map_or(status, Response::status);
        let token = match (&self.settings.feedback, &parsed_response) {
            (Some(fb), Some(Ok(value))) if final_status.is_success() && replaced.is_none() => {
                prediction_token(fb, value).and_then(|t| HeaderValue::from_str(&t).ok())
            }
            _ => None,
        };
        if self.log.should_log() {
            self.recorder.outcome(Outcome::Logged);
            self.log
                .write(method, path, final_status, started.elapsed(), body, &bytes);
        }
        self.recorder.record_parsed(
            Exchange {
                status: final_status.as_u16(),
                latency: started.elapsed(),
                request: None,
                response: parsed_response.as_ref().map(|r| r.as_ref().map_err(|e| *e)),
                terminating,
            },
            parsed_request.as_ref().map(|r| r.as_ref().map_err(|e| *e)),
        );
        match replaced {
            Some(r) => Answer::Made(r),
            None => Answer::Model(ModelAnswer {
                head,
                body: bytes,
                token,
            }),
        }
    }
}

/// A request encoded for the model ([`upstream::encode_request`], or the fast path's own).
pub struct Outgoing<'a> {
    /// Its method (how the response is framed).
    pub method: &'a http::Method,
    /// Its path, for the sampled log.
    pub path: &'a str,
    /// Request line, headers and body as they go to the model.
    pub wire: &'a [u8],
    /// The body alone, for the payload reader and the log.
    pub body: &'a [u8],
}

/// What the proxy answers.
pub enum Answer {
    /// A response made by the monitor, or the model's streamed through unread.
    Made(Response<ProxyBody>),
    /// The model's response, read: its head as the model sent it (written on without a
    /// header map by the fast path), its body, and the prediction token to add.
    Model(ModelAnswer),
}

/// The model's response as the monitor read it.
pub struct ModelAnswer {
    /// The head as the model sent it.
    pub head: upstream::ResponseHead,
    /// The body.
    pub body: Bytes,
    /// `x-drover-prediction-token`, when feedback is on and the answer has one prediction.
    pub token: Option<HeaderValue>,
}

/// Hop-by-hop header names (RFC 9110 §7.6.1) as bytes, for heads that are not header maps.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_str().as_bytes()))
}

impl Answer {
    /// As an `http` response (what hyper's server writes): hop-by-hop headers dropped, the
    /// token added.
    pub fn into_response(self) -> Response<ProxyBody> {
        match self {
            Answer::Made(r) => r,
            Answer::Model(ModelAnswer { head, body, token }) => {
                let mut parts = head.to_parts();
                strip_hop_by_hop(&mut parts.headers);
                if let Some(token) = token {
                    parts.headers.insert(feedback::TOKEN_HEADER, token);
                }
                Response::from_parts(parts, full(body))
            }
        }
    }
}

impl Proxy {
    /// Counts refused feedback and answers why.
    fn refuse_feedback(&self, e: feedback::FeedbackError) -> Response<ProxyBody> {
        let _ = self.recorder.feedback(Err(&e));
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
        plain(status, &e.to_string())
    }

    /// `POST /drover/feedback`: checks the token, counts the label once, answers what happened.
    fn feedback(&self, fb: &FeedbackSettings, bytes: &[u8]) -> Response<ProxyBody> {
        let refuse = |e: feedback::FeedbackError| self.refuse_feedback(e);
        let parsed = match feedback::parse(bytes) {
            Ok(p) => p,
            Err(e) => return refuse(e),
        };
        let now = jiff::Timestamp::now().as_second();
        let claims = match feedback::verify(
            &fb.key,
            &parsed.token,
            &fb.revision,
            now,
            fb.max_age_seconds,
        ) {
            Ok(c) => c,
            Err(e) => return refuse(e),
        };
        // A label that does not fit is refused before the token is spent: the client may fix
        // it and send it again.
        if let Err(e) =
            feedback::Performance::default().record(fb.task, &claims.prediction, &parsed.label)
        {
            return refuse(e);
        }
        // The verified token has a MAC, so it has an id: the pod's duplicate check, its feedback
        // log and the operator all know the token by it.
        let Some(id) = feedback::token_id(&parsed.token) else {
            return refuse(feedback::FeedbackError::Malformed(
                "prediction token without a signature".into(),
            ));
        };
        let first = fb
            .seen
            .lock()
            .map(|mut seen| seen.first_time(id))
            .unwrap_or(true);
        if !first {
            return refuse(feedback::FeedbackError::Duplicate);
        }
        match self.recorder.feedback(Ok(feedback::Labelled {
            task: fb.task,
            id,
            claims: &claims,
            label: &parsed.label,
        })) {
            Ok(()) => {
                let mut r = Response::new(full(r#"{"counted":true}"#));
                *r.status_mut() = StatusCode::ACCEPTED;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r
            }
            Err(e) => {
                let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::BAD_REQUEST);
                plain(status, &e.to_string())
            }
        }
    }
}

/// The token for a response that carries exactly one prediction (a batch gets none: a label
/// names one prediction).
fn prediction_token(fb: &FeedbackSettings, response: &Value) -> Option<String> {
    let reading = payload::read_response(response).ok()?;
    if reading.predictions.len() != 1 {
        return None;
    }
    let prediction = reading.predictions.first()?.to_value()?;
    Some(feedback::sign(
        &fb.key,
        &feedback::Claims {
            revision: fb.revision.clone(),
            prediction,
            time: jiff::Timestamp::now().as_second(),
            nonce: fastrand::u64(..),
        },
    ))
}

/// A body's data as one buffer, trailers dropped (what `collect().to_bytes()` gives): a body
/// in one frame, as small JSON bodies nearly always come, is kept as it is, without the frame
/// queue `collect` allocates.
async fn read_to_end<B>(body: B) -> Result<Bytes, B::Error>
where
    B: hyper::body::Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        match (&mut joined, first.take()) {
            (Some(joined), _) => joined.extend_from_slice(&data),
            (None, None) => first = Some(data),
            (None, Some(previous)) => {
                let mut buffer = bytes::BytesMut::with_capacity(previous.len() + data.len());
                buffer.extend_from_slice(&previous);
                buffer.extend_from_slice(&data);
                joined = Some(buffer);
            }
        }
    }
    Ok(match joined {
        Some(joined) => joined.freeze(),
        None => first.unwrap_or_default(),
    })
}

/// True when the model closed the connection before answering (safe to retry once): the
/// request could not be written, or the connection failed or closed before a whole response
/// head came back. A model that could not be reached or answered garbage is not retried.
fn closed_before_answer(error: &SendError) -> bool {
    matches!(error, SendError::Closed(_))
}

fn lowest_confidence(value: &Value) -> Option<f64> {
    let reading = payload::read_response(value).ok()?;
    reading
        .confidences
        .into_iter()
        .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.min(c))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(base: &str, t: &str) -> Uri {
        let base: Uri = base.parse().unwrap();
        let request: Uri = t.parse().unwrap();
        upstream_target(&base, &request).unwrap().unwrap_or(request)
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("Keep-Alive"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), [&header::CONTENT_TYPE]);
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Trace"),
        );
        headers.insert("x-trace", HeaderValue::from_static("1"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(
            headers.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["x-kept"]
        );
    }

    #[tokio::test]
    async fn bodies_read_to_end_in_one_or_many_frames() {
        use futures::stream;
        use http_body_util::StreamBody;
        use hyper::body::Frame;
        let one = read_to_end(Full::new(Bytes::from_static(b"{}")))
            .await
            .unwrap();
        assert_eq!(&one[..], b"{}");
        let frames = [&b"a"[..], b"", b"bc", b"d"]
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c))));
        let many = read_to_end(StreamBody::new(stream::iter(frames)))
            .await
            .unwrap();
        assert_eq!(&many[..], b"abcd");
        let none = read_to_end(http_body_util::Empty::<Bytes>::new())
            .await
            .unwrap();
        assert!(none.is_empty());
    }

    #[test]
    fn upstream_target_keeps_path_and_query_in_origin_form() {
        let base = "http://127.0.0.1:8080";
        assert_eq!(target(base, "/predict"), "/predict");
        assert_eq!(target(base, "/v1/m:predict?x=1&y"), "/v1/m:predict?x=1&y");
        assert_eq!(target(base, "http://client.example/p?q"), "/p?q");
        assert_eq!(target(base, "http://client.example"), "/");
        assert_eq!(
            target("http://127.0.0.1:8080/base/", "/predict"),
            "/base/predict"
        );
        assert_eq!(
            target("http://127.0.0.1:8080/base", "/p?q=1"),
            "/base/p?q=1"
        );
    }
}
