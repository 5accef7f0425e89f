//! A notification's body in each hook `format`: rollgate's JSON as it is, or the same facts as a
//! Slack incoming-webhook message or a Microsoft Teams Adaptive Card, in words a person reads
//! without knowing the JSON.

use rollgate_crds::notifications::WebhookFormat;
use serde_json::{Value, json};

/// The body for `format`, from rollgate's JSON payload (`reconcile::notifications`).
pub fn render(format: WebhookFormat, payload: &Value) -> Value {
    match format {
        WebhookFormat::Json => payload.clone(),
        WebhookFormat::Slack => slack(payload),
        WebhookFormat::Teams => teams(payload),
    }
}

/// The first line: what happened to which Rollout.
pub fn headline(p: &Value) -> String {
    let ns = p.pointer("/rollout/namespace").and_then(Value::as_str).unwrap_or("?");
    let name = p.pointer("/rollout/name").and_then(Value::as_str).unwrap_or("?");
    let dry = if p["dryRun"] == true { "Dry run: " } else { "" };
    let what = match (p["kind"].as_str(), p["dryRun"] == true) {
        (Some("Rollback"), true) => "would have been rolled back".to_string(),
        (Some("Rollback"), false) => "rolled back".to_string(),
        (Some("Promotion"), _) => "promoted".to_string(),
        (Some("Step"), _) => format!(
            "canary at {}% (step {} of {})",
            p["canaryWeight"],
            p["step"].as_i64().map_or("?".into(), |s| s.to_string()),
            p["steps"]
        ),
        _ => "changed".to_string(),
    };
    format!("{dry}{ns}/{name} {what}")
}

/// The facts beneath the headline, as (label, value).
fn facts(p: &Value) -> Vec<(String, String)> {
    let text = |v: &Value| v.as_str().map(str::to_string);
    let mut out = Vec::new();
    if let Some(r) = text(&p["reason"]) {
        out.push(("Why".to_string(), r));
    }
    if let Some(c) = text(&p["canaryRevision"]) {
        out.push(("Canary".to_string(), c));
    }
    if let Some(s) = text(&p["stableRevision"]) {
        out.push(("Stable".to_string(), s));
    }
    for check in p["checks"].as_array().into_iter().flatten() {
        let name = check["name"].as_str().unwrap_or("check");
        let result = check["result"].as_str().unwrap_or("?");
        let reason = check["reason"].as_str().unwrap_or_default();
        out.push((format!("Check {name}"), format!("{result}: {reason}")));
    }
    out
}

fn slack(p: &Value) -> Value {
    let title = headline(p);
    let lines: Vec<String> = facts(p).into_iter().map(|(k, v)| format!("*{k}:* {v}")).collect();
    json!({
        "text": format!("{title}\n{}", lines.join("\n")),
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": truncate(&title, 150)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": truncate(&lines.join("\n"), 3000)}},
        ],
    })
}

fn teams(p: &Value) -> Value {
    let facts: Vec<Value> = facts(p).into_iter().map(|(k, v)| json!({"title": k, "value": v})).collect();
    let attention = p["kind"] == "Rollback";
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {
                        "type": "TextBlock",
                        "text": headline(p),
                        "weight": "Bolder",
                        "size": "Medium",
                        "wrap": true,
                        "color": if attention { "Attention" } else { "Default" },
                    },
                    {"type": "FactSet", "facts": facts},
                ],
            },
        }],
    })
}

/// At most `max` characters (Slack refuses longer block texts).
fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rollback(dry_run: bool) -> Value {
        json!({
            "kind": "Rollback",
            "rollout": {"namespace": "shop", "name": "web"},
            "reason": "error-rate over budget: 12 of 80 requests bad (15.00 %), budget 1.00 %",
            "canaryWeight": 0, "step": 1, "steps": 3,
            "canaryRevision": "54a31c3317", "stableRevision": "a963c95aee",
            "dryRun": dry_run,
            "checks": [{"name": "error-rate", "result": "Fail", "reason": "12 of 80 bad"}],
        })
    }

    #[test]
    fn json_is_the_payload_itself() {
        assert_eq!(render(WebhookFormat::Json, &rollback(false)), rollback(false));
    }

    #[test]
    fn slack_gets_text_and_blocks_with_the_reason_and_each_check() {
        let m = render(WebhookFormat::Slack, &rollback(false));
        let text = m["text"].as_str().expect("text");
        assert!(text.starts_with("shop/web rolled back\n"), "{text}");
        assert!(text.contains("*Why:* error-rate over budget: 12 of 80"), "{text}");
        assert!(text.contains("*Check error-rate:* Fail: 12 of 80 bad"), "{text}");
        assert_eq!(m["blocks"][0]["type"], "header");
        assert_eq!(m["blocks"][0]["text"]["text"], "shop/web rolled back");
        assert_eq!(m["blocks"][1]["text"]["type"], "mrkdwn");
    }

    #[test]
    fn teams_gets_an_adaptive_card_and_a_dry_run_says_would() {
        let m = render(WebhookFormat::Teams, &rollback(true));
        assert_eq!(m["type"], "message");
        let card = &m["attachments"][0];
        assert_eq!(card["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(card["content"]["type"], "AdaptiveCard");
        assert_eq!(card["content"]["body"][0]["text"], "Dry run: shop/web would have been rolled back");
        assert_eq!(card["content"]["body"][0]["color"], "Attention");
        let facts = card["content"]["body"][1]["facts"].as_array().expect("facts");
        assert!(facts.iter().any(|f| f["title"] == "Why"), "{facts:?}");
    }

    #[test]
    fn a_step_names_its_weight() {
        let p = json!({"kind": "Step", "rollout": {"namespace": "shop", "name": "web"}, "canaryWeight": 5, "step": 2, "steps": 3});
        assert_eq!(headline(&p), "shop/web canary at 5% (step 2 of 3)");
    }
}
