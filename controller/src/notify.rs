//! Webhook notifications of transitions (step applied, promotion, rollback).
//!
//! The reconcile loop only queues a delivery (`Notifier::send` never waits), so a slow or
//! failing receiver can never hold up a rollback. The `Worker` drains the queue with a bounded
//! number of deliveries in flight; each POSTs its body with a per-attempt timeout, signed when
//! the hook has a signing key, and retries with exponential backoff and jitter (`backon`),
//! except after a 4xx other than 408 and 429: the request itself is wrong, and sending it again
//! changes nothing. Outcomes are logged and counted in `rollgate_webhook_deliveries_total{result}`;
//! a delivery that fails every attempt is also a Warning Event on its Rollout; a full queue
//! drops (and counts) the delivery.
//!
//! A hook's URL may itself be a credential (Slack and Teams URLs are): logs, metrics and Events
//! name a receiver by `Delivery::name`, never by its URL.

pub mod format;

use std::time::Duration;

use aws_lc_rs::hmac;
use backon::{ExponentialBuilder, Retryable};
use k8s_openapi::api::core::v1::ObjectReference;
use rollgate_crds::conditions::EventReason;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::observability::{DeliveryLabels, SharedMetrics};
use crate::reconcile::events::EventWriter;

/// Deliveries waiting to be sent.
pub const QUEUE: usize = 1024;
/// Deliveries being sent at once.
pub const IN_FLIGHT: usize = 16;
/// The signature header: `sha256=<hex HMAC-SHA256(key, body)>`.
pub const SIGNATURE_HEADER: &str = "x-rollgate-signature-256";
/// A unique id per delivery (the same on every attempt), for receivers that drop replays.
pub const DELIVERY_HEADER: &str = "x-rollgate-delivery";

/// One notification to one receiver, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Where to POST. May be a credential: never logged.
    pub url: String,
    /// How logs and Events name the receiver: `webhook 1 (https://chat.example.com)`, or
    /// `webhook 1 (Secret "slack")`.
    pub name: String,
    /// Extra request headers (from the hook's Secret).
    pub headers: Vec<(String, String)>,
    /// The key that signs the body, if the hook has one.
    pub signing_key: Option<Vec<u8>>,
    pub id: String,
    pub timeout: Duration,
    pub retries: u32,
    /// The JSON body, already in the hook's format.
    pub body: Vec<u8>,
    /// The Rollout told (a Warning Event) when every attempt failed.
    pub regarding: Option<ObjectReference>,
}

/// Why an attempt failed, and whether another could succeed.
#[derive(Debug)]
struct Failure {
    reason: String,
    retryable: bool,
}

#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::Sender<Delivery>,
    metrics: SharedMetrics,
}

pub struct Worker {
    rx: mpsc::Receiver<Delivery>,
    http: reqwest::Client,
    metrics: SharedMetrics,
    events: Option<EventWriter>,
    backoff_unit: Duration,
}

pub fn channel(metrics: SharedMetrics) -> Result<(Notifier, Worker), reqwest::Error> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("rollgate/", env!("CARGO_PKG_VERSION")))
        .build()?;
    Ok((
        Notifier { tx, metrics: metrics.clone() },
        Worker { rx, http, metrics, events: None, backoff_unit: Duration::from_secs(1) },
    ))
}

pub fn count(metrics: &SharedMetrics, result: &str) {
    metrics.webhook_deliveries.get_or_create(&DeliveryLabels { result: result.into() }).inc();
}

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body);
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

// === impl Notifier ===

impl Notifier {
    /// Queues a delivery; never waits.
    pub fn send(&self, d: Delivery) {
        if let Err(e) = self.tx.try_send(d) {
            count(&self.metrics, "dropped");
            let why = match e {
                mpsc::error::TrySendError::Full(_) => "the queue is full",
                mpsc::error::TrySendError::Closed(_) => "the sender stopped",
            };
            tracing::warn!(why, "webhook notification dropped");
        }
    }
}

// === impl Worker ===

impl Worker {
    /// The same worker with a shorter backoff (tests).
    pub fn with_backoff_unit(mut self, unit: Duration) -> Self {
        self.backoff_unit = unit;
        self
    }

