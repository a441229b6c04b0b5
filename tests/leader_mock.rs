//! Lease election against a mocked API: acquire, follow, take over an expired Lease judged on
//! the local clock, and close the write gate at the renew deadline when renewals fail.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover::leader::{LeaderElector, LeaseTiming, Round};
use http::{Request, Response, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use kube::client::Body;
use serde_json::{Value, json};

/// A one-Lease API server: GET, POST (create), PUT (replace); `fail_puts` answers PUT with 500.
#[derive(Default)]
struct LeaseServer {
    lease: Option<Value>,
    fail_puts: bool,
    requests: Vec<(String, Value)>,
}

fn client(server: Arc<Mutex<LeaseServer>>) -> Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = http_body_util::BodyExt::collect(body)
                .await
                .unwrap()
                .to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let mut s = server.lock().unwrap();
            s.requests.push((parts.method.to_string(), body.clone()));
            let not_found = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"});
            let (status, answer) = match parts.method.as_str() {
                "GET" => match &s.lease {
                    Some(l) => (StatusCode::OK, l.clone()),
                    None => (StatusCode::NOT_FOUND, not_found),
                },
                "PUT" if s.fail_puts => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "unavailable"}),
                ),
                _ => {
                    let mut stored = body.clone();
                    stored["metadata"]["resourceVersion"] = json!("1");
                    s.lease = Some(stored.clone());
                    (StatusCode::OK, stored)
                }
            };
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    Client::new(service, "drover-system")
}

fn elector(server: &Arc<Mutex<LeaseServer>>, identity: &str) -> LeaderElector {
    let api: Api<Lease> = Api::namespaced(client(server.clone()), "drover-system");
    LeaderElector::new(api, "drover-leader", identity, LeaseTiming::default())
}

fn held_by(holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "drover-leader", "namespace": "drover-system", "resourceVersion": "5"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15, "renewTime": "2026-01-01T00:00:00.000000Z", "leaseTransitions": 3}
    })
}

#[tokio::test(start_paused = true)]
async fn acquires_a_missing_lease() {
    let server = Arc::new(Mutex::new(LeaseServer::default()));
    let mut a = elector(&server, "a");
    assert_eq!(a.round().await, Round::Leading);
    assert!(a.gate().is_open());
    let s = server.lock().unwrap();
    assert_eq!(
        s.lease.as_ref().unwrap()["spec"]["holderIdentity"],
        json!("a")
    );
    assert!(s.requests.iter().any(|(m, _)| m == "POST"));
}

#[tokio::test(start_paused = true)]
async fn follows_a_held_lease_and_takes_it_over_only_after_it_stays_unrenewed() {
    let server = Arc::new(Mutex::new(LeaseServer {
        lease: Some(held_by("b")),
        ..LeaseServer::default()
    }));
    let mut a = elector(&server, "a");
    assert_eq!(a.round().await, Round::Following);
    assert!(!a.gate().is_open());
    // The holder's wall clock is irrelevant: expiry is how long the record stays unchanged here.
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(a.round().await, Round::Following);
    tokio::time::advance(Duration::from_secs(6)).await;
    assert_eq!(a.round().await, Round::Leading);
    let s = server.lock().unwrap();
    let spec = &s.lease.as_ref().unwrap()["spec"];
    assert_eq!(spec["holderIdentity"], json!("a"));
    assert_eq!(spec["leaseTransitions"], json!(4));
    let (method, body) = s.requests.last().unwrap();
    assert_eq!(method, "PUT");
    assert_eq!(
        body["metadata"]["resourceVersion"],
        json!("5"),
        "optimistic concurrency"
    );
}

#[tokio::test(start_paused = true)]
async fn a_renewed_lease_is_not_taken_over() {
    let server = Arc::new(Mutex::new(LeaseServer {
        lease: Some(held_by("b")),
        ..LeaseServer::default()
    }));
    let mut a = elector(&server, "a");
    assert_eq!(a.round().await, Round::Following);
    for second in 1..=30 {
        tokio::time::advance(Duration::from_secs(2)).await;
        // b renews: a new renewTime each time.
        let mut lease = held_by("b");
        lease["spec"]["renewTime"] = json!(format!("2026-01-01T00:00:{:02}.000000Z", second));
        server.lock().unwrap().lease = Some(lease);
        assert_eq!(a.round().await, Round::Following, "at {second}");
    }
}

#[tokio::test(start_paused = true)]
async fn failing_renewals_close_the_gate_at_the_renew_deadline() {
    let server = Arc::new(Mutex::new(LeaseServer::default()));
    let mut a = elector(&server, "a");
    assert_eq!(a.round().await, Round::Leading);
    server.lock().unwrap().fail_puts = true;
    let gate = a.gate();
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(a.round().await, Round::Failed);
    }
    assert!(
        gate.is_open(),
        "8s after the last renewal: still inside the 10s deadline"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(a.round().await, Round::Failed);
    assert!(
        !gate.is_open(),
        "past the renew deadline, before the 15s Lease expires"
    );
}

#[tokio::test(start_paused = true)]
async fn release_hands_the_lease_back() {
    let server = Arc::new(Mutex::new(LeaseServer::default()));
    let mut a = elector(&server, "a");
    assert_eq!(a.round().await, Round::Leading);
    a.release().await;
    assert!(!a.gate().is_open());
    let s = server.lock().unwrap();
    assert_eq!(
        s.lease.as_ref().unwrap()["spec"].get("holderIdentity"),
        None
    );
}
