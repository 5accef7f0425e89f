//! Webhooks a Rollout (or the ReleaseGate it references) notifies of its transitions: a JSON
//! POST when a step's weight is applied, on promotion and on rollback.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::duration::PositiveDuration;

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Notifications {
    /// Receivers of a JSON POST per transition. Deliveries never delay the rollout: they are
    /// queued, retried, and dropped (counted in `rollgate_webhook_deliveries_total`) on failure.
    #[serde(default)]
    #[schemars(length(max = 8))]
    pub webhooks: Vec<Webhook>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Where to POST, e.g. `https://chat.example.com/hooks/deploys`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("must be an http:// or https:// URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// Which transitions to send. Default: all.
    #[serde(default = "defaults::webhook_events")]
    pub events: Vec<NotificationEvent>,
    /// Time limit of one attempt. Default 5s.
    #[serde(default = "defaults::webhook_timeout")]
    pub timeout: PositiveDuration,
    /// Attempts after a failed one (1 s, 2 s, 4 s … apart). Default 3.
    #[serde(default = "defaults::webhook_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: u32,
}

/// A transition a webhook can be sent.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotificationEvent {
    /// A step's weight was applied.
    Step,
    /// The new version was promoted.
    Promotion,
    /// The canary was rolled back.
    Rollback,
}
