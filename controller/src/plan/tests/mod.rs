//! The step state machine, driven through whole rollouts against a simulated world in which
//! Deployments become available and the router applies weights when told to.

use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use rollgate_crds::gate::InconclusivePolicy;
use rollgate_crds::rollout::{CheckResult, Phase, Verdict};
use rollgate_crds::{RolloutSpec, RolloutStatus};

use super::*;
use crate::fixtures::RolloutSpecExt;
use rollgate_crds::conditions as cond;
use rollgate_gate::{
    CheckEvidence, CheckSpec, Counts, ErrorRates, Evaluation, Missing, Policy, StepClock, evaluate,
};

mod dry_run;
mod shadow;

/// The cluster as the planner sees it, converging instantly on request.
struct World {
    spec: RolloutSpec,
    status: RolloutStatus,
    now: Timestamp,
    stable: Option<DeploymentState>,
    canary: Option<DeploymentState>,
    /// Revision the stable Deployment runs (its template).
    router_weight: Option<i32>,
    router_mirror: i32,
    actions: Actions,
    /// Canary becomes available when asked (false: it never does).
    canary_starts: bool,
    /// A canary pod that cannot run, as the reconciler would report it.
    canary_stuck: Option<String>,
    /// Stable becomes available when asked (false: a first version that never does).
    stable_starts: bool,
    /// Passes for which a Deployment that just became available is not yet a ready endpoint
    /// of its Service (the EndpointSlice controller lags the Deployment's status).
    endpoints_lag: usize,
    events: Vec<Event>,
    /// The current step's `minHealthy` and `policy.dryRun`, as the reconciler reads them.
    min_healthy: Duration,
    dry_run: bool,
    gate_interval: Duration,
}

impl World {
    fn new(spec: RolloutSpec) -> Self {
        Self {
            spec,
            status: RolloutStatus::default(),
            now: Timestamp::from_second(1_800_000_000).expect("time"),
            stable: None,
            canary: None,
            router_weight: None,
            router_mirror: 0,
            actions: Actions::default(),
            canary_starts: true,
            canary_stuck: None,
            stable_starts: true,
            endpoints_lag: 0,
            events: Vec::new(),
            min_healthy: Duration::from_secs(30),
            dry_run: false,
            gate_interval: Duration::from_secs(10),
        }
    }

    fn revision(&self) -> String {
        revision_of(&self.spec.template)
    }

    fn observed(&self) -> Observed<'_> {
        Observed {
            now: self.now,
            generation: Some(1),
            spec: &self.spec,
            status: self.status.clone(),
            revision: self.revision(),
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            router_weight: self.router_weight,
            router_mirror: self.router_mirror,
            actions: self.actions.clone(),
            spec_problem: None,
            gate_interval: self.gate_interval,
            min_healthy: self.min_healthy,
            dry_run: self.dry_run,
        }
    }

    /// One reconcile: plan (evaluating with `judge` when asked), then let the cluster converge.
    fn step(&mut self, judge: &dyn Fn(Duration) -> Evaluation) -> Plan {
        let mut o = self.observed();
        // The reconciler reads the endpoints the planner asks for.
        let wanted = endpoints_wanted(&o);
        let lagging = self.endpoints_lag > 0 && (wanted.stable || wanted.canary);
        for (want, state) in [(wanted.stable, o.stable.as_mut()), (wanted.canary, o.canary.as_mut())] {
            if let (true, Some(s)) = (want, state) {
                s.ready_endpoints = Some(if lagging { 0 } else { s.replicas });
            }
        }
        let eval = evaluation_window(&o).map(judge);
        let plan = plan(&o, eval.as_ref());
        // Same input, same plan: reconciling is idempotent.
        assert_eq!(plan, super::plan(&o, eval.as_ref()));
        let rev = self.revision();
        match &plan.stable {
            StableIntent::Adopt { replicas } => {
                self.stable = Some(DeploymentState {
                    revision: Some(rev.clone()),
                    replicas: *replicas,
                    available: self.stable_starts,
                    problem: (!self.stable_starts).then(|| "exceeded quota: pods=0".to_string()),
                    stuck: None,
                    ready_endpoints: None,
                })
            }
            StableIntent::Keep { replicas } => {
                if let Some(s) = &mut self.stable {
                    s.replicas = *replicas;
                }
            }
        }
        match &plan.canary {
            CanaryIntent::Absent => self.canary = None,
            CanaryIntent::Present { replicas } => {
                self.canary = Some(DeploymentState {
                    revision: Some(rev),
                    replicas: *replicas,
                    available: self.canary_starts,
                    problem: None,
                    stuck: self.canary_stuck.clone(),
                    ready_endpoints: None,
                })
            }
            CanaryIntent::Keep => {}
            CanaryIntent::ScaledDown => {
                if let Some(c) = &mut self.canary {
                    c.replicas = 0;
                }
            }
        }
        if let Some(w) = plan.weight {
            self.router_weight = Some(w);
        }
        if let Some(m) = plan.mirror {
            self.router_mirror = m;
        }
        self.status = plan.status.clone();
        self.events.extend(plan.events.clone());
        self.actions = Actions::default();
        self.now += SignedDuration::try_from(plan.requeue).expect("duration");
        if lagging {
            self.endpoints_lag -= 1;
        }
        plan
    }

    /// Reconciles until `done` holds, at most `n` times.
    fn run_until(&mut self, n: usize, judge: &dyn Fn(Duration) -> Evaluation, done: impl Fn(&World) -> bool) {
        for _ in 0..n {
            if done(self) {
                return;
            }
            self.step(judge);
        }
        assert!(done(self), "not done after {n} reconciles: {:#?}", self.status);
    }

    fn new_version(&mut self, image: &str) {
        self.spec.template = RolloutSpec::test().with_image(image).template;
    }
}

