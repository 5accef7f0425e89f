//! Webhook notifications of transitions (step applied, promotion, rollback).
//!
//! The reconcile loop only queues a delivery (`Notifier::send` never waits), so a slow or
//! failing receiver can never hold up a rollback. The `Worker` drains the queue with a bounded
//! number of deliveries in flight; each POSTs JSON with a per-attempt timeout and retries with
//! exponential backoff (1 s, 2 s, 4 s …). Outcomes are logged and counted in
//! `rollgate_webhook_deliveries_total{result}`; a full queue drops (and counts) the delivery.

use std::time::Duration;

use rollgate_crds::notifications::{NotificationEvent, Webhook};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::observability::{DeliveryLabels, SharedMetrics};

/// Deliveries waiting to be sent.
pub const QUEUE: usize = 1024;
/// Deliveries being sent at once.
pub const IN_FLIGHT: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub url: String,
    pub timeout: Duration,
    pub retries: u32,
    pub payload: Value,
}

impl Delivery {
    /// One delivery per webhook subscribed to `event`.
    pub fn for_hooks<'a>(
        hooks: impl IntoIterator<Item = &'a Webhook>,
        event: NotificationEvent,
        payload: &Value,
    ) -> Vec<Delivery> {
        hooks
            .into_iter()
            .filter(|h| h.events.contains(&event))
            .map(|h| Delivery {
                url: h.url.clone(),
                timeout: h.timeout.as_std(),
                retries: h.retries,
                payload: payload.clone(),
            })
            .collect()
    }
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
        Worker { rx, http, metrics, backoff_unit: Duration::from_secs(1) },
    ))
}

fn count(metrics: &SharedMetrics, result: &str) {
    metrics.webhook_deliveries.get_or_create(&DeliveryLabels { result: result.into() }).inc();
}

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

impl Worker {
    /// The same worker with a shorter backoff (tests).
    pub fn with_backoff_unit(mut self, unit: Duration) -> Self {
        self.backoff_unit = unit;
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
                        in_flight.spawn(async move { deliver(&http, &metrics, d, unit).await });
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

/// POSTs until a 2xx, at most `1 + retries` times.
pub async fn deliver(http: &reqwest::Client, metrics: &SharedMetrics, d: Delivery, unit: Duration) -> bool {
    let mut last_error = String::new();
    for attempt in 0..=d.retries {
        if attempt > 0 {
            tokio::time::sleep(unit * (1u32 << (attempt - 1).min(6))).await;
        }
        match http.post(&d.url).timeout(d.timeout).json(&d.payload).send().await {
            Ok(r) if r.status().is_success() => {
                count(metrics, "delivered");
                tracing::debug!(url = %d.url, attempt, "webhook delivered");
                return true;
            }
            Ok(r) => last_error = format!("HTTP {}", r.status()),
            Err(e) if e.is_timeout() => last_error = format!("no answer within {:?}", d.timeout),
            Err(e) => last_error = e.to_string(),
        }
    }
    count(metrics, "failed");
    tracing::warn!(url = %d.url, attempts = d.retries + 1, error = %last_error, "webhook delivery failed");
    false
}

#[cfg(test)]
mod tests;
