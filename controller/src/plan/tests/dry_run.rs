//! `policy.dryRun`: the gate's verdicts are recorded and announced, the plan moves on its holds.

use super::*;

#[test]
fn a_faulty_canary_under_dry_run_is_promoted_and_the_history_says_where_it_would_have_stopped() {
    let mut w = deployed();
    w.dry_run = true;
    w.new_version("v2");
    // 10 % errors against a 1 % budget: without dry run, rolled back at the first step.
    let faulty = judge(100, 50);
    w.run_until(200, &faulty, |w| {
        w.status.phase == Some(Phase::Promoted) && w.status.stable_revision == Some(w.revision())
    });
    assert_eq!(w.status.verdict, Some(Verdict::Pass));
    let would: Vec<_> = w.status.history.iter().filter(|d| d.action == "WouldRollBack").collect();
    // Once per step at most, and at the first step for certain.
    assert!(!would.is_empty() && would.len() <= w.spec.steps.len(), "{:#?}", w.status.history);
    assert!(would[0].reason.starts_with("dry run: would have rolled back at step 1/"), "{}", would[0].reason);
    assert!(would[0].reason.contains("error-rate"), "{}", would[0].reason);
    assert!(w.status.history.iter().all(|d| d.action != "Rollback"));
    let warned = w.events.iter().filter(|e| e.reason == EventReason::WouldRollBack).count();
    assert_eq!(warned, would.len(), "one Warning Event per recorded verdict");
}

#[test]
fn under_dry_run_a_step_waits_its_min_healthy_whatever_the_gate_says() {
    let mut w = deployed();
    w.dry_run = true;
    w.min_healthy = Duration::from_secs(120);
    w.new_version("v2");
    let healthy = judge(0, 50);
    w.run_until(20, &healthy, |w| w.status.step_started_at.is_some());
    let started = w.status.step_started_at.clone().expect("step started").0;
    w.run_until(200, &healthy, |w| w.status.current_step != Some(0));
    let passed = w.now.duration_since(started);
    assert!(passed >= SignedDuration::from_secs(120), "step 1 left after {passed:?}");
    let msg =
        w.events.iter().find(|e| e.reason == EventReason::StepPassed).expect("step passed").note.clone();
    assert!(msg.contains("dry run: held 2m"), "{msg}");
}