const RATES: ErrorRates = ErrorRates { false_rollback: 0.01, missed_detection: 0.01 };

const POLICY: Policy = Policy {
    rates: RATES,
    on_inconclusive: InconclusivePolicy::Pause,
    compare_with_stable: true,
    exposure_scaling: 1.0,
};

/// A step `window` old, 30 s of `minHealthy`, `max_hold_s` of `maxHold`, before promotion.
fn clock(window: Duration, max_hold_s: u64) -> StepClock {
    StepClock {
        elapsed: window,
        min_healthy: Duration::from_secs(30),
        max_hold: Duration::from_secs(max_hold_s),
        next_weight: 100.0,
    }
}

/// A judge that sees `rate` errors per second over a window at `rps` requests per second.
fn judge(bad_per_mille: u64, rps: u64) -> impl Fn(Duration) -> Evaluation {
    move |window: Duration| {
        let total = window.as_secs() * rps;
        let evidence = vec![CheckEvidence {
            spec: CheckSpec {
                name: "error-rate".into(),
                budget: 0.01,
                tolerance: 10.0,
                unit: rollgate_gate::Unit::Requests,
                source: None,
            },
            canary: Ok(Counts { bad: total * bad_per_mille / 1000, total }),
            stable: Some(Counts { bad: 0, total: total * 10 }),
            carried: Counts::ZERO,
            slower: Vec::new(),
        }];
        evaluate(&evidence, clock(window, 600), POLICY)
    }
}

/// One check whose canary evidence is `canary`, judged over `window`.
fn single(name: &str, canary: Result<Counts, Missing>, window: Duration) -> Evaluation {
    evaluate(
        &[CheckEvidence {
            spec: CheckSpec {
                name: name.into(),
                budget: 0.01,
                tolerance: 10.0,
                unit: rollgate_gate::Unit::Requests,
                source: None,
            },
            canary,
            stable: None,
            carried: Counts::ZERO,
            slower: Vec::new(),
        }],
        clock(window, 600),
        POLICY,
    )
}

fn metrics_down(window: Duration) -> Evaluation {
    single("error-rate", Err(Missing::Unavailable("connection refused".into())), window)
}

fn latency_not_a_bucket(window: Duration) -> Evaluation {
    single("latency", Err(Missing::Misconfigured("0.25 s is not a bucket boundary".into())), window)
}

fn deployed() -> World {
    let mut w = World::new(RolloutSpec::test());
    let healthy = judge(0, 50);
    w.run_until(5, &healthy, |w| w.status.phase == Some(Phase::Promoted));
    w
}

#[test]
fn a_first_rollout_becomes_stable_directly() {
    let mut w = World::new(RolloutSpec::test());
    let p = w.step(&judge(0, 50));
    assert_eq!(p.stable, StableIntent::Adopt { replicas: 2 });
    assert_eq!(p.canary, CanaryIntent::Absent);
    assert_eq!(p.weight, Some(0));
    assert_eq!(p.status.phase, Some(Phase::Progressing));
    w.step(&judge(0, 50));
    assert_eq!(w.status.phase, Some(Phase::Promoted));
    assert_eq!(w.status.verdict, Some(Verdict::Pass));
    assert_eq!(w.status.stable_revision, Some(w.revision()));
    assert!(w.status.history.iter().all(|d| d.action != "Rollback"));
}