    /// The same worker, writing a Warning Event on the Rollout of a delivery that failed.
    pub fn with_events(mut self, events: EventWriter) -> Self {
        self.events = Some(events);
        self
    }

    /// Sends until every `Notifier` is dropped and the queue is empty.
    pub async fn run(mut self) {
        let mut in_flight = JoinSet::new();
        loop {
            tokio::select! {
                next = self.rx.recv(), if in_flight.len() < IN_FLIGHT => match next {
                    Some(d) => {
                        let (http, metrics, unit) = (self.http.clone(), self.metrics.clone(), self.backoff_unit);
                        let events = self.events.clone();
                        in_flight.spawn(async move {
                            if let Err(why) = deliver(&http, &metrics, &d, unit).await {
                                tell(events.as_ref(), &d, &why).await;
                            }
                        });
                    }
                    None => break,
                },
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    if let Err(e) = done {
                        tracing::error!(error = %e, "a webhook delivery task failed");
                    }
                }
            }
        }
        while let Some(done) = in_flight.join_next().await {
            if let Err(e) = done {
                tracing::error!(error = %e, "a webhook delivery task failed");
            }
        }
    }
}

/// A Warning Event on the delivery's Rollout saying it was not delivered.
async fn tell(events: Option<&EventWriter>, d: &Delivery, why: &str) {
    let (Some(events), Some(regarding)) = (events, &d.regarding) else { return };
    let reason = EventReason::NotificationFailed.as_str();
    if let Err(e) = events.publish(regarding, true, reason, why).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}

/// POSTs until a 2xx, at most `1 + retries` times; a 4xx other than 408 and 429 ends it at
/// once. The error says why, in words, naming the receiver by its `name`.
pub async fn deliver(
    http: &reqwest::Client,
    metrics: &SharedMetrics,
    d: &Delivery,
    unit: Duration,
) -> Result<(), String> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(unit)
        .with_max_delay(unit * 64)
        .with_max_times(d.retries as usize)
        .with_jitter();
    let mut attempts = 0u32;
    let result = (|| {
        attempts += 1;
        attempt(http, d)
    })
    .retry(backoff)
    .sleep(tokio::time::sleep)
    .when(|f: &Failure| f.retryable)
    .await;
    match result {
        Ok(()) => {
            count(metrics, "delivered");
            tracing::debug!(receiver = %d.name, attempts, "webhook delivered");
            Ok(())
        }
        Err(f) => {
            count(metrics, "failed");
            let plural = if attempts == 1 { "" } else { "s" };
            let why = format!("{} not notified after {attempts} attempt{plural}: {}", d.name, f.reason);
            tracing::warn!(receiver = %d.name, attempts, error = %f.reason, "webhook delivery failed");
            Err(why)
        }
    }
}

async fn attempt(http: &reqwest::Client, d: &Delivery) -> Result<(), Failure> {
    let mut req = http
        .post(&d.url)
        .timeout(d.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(DELIVERY_HEADER, &d.id);
    for (name, value) in &d.headers {
        req = req.header(name, value);
    }
    if let Some(key) = &d.signing_key {
        req = req.header(SIGNATURE_HEADER, signature(key, &d.body));
    }
    match req.body(d.body.clone()).send().await {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let status = r.status();
            let retryable = status.is_server_error()
                || status == reqwest::StatusCode::REQUEST_TIMEOUT
                || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            let reason = if retryable {
                format!("HTTP {status}")
            } else {
                format!("HTTP {status}, not retried: the receiver refuses the request itself")
            };
            Err(Failure { reason, retryable })
        }
        Err(e) if e.is_timeout() => {
            Err(Failure { reason: format!("no answer within {:?}", d.timeout), retryable: true })
        }
        // Building the request failed (a header from the Secret that is not a header): no
        // attempt will do better. The error text may quote the URL: say only what kind it is.
        Err(e) if e.is_builder() => Err(Failure {
            reason: "the request could not be built (check its headers)".into(),
            retryable: false,
        }),
        Err(e) => Err(Failure { reason: connection_error(&e), retryable: true }),
    }
}

/// A connection error in words, without the URL reqwest puts in its message.
fn connection_error(e: &reqwest::Error) -> String {
    let mut text =
        if e.is_connect() { "connection failed".to_string() } else { "request failed".to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
