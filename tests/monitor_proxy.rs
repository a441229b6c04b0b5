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
    tokio::spawn(async move {
        monitor::serve(serving_listener, proxy, prepared.tls, &mut stop_rx).await
    });
    Monitor {
        serving,
        admin: admin_addr,
        stop,
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
        let answer = send(
            "POST",
            format!("http://{}/predict", a.serving),
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
        tokens.push((token, answer.json()["prediction"].clone()));
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