#[test]
fn a_healthy_canary_is_stepped_through_every_weight_and_promoted() {
    let mut w = deployed();
    let old = w.revision();
    w.new_version("v2");
    let healthy = judge(0, 50);
    let mut weights = Vec::new();
    for _ in 0..100 {
        let p = w.step(&healthy);
        if let Some(x) = p.weight
            && weights.last() != Some(&x)
        {
            weights.push(x);
        }
        if w.status.phase == Some(Phase::Promoted) {
            break;
        }
    }
    assert_eq!(weights, [0, 1, 5, 100, 0], "weights applied in order, then back to stable");
    assert_eq!(w.status.verdict, Some(Verdict::Pass));
    assert_eq!(w.status.stable_revision, Some(w.revision()));
    assert_ne!(w.revision(), old);
    assert!(w.canary.is_none(), "the canary is removed");
    let actions: Vec<&str> = w.status.history.iter().map(|d| d.action.as_str()).collect();
    assert_eq!(actions, ["Promote", "Start", "StepUp", "StepUp", "StepUp", "PromoteStart", "Promote"]);
    assert!(w.status.checks.iter().all(|c| c.result == CheckResult::Pass));
}

#[test]
fn a_last_step_below_100_promotes_while_stable_serves_its_share_until_it_runs_the_canary() {
    let mut w = World::new(RolloutSpec::test().with_replicas(4).with_steps(&[1, 5, 50]));
    let healthy = judge(0, 50);
    w.run_until(5, &healthy, |w| w.status.phase == Some(Phase::Promoted));
    w.new_version("v2");
    w.stable_starts = false;
    // Stepped to 50 %, judged there, passed: stable takes the template at full size while the
    // canary keeps its 50 %, since stable does not yet run the canary's revision.
    let mut p = w.step(&healthy);
    for _ in 0..100 {
        if w.status.current_step == Some(3) {
            break;
        }
        p = w.step(&healthy);
    }
    assert_eq!(w.status.current_step, Some(3), "{:?}", w.status.message);
    assert_eq!(p.stable, StableIntent::Adopt { replicas: 4 }, "{p:?}");
    assert_eq!(p.weight, Some(50), "stable is not running the new revision yet: {p:?}");
    for _ in 0..3 {
        let p = w.step(&healthy);
        assert_eq!(p.weight, Some(50), "{:?}", w.status.message);
        assert_eq!(w.status.phase, Some(Phase::Progressing));
    }
    w.stable_starts = true;
    let mut weights = Vec::new();
    for _ in 0..20 {
        let p = w.step(&healthy);
        weights.extend(p.weight.filter(|x| weights.last() != Some(x)));
        if w.status.phase == Some(Phase::Promoted) {
            break;
        }
    }
    assert_eq!(weights.first(), Some(&50), "{weights:?}");
    assert_eq!(weights.last(), Some(&0), "traffic returns to stable, which runs v2: {weights:?}");
    assert_eq!(w.status.phase, Some(Phase::Promoted));
    assert_eq!(w.status.stable_revision, Some(w.revision()));
    assert!(w.canary.is_none(), "the canary is removed");
    let ups: Vec<i32> =
        w.status.history.iter().filter(|d| d.action.as_str() == "StepUp").map(|d| d.weight).collect();
    assert_eq!(ups, [1, 5, 50], "{:?}", w.status.history);
}

#[test]
fn a_passed_step_says_what_the_next_one_needs_until_that_step_is_evaluated() {
    use rollgate_gate::forecast::{Holds, Weights, next_step};
    let mut w = deployed();
    w.new_version("v2");
    let forecasting = |window: Duration| {
        let mut eval = judge(0, 50)(window);
        let spec = CheckSpec {
            name: "error-rate".into(),
            budget: 0.01,
            tolerance: 10.0,
            unit: rollgate_gate::Unit::Requests,
            source: None,
        };
        let weights = Weights { now: 1.0, next: 5.0, after: 100.0 };
        let holds = Holds { min_healthy: Duration::from_secs(30), max_hold: Duration::from_secs(600) };
        eval.next_step = Some(next_step(&eval, &[spec], POLICY, weights, holds));
        eval
    };
    w.run_until(100, &forecasting, |w| w.status.current_step == Some(1));
    let f = w.status.forecast.clone().expect("a forecast for step 2");
    assert_eq!(f.step, 1);
    assert_eq!(f.checks.len(), 1, "{f:?}");
    assert!(f.estimated_seconds.is_some_and(|s| s >= 30), "at least minHealthy: {f:?}");
    assert!(f.message.starts_with("at 5 %: error-rate needs about"), "{}", f.message);
    let passed = w.status.message.clone().unwrap_or_default();
    assert!(passed.contains("raising weight to 5%; next at 5 %"), "{passed}");
    // Applied, not yet evaluated: the message carries the forecast.
    w.run_until(10, &forecasting, |w| w.status.step_started_at.is_some());
    let waiting = w.status.message.clone().unwrap_or_default();
    assert!(waiting.contains("evaluating (forecast at 5 %"), "{waiting}");
    // A rollback forgets it.
    w.run_until(100, &judge(500, 50), |w| w.status.phase == Some(Phase::RolledBack));
    assert_eq!(w.status.forecast, None);
}

