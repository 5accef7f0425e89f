//! A crash at every write of a step-up, a promotion and a rollback: the next controller
//! resumes forward. Each step is recorded once, weights never go back, and a rolled-back
//! canary never gets traffic again.

use super::*;

/// Runs passes with a controller that crashes once `k` more writes have landed, then with a
/// new controller until `done`; returns whether the crash point was reached.
async fn crash_then_resume(h: &Harness, k: usize, done: impl Fn(&Harness) -> bool) -> bool {
    h.fake.crash_after(Some(k));
    let first = h.controller();
    let mut crashed = false;
    for _ in 0..40 {
        if done(h) {
            break;
        }
        if h.pass(&first, 20).await.is_err() || h.fake.writes() >= k {
            crashed = h.fake.writes() >= k;
            break;
        }
    }
    h.fake.crash_after(None);
    let second = h.controller();
    for _ in 0..60 {
        if done(h) {
            return crashed;
        }
        // Errors are retried, as the controller's backoff would.
        let _ = h.pass(&second, 20).await;
    }
    assert!(done(h), "k={k}: not done after the restart: {:#?}", h.status());
    crashed
}

fn promoted(h: &Harness) -> bool {
    let st = h.status();
    st.phase == Some(Phase::Promoted)
        && st.stable_revision == st.canary_revision
        && h.fake.get(DEPLOY_CANARY).is_none()
}

/// Each weight once, increasing; a final return to 0 only at the end.
fn assert_forward(k: usize, weights: &[i64]) {
    let mut distinct = weights.to_vec();
    distinct.dedup();
    let rising = match distinct.split_last() {
        Some((0, rest)) => rest,
        _ => &distinct[..],
    };
    assert!(rising.windows(2).all(|w| w[0] < w[1]), "k={k}: weights went back: {weights:?}");
}

#[tokio::test]
async fn a_crash_at_any_write_of_a_step_up_or_a_promotion_resumes_forward() {
    // Without a crash: how many writes the whole rollout takes.
    let (h, _, _) = Harness::mid_rollout(0, 600, 0.0, 50_000.0);
    crash_then_resume(&h, usize::MAX, promoted).await;
    let total = h.fake.writes();
    assert_eq!(h.route_weights(), [5, 100, 0]);
    assert!(total >= 6, "{total} writes");

    for k in 0..total {
        let (h, _, _) = Harness::mid_rollout(0, 600, 0.0, 50_000.0);
        let reached = crash_then_resume(&h, k, promoted).await;
        assert!(reached, "k={k}: the crash point was not reached");
        let weights = h.route_weights();
        assert_forward(k, &weights);
        assert_eq!(weights.last(), Some(&0), "k={k}: traffic back on the promoted stable: {weights:?}");
        let st = h.status();
        let step_ups: Vec<i32> =
            st.history.iter().filter(|d| d.action == "StepUp").map(|d| d.weight).collect();
        assert_eq!(step_ups, [5, 100], "k={k}: each step recorded once: {:?}", st.history);
        let promotions = st.history.iter().filter(|d| d.action == "Promote").count();
        assert_eq!(promotions, 1, "k={k}: {:?}", st.history);
        assert!(h.fake.get(DEPLOY_CANARY).is_none(), "k={k}: the canary is removed");
    }
}

fn drained(h: &Harness) -> bool {
    let canary_down = h.fake.get(DEPLOY_CANARY).is_some_and(|d| d["spec"]["replicas"] == 0);
    h.status().phase == Some(Phase::RolledBack) && canary_down
}

#[tokio::test]
async fn a_crash_at_any_write_of_a_rollback_never_sends_traffic_back_to_the_canary() {
    let (h, _, _) = Harness::mid_rollout(1, 60, 60.0, 600.0);
    crash_then_resume(&h, usize::MAX, drained).await;
    let total = h.fake.writes();
    assert_eq!(h.route_weights(), [0]);

    for k in 0..total {
        let (h, _, _) = Harness::mid_rollout(1, 60, 60.0, 600.0);
        let reached = crash_then_resume(&h, k, drained).await;
        assert!(reached, "k={k}: the crash point was not reached");
        let weights = h.route_weights();
        assert!(weights.iter().all(|w| *w == 0), "k={k}: the canary got traffic again: {weights:?}");
        let st = h.status();
        let rollbacks = st.history.iter().filter(|d| d.action == "Rollback").count();
        assert_eq!(rollbacks, 1, "k={k}: recorded once: {:?}", st.history);
        assert_eq!(st.verdict, Some(Verdict::Fail));
    }
}
