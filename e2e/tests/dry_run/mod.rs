//! `policy.dryRun` on the real cluster: the gate judges a faulty canary, says it would have
//! rolled it back, and the plan promotes it on its holds alone.

use std::time::Duration;

use rollgate_crds::rollout::{Phase, Verdict};
use serde_json::json;

use super::{NAME, Stage, stage};
use crate::common::{report, rollout_yaml, wait_until};

#[tokio::test]
async fn scenario_20_a_faulty_canary_under_dry_run_is_promoted_and_its_history_says_where_the_gate_would_have_stopped()
 {
    let Stage { c, ns, guard: _guard, ctl, load } = stage("e2e-dry-run", 8).await;
    // Half the canary's answers are errors: fifty times the budget, convicted within a step at
    // 1 % of the load. Each step holds 30 s (its minHealthy) and then advances, whatever the gate
    // says.
    let yaml = rollout_yaml(&ns, NAME, "v3", &[("REFSERVER_FAULT_ERROR_RATIO", "0.5")], ", dryRun: true")
        .replace("    checks:\n", "    metrics: {preset: otel}\n    checks:\n")
        .replace("minHealthy: 10s", "minHealthy: 30s");
    assert!(yaml.contains("minHealthy: 30s") && yaml.contains("dryRun: true"), "{yaml}");
    let started = std::time::Instant::now();
    let (ok, out) = c.apply(&yaml.replace("PROMETHEUS", &c.prometheus)).await;
    assert!(ok, "{out}");
    // The first version's promotion is still in the status until the controller takes up v3.
    wait_until("v3 promoted by the plan", Duration::from_secs(420), || async {
        let st = c.status(&ns, NAME).await;
        st.phase == Some(Phase::Promoted)
            && st.canary_revision.is_some()
            && st.stable_revision == st.canary_revision
    })
    .await;
    let promoted_after = started.elapsed();
    let st = c.status(&ns, NAME).await;
    assert_eq!(st.verdict, Some(Verdict::Pass));
    assert!(st.history.iter().all(|d| d.action != "Rollback"), "{:?}", st.history);
    let would: Vec<_> = st.history.iter().filter(|d| d.action == "WouldRollBack").collect();
    let first = would.first().unwrap_or_else(|| panic!("no WouldRollBack in {:?}", st.history));
    assert!(first.reason.starts_with("dry run: would have rolled back at step 1/3: "), "{}", first.reason);
    assert!(first.reason.contains("error-rate") && first.reason.contains("bad"), "{}", first.reason);
    assert_eq!(first.weight, 1);
    let step_ups: Vec<i32> = st.history.iter().filter(|d| d.action == "StepUp").map(|d| d.weight).collect();
    assert_eq!(step_ups, [1, 5, 100], "every step taken: {:?}", st.history);
    assert!(c.events(&ns).contains("WouldRollBack"), "a Warning Event says it");
    let seen = load.stop().await;
    let canary_errors = seen.iter().filter(|s| s.version == "v3" && s.status != 200).count();
    assert!(canary_errors > 0, "the canary did answer errors to real traffic");
    report(
        &c,
        "scenario_20_dry_run",
        json!({
            "apply_to_promoted_s": promoted_after.as_secs_f64(),
            "would_have_rolled_back_at": would.iter().map(|d| d.weight).collect::<Vec<_>>(),
            "first_verdict": first.reason,
            "canary_errors_served": canary_errors,
        }),
    );
    ctl.kill().await;
}