#[test]
fn each_passed_step_carries_its_events_to_the_next_and_a_new_version_starts_from_none() {
    let mut w = deployed();
    w.new_version("v2");
    let healthy = judge(0, 50);
    // At each step passed: (events carried, events the passing evaluation counted).
    let mut passed = Vec::new();
    for _ in 0..100 {
        let step = w.status.current_step;
        w.step(&healthy);
        if step.is_some() && w.status.current_step != step && w.status.phase == Some(Phase::Progressing) {
            let carried = w.status.carried.first().map_or(0, |c| c.total);
            passed.push((carried, w.status.checks[0].total));
        }
        if w.status.phase == Some(Phase::Promoted) {
            break;
        }
    }
    assert_eq!(passed.len(), 3, "every step passed: {passed:?}");
    assert!(passed[0].1 > 0 && passed[0].0 == passed[0].1, "{passed:?}");
    for pair in passed.windows(2) {
        assert_eq!(pair[1].0, pair[0].0 + pair[1].1, "each step's events are added: {passed:?}");
    }
    assert!(w.status.carried.is_empty(), "promotion forgets them: {:?}", w.status.carried);
    let c = rollgate_crds::rollout::CarriedEvidence {
        check: "error-rate".into(),
        threshold: 0.01,
        bad: 0,
        total: 5,
    };
    w.status.carried.push(c);
    w.new_version("v3");
    w.step(&healthy);
    assert!(w.status.carried.is_empty(), "a new version starts from nothing");
}

#[test]
fn traffic_moves_only_to_pods_that_are_ready_endpoints() {
    let mut w = deployed();
    w.new_version("v2");
    // The simulated clock jumps a whole requeue (10 min) while the canary starts.
    w.spec.progress_deadline = Duration::from_secs(3600).into();
    let healthy = judge(0, 50);
    // The canary is available; its Service has no ready endpoint for two passes.
    w.run_until(5, &healthy, |w| w.canary.as_ref().is_some_and(|c| c.available));
    w.endpoints_lag = 2;
    for _ in 0..2 {
        let p = w.step(&healthy);
        assert_eq!(w.router_weight, Some(0), "no weight before the gateway can route to the canary");
        assert_eq!(p.requeue, WAIT_FOR_ENDPOINTS);
        let msg = p.status.message.unwrap_or_default();
        assert!(msg.contains("0 of 2 pods are ready endpoints of its Service yet"), "{msg}");
    }
    w.step(&healthy);
    assert_eq!(w.router_weight, Some(1), "the first step once the endpoints are ready");
    // At promotion, traffic returns to stable only once its new pods are ready endpoints.
    w.run_until(100, &healthy, |w| {
        w.status.message.as_deref().is_some_and(|m| m.contains("waiting for stable"))
    });
    w.endpoints_lag = 1;
    let p = w.step(&healthy);
    assert_eq!(w.router_weight, Some(100), "the canary keeps the traffic");
    assert!(p.status.message.unwrap_or_default().contains("0 of 2 pods are ready endpoints"));
    w.run_until(10, &healthy, |w| w.status.phase == Some(Phase::Promoted));
    assert_eq!(w.router_weight, Some(0));
}

#[test]
fn endpoints_are_read_only_just_before_traffic_moves() {
    let mut w = deployed();
    assert_eq!(endpoints_wanted(&w.observed()), EndpointsWanted::default(), "steady");
    w.new_version("v2");
    let healthy = judge(0, 50);
    let mut wanted = Vec::new();
    for _ in 0..100 {
        let o = w.observed();
        let e = endpoints_wanted(&o);
        if e != EndpointsWanted::default() {
            wanted.push((e, o.router_weight));
        }
        w.step(&healthy);
        if w.status.phase == Some(Phase::Promoted) {
            break;
        }
    }
    let canary = EndpointsWanted { stable: false, canary: true };
    let stable = EndpointsWanted { stable: true, canary: false };
    assert_eq!(wanted, [(canary, Some(0)), (stable, Some(100))], "once each, at weight 0 and at 100");
    // A replica-ratio router needs neither: its one Service takes a pod once it is ready.
    let mut w = World::new(RolloutSpec::test().with_replica_ratio());
    w.run_until(5, &healthy, |w| w.status.phase == Some(Phase::Promoted));
    w.new_version("v2");
    for _ in 0..100 {
        assert_eq!(endpoints_wanted(&w.observed()), EndpointsWanted::default());
        w.step(&healthy);
        if w.status.phase == Some(Phase::Promoted) {
            break;
        }
    }
    assert_eq!(w.status.phase, Some(Phase::Promoted));
}

