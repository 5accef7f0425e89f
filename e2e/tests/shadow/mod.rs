//! A shadow step on the real cluster: Traefik copies a share of the requests to a faulty
//! canary (a mirroring TraefikService, as Traefik's Gateway API provider has no
//! `RequestMirror`), the gate convicts it on its own metrics, and no client ever got an answer
//! from it.

use std::time::Duration;

use kube::Api;
use kube::api::DynamicObject;
use rollgate_crds::rollout::{Phase, Verdict};
use serde_json::json;

use super::{NAME, Stage, stage};
use crate::common::{http_route_resource, report, rollout_yaml, wait_until};

#[tokio::test]
async fn scenario_22_a_faulty_canary_is_rolled_back_in_the_shadow_step_and_no_client_saw_it() {
    let Stage { c, ns, guard: _guard, ctl, load } = stage("e2e-shadow", 8).await;
    // Half the canary's answers are errors; half the requests are copied to it.
    let yaml = rollout_yaml(&ns, NAME, "v3", &[("REFSERVER_FAULT_ERROR_RATIO", "0.5")], "").replace(
        &format!("  traffic: {{gatewayAPI: {{httpRoute: {NAME}}}}}\n"),
        &format!(
            "  traffic: {{gatewayAPI: {{httpRoute: {NAME}, mirror: TraefikService}}}}\n  steps: [{{shadow: 50}}, {{weight: 1}}, {{weight: 5}}, {{weight: 100}}]\n"
        ),
    );
    assert!(yaml.contains("shadow: 50"), "{yaml}");
    // Counted from once stable answers through the gateway: the gateway may not have stable's
    // endpoints the instant v1 is promoted (503s then are not the shadow step's).
    wait_until("stable answers through the gateway", Duration::from_secs(30), || async {
        load.snapshot().iter().any(|s| s.status == 200)
    })
    .await;
    let started = std::time::Instant::now();
    let (ok, out) = c.apply(&yaml.replace("PROMETHEUS", &c.prometheus)).await;
    assert!(ok, "{out}");
    // v1's promotion is in the status until the controller takes up v3.
    wait_until("v3 rolled back", Duration::from_secs(300), || async {
        let st = c.status(&ns, NAME).await;
        st.phase == Some(Phase::RolledBack) && st.canary_revision.is_some()
    })
    .await;
    let rolled_back_after = started.elapsed();
    let st = c.status(&ns, NAME).await;
    assert_eq!(st.verdict, Some(Verdict::Fail));
    assert_eq!(st.current_step, Some(0), "rolled back in the shadow step");
    let since_start: Vec<_> = st.history.iter().skip_while(|d| d.action != "Start").collect();
    let steps: Vec<_> = since_start.iter().filter(|d| d.action == "StepUp").collect();
    assert_eq!(steps.len(), 1, "only the shadow step was taken: {:?}", st.history);
    assert_eq!(steps[0].weight, 0);
    assert!(steps[0].reason.contains("50% of requests copied to the canary"), "{}", steps[0].reason);
    let rollback = since_start.iter().find(|d| d.action == "Rollback").expect("a rollback");
    assert!(rollback.reason.contains("error-rate"), "{}", rollback.reason);
    let check = st.checks.iter().find(|x| x.name == "error-rate").expect("error-rate check");
    assert!(check.bad > 0 && check.total > 0, "the canary's own answers were judged: {check:?}");

    // The route sends to stable's Service again, with no copies. Awaited: the status can say
    // RolledBack a reconcile before the route is restored (seen once in CI, a window of about a
    // second; noted as a defect to fix in the controller's ordering).
    let routes: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &ns, &http_route_resource());
    let stable_ref = format!("\"{NAME}-stable\"");
    wait_until("the route sends to stable's Service again", Duration::from_secs(30), || async {
        let Ok(route) = routes.get(NAME).await else { return false };
        let refs = serde_json::to_value(route)
            .ok()
            .and_then(|r| r.pointer("/spec/rules/0/backendRefs").cloned())
            .unwrap_or_default()
            .to_string();
        refs.contains(&stable_ref) && !refs.contains("TraefikService")
    })
    .await;

    let seen: Vec<_> = load.stop().await.into_iter().filter(|s| s.at >= started).collect();
    let failed = seen.iter().filter(|s| s.status != 200).count();
    let from_canary = seen.iter().filter(|s| s.version == "v3").count();
    // When they happened, from the apply, and with what status: which transition caused them.
    let failures: Vec<String> = seen
        .iter()
        .filter(|s| s.status != 200)
        .map(|s| format!("{:.2}s:{}", s.at.saturating_duration_since(started).as_secs_f64(), s.status))
        .collect();
    assert_eq!(
        failed,
        0,
        "no client request failed ({} requests): {failures:?}\nhistory: {:?}",
        seen.len(),
        st.history
    );
    assert_eq!(from_canary, 0, "no client got the canary's answer");
    report(
        &c,
        "scenario_22_shadow",
        json!({
            "apply_to_rolled_back_s": rolled_back_after.as_secs_f64(),
            "client_requests": seen.len(),
            "client_requests_failed": failed,
            "client_answers_from_canary": from_canary,
            "canary_copies_judged": check.total,
            "canary_copies_bad": check.bad,
            "verdict": rollback.reason,
        }),
    );
    ctl.kill().await;
}
