//! Deliveries against receivers on loopback: retried until accepted, given up after the
//! retries, and a full queue that drops instead of waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use rollgate_crds::notifications::{NotificationEvent, Webhook};
use serde_json::{Value, json};

use super::*;
use crate::observability::Metrics;

#[derive(Clone, Default)]
struct Receiver {
    calls: Arc<AtomicUsize>,
    bodies: Arc<Mutex<Vec<Value>>>,
    /// Answer 500 this many times first.
    failures: usize,
    /// Never answer.
    hang: bool,
}

async fn receive(State(r): State<Receiver>, axum::Json(body): axum::Json<Value>) -> StatusCode {
    let n = r.calls.fetch_add(1, Ordering::SeqCst);
    if r.hang {
        std::future::pending::<()>().await;
    }
    if let Ok(mut b) = r.bodies.lock() {
        b.push(body);
    }
    if n < r.failures { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::NO_CONTENT }
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
    Delivery { url, timeout, retries, payload: json!({"kind": "Rollback", "rollout": {"name": "web"}}) }
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
        deliver(&http, &metrics, delivery(url, 3, Duration::from_secs(5)), Duration::from_millis(10)).await;
    assert!(ok);
    assert_eq!(r.calls.load(Ordering::SeqCst), 3);
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
    let ok =
        deliver(&http, &metrics, delivery(url, 1, Duration::from_millis(200)), Duration::from_millis(10))
            .await;
    assert!(!ok);
    assert_eq!(r.calls.load(Ordering::SeqCst), 2, "the first attempt and one retry");
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

#[test]
fn only_subscribed_hooks_get_an_event() {
    let hook = |url: &str, events: Vec<NotificationEvent>| Webhook {
        url: url.into(),
        events,
        timeout: Duration::from_secs(5).into(),
        retries: 3,
    };
    let hooks = [
        hook("http://a", vec![NotificationEvent::Rollback]),
        hook("http://b", vec![NotificationEvent::Step, NotificationEvent::Promotion]),
    ];
    let out = Delivery::for_hooks(&hooks, NotificationEvent::Rollback, &json!({}));
    assert_eq!(out.iter().map(|d| d.url.as_str()).collect::<Vec<_>>(), ["http://a"]);
    assert_eq!(out[0].retries, 3);
    assert!(Delivery::for_hooks(&hooks, NotificationEvent::Step, &json!({}))[0].url == "http://b");
}