#[test]
fn a_failing_canary_is_rolled_back_at_the_first_step() {
    let mut w = deployed();
    w.new_version("v2-bad");
    w.run_until(30, &judge(100, 50), |w| w.status.phase == Some(Phase::RolledBack));
    assert_eq!(w.status.verdict, Some(Verdict::Fail));
    assert_eq!(w.router_weight, Some(0), "traffic back to stable at once");
    assert!(w.canary.is_some(), "the canary drains before it is removed");
    let msg = w.status.message.clone().unwrap_or_default();
    assert!(msg.contains("error-rate") && msg.contains("bad"), "{msg}");
    assert!(w.events.iter().any(|e| e.warning && e.reason == "RolledBack"));
    let rolled_back = w.status.conditions.iter().find(|c| c.type_ == "RolledBack").expect("condition");
    assert_eq!((rolled_back.status.as_str(), rolled_back.reason.as_str()), ("True", "GateFailed"));
    // After the drain delay the canary is scaled to zero; the verdict stays.
    w.run_until(10, &judge(100, 50), |w| w.canary.as_ref().is_some_and(|c| c.replicas == 0));
    assert_eq!(w.status.verdict, Some(Verdict::Fail));
    assert_eq!(w.status.current_step, Some(0));
}

#[test]
fn a_restart_in_the_middle_of_every_step_resumes_the_same_rollout() {
    // The planner holds no state of its own: a restarted controller sees the same status and
    // plans the same thing. Interrupt at every reconcile by re-planning from a cloned status.
    let mut w = deployed();
    w.new_version("v2");
    let healthy = judge(0, 50);
    for _ in 0..100 {
        let before = w.status.clone();
        let o = w.observed();
        let eval = evaluation_window(&o).map(&healthy);
        let first = plan(&o, eval.as_ref());
        let mut restarted = w.observed();
        restarted.status = before;
        assert_eq!(plan(&restarted, eval.as_ref()), first);
        w.step(&healthy);
        if w.status.phase == Some(Phase::Promoted) {
            return;
        }
    }
    panic!("never promoted");
}

#[test]
fn a_new_template_mid_rollout_supersedes_the_canary() {
    let mut w = deployed();
    w.new_version("v2");
    let healthy = judge(0, 50);
    w.run_until(40, &healthy, |w| w.status.current_step == Some(1) && w.router_weight == Some(5));
    w.new_version("v3");
    let p = w.step(&healthy);
    assert_eq!(p.weight, Some(0), "the half-done canary gets no traffic");
    assert_eq!(p.status.current_step, Some(0));
    assert_eq!(p.status.canary_revision, Some(w.revision()));
    assert!(p.events.iter().any(|e| e.reason == "Superseded"));
    w.run_until(100, &healthy, |w| w.status.phase == Some(Phase::Promoted));
    assert_eq!(w.status.stable_revision, Some(w.revision()));
}

#[test]
fn no_data_holds_and_never_promotes() {
    let mut w = deployed();
    w.new_version("v2");
    let silent = judge(0, 0);
    for _ in 0..30 {
        w.step(&silent);
    }
    assert_eq!(w.status.phase, Some(Phase::Progressing));
    assert_eq!(w.router_weight, Some(1));
    assert!(w.status.checks.iter().all(|c| c.result == CheckResult::NoData));
    // Past maxHold the inconclusive policy (pause) applies.
    w.run_until(200, &silent, |w| w.status.phase == Some(Phase::Paused));
    assert_eq!(w.router_weight, Some(1), "paused at the current weight");
    assert_eq!(w.status.verdict, None);
}

#[test]
fn a_replica_ratio_canary_is_not_left_exposed_by_a_check_that_cannot_be_computed() {
    let mut w = World::new(RolloutSpec::test().with_replica_ratio().with_replicas(4));
    w.run_until(10, &judge(0, 50), |w| w.status.phase == Some(Phase::Promoted));
    w.new_version("v2");
    w.run_until(20, &latency_not_a_bucket, |w| w.status.phase == Some(Phase::RolledBack));
    let msg = w.status.message.clone().unwrap_or_default();
    assert!(msg.contains("latency cannot be computed") && msg.contains("fix the gate"), "{msg}");
    assert_eq!(w.status.canary_weight, 0);
    w.run_until(20, &latency_not_a_bucket, |w| w.canary.as_ref().is_some_and(|c| c.replicas == 0));
    assert_eq!(w.stable.as_ref().map(|s| s.replicas), Some(4), "stable takes every replica back");
}

#[test]
fn a_metrics_outage_holds_with_a_condition_and_the_rollout_continues_after() {
    let mut w = deployed();
    w.new_version("v2");
    let healthy = judge(0, 50);
    w.run_until(20, &healthy, |w| w.status.step_started_at.is_some());
    for _ in 0..10 {
        w.step(&metrics_down);
    }
    let c = w.status.conditions.iter().find(|c| c.type_ == "MetricsUnavailable").expect("condition");
    assert_eq!(c.status, "True");
    assert_eq!(w.status.current_step, Some(0), "nothing promoted while metrics are down");
    let held: Vec<_> = w.events.iter().filter(|e| e.reason == "Held").collect();
    assert_eq!(held.len(), 1, "one Event when the hold starts, not one per evaluation: {held:?}");
    assert!(held[0].warning && held[0].note.contains("metrics unavailable"), "{:?}", held[0]);
    w.run_until(100, &healthy, |w| w.status.phase == Some(Phase::Promoted));
    let c = w.status.conditions.iter().find(|c| c.type_ == "MetricsUnavailable").expect("condition");
    assert_eq!(c.status, "False");
}

