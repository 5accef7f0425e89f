//! Webhook notifications for a pass's transitions: which Event reasons notify, the JSON a
//! receiver gets (documented in docs/cli.md), and each hook resolved to a ready delivery (its
//! URL, headers and signing key read from Secrets, its body in the hook's format).

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};
use rollgate_crds::conditions::EventReason;
use rollgate_crds::notifications::{NotificationEvent, Notifications, Webhook};
use rollgate_crds::prometheus::KeyRef;
use rollgate_crds::{Rollout, RolloutStatus};
use serde_json::json;

use super::Context;
use super::access::secret_text;
use crate::error::Result;
use crate::notify::{Delivery, count, format};
use crate::plan::Plan;

/// Where a hook's URL and headers come from, resolved.
struct Target {
    url: String,
    name: String,
    headers: Vec<(String, String)>,
    signing_key: Option<Vec<u8>>,
}

/// Queues a webhook delivery per transition of this pass and subscribed hook (never waits for
/// a receiver; see `notify`). A hook whose Secret cannot be read is not sent: it is counted as
/// failed and shown as a Warning Event naming the field and why.
pub(super) async fn notify(
    ctx: &Context,
    ro: &Rollout,
    plan: &Plan,
    gate_hooks: Option<&Notifications>,
    dry_run: bool,
) -> Result<()> {
    let Some(notifier) = &ctx.notifier else { return Ok(()) };
    let transitions: Vec<(NotificationEvent, &str)> = plan
        .events
        .iter()
        .filter_map(|e| notification_kind(e.reason).map(|k| (k, e.note.as_str())))
        .collect();
    if transitions.is_empty() {
        return Ok(());
    }
    // Collected before the awaits below: a lazy iterator's closures held across them would
    // make this future's lifetimes too particular for the controller's runtime.
    let mut hooks: Vec<(String, &Webhook)> = Vec::new();
    for (i, h) in ro.spec.notifications.iter().flat_map(|n| n.webhooks.iter()).enumerate() {
        hooks.push((format!("spec.notifications.webhooks[{i}]"), h));
    }
    for (i, h) in gate_hooks.into_iter().flat_map(|n| n.webhooks.iter()).enumerate() {
        hooks.push((format!("the gate's notifications.webhooks[{i}]"), h));
    }
    let ns = ro.namespace().unwrap_or_default();
    let regarding = ro.object_ref(&());
    let now = (ctx.clock)();
    for (field, hook) in hooks {
        let wanted: Vec<(NotificationEvent, &str)> =
            transitions.iter().filter(|(k, _)| hook.events.contains(k)).copied().collect();
        if wanted.is_empty() {
            continue;
        }
        let target = match resolve(ctx, &ns, &field, hook).await? {
            Ok(t) => t,
            Err(why) => {
                count(&ctx.metrics, "failed");
                tracing::warn!(webhook = %field, error = %why, "webhook not sent");
                let note = format!("{field} not notified: {why}");
                if let Err(e) = ctx
                    .events
                    .publish(&regarding, true, EventReason::NotificationFailed.as_str(), &note)
                    .await
                {
                    tracing::warn!(error = %e, "publishing an event failed");
                }
                continue;
            }
        };
        for (kind, note) in wanted {
            let payload = notification_payload(ro, &plan.status, kind, note, dry_run, now);
            let body = serde_json::to_vec(&format::render(hook.format, &payload)).unwrap_or_default();
            notifier.send(Delivery {
                url: target.url.clone(),
                name: target.name.clone(),
                headers: target.headers.clone(),
                signing_key: target.signing_key.clone(),
                id: delivery_id(),
                timeout: hook.timeout.as_std(),
                retries: hook.retries,
                body,
                regarding: Some(regarding.clone()),
            });
        }
    }
    Ok(())
}

