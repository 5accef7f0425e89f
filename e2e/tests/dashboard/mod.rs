//! The operator dashboard against the suite's Prometheus: after a promotion and a rollback,
//! every panel's query returns at least one series (a panel whose query returns nothing is a
//! defect: a renamed metric, a label that is not there).

use std::time::Duration;

use rollgate_crds::rollout::Phase;
use serde_json::{Value, json};

use super::{NAME, Stage, stage};
use crate::common::{report, rollout_yaml, wait_until};

/// Grafana's variables, as the dashboard is evaluated outside Grafana.
fn outside_grafana(expr: &str) -> String {
    expr.replace("$__range", "1h").replace("$__rate_interval", "1m")
}

#[tokio::test]
async fn scenario_21_every_dashboard_panel_has_data_after_a_promotion_and_a_rollback() {
    let Stage { c, ns, guard: _guard, ctl, load } = stage("e2e-dashboard", 8).await;
    let dashboard: Value = serde_json::from_str(include_str!("../../../manifests/grafana/rollgate.json"))
        .expect("the dashboard is JSON");
    // A healthy version promoted, then a faulty one rolled back.
    for (version, env, end) in [
        ("v2", vec![], Phase::Promoted),
        ("v3", vec![("REFSERVER_FAULT_ERROR_RATIO", "0.5")], Phase::RolledBack),
    ] {
        let yaml = rollout_yaml(&ns, NAME, version, &env, "")
            .replace("    checks:\n", "    metrics: {preset: otel}\n    checks:\n")
            .replace("PROMETHEUS", &c.prometheus);
        let (ok, out) = c.apply(&yaml).await;
        assert!(ok, "{out}");
        wait_until(&format!("{version} {end:?}"), Duration::from_secs(300), || async {
            let st = c.status(&ns, NAME).await;
            st.phase == Some(end) && st.canary_revision.is_some()
        })
        .await;
    }
    let http = reqwest::Client::new();
    let query = |expr: String| {
        let http = http.clone();
        let url = format!("{}/api/v1/query", c.prometheus);
        async move {
            let r = http.get(url).query(&[("query", expr.as_str())]).send().await.ok()?;
            let body: Value = r.json().await.ok()?;
            assert_eq!(body["status"], "success", "{expr}: {body}");
            body["data"]["result"].as_array().cloned()
        }
    };
    let mut checked = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = outside_grafana(target["expr"].as_str().expect("expr"));
            let title = panel["title"].as_str().unwrap_or("?").to_string();
            // Scraped every 2 s: the controller's last series are in Prometheus within seconds.
            wait_until(&format!("data for panel {title:?}: {expr}"), Duration::from_secs(60), || async {
                query(expr.clone()).await.is_some_and(|r| !r.is_empty())
            })
            .await;
            checked.push(json!({"panel": title, "expr": expr}));
        }
    }
    load.stop().await;
    report(&c, "scenario_21_dashboard", json!({ "queries_with_data": checked.len() }));
    ctl.kill().await;
}