#[test]
fn a_canary_that_never_becomes_available_is_rolled_back_after_the_deadline() {
    let mut w = deployed();
    w.new_version("v2-crashes");
    w.canary_starts = false;
    w.run_until(400, &judge(0, 50), |w| w.status.phase == Some(Phase::RolledBack));
    let msg = w.status.message.clone().unwrap_or_default();
    assert!(msg.contains("progressDeadline"), "{msg}");
    assert_eq!(w.status.verdict, Some(Verdict::Fail));
}

#[test]
fn a_canary_that_cannot_run_is_rolled_back_at_once_naming_the_pod() {
    let mut w = deployed();
    w.new_version("v2-bad-args");
    w.canary_starts = false;
    w.canary_stuck =
        Some("pod web-canary-1: container web: CrashLoopBackOff (2 restarts, last exit code 2)".into());
    // The first pass creates the canary; the next sees its pod crash-looping.
    w.run_until(3, &judge(0, 50), |w| w.status.phase == Some(Phase::RolledBack));
    let msg = w.status.message.clone().unwrap_or_default();
    assert!(
        msg.contains("the canary cannot run: pod web-canary-1: container web: CrashLoopBackOff"),
        "{msg}"
    );
    assert!(!msg.contains("progressDeadline"), "{msg}");
    assert_eq!(w.status.verdict, Some(Verdict::Fail));
    assert_eq!(w.router_weight.unwrap_or(0), 0, "no traffic ever went to it");
    assert!(
        w.events.iter().any(|e| e.warning && e.reason == "RolledBack" && e.note.contains("CrashLoopBackOff"))
    );
}

#[test]
fn a_superseded_canary_that_could_not_run_does_not_fail_the_next_version() {
    let mut w = deployed();
    w.new_version("v2-bad-args");
    w.canary_starts = false;
    w.canary_stuck = Some("pod web-canary-1: container web: CrashLoopBackOff (2 restarts)".into());
    w.run_until(3, &judge(0, 50), |w| w.status.phase == Some(Phase::RolledBack));
    // v3 is applied while the canary Deployment still has v2's template and crash-looping pod:
    // the observed canary is v2's until the Deployment is written.
    w.new_version("v3");
    let o = w.observed();
    assert_ne!(o.canary.as_ref().and_then(|c| c.revision.clone()), Some(o.revision.clone()));
    let p = plan(&o, None);
    assert_ne!(p.status.phase, Some(Phase::RolledBack), "{:?}", p.status.message);
    w.canary_stuck = None;
    w.canary_starts = true;
    w.run_until(400, &judge(0, 50), |w| w.status.phase == Some(Phase::Promoted));
}

#[test]
fn a_first_version_that_never_becomes_available_fails_after_the_deadline() {
    let mut w = World::new(RolloutSpec::test());
    w.stable_starts = false;
    w.run_until(400, &judge(0, 50), |w| w.status.phase == Some(Phase::Failed));
    let msg = w.status.message.clone().unwrap_or_default();
    assert!(
        msg.contains("not available within progressDeadline 10m") && msg.contains("exceeded quota"),
        "{msg}"
    );
    assert_eq!(w.status.verdict, Some(Verdict::Fail));
    let progressing = w.status.conditions.iter().find(|c| c.type_ == cond::PROGRESSING).expect("condition");
    assert_eq!(
        (progressing.status.as_str(), progressing.reason.as_str()),
        ("False", "ProgressDeadlineExceeded")
    );
    let fails = w.events.iter().filter(|e| e.reason == "ProgressDeadlineExceeded").count();
    w.step(&judge(0, 50));
    w.step(&judge(0, 50));
    assert_eq!(fails, 1, "one Event");
    assert_eq!(w.status.history.iter().filter(|d| d.action == "Fail").count(), 1, "recorded once");
    // The version becomes available later (the quota was raised): it is stable after all.
    w.stable.as_mut().expect("stable").available = true;
    w.step(&judge(0, 50));
    assert_eq!((w.status.phase, w.status.verdict), (Some(Phase::Promoted), Some(Verdict::Pass)));
}

