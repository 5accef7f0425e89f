//! Webhooks a Rollout (or the ReleaseGate it references) notifies of its transitions: a POST
//! when a step's weight is applied, on promotion and on rollback, as rollgate's JSON or as a
//! Slack or Teams message, optionally signed.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::duration::PositiveDuration;
use crate::prometheus::{KeyRef, SecretRef};

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
#[x_kube(validation = Rule::new("has(self.url) != has(self.secretRef)").message("set exactly one of url and secretRef"))]
pub struct Webhook {
    /// Where to POST, e.g. `https://chat.example.com/hooks/deploys`. Exactly one of `url` and
    /// `secretRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("must be an http:// or https:// URL"))]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// A Secret in the Rollout's namespace holding the URL under the key `url` and, optionally,
    /// request headers under the key `headers` (one `Name: value` per line): for URLs that are
    /// themselves credentials (Slack, Teams) and for tokens. Read when a notification is sent
    /// (re-read at most every 30 s); never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// A key of a Secret in the Rollout's namespace: every body is signed with it, and the
    /// signature sent as `X-Rollgate-Signature-256: sha256=<hex HMAC-SHA256(key, body)>`, with
    /// `X-Rollgate-Delivery` (a unique id) for receivers that drop replays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<KeyRef>,
    /// What the body looks like: `Json` (default, documented in docs/cli.md), `Slack` (an
    /// incoming-webhook message) or `Teams` (an Adaptive Card for a Teams workflow webhook).
    #[serde(default)]
    pub format: WebhookFormat,
    /// Which transitions to send. Default: all.
    #[serde(default = "defaults::webhook_events")]
    pub events: Vec<NotificationEvent>,
    /// Time limit of one attempt. Default 5s.
    #[serde(default = "defaults::webhook_timeout")]
    pub timeout: PositiveDuration,
    /// Attempts after a failed one, about 1 s, 2 s, 4 s … apart (with jitter). A 4xx answer
    /// other than 408 and 429 is not retried: the request itself is wrong. Default 3.
    #[serde(default = "defaults::webhook_retries")]
    #[schemars(range(min = 0, max = 10))]
    pub retries: u32,
}

/// The shape of a webhook's body.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WebhookFormat {
    /// rollgate's own JSON.
    #[default]
    Json,
    /// A Slack incoming-webhook message (`text` and `blocks`).
    Slack,
    /// A Microsoft Teams message with an Adaptive Card.
    Teams,
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
