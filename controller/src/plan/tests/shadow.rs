//! A shadow step: requests copied to the canary before any user request reaches it.

use rollgate_crds::rollout::Mirror;

use super::*;

fn deployed_with_shadow() -> World {
    let mut w = World::new(RolloutSpec::test().with_shadow(20, Mirror::TraefikService));
    let healthy = judge(0, 50);
    w.run_until(5, &healthy, |w| w.status.phase == Some(Phase::Promoted));
    w
}

#[test]
fn a_healthy_canary_is_judged_on_copies_first_then_stepped_as_usual() {
    let mut w = deployed_with_shadow();
    w.new_version("v2");
    let healthy = judge(0, 50);
    let mut seen = Vec::new();
    for _ in 0..200 {
        w.step(&healthy);
        let now = (w.router_weight.unwrap_or(0), w.router_mirror);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        if w.status.phase == Some(Phase::Promoted) {
            break;
        }
    }
    // (weight, mirrored): copies alone, then weights with no copies, then back to stable.
    assert_eq!(seen, [(0, 0), (0, 20), (1, 0), (5, 0), (100, 0), (0, 0)]);
    let first = w.status.history.iter().find(|d| d.action == "StepUp").expect("a step");
    assert_eq!(first.weight, 0);
    assert!(
        first.reason.contains("20% of requests copied to the canary") && first.reason.contains("shadow"),
        "{}",
        first.reason
    );
    assert_eq!(w.status.stable_revision, Some(w.revision()));
}

#[test]
fn a_faulty_canary_is_rolled_back_in_the_shadow_step_without_a_users_request() {
    let mut w = deployed_with_shadow();
    w.new_version("v2-bad");
    let faulty = judge(100, 50);
    let mut weights = Vec::new();
    for _ in 0..60 {
        w.step(&faulty);
        weights.push(w.router_weight.unwrap_or(0));
        if w.status.phase == Some(Phase::RolledBack) {
            break;
        }
    }
    assert_eq!(w.status.phase, Some(Phase::RolledBack));
    assert!(weights.iter().all(|x| *x == 0), "no user request ever went to it: {weights:?}");
    assert_eq!(w.router_mirror, 0, "copies stop with the rollback");
    assert_eq!(w.status.current_step, Some(0));
    assert!(w.status.message.as_deref().is_some_and(|m| m.contains("error-rate")), "{:?}", w.status.message);
    w.run_until(10, &faulty, |w| w.canary.as_ref().is_some_and(|c| c.replicas == 0));
}

#[test]
fn the_step_clock_starts_only_once_the_copies_are_applied() {
    let mut w = deployed_with_shadow();
    w.new_version("v2");
    let healthy = judge(0, 50);
    w.run_until(20, &healthy, |w| {
        w.status.message.as_deref().is_some_and(|m| m.starts_with("applying: 20%"))
    });
    assert!(w.status.step_started_at.is_none());
    assert_eq!(w.router_mirror, 20, "the world applied it after that pass");
    w.step(&healthy);
    assert!(w.status.step_started_at.is_some());
}