#[test]
fn a_waiting_rollout_is_not_written_to_on_every_pass() {
    let mut spec = RolloutSpec::test();
    spec.progress_deadline = rollgate_crds::PositiveDuration::from(Duration::from_secs(7200));
    let mut w = World::new(spec.clone());
    w.stable_starts = false;
    w.step(&judge(0, 50));
    w.step(&judge(0, 50));
    let first = w.status.clone();
    w.now += SignedDuration::from_secs(7);
    w.step(&judge(0, 50));
    assert_eq!(w.status, first, "the same status: nothing to write, no watch event to wake it again");
    let mut w = deployed();
    w.spec.progress_deadline = spec.progress_deadline;
    w.new_version("v2-slow-start");
    w.canary_starts = false;
    w.step(&judge(0, 50));
    w.step(&judge(0, 50));
    let waiting = w.status.clone();
    w.now += SignedDuration::from_secs(7);
    w.step(&judge(0, 50));
    assert_eq!(w.status, waiting);
}

#[test]
fn spec_paused_holds_at_the_current_weight_and_resumes() {
    let mut w = deployed();
    w.spec.paused = true;
    w.new_version("v2");
    let healthy = judge(0, 50);
    for _ in 0..60 {
        w.step(&healthy);
    }
    assert_eq!(w.status.phase, Some(Phase::Paused));
    assert_eq!(w.router_weight, Some(1));
    w.spec.paused = false;
    w.run_until(100, &healthy, |w| w.status.phase == Some(Phase::Promoted));
}

#[test]
fn actions_promote_abort_and_retry() {
    let mut w = deployed();
    w.new_version("v2");
    let silent = judge(0, 0);
    w.run_until(20, &silent, |w| w.status.step_started_at.is_some());
    w.actions.promote = Some(("t1".into(), false));
    w.step(&silent);
    assert_eq!(w.status.current_step, Some(1));
    assert_eq!(w.status.handled_actions.as_ref().and_then(|h| h.promote.clone()), Some("t1".into()));
    w.actions.abort = Some("t2".into());
    w.step(&silent);
    assert_eq!(w.status.phase, Some(Phase::RolledBack));
    assert!(w.status.message.as_deref().is_some_and(|m| m.contains("aborted")));
    w.actions.retry = Some("t3".into());
    w.step(&silent);
    assert_eq!(w.status.phase, Some(Phase::Progressing));
    assert_eq!(w.status.current_step, Some(0));
    w.run_until(20, &silent, |w| w.status.step_started_at.is_some());
    w.actions.promote = Some(("t4".into(), true));
    w.run_until(20, &silent, |w| w.status.phase == Some(Phase::Promoted));
}

#[test]
fn actions_that_make_no_sense_now_are_marked_handled_not_kept_for_later() {
    // A promote while nothing is rolling out would otherwise promote the next canary at once.
    let mut w = deployed();
    w.actions.promote = Some(("early".into(), true));
    w.step(&judge(0, 0));
    assert_eq!(w.status.handled_actions.as_ref().and_then(|h| h.promote.clone()), Some("early".into()));
    assert!(w.events.iter().any(|e| e.reason == "ActionIgnored" && e.warning && e.note.contains("promote")));
    // A retry during a rollout would otherwise retry a later rollback at once.
    w.new_version("v2");
    w.run_until(20, &judge(0, 0), |w| w.status.step_started_at.is_some());
    w.actions.retry = Some("early-retry".into());
    w.step(&judge(0, 0));
    assert_eq!(w.status.handled_actions.as_ref().and_then(|h| h.retry.clone()), Some("early-retry".into()));
    assert_eq!(w.status.phase, Some(Phase::Progressing));
}

#[test]
fn an_invalid_spec_is_reported_and_touches_nothing() {
    let w = deployed();
    let mut o = w.observed();
    o.spec_problem = Some(SpecProblem::invalid("gateRef: ReleaseGate \"missing\" not found"));
    let p = plan(&o, None);
    assert_eq!(p.status.phase, Some(Phase::Failed));
    assert_eq!(p.weight, None);
    assert_eq!(p.canary, CanaryIntent::Keep);
    let c = p.status.conditions.iter().find(|c| c.type_ == "InvalidSpec").expect("condition");
    assert_eq!(c.status, "True");
}

#[test]
fn unchanged_status_keeps_condition_timestamps() {
    let mut w = deployed();
    let before = w.status.clone();
    w.now += SignedDuration::from_secs(3600);
    let p = plan(&w.observed(), None);
    assert_eq!(p.status, before, "a steady rollout writes nothing new");
}

#[test]
fn replica_ratio_splits_replicas() {
    let spec = RolloutSpec::test().with_replica_ratio().with_replicas(10);
    assert_eq!(replica_split(&spec, 0), (10, 0));
    assert_eq!(replica_split(&spec, 1), (9, 1));
    assert_eq!(replica_split(&spec, 5), (9, 1));
    assert_eq!(replica_split(&spec, 50), (5, 5));
    assert_eq!(replica_split(&spec, 100), (0, 10));
    let small = RolloutSpec::test().with_replica_ratio().with_replicas(1);
    assert_eq!(replica_split(&small, 5), (1, 1), "stable keeps one pod until the last step");
    let gw = RolloutSpec::test().with_replicas(3);
    assert_eq!(replica_split(&gw, 5), (3, 3));
}

