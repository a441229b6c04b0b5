//! Webhook notifications against real HTTP receivers on loopback: order, formats, retries, and a
//! slow or dead receiver that costs nothing else.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::api::{NotificationEvent, WebhookFormat};
use drover::metrics::Metrics;
use drover::notify::{DeliverySettings, DeliveryState, NotQueued, Notification, Notifier};
use serde_json::Value;

/// What a receiver got, in arrival order.
type Received = Arc<Mutex<Vec<Value>>>;

/// A receiver that answers each request with the next status of `script` (then 200).
async fn receiver(script: Vec<u16>) -> (SocketAddr, Received) {
    let received: Received = Arc::default();
    let script = Arc::new(Mutex::new(script.into_iter()));
    let got = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let got = got.clone();
            let script = script.clone();
            async move {
                let status = script.lock().unwrap().next().unwrap_or(200);
                if status < 300 {
                    got.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                }
                axum::http::StatusCode::from_u16(status).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

/// A receiver that accepts connections and never answers.
async fn hanging() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// A port nobody listens on.
fn dead() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn fast() -> DeliverySettings {
    DeliverySettings {
        queue: 64,
        timeout: Duration::from_millis(300),
        attempts: 3,
        backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(50),
    }
}

fn note(name: &str, i: usize) -> Notification {
    Notification {
        event: NotificationEvent::DriftDetected,
        reason: "DriftDetected".into(),
        warning: true,
        namespace: "ml".into(),
        name: name.into(),
        version: "1.0.0".into(),
        message: format!("message {i}"),
        at: jiff::Timestamp::from_second(1_800_000_000 + i as i64).unwrap(),
    }
}

/// Polls `f` every 20 ms for up to 10 s.
async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(v) = f() {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn state(n: &Notifier, name: &str) -> DeliveryState {
    n.state("ml", name).unwrap_or_default()
}

#[tokio::test]
async fn deliveries_arrive_in_order_in_both_formats() {
    let (addr, got) = receiver(vec![]).await;
    let notifier = Notifier::new(fast(), Metrics::default());
    let url = format!("http://{addr}/hook");
    for i in 0..20 {
        let format = if i % 2 == 0 {
            WebhookFormat::Generic
        } else {
            WebhookFormat::Slack
        };
        notifier.send(&url, format, note("fraud", i)).unwrap();
    }
    let bodies = eventually("20 deliveries", || {
        let g = got.lock().unwrap();
        (g.len() == 20).then(|| g.clone())
    })
    .await;
    for (i, b) in bodies.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(b["message"], format!("message {i}"), "in order");
            assert_eq!(b["event"], "DriftDetected");
            assert_eq!(b["model"]["name"], "fraud");
        } else {
            assert!(
                b["text"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("message {i}")),
                "{b}"
            );
            assert!(b["blocks"].is_array());
        }
    }
    assert_eq!(state(&notifier, "fraud").delivered, 20);
    assert_eq!(state(&notifier, "fraud").failures, 0);
}

#[tokio::test]
async fn server_errors_are_retried_client_errors_are_not() {
    // 503 twice, then fine: delivered on the third attempt, still in order.
    let (addr, got) = receiver(vec![503, 503]).await;
    let notifier = Notifier::new(fast(), Metrics::default());
    let url = format!("http://{addr}/hook");
    notifier
        .send(&url, WebhookFormat::Generic, note("a", 0))
        .unwrap();
    notifier
        .send(&url, WebhookFormat::Generic, note("a", 1))
        .unwrap();
    let bodies = eventually("both delivered", || {
        let g = got.lock().unwrap();
        (g.len() == 2).then(|| g.clone())
    })
    .await;
    assert_eq!(bodies[0]["message"], "message 0");
    assert_eq!(bodies[1]["message"], "message 1");

    // 400: given up at once, the next one goes through.
    let (addr, got) = receiver(vec![400]).await;
    let url = format!("http://{addr}/hook");
    notifier
        .send(&url, WebhookFormat::Generic, note("b", 0))
        .unwrap();
    eventually("the refusal recorded", || {
        (state(&notifier, "b").failures == 1).then_some(())
    })
    .await;
    assert!(state(&notifier, "b").last_error.unwrap().contains("400"));
    notifier
        .send(&url, WebhookFormat::Generic, note("b", 1))
        .unwrap();
    eventually("the next delivered", || {
        (got.lock().unwrap().len() == 1).then_some(())
    })
    .await;
    assert_eq!(got.lock().unwrap()[0]["message"], "message 1");
    assert_eq!(
        state(&notifier, "b").failures,
        0,
        "a delivery clears the failures"
    );
}

#[tokio::test]
async fn a_dead_or_hanging_receiver_costs_nothing_else() {
    let (good, got) = receiver(vec![]).await;
    let notifier = Notifier::new(fast(), Metrics::default());
    let (dead_url, hanging_url, good_url) = (
        format!("http://{}/hook", dead()),
        format!("http://{}/hook", hanging().await),
        format!("http://{good}/hook"),
    );
    for i in 0..10 {
        // Queued at once whatever the receivers do: `send` never waits.
        notifier
            .send(&dead_url, WebhookFormat::Generic, note("dead", i))
            .unwrap();
        notifier
            .send(&hanging_url, WebhookFormat::Slack, note("hanging", i))
            .unwrap();
        notifier
            .send(&good_url, WebhookFormat::Generic, note("good", i))
            .unwrap();
    }
    // The good receiver gets everything, in order, while the others are still being retried.
    let bodies = eventually("the good receiver's 10", || {
        let g = got.lock().unwrap();
        (g.len() == 10).then(|| g.clone())
    })
    .await;
    for (i, b) in bodies.iter().enumerate() {
        assert_eq!(b["message"], format!("message {i}"));
    }
    assert!(state(&notifier, "hanging").delivered == 0);
    let dead = eventually("the dead receiver's failure", || {
        let s = state(&notifier, "dead");
        (s.failures > 0).then_some(s)
    })
    .await;
    assert!(
        dead.last_error.unwrap().contains("cannot reach"),
        "connection refused is said"
    );
    let hung = eventually("the hanging receiver's failure", || {
        let s = state(&notifier, "hanging");
        (s.failures > 0).then_some(s)
    })
    .await;
    assert!(hung.last_error.unwrap().contains("no answer within"));
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_and_bad_urls_are_refused() {
    let settings = DeliverySettings {
        queue: 2,
        timeout: Duration::from_secs(5),
        ..fast()
    };
    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let notifier = Notifier::new(settings, metrics);
    let url = format!("http://{}/hook", hanging().await);
    let outcomes: Vec<Result<(), NotQueued>> = (0..10)
        .map(|i| notifier.send(&url, WebhookFormat::Generic, note("slow", i)))
        .collect();
    assert!(
        outcomes.iter().filter(|o| o.is_ok()).count() <= 3,
        "one in flight, two waiting"
    );
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(NotQueued::QueueFull(2))))
    );
    let s = state(&notifier, "slow");
    assert!(s.failures >= 7, "{s:?}");
    assert!(s.last_error.unwrap().contains("queue is full"));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("drover_notifications_total{outcome=\"dropped\"}"),
        "{text}"
    );

    for bad in ["not a url", "ftp://example.com/x", "/relative"] {
        assert!(matches!(
            notifier.send(bad, WebhookFormat::Generic, note("bad", 0)),
            Err(NotQueued::BadUrl(_))
        ));
    }
}
