//! Webhook notifications for a pass's transitions: which Event reasons notify, and the JSON a
//! receiver gets (documented in docs/cli.md).

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use rollgate_crds::conditions::EventReason;
use rollgate_crds::notifications::{NotificationEvent, Notifications, Webhook};
use rollgate_crds::{Rollout, RolloutStatus};
use serde_json::json;

use super::Context;
use crate::notify::Delivery;
use crate::plan::Plan;

/// Queues a webhook delivery per transition of this pass (never waits; see `notify`).
pub(super) fn notify(
    ctx: &Context,
    ro: &Rollout,
    plan: &Plan,
    gate_hooks: Option<&Notifications>,
    dry_run: bool,
) {
    let Some(notifier) = &ctx.notifier else { return };
    let hooks: Vec<&Webhook> =
        ro.spec.notifications.iter().chain(gate_hooks).flat_map(|n| n.webhooks.iter()).collect();
    if hooks.is_empty() {
        return;
    }
    for e in &plan.events {
        let Some(kind) = notification_kind(e.reason) else { continue };
        let payload = notification_payload(ro, &plan.status, kind, &e.note, dry_run, (ctx.clock)());
        for d in Delivery::for_hooks(hooks.iter().copied(), kind, &payload) {
            notifier.send(d);
        }
    }
}

/// The webhook kind an Event reason notifies, if any (exhaustive: a new reason must say).
pub fn notification_kind(reason: EventReason) -> Option<NotificationEvent> {
    match reason {
        EventReason::WeightApplied => Some(NotificationEvent::Step),
        EventReason::Promoted => Some(NotificationEvent::Promotion),
        EventReason::RolledBack | EventReason::WouldRollBack => Some(NotificationEvent::Rollback),
        EventReason::RolloutStarted
        | EventReason::Superseded
        | EventReason::StepPassed
        | EventReason::Paused
        | EventReason::Held
        | EventReason::ActionIgnored
        | EventReason::InvalidSpec
        | EventReason::NameConflict
        | EventReason::WorkloadNotFound
        | EventReason::RejectedByApi
        | EventReason::ProgressDeadlineExceeded
        | EventReason::WriteFailed
        | EventReason::TrafficSplitDiverged => None,
    }
}

/// The JSON a webhook receives (documented in docs/cli.md).
pub fn notification_payload(
    ro: &Rollout,
    status: &RolloutStatus,
    kind: NotificationEvent,
    reason: &str,
    dry_run: bool,
    now: Timestamp,
) -> serde_json::Value {
    json!({
        "kind": kind,
        "rollout": { "namespace": ro.namespace(), "name": ro.name_any() },
        "reason": reason,
        "phase": status.phase,
        "verdict": status.verdict,
        "canaryWeight": status.canary_weight,
        "step": status.current_step.filter(|s| *s >= 0).map(|s| s + 1),
        "steps": ro.spec.steps.len(),
        "canaryRevision": status.canary_revision,
        "stableRevision": status.stable_revision,
        "dryRun": dry_run,
        "time": now.to_string(),
    })
}