#[test]
fn revisions_are_stable_and_change_with_the_template() {
    let a = RolloutSpec::test().with_image("v1");
    let b = RolloutSpec::test().with_image("v2");
    assert_eq!(revision_of(&a.template), revision_of(&a.clone().template));
    assert_ne!(revision_of(&a.template), revision_of(&b.template));
    assert_eq!(revision_of(&a.template).len(), 10);
}

#[test]
fn the_gate_is_evaluated_once_per_interval_so_status_writes_do_not_storm() {
    let mut w = deployed();
    w.new_version("v2");
    let healthy = judge(0, 50);
    w.run_until(20, &healthy, |w| w.status.last_evaluated_at.is_some());
    // The status write that follows an evaluation triggers another reconcile at once: it must
    // not evaluate again, nor change the status.
    let mut o = w.observed();
    o.now =
        w.status.last_evaluated_at.as_ref().map(|t| t.0).expect("evaluated") + SignedDuration::from_secs(1);
    assert_eq!(evaluation_window(&o), None);
    let p = plan(&o, None);
    assert_eq!(p.status, w.status);
    assert!(p.requeue <= Duration::from_secs(10));
}

/// An evaluation in which the canary answered `canary` requests and stable `stable`, none bad.
fn split_judge(canary: u64, stable: u64) -> impl Fn(Duration) -> Evaluation {
    move |window: Duration| {
        let spec = CheckSpec {
            name: "error-rate".into(),
            budget: 0.01,
            tolerance: 10.0,
            unit: rollgate_gate::Unit::Requests,
            source: None,
        };
        evaluate(
            &[CheckEvidence {
                spec,
                canary: Ok(Counts { bad: 0, total: canary }),
                stable: Some(Counts { bad: 0, total: stable }),
                carried: Counts::ZERO,
                slower: Vec::new(),
            }],
            StepClock {
                elapsed: window,
                min_healthy: Duration::from_secs(600),
                max_hold: Duration::from_secs(3600),
                next_weight: 100.0,
            },
            POLICY,
        )
    }
}

fn split_condition(w: &World) -> Option<(String, String, String)> {
    let c = w.status.conditions.iter().find(|c| c.type_ == cond::TRAFFIC_SPLIT_DIVERGED)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[test]
fn a_split_far_from_the_weight_is_reported_once_and_cleared_when_it_matches() {
    let mut w = deployed();
    assert_eq!(split_condition(&w), None, "no split judged for a first deploy");
    w.new_version("v2");
    // At weight 1 % the canary answered none of 4 000 requests: about 40 were due.
    let starved = split_judge(0, 4000);
    w.run_until(20, &starved, |w| split_condition(w).is_some_and(|c| c.0 == "True"));
    let (_, reason, message) = split_condition(&w).expect("condition");
    assert_eq!(reason, cond::reason::SPLIT_DIVERGED);
    assert_eq!(
        message,
        "the canary answered 0 of 4000 requests (0 %) at weight 1 %, where about 40 were due"
    );
    assert_eq!(w.status.canary_weight, 1);
    for _ in 0..5 {
        w.step(&starved);
    }
    let warnings: Vec<_> =
        w.events.iter().filter(|e| e.reason == EventReason::TrafficSplitDiverged).collect();
    assert_eq!(warnings.len(), 1, "one Event per divergence: {warnings:?}");
    assert!(warnings[0].warning && warnings[0].note.contains("does not split traffic as the route asks"));
    // The data plane catches up: 38 of 4 000 is what chance gives at 1 %.
    w.step(&split_judge(38, 3962));
    w.step(&split_judge(38, 3962));
    let (status, reason, _) = split_condition(&w).expect("condition");
    assert_eq!((status.as_str(), reason.as_str()), ("False", cond::reason::SPLIT_MATCHES));
    // A new canary starts with no judgement carried over as True.
    w.new_version("v3");
    w.step(&split_judge(0, 0));
    assert_ne!(split_condition(&w).map(|c| c.0), Some("True".into()));
}

#[test]
fn a_split_is_not_judged_before_the_gateway_can_have_applied_the_weight() {
    let mut w = deployed();
    w.gate_interval = Duration::from_secs(2);
    w.new_version("v2");
    let starved = split_judge(0, 4000);
    w.run_until(20, &starved, |w| w.status.last_evaluated_at.is_some());
    let mut judged_at = None;
    for _ in 0..20 {
        // The planner's clock for this reconcile (the world moves on by the requeue after it).
        let at = w.now;
        w.step(&starved);
        if split_condition(&w).is_some_and(|c| c.0 == "True") {
            judged_at = w.status.step_started_at.as_ref().map(|t| elapsed(t, at));
            break;
        }
    }
    let age = judged_at.expect("reported once the step had settled");
    assert!(age >= rollgate_gate::split::SETTLE, "reported {age:?} into the step");
}
