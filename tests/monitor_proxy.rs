//! `drover monitor` with real HTTP traffic against a real upstream server on loopback: what it
//! records, what it passes through untouched, and every case it must handle itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes as AxumBytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use bytes::Bytes;
use clap::Parser;
use drover::monitor::report::Report;
use drover::monitor::{self, MonitorArgs, admin};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser)]
struct Wrap {
    #[command(flatten)]
    args: MonitorArgs,
}

/// The model: a FastAPI-like server. `/predict` answers a prediction with probability
/// `confidence` from the request (default 0.9); invalid JSON gets FastAPI's 422; `/slow` sleeps;
/// `/stream` answers without a content length.
async fn upstream() -> SocketAddr {
    async fn predict(body: AxumBytes) -> impl IntoResponse {
        let Ok(v) = serde_json::from_slice::<Value>(&body) else {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                [("content-type", "application/json")],
                r#"{"detail":"invalid json"}"#.to_string(),
            );
        };
        let p = v.get("confidence").and_then(Value::as_f64).unwrap_or(0.9);
        let prediction = i32::from(v.get("amount").and_then(Value::as_f64).unwrap_or(0.0) > 100.0);
        (
            StatusCode::OK,
            [("content-type", "application/json")],
            json!({"prediction": prediction, "probability": p}).to_string(),
        )
    }
    async fn batch(body: AxumBytes) -> impl IntoResponse {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let n = v["instances"].as_array().map(Vec::len).unwrap_or(0);
        let out = json!({"predictions": vec![0; n], "probabilities": vec![[0.8, 0.2]; n]});
        (
            [("content-type", "application/json"), ("x-model", "fraud")],
            out.to_string(),
        )
    }
    async fn echo_headers(headers: HeaderMap) -> impl IntoResponse {
        let auth = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or("").to_string());
        json!({"sawAuthorization": auth}).to_string()
    }
    let app = Router::new()
        .route("/predict", post(predict))
        .route("/predict/batch", post(batch))
        .route("/health", get(|| async { "ok" }))
        .route("/headers", get(echo_headers))
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks =
                    futures::stream::iter(vec![Ok::<_, std::io::Error>("a"), Ok("b"), Ok("c")]);
                axum::body::Body::from_stream(chunks)
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

struct Monitor {
    serving: SocketAddr,
    admin: SocketAddr,
    stop: watch::Sender<bool>,
    /// The serving loop: ends once drained after `stop`.
    served: tokio::task::JoinHandle<()>,
    _dir: tempdir::Dir,
}