/// The hook's URL, headers and signing key; `Err` says which Secret or key is wrong.
async fn resolve(
    ctx: &Context,
    ns: &str,
    field: &str,
    hook: &Webhook,
) -> Result<std::result::Result<Target, String>> {
    let mut target = match (&hook.url, &hook.secret_ref) {
        (Some(url), _) => Target {
            url: url.clone(),
            name: format!("{field} ({})", origin(url)),
            headers: Vec::new(),
            signing_key: None,
        },
        (None, Some(secret)) => {
            let key = |k: &str| KeyRef { name: secret.name.clone(), key: k.to_string() };
            let url = match secret_text(ctx, ns, &key("url")).await? {
                Ok(Some(url)) => url.trim().to_string(),
                Ok(None) => {
                    return Ok(Err(format!("secretRef: Secret {:?} has no key \"url\"", secret.name)));
                }
                Err(why) => return Ok(Err(format!("secretRef: {why}"))),
            };
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Ok(Err(format!(
                    "secretRef: Secret {:?} key \"url\" is not an http:// or https:// URL",
                    secret.name
                )));
            }
            let headers = match secret_text(ctx, ns, &key("headers")).await? {
                Ok(Some(text)) => match parse_headers(&text) {
                    Ok(h) => h,
                    Err(why) => {
                        return Ok(Err(format!(
                            "secretRef: Secret {:?} key \"headers\": {why}",
                            secret.name
                        )));
                    }
                },
                Ok(None) => Vec::new(),
                Err(why) => return Ok(Err(format!("secretRef: {why}"))),
            };
            Target { url, name: format!("{field} (Secret {:?})", secret.name), headers, signing_key: None }
        }
        // The schema requires one of the two.
        (None, None) => return Ok(Err("neither url nor secretRef is set".into())),
    };
    if let Some(r) = &hook.signing_key {
        match secret_text(ctx, ns, r).await? {
            Ok(Some(k)) if !k.is_empty() => target.signing_key = Some(k.into_bytes()),
            Ok(_) => {
                return Ok(Err(format!(
                    "signingKey: Secret {:?} has no key {:?}, or it is empty",
                    r.name, r.key
                )));
            }
            Err(why) => return Ok(Err(format!("signingKey: {why}"))),
        }
    }
    Ok(Ok(target))
}

/// `Name: value` lines (blank lines and `#` comments skipped), each a valid HTTP header.
pub fn parse_headers(text: &str) -> std::result::Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {}: expected `Name: value`", n + 1));
        };
        let (name, value) = (name.trim(), value.trim());
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!("line {}: {name:?} is not a header name", n + 1));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(format!("line {}: the value of {name} is not a header value", n + 1));
        }
        out.push((name.to_string(), value.to_string()));
    }
    Ok(out)
}

/// `scheme://host[:port]` of a URL: enough to tell receivers apart, without a path or query
/// that may hold a token.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials in the authority stay out too.
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}")
}

fn delivery_id() -> String {
    let mut bytes = [0u8; 16];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        // Only for telling deliveries apart: the clock will do.
        bytes = Timestamp::now().as_nanosecond().to_be_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        | EventReason::TrafficSplitDiverged
        | EventReason::NotificationFailed => None,
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
    let checks: Vec<_> = status
        .checks
        .iter()
        .map(|c| json!({"name": c.name, "result": c.result, "reason": c.reason, "bad": c.bad, "total": c.total}))
        .collect();
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
        "checks": checks,
        "dryRun": dry_run,
        "time": now.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lines_are_parsed_and_bad_ones_named() {
        let h = parse_headers("# for the chat\nAuthorization: Bearer abc\n\nX-Team:  payments \n")
            .expect("valid");
        assert_eq!(h, [("Authorization".into(), "Bearer abc".into()), ("X-Team".into(), "payments".into())]);
        assert_eq!(parse_headers("no colon").expect_err("bad"), "line 1: expected `Name: value`");
        assert!(parse_headers("Bad Name: x").expect_err("bad").contains("not a header name"));
    }

    #[test]
    fn a_receiver_is_named_without_its_path_or_credentials() {
        assert_eq!(origin("https://hooks.slack.com/services/T0/B0/secret"), "https://hooks.slack.com");
        assert_eq!(origin("http://user:pw@127.0.0.1:9000/hook?token=x"), "http://127.0.0.1:9000");
    }
}
