//! Deliveries against receivers on loopback: retried until accepted, given up after the
//! retries, never retried after a refusal, signed, and a full queue that drops instead of
//! waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

use super::*;
use crate::observability::Metrics;

#[derive(Clone)]
struct Receiver {
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
    headers: Arc<Mutex<Vec<HeaderMap>>>,
    /// Answer `failure` this many times first.
    failures: usize,
    failure: StatusCode,
    /// Never answer.
    hang: bool,
}

impl Default for Receiver {
    fn default() -> Self {
        Self {
            calls: Arc::default(),
            bodies: Arc::default(),
            headers: Arc::default(),
            failures: 0,
            failure: StatusCode::INTERNAL_SERVER_ERROR,
            hang: false,
        }
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: axum::body::Bytes) -> StatusCode {
    let n = r.calls.fetch_add(1, Ordering::SeqCst);
    if r.hang {
        std::future::pending::<()>().await;
    }
    if let Ok(mut b) = r.bodies.lock() {
        b.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    }
    if let Ok(mut h) = r.headers.lock() {
        h.push(headers);
    }
    if n < r.failures { r.failure } else { StatusCode::NO_CONTENT }
}

async fn serve(r: Receiver) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/hook", post(receive)).with_state(r);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/hook"), task)
}

fn delivery(url: String, retries: u32, timeout: Duration) -> Delivery {
    Delivery {
        url,
        name: "webhook 0".into(),
        headers: vec![("X-Team".into(), "payments".into())],
        signing_key: None,
        id: "d1".into(),
        timeout,
        retries,
        body: serde_json::to_vec(&json!({"kind": "Rollback", "rollout": {"name": "web"}})).expect("json"),
        regarding: None,
    }
}

fn metric(m: &SharedMetrics, result: &str) -> u64 {
    m.webhook_deliveries.get_or_create(&DeliveryLabels { result: result.into() }).get()
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_accepts() {
    let r = Receiver { failures: 2, ..Default::default() };
    let (url, server) = serve(r.clone()).await;
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    let http = reqwest::Client::new();
    let ok =
        deliver(&http, &metrics, &delivery(url, 3, Duration::from_secs(5)), Duration::from_millis(10)).await;
    assert_eq!(ok, Ok(()));
    assert_eq!(r.calls.load(Ordering::SeqCst), 3);
    let headers = r.headers.lock().map(|h| h[2].clone()).expect("headers");
    assert_eq!(headers["x-team"], "payments");
    assert_eq!(headers[DELIVERY_HEADER], "d1", "the same id on every attempt");
    assert!(!headers.contains_key(SIGNATURE_HEADER), "no key, no signature");
    assert_eq!(r.bodies.lock().map(|b| b[2]["kind"].clone()).ok(), Some(json!("Rollback")));
    assert_eq!((metric(&metrics, "delivered"), metric(&metrics, "failed")), (1, 0));
    server.abort();
}

#[tokio::test]
async fn a_receiver_that_never_answers_is_given_up_after_the_retries() {
    let r = Receiver { hang: true, ..Default::default() };
    let (url, server) = serve(r.clone()).await;
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    let http = reqwest::Client::new();
    let failed =
        deliver(&http, &metrics, &delivery(url, 1, Duration::from_millis(200)), Duration::from_millis(10))
            .await
            .expect_err("never answered");
    assert_eq!(r.calls.load(Ordering::SeqCst), 2, "the first attempt and one retry");
    assert!(failed.starts_with("webhook 0 not notified after 2 attempts: no answer"), "{failed}");
    assert!(!failed.contains("127.0.0.1"), "the URL stays out of the message: {failed}");
    assert_eq!(metric(&metrics, "failed"), 1);
    server.abort();
}

#[tokio::test]
async fn queued_deliveries_are_sent_by_the_worker_and_a_full_queue_drops_without_waiting() {
    let r = Receiver::default();
    let (url, server) = serve(r.clone()).await;
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    let (notifier, worker) = channel(metrics.clone()).expect("channel");
    // Nobody drains yet: the queue fills, and the next send returns at once, dropped.
    for _ in 0..QUEUE {
        notifier.send(delivery(url.clone(), 0, Duration::from_secs(5)));
    }
    notifier.send(delivery(url.clone(), 0, Duration::from_secs(5)));
    assert_eq!(metric(&metrics, "dropped"), 1);
    drop(notifier);
    worker.with_backoff_unit(Duration::from_millis(1)).run().await;
    assert_eq!(r.calls.load(Ordering::SeqCst), QUEUE);
    assert_eq!(metric(&metrics, "delivered"), QUEUE as u64);
    server.abort();
}

#[tokio::test]
async fn a_refusal_is_not_retried_but_too_many_requests_is() {
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    let http = reqwest::Client::new();
    let refused = Receiver { failures: 10, failure: StatusCode::NOT_FOUND, ..Default::default() };
    let (url, server) = serve(refused.clone()).await;
    let why = deliver(&http, &metrics, &delivery(url, 5, Duration::from_secs(5)), Duration::from_millis(1))
        .await
        .expect_err("refused");
    assert_eq!(refused.calls.load(Ordering::SeqCst), 1, "a 404 is not sent again");
    assert!(why.contains("404") && why.contains("not retried"), "{why}");
    server.abort();
    let busy = Receiver { failures: 2, failure: StatusCode::TOO_MANY_REQUESTS, ..Default::default() };
    let (url, server) = serve(busy.clone()).await;
    let sent =
        deliver(&http, &metrics, &delivery(url, 5, Duration::from_secs(5)), Duration::from_millis(1)).await;
    assert_eq!(sent, Ok(()));
    assert_eq!(busy.calls.load(Ordering::SeqCst), 3);
    server.abort();
}

#[tokio::test]
async fn a_signed_body_carries_an_hmac_the_receiver_can_check() {
    let r = Receiver::default();
    let (url, server) = serve(r.clone()).await;
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    let mut d = delivery(url, 0, Duration::from_secs(5));
    d.signing_key = Some(b"s3cret".to_vec());
    assert_eq!(deliver(&reqwest::Client::new(), &metrics, &d, Duration::from_millis(1)).await, Ok(()));
    let headers = r.headers.lock().map(|h| h[0].clone()).expect("headers");
    let sent = headers[SIGNATURE_HEADER].to_str().expect("ascii").to_string();
    // Checked the way a receiver would: HMAC-SHA256 of the raw body under the shared key.
    let hex = sent.strip_prefix("sha256=").expect("sha256= prefix");
    let tag: Vec<u8> =
        (0..hex.len() / 2).map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex")).collect();
    let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, b"s3cret");
    assert!(aws_lc_rs::hmac::verify(&key, &d.body, &tag).is_ok(), "{sent}");
    assert!(aws_lc_rs::hmac::verify(&key, b"another body", &tag).is_err());
    server.abort();
}