mod tempdir {
    /// A directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Self {
            let p = std::env::temp_dir()
                .join(format!("drover-monitor-test-{:016x}", fastrand::u64(..)));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

const TOKEN: &str = "report-token-123";

async fn start_monitor(upstream: SocketAddr, extra: &[&str]) -> Monitor {
    let dir = tempdir::Dir::new();
    let token = dir.0.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let profile = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/models/fraud/profile.json"
    );
    let mut argv: Vec<String> = vec![
        "monitor".into(),
        "--upstream".into(),
        upstream.to_string(),
        "--profile".into(),
        profile.into(),
        "--report-token-file".into(),
        token.display().to_string(),
        "--model-version".into(),
        "1.0.0".into(),
        "--upstream-timeout".into(),
        "1s".into(),
        "--max-body-bytes".into(),
        "4096".into(),
    ];
    for e in extra {
        argv.push(e.replace("{dir}", &dir.0.display().to_string()));
    }
    let args = Wrap::parse_from(argv).args;
    let prepared = monitor::prepare(&args).expect("valid monitor arguments");
    let serving_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let serving = serving_listener.local_addr().unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    let state = admin::AdminState::new(
        prepared.proxy.recorder.clone(),
        prepared.report_token.clone(),
        format!("http://{upstream}/health"),
    )
    .with_terminating(prepared.proxy.terminating.clone())
    .with_prestop_pause(Duration::from_millis(10))
    .with_token_file(dir.0.join("token"));
    tokio::spawn(async move { axum::serve(admin_listener, admin::router(state)).await });
    let (stop, mut stop_rx) = watch::channel(false);
    let proxy = prepared.proxy.clone();
    let served = tokio::spawn(async move {
        monitor::serve(serving_listener, proxy, prepared.tls, &mut stop_rx).await
    });
    Monitor {
        serving,
        admin: admin_addr,
        stop,
        served,
        _dir: dir,
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

async fn send(
    method: &str,
    url: String,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Answer {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut request = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = client
        .request(request.body(Full::new(body.into())).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn report(m: &Monitor) -> Report {
    let a = send(
        "GET",
        format!("http://{}/drover/report", m.admin),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    serde_json::from_slice(&a.body).unwrap()
}

fn transaction(amount: f64) -> String {
    json!({"amount": amount, "age": 40, "account_age_days": 400, "transactions_24h": 2, "distance_km": 5.0,
           "merchant_category": "grocery", "channel": "online"})
    .to_string()
}

#[tokio::test]
async fn records_features_predictions_confidence_and_latency() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    for i in 0..40 {
        let a = send(
            "POST",
            format!("http://{}/predict", m.serving),
            &[("content-type", "application/json")],
            transaction(10.0 + i as f64 * 5.0),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    let row: Value = serde_json::from_str(&transaction(5.0)).unwrap();
    let batch = json!({"instances": vec![row; 5]}).to_string();
    let a = send(
        "POST",
        format!("http://{}/predict/batch", m.serving),
        &[("content-type", "application/json")],
        batch,
    )
    .await;
    assert_eq!(
        a.headers["x-model"], "fraud",
        "response headers pass through"
    );
    let r = report(&m).await;
    assert_eq!(r.requests.success, 41);
    assert_eq!(r.rows, 45, "a batch counts every row");
    assert_eq!(r.features["amount"].count(), 45);
    assert_eq!(r.features["channel"].count(), 45);
    assert_eq!(r.prediction.as_ref().unwrap().count(), 45);
    assert_eq!(r.confidence.as_ref().unwrap().count(), 45);
    assert_eq!(r.latency.count(), 41);
    assert_eq!(r.model_version, "1.0.0");
    let p50 = r.latency.quantile(0.5).unwrap();
    assert!(p50 > 0.0 && p50 < 1.0, "{p50}");
}

#[tokio::test]
async fn responses_pass_through_byte_for_byte_and_bad_payloads_are_counted() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    let direct = send(
        "POST",
        format!("http://{up}/predict"),
        &[],
        transaction(50.0),
    )
    .await;
    let through = send(
        "POST",
        format!("http://{}/predict", m.serving),
        &[],
        transaction(50.0),
    )
    .await;
    assert_eq!(direct.body, through.body);
    assert_eq!(
        direct.headers["content-type"],
        through.headers["content-type"]
    );
    for bad in [
        &b"{\"amount\": "[..],
        &[0xff, 0xfe, 0x00][..],
        &b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["[..],
    ] {
        let direct = send(
            "POST",
            format!("http://{up}/predict"),
            &[],
            Bytes::copy_from_slice(bad),
        )
        .await;
        let through = send(
            "POST",
            format!("http://{}/predict", m.serving),
            &[],
            Bytes::copy_from_slice(bad),
        )
        .await;
        assert_eq!(direct.status, through.status);
        assert_eq!(
            direct.body, through.body,
            "the model's error passes through untouched"
        );
    }
    let streamed = send("GET", format!("http://{}/stream", m.serving), &[], "").await;
    assert_eq!(
        &streamed.body[..],
        b"abc",
        "unsized responses stream through"
    );
    let r = report(&m).await;
    assert_eq!(r.counters.unparsed_requests, 3);
    assert_eq!(r.requests.client_error, 3);
}

#[tokio::test]
async fn limits_timeouts_and_a_dead_model_are_answered_and_counted() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    let big = format!("{{\"amount\": 1, \"pad\": \"{}\"}}", "x".repeat(5000));
    let a = send("POST", format!("http://{}/predict", m.serving), &[], big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    let a = send("POST", format!("http://{}/slow", m.serving), &[], "{}").await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    let r = report(&m).await;
    assert_eq!(r.counters.too_large, 1);
    assert_eq!(r.counters.upstream_timeouts, 1);

    // A monitor whose model is not running.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let m2 = start_monitor(dead, &[]).await;
    let a = send(
        "POST",
        format!("http://{}/predict", m2.serving),
        &[],
        transaction(1.0),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(report(&m2).await.counters.upstream_errors, 1);
    let ready = send("GET", format!("http://{}/readyz", m2.admin), &[], "").await;
    assert_eq!(
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready while the model is down"
    );
    let ready = send("GET", format!("http://{}/readyz", m.admin), &[], "").await;
    assert_eq!(ready.status, StatusCode::OK);
}

/// A body sent as separate chunks (no content length).
type ChunkedBody = http_body_util::StreamBody<
    futures::stream::Iter<std::vec::IntoIter<Result<hyper::body::Frame<Bytes>, std::io::Error>>>,
>;

#[tokio::test]
async fn chunked_uploads_are_read_and_forwarded() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    let client: Client<HttpConnector, ChunkedBody> =
        Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let body = transaction(500.0);
    let (a, b) = body.split_at(10);
    let frames = vec![
        Ok(hyper::body::Frame::data(Bytes::from(a.to_string()))),
        Ok(hyper::body::Frame::data(Bytes::from(b.to_string()))),
    ];
    let request = http::Request::post(format!("http://{}/predict", m.serving))
        .body(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["prediction"],
        1
    );
    assert_eq!(report(&m).await.rows, 1);
}

#[tokio::test]
async fn the_report_and_metrics_need_the_token_and_metrics_are_well_formed() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    send(
        "POST",
        format!("http://{}/predict", m.serving),
        &[],
        transaction(42.0),
    )
    .await;
    for path in ["/drover/report", "/metrics"] {
        let a = send("GET", format!("http://{}{path}", m.admin), &[], "").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
        let a = send(
            "GET",
            format!("http://{}{path}", m.admin),
            &[("authorization", "Bearer wrong")],
            "",
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    let a = send(
        "GET",
        format!("http://{}/metrics", m.admin),
        &[("authorization", &format!("Bearer {TOKEN}"))],
        "",
    )
    .await;
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    assert!(
        text.contains("drover_monitor_requests_total{code_class=\"2xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("drover_monitor_request_duration_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("drover_monitor_feature_mean{feature=\"amount\"} 42"),
        "{text}"
    );
    assert!(
        text.contains("drover_monitor_predictions_total{class=\"0\"} 1"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn api_key_and_confidence_floor() {
    let up = upstream().await;
    let key_dir = tempdir::Dir::new();
    let key = key_dir.0.join("key");
    std::fs::write(&key, "s3cret").unwrap();
    let key_arg = key.display().to_string();
    let m = start_monitor(
        up,
        &["--api-key-file", &key_arg, "--confidence-floor", "0.6"],
    )
    .await;
    let url = format!("http://{}/predict", m.serving);
    assert_eq!(
        send("POST", url.clone(), &[], transaction(1.0))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            "POST",
            url.clone(),
            &[("authorization", "Bearer nope")],
            transaction(1.0)
        )
        .await
        .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(
            "POST",
            url.clone(),
            &[("x-api-key", "s3cret")],
            transaction(1.0)
        )
        .await
        .status,
        StatusCode::OK
    );
    let low = json!({"amount": 1, "confidence": 0.55}).to_string();
    let a = send(
        "POST",
        url.clone(),
        &[("authorization", "Bearer s3cret")],
        low.clone(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.json()["floor"], 0.6);
    let r = report(&m).await;
    assert_eq!(r.counters.unauthorized, 2);
    assert_eq!(r.counters.rejected, 1);

    let fb = start_monitor(
        up,
        &[
            "--confidence-floor",
            "0.6",
            "--below-floor",
            "fallback",
            "--fallback-response",
            r#"{"prediction": "review"}"#,
        ],
    )
    .await;
    let a = send("POST", format!("http://{}/predict", fb.serving), &[], low).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json(), json!({"prediction": "review"}));
    assert_eq!(a.headers["x-drover-fallback"], "confidence-below-floor");
    assert_eq!(report(&fb).await.counters.fallbacks, 1);
}

#[tokio::test]
async fn requests_during_termination_are_counted_apart() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    let a = send("GET", format!("http://{}/drover/prestop", m.admin), &[], "").await;
    assert_eq!(a.status, StatusCode::OK);
    let ready = send("GET", format!("http://{}/readyz", m.admin), &[], "").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    send(
        "POST",
        format!("http://{}/predict", m.serving),
        &[],
        transaction(1.0),
    )
    .await;
    let r = report(&m).await;
    assert_eq!(r.counters.during_termination, 1);
    assert_eq!(r.requests.total(), 0);
    let _ = m.stop.send(true);
}

#[tokio::test]
async fn h2c_prior_knowledge_works() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let request = http::Request::post(format!("http://{}/predict", m.serving))
        .body(Full::new(Bytes::from(transaction(7.0))))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(report(&m).await.rows, 1);
    let _ = Arc::new(());
}

/// An upstream that answers the first request of each connection, keeps it open, and closes it
/// when the next request arrives without answering — a model server whose keep-alive timer
/// fires just as a pooled connection is reused.
async fn closing_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    async fn read_request(stream: &mut tokio::net::TcpStream) -> bool {
        let mut buf = vec![0u8; 8192];
        let mut read = 0;
        loop {
            let Ok(n) = stream.read(&mut buf[read..]).await else {
                return false;
            };
            if n == 0 {
                return false;
            }
            read += n;
            let text = String::from_utf8_lossy(&buf[..read]).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if read >= end + 4 + length {
                    return true;
                }
            }
        }
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if !read_request(&mut stream).await {
                    return;
                }
                let body = r#"{"prediction":1,"probability":0.9}"#;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                // The next request on this connection is read and dropped with the connection.
                let _ = read_request(&mut stream).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_model_closing_idle_connections_causes_no_502() {
    let up = closing_upstream().await;
    let m = start_monitor(up, &[]).await;
    for _ in 0..30 {
        let a = send(
            "POST",
            format!("http://{}/predict", m.serving),
            &[],
            transaction(3.0),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    }
    let r = report(&m).await;
    assert_eq!(r.counters.upstream_errors, 0);
    assert_eq!(r.requests.success, 30);
}

#[tokio::test]
async fn refused_inputs_stay_out_of_the_histograms_and_empty_bodies_are_counted() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    // The model answers 422 to this one (invalid JSON for it), a valid object for us.
    send(
        "POST",
        format!("http://{}/predict", m.serving),
        &[],
        transaction(1.0),
    )
    .await;
    let a = send("POST", format!("http://{}/predict", m.serving), &[], "").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    let r = report(&m).await;
    assert_eq!(r.rows, 1, "only the served request's row");
    assert_eq!(r.counters.unparsed_requests, 1, "the empty POST body");
}

#[tokio::test]
async fn a_recreated_token_secret_is_picked_up_without_a_restart() {
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    let get = |token: &'static str| {
        let url = format!("http://{}/drover/report", m.admin);
        async move {
            send(
                "GET",
                url,
                &[("authorization", &format!("Bearer {token}"))],
                "",
            )
            .await
            .status
        }
    };
    assert_eq!(get(TOKEN).await, StatusCode::OK);
    // The Secret was deleted and recreated with a new token; the kubelet updated the file.
    std::fs::write(m._dir.0.join("token"), "a-new-token-456\n").unwrap();
    assert_eq!(get("a-new-token-456").await, StatusCode::OK);
    assert_eq!(
        get(TOKEN).await,
        StatusCode::UNAUTHORIZED,
        "the old one no longer"
    );
    assert_eq!(get("a-guess").await, StatusCode::UNAUTHORIZED);
}

/// A relay in front of `upstream` that counts the connections made to it.
async fn counting_relay(upstream: SocketAddr) -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn connections_to_the_model_are_kept_alive_and_reused() {
    let up = upstream().await;
    let (relay, accepted) = counting_relay(up).await;
    let m = start_monitor(relay, &[]).await;
    for i in 0..6 {
        // Each request on a new client connection: the model connection outlives them.
        let a = if i % 2 == 0 {
            send(
                "POST",
                format!("http://{}/predict", m.serving),
                &[],
                transaction(3.0),
            )
            .await
        } else {
            // Streamed through unread: the connection goes back once the body has ended.
            send("GET", format!("http://{}/stream", m.serving), &[], "").await
        };
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "sequential requests share one connection to the model"
    );
}

/// A model that answers with hand-written HTTP/1.x, one exchange per connection, chosen by
/// the request path: the response framings a model server may use, byte for byte.
async fn scripted_upstream() -> SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Requests here have no body: the head is the whole request.
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                let response: &[u8] = match path.as_str() {
                    "/continue" => {
                        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                    }
                    "/close-delimited" => b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end",
                    "/chunked" => {
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: t\r\n\r\n"
                    }
                    "/http10" => b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nold!",
                    "/reason" => b"HTTP/1.1 299 Fine Thanks\r\ncontent-length: 0\r\n\r\n",
                    "/headers" => {
                        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-Model: fraud\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\nContent-Length: 2\r\n\r\nok"
                    }
                    _ => b"this is not HTTP\r\n\r\n",
                };
                let _ = stream.write_all(response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn responses_are_framed_as_the_model_sent_them() {
    let up = scripted_upstream().await;
    let m = start_monitor(up, &[]).await;
    let get = |path: &str| send("GET", format!("http://{}{path}", m.serving), &[], "");
    let a = get("/continue").await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"ok"[..]));
    let a = get("/close-delimited").await;
    assert_eq!(
        (a.status, &a.body[..]),
        (StatusCode::OK, &b"until the end"[..])
    );
    assert_eq!(a.headers["content-type"], "text/plain");
    let a = get("/chunked").await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"abcde"[..]));
    let a = get("/http10").await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"old!"[..]));
    let a = get("/reason").await;
    assert_eq!(a.status.as_u16(), 299);
    // Header lines pass as the model sent them (repeated ones too, its date kept), minus
    // hop-by-hop ones and those its Connection names.
    let a = get("/headers").await;
    assert_eq!((a.status, &a.body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(a.headers["x-model"], "fraud");
    assert_eq!(a.headers.get_all("set-cookie").iter().count(), 2);
    assert_eq!(a.headers["date"], "Sun, 06 Nov 1994 08:49:37 GMT");
    assert_eq!(a.headers.get_all("date").iter().count(), 1);
    assert!(a.headers.get("x-hop").is_none());
    assert!(a.headers.get("keep-alive").is_none());
    // The reason phrase too (read raw: clients do not keep it).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(m.serving).await.unwrap();
        stream
            .write_all(b"GET /reason HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).await.unwrap();
        let text = String::from_utf8_lossy(&all);
        assert!(text.starts_with("HTTP/1.1 299 Fine Thanks\r\n"), "{text}");
    }
    let a = get("/garbage").await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let r = report(&m).await;
    assert_eq!(r.counters.upstream_errors, 1, "only the garbage answer");
}

/// A prediction through `m` and its token.
async fn predict_with_token(m: &Monitor, amount: f64) -> (String, Value) {
    let answer = send(
        "POST",
        format!("http://{}/predict", m.serving),
        &[("content-type", "application/json")],
        transaction(amount),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    let token = answer
        .headers
        .get("x-drover-prediction-token")
        .expect("a prediction token")
        .to_str()
        .unwrap()
        .to_string();
    (token, answer.json()["prediction"].clone())
}

/// Posts a label for `token` to `m`; the answer's status.
async fn post_label(m: &Monitor, token: &str, label: &Value) -> StatusCode {
    send(
        "POST",
        format!("http://{}/drover/feedback", m.serving),
        &[("content-type", "application/json")],
        json!({"token": token, "label": label}).to_string(),
    )
    .await
    .status
}

/// The operator's side of a scrape round over `pods`: the real scraper (asking for the feedback
/// log after what was checked of each pod) and the real collector.
async fn operator_round(collector: &drover::collect::Collector, pods: &[(&str, &Monitor)]) {
    use drover::collect::dedup::FeedbackCheck;
    let scraper = drover::collect::scrape::Scraper::new(Duration::from_secs(5));
    let check = FeedbackCheck {
        max_label_age_seconds: 3600,
        now: jiff::Timestamp::now().as_second(),
    };
    for (pod, m) in pods {
        let cursor = collector.feedback_cursor("uid-1", pod);
        let report = scraper
            .fetch_report(m.admin.ip(), m.admin.port(), TOKEN, Some(&cursor))
            .await
            .expect("the monitor answers its report");
        assert!(report.feedback_log.is_some(), "asked for, so carried");
        collector
            .record_checked("uid-1", "rev-a", pod, report, Some(check))
            .expect("recorded");
    }
    let names: Vec<&str> = pods.iter().map(|(p, _)| *p).collect();
    collector.end_round("uid-1", "rev-a", &names, names.len(), 0);
}

#[tokio::test]
async fn feedback_retried_against_another_pod_is_counted_once_by_the_operator() {
    use drover::collect::{Collector, WindowRef};
    let up = upstream().await;
    let flags = ["--feedback", "--revision", "rev-a"];
    let (a, b) = (
        start_monitor(up, &flags).await,
        start_monitor(up, &flags).await,
    );
    let collector = Collector::default();
    let window = |key: &str| WindowRef {
        revision: "rev-a".into(),
        key: key.into(),
    };

    // Before the operator first looks, a token is labelled on both pods: history, not judged,
    // but remembered.
    let (early, early_prediction) = predict_with_token(&a, 10.0).await;
    assert_eq!(
        post_label(&a, &early, &early_prediction).await,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        post_label(&b, &early, &early_prediction).await,
        StatusCode::ACCEPTED
    );
    operator_round(&collector, &[("a", &a), ("b", &b)]).await;
    assert!(
        collector
            .close_steady("uid-1", &window("watch 1"))
            .is_none()
    );

    // Three predictions through A. The client labels the first on A, then (its answer lost)
    // retries on B, which the Service picked: both pods count it, neither can know.
    let (t1, p1) = predict_with_token(&a, 10.0).await;
    let (t2, p2) = predict_with_token(&a, 500.0).await;
    let (t3, p3) = predict_with_token(&a, 10.0).await;
    assert_eq!(post_label(&a, &t1, &p1).await, StatusCode::ACCEPTED);
    assert_eq!(post_label(&b, &t1, &p1).await, StatusCode::ACCEPTED);
    // A retry to the same pod is still refused there.
    assert_eq!(post_label(&a, &t1, &p1).await, StatusCode::CONFLICT);
    assert_eq!(post_label(&b, &t2, &p2).await, StatusCode::ACCEPTED);
    let wrong = if p3 == json!(0) { json!(1) } else { json!(0) };
    assert_eq!(post_label(&a, &t3, &wrong).await, StatusCode::ACCEPTED);
    // The early token retried on a pod that started after the operator's first look: a
    // duplicate too.
    let c = start_monitor(up, &flags).await;
    operator_round(&collector, &[("a", &a), ("b", &b), ("c", &c)]).await;
    assert_eq!(
        post_label(&c, &early, &early_prediction).await,
        StatusCode::ACCEPTED
    );
    let mut counted_by_pods = 0;
    for m in [&a, &b, &c] {
        counted_by_pods += report(m).await.performance.map_or(0, |p| p.labelled);
    }
    assert_eq!(
        counted_by_pods,
        3 + 3 + 1,
        "each pod counted what it got: early, t1, t3 / early, t1, t2 / early"
    );

    operator_round(&collector, &[("a", &a), ("b", &b), ("c", &c)]).await;
    let closed = collector
        .close_steady("uid-1", &window("watch 2"))
        .expect("the first window closes");
    let performance = closed
        .report
        .and_then(|r| r.performance)
        .expect("labels in the window");
    assert_eq!(performance.labelled, 3, "t1 once, t2, t3: {performance:?}");
    assert_eq!(performance.correct, 2);
    assert_eq!(performance.duplicates, 2, "t1 on B, the early token on C");
    assert_eq!(performance.unverified, 0);
    assert_eq!(performance.accuracy(), Some(2.0 / 3.0));
    // Without the query the report is as it always was.
    assert!(report(&a).await.feedback_log.is_none());
}

#[tokio::test]
async fn feedback_sent_to_another_pod_is_counted_once_and_bad_feedback_is_refused() {
    let up = upstream().await;
    let flags = ["--feedback", "--revision", "rev-a"];
    let (a, b) = (
        start_monitor(up, &flags).await,
        start_monitor(up, &flags).await,
    );
    let other_revision = start_monitor(up, &["--feedback", "--revision", "rev-b"]).await;
    let plain_monitor = start_monitor(up, &[]).await;

    // Eleven predictions through pod A, each with a token; labels for ten go to pod B.
    let mut tokens = Vec::new();
    for i in 0..11 {
        let amount = if i < 5 { 500.0 } else { 10.0 };
        tokens.push(predict_with_token(&a, amount).await);
    }
    // Truth: the first 5 predicted 1 (right for 4 of them), the others predicted 0 (all right).
    for (i, (token, prediction)) in tokens.iter().take(10).enumerate() {
        let label = if i == 0 { json!(0) } else { prediction.clone() };
        let answer = send(
            "POST",
            format!("http://{}/drover/feedback", b.serving),
            &[("content-type", "application/json")],
            json!({"token": token, "label": label}).to_string(),
        )
        .await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{:?}", answer.json());
    }
    let performance = report(&b).await.performance.expect("performance on pod B");
    assert_eq!(performance.labelled, 10);
    assert_eq!(performance.accuracy(), Some(0.9));
    let (precision, recall, _) = performance.precision_recall_f1(Some("1")).unwrap();
    assert!((precision - 0.8).abs() < 1e-12 && (recall - 1.0).abs() < 1e-12);

    // The same feedback again (a client retry): counted once.
    let again = send(
        "POST",
        format!("http://{}/drover/feedback", b.serving),
        &[],
        json!({"token": tokens[1].0, "label": 1}).to_string(),
    )
    .await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    // A forged token, another revision's pod, a malformed body, a label of the wrong type.
    let forged = format!("{}x", tokens[2].0);
    for (monitor, body, status) in [
        (
            &b,
            json!({"token": forged, "label": 1}).to_string(),
            StatusCode::UNAUTHORIZED,
        ),
        (
            &other_revision,
            json!({"token": tokens[2].0, "label": 1}).to_string(),
            StatusCode::CONFLICT,
        ),
        (&b, "not json".to_string(), StatusCode::BAD_REQUEST),
        (
            &b,
            json!({"token": tokens[10].0, "label": 0.5}).to_string(),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let answer = send(
            "POST",
            format!("http://{}/drover/feedback", monitor.serving),
            &[],
            body,
        )
        .await;
        assert_eq!(answer.status, status, "{:?}", answer.json());
        assert_eq!(answer.json()["source"], "drover-monitor");
    }
    let performance = report(&b).await.performance.unwrap();
    assert_eq!(performance.labelled, 10, "refused feedback counts nothing");
    // The wrongly typed label did not spend its token: the right one is counted.
    let fixed = send(
        "POST",
        format!("http://{}/drover/feedback", b.serving),
        &[],
        json!({"token": tokens[10].0, "label": 0}).to_string(),
    )
    .await;
    assert_eq!(fixed.status, StatusCode::ACCEPTED);
    let performance = report(&b).await.performance.unwrap();
    assert_eq!(performance.labelled, 11);
    for reason in ["duplicate", "forged", "malformed", "wrong_label_type"] {
        assert_eq!(
            performance.refused.get(reason),
            Some(&1),
            "{reason}: {:?}",
            performance.refused
        );
    }
    assert_eq!(
        report(&other_revision)
            .await
            .performance
            .unwrap()
            .refused
            .get("other_revision"),
        Some(&1)
    );
    // Pod A served but got no labels; its report says nothing about performance.
    assert!(report(&a).await.performance.is_none());

    // Without --feedback: no token, and the path goes to the model untouched.
    let answer = send(
        "POST",
        format!("http://{}/predict", plain_monitor.serving),
        &[("content-type", "application/json")],
        transaction(10.0),
    )
    .await;
    assert!(answer.headers.get("x-drover-prediction-token").is_none());
    let answer = send(
        "POST",
        format!("http://{}/drover/feedback", plain_monitor.serving),
        &[],
        json!({"token": tokens[4].0, "label": 1}).to_string(),
    )
    .await;
    assert_ne!(
        answer.json()["source"],
        "drover-monitor",
        "forwarded to the model"
    );
}

/// Reads one HTTP/1.x response from `stream` (content-length framed, or until EOF), returning
/// its head and body; `None` at the end of the stream.
async fn read_response(
    stream: &mut tokio::net::TcpStream,
    pending: &mut Vec<u8>,
) -> Option<(String, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end]).to_string();
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while pending.len() < end + 4 + length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.ok()?;
                if n == 0 {
                    return None;
                }
                pending.extend_from_slice(&chunk[..n]);
            }
            let body = pending[end + 4..end + 4 + length].to_vec();
            pending.drain(..end + 4 + length);
            return Some((head, body));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

fn raw_post(path: &str, body: &str, extra: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: m\r\ncontent-type: application/json\r\n{extra}content-length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn pipelined_split_and_mixed_requests_on_one_connection_are_answered_in_order() {
    use tokio::io::AsyncWriteExt;
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    let mut stream = tokio::net::TcpStream::connect(m.serving).await.unwrap();
    let mut pending = Vec::new();
    // Two requests in one write (pipelined).
    let two = format!(
        "{}{}",
        raw_post("/predict", &transaction(1.0), ""),
        raw_post("/predict", &transaction(500.0), "")
    );
    stream.write_all(two.as_bytes()).await.unwrap();
    let (head, body) = read_response(&mut stream, &mut pending).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["prediction"],
        0
    );
    let (_, body) = read_response(&mut stream, &mut pending).await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["prediction"],
        1
    );
    // One request in pieces: the head split inside a header, the body in two writes.
    let one = raw_post("/predict", &transaction(2.0), "");
    for piece in [
        &one[..20],
        &one[20..70],
        &one[70..one.len() - 10],
        &one[one.len() - 10..],
    ] {
        stream.write_all(piece.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        tokio::task::yield_now().await;
    }
    let (head, _) = read_response(&mut stream, &mut pending).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // A chunked upload on the same connection: handed to hyper with the bytes read so far,
    // then a plain request after it, still answered.
    let body = transaction(3.0);
    let chunked = format!(
        "POST /predict HTTP/1.1\r\nhost: m\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    stream.write_all(chunked.as_bytes()).await.unwrap();
    let (head, _) = read_response(&mut stream, &mut pending).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
        .write_all(raw_post("/predict", &transaction(4.0), "").as_bytes())
        .await
        .unwrap();
    let (head, _) = read_response(&mut stream, &mut pending).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // HEAD: the model's content-length passes, and no body follows.
    stream
        .write_all(b"HEAD /health HTTP/1.1\r\nhost: m\r\n\r\nGET /health HTTP/1.1\r\nhost: m\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    use tokio::io::AsyncReadExt;
    stream.read_to_end(&mut rest).await.unwrap();
    pending.extend_from_slice(&rest);
    let text = String::from_utf8_lossy(&pending).to_string();
    // The HEAD answer has a content-length and no body: the next response starts right after.
    let second = text
        .find("\r\n\r\nHTTP/1.1 200")
        .expect("two answers back to back");
    assert!(
        text[..second]
            .to_ascii_lowercase()
            .contains("content-length: 2"),
        "{text}"
    );
    assert!(
        text[second..]
            .to_ascii_lowercase()
            .contains("connection: close"),
        "{text}"
    );
    assert!(text.ends_with("ok"), "{text}");
    assert_eq!(report(&m).await.rows, 5);
}

#[tokio::test]
async fn http_1_0_and_unauthorised_requests_and_bad_heads_are_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream().await;
    let m = start_monitor(up, &[]).await;
    // HTTP/1.0 goes to hyper, which answers in kind.
    let mut stream = tokio::net::TcpStream::connect(m.serving).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    // A head that is not HTTP: hyper's 400, and the connection closes.
    let mut stream = tokio::net::TcpStream::connect(m.serving).await.unwrap();
    stream.write_all(b"GARBAGE\x01\r\n\r\n").await.unwrap();
    let mut all = Vec::new();
    stream.read_to_end(&mut all).await.unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");

    // With an API key: a request without it is answered 401 before its body is read, and
    // the connection closes (the unread body cannot be taken for the next request); one with
    // it is answered on a connection that stays open.
    let key_dir = tempdir::Dir::new();
    let key = key_dir.0.join("key");
    std::fs::write(&key, "s3cret").unwrap();
    let keyed = start_monitor(up, &["--api-key-file", &key.display().to_string()]).await;
    let mut stream = tokio::net::TcpStream::connect(keyed.serving).await.unwrap();
    let body = transaction(1.0);
    let head_only = format!(
        "POST /predict HTTP/1.1\r\nhost: m\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head_only.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let (head, _) = read_response(&mut stream, &mut pending).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    let mut stream = tokio::net::TcpStream::connect(keyed.serving).await.unwrap();
    for _ in 0..2 {
        stream
            .write_all(raw_post("/predict", &body, "authorization: Bearer s3cret\r\n").as_bytes())
            .await
            .unwrap();
        let (head, _) = read_response(&mut stream, &mut pending).await.unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    }
    assert_eq!(report(&keyed).await.counters.unauthorized, 1);
}

#[tokio::test]
async fn draining_closes_idle_connections_at_once_and_answers_busy_ones_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A model that says when a slow request has reached it.
    let reached = Arc::new(tokio::sync::Notify::new());
    let signal = reached.clone();
    let app = Router::new()
        .route("/predict", post(|| async { r#"{"prediction":0}"# }))
        .route(
            "/slow",
            post(move || {
                let signal = signal.clone();
                async move {
                    signal.notify_one();
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }
            }),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let m = start_monitor(up, &[]).await;
    // An idle kept-alive connection...
    let mut idle = tokio::net::TcpStream::connect(m.serving).await.unwrap();
    let mut pending = Vec::new();
    idle.write_all(raw_post("/predict", &transaction(1.0), "").as_bytes())
        .await
        .unwrap();
    read_response(&mut idle, &mut pending).await.unwrap();
    // ...and a busy one, its request at the model (5 s; the monitor's timeout is 1 s).
    let mut busy = tokio::net::TcpStream::connect(m.serving).await.unwrap();
    busy.write_all(raw_post("/slow", "{}", "").as_bytes())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), reached.notified())
        .await
        .expect("the slow request reached the model");
    let _ = m.stop.send(true);
    // The idle connection is closed without waiting for the drain timeout.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut rest)).await;
    assert!(matches!(closed, Ok(Ok(0))), "{closed:?}");
    // The busy one gets its answer (504 after the model's 1 s), marked as the last.
    let mut pending = Vec::new();
    let (head, _) = tokio::time::timeout(
        Duration::from_secs(5),
        read_response(&mut busy, &mut pending),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(head.starts_with("HTTP/1.1 504"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    // And the serving loop ends well within the 20 s drain timeout.
    tokio::time::timeout(Duration::from_secs(5), m.served)
        .await
        .expect("drained within 5 s")
        .unwrap();
}

#[tokio::test]
async fn tls_on_the_serving_port_speaks_http_1_1_and_h2() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = upstream().await;
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempdir::Dir::new();
    let cert = dir.0.join("tls.crt");
    let key = dir.0.join("tls.key");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let m = start_monitor(
        up,
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    )
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(certified.cert.der().clone()).unwrap();
    let connect = |alpn: &[u8]| {
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        async move {
            let tcp = tokio::net::TcpStream::connect(m.serving).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            connector.connect(name, tcp).await.unwrap()
        }
    };
    // HTTP/1.1 over TLS: answered and recorded.
    let mut tls = connect(b"http/1.1").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let body = transaction(1.0);
    let request = format!(
        "POST /predict HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut all = Vec::new();
    let _ = tls.read_to_end(&mut all).await;
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""prediction":0"#), "{text}");
    // h2 by ALPN.
    let tls = connect(b"h2").await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let response = sender
        .send_request(
            http::Request::post("https://localhost/predict")
                .body(Full::new(Bytes::from(transaction(500.0))))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["prediction"],
        1
    );
    assert_eq!(report(&m).await.rows, 2);
    // A client that does not speak TLS gets nothing, and the monitor goes on.
    let mut plain = tokio::net::TcpStream::connect(m.serving).await.unwrap();
    plain
        .write_all(b"GET /health HTTP/1.1\r\nhost: m\r\n\r\n")
        .await
        .unwrap();
    let mut all = Vec::new();
    let _ = plain.read_to_end(&mut all).await;
    assert!(!String::from_utf8_lossy(&all).contains("200 OK"));
    assert_eq!(report(&m).await.rows, 2);
}
