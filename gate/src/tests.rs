//! Table-driven tests of the gate's decisions.

use std::time::Duration;

use crate::*;

const RATES: ErrorRates = ErrorRates { false_rollback: 0.01, missed_detection: 0.01 };

fn policy(on_inconclusive: InconclusivePolicy) -> Policy {
    Policy { rates: RATES, on_inconclusive, compare_with_stable: true, exposure_scaling: 1.0 }
}

fn clock(elapsed_s: u64) -> StepClock {
    StepClock {
        elapsed: Duration::from_secs(elapsed_s),
        min_healthy: Duration::from_secs(180),
        max_hold: Duration::from_secs(1800),
        next_weight: 100.0,
    }
}

/// A check counting requests.
fn requests(name: &str, budget: f64, tolerance: f64) -> CheckSpec {
    CheckSpec { name: name.into(), budget, tolerance, unit: Unit::Requests, source: None }
}

fn evidence(spec: CheckSpec, canary: Result<Counts, Missing>) -> CheckEvidence {
    CheckEvidence { spec, canary, stable: None, carried: Counts::ZERO, slower: Vec::new() }
}

fn errors(bad: u64, total: u64) -> CheckEvidence {
    evidence(requests("error-rate", 0.0002, 10.0), Ok(Counts { bad, total }))
}

fn slow(bad: u64, total: u64) -> CheckEvidence {
    evidence(requests("latency", 0.05, 3.0), Ok(Counts { bad, total }))
}

fn with_stable(mut e: CheckEvidence, bad: u64, total: u64) -> CheckEvidence {
    e.stable = Some(Counts { bad, total });
    e
}

/// Both versions' events slower than each boundary `(seconds, canary, stable)`.
fn with_histogram(mut e: CheckEvidence, slower: &[(f64, u64, u64)]) -> CheckEvidence {
    e.slower = slower
        .iter()
        .map(|(bound_s, canary, stable)| Slower { bound_s: *bound_s, canary: *canary, stable: *stable })
        .collect();
    e
}

fn unavailable(name: &str) -> CheckEvidence {
    evidence(requests(name, 0.05, 3.0), Err(Missing::Unavailable("connection refused".into())))
}

fn kind(d: &Decision) -> &'static str {
    match d {
        Decision::StepUp(..) => "step-up",
        Decision::Hold(..) => "hold",
        Decision::MetricsUnavailable(..) => "metrics-unavailable",
        Decision::StableBreaching(..) => "stable-breaching",
        Decision::Rollback(..) => "rollback",
        Decision::Misconfigured(..) => "misconfigured",
        Decision::Pause(..) => "pause",
    }
}

fn not_a_bucket(name: &str) -> CheckEvidence {
    let why = "0.25 s is not a bucket boundary (buckets: 0.1, 0.5)";
    evidence(requests(name, 0.05, 3.0), Err(Missing::Misconfigured(why.into())))
}

#[test]
fn a_check_that_cannot_be_computed_ends_the_step_unless_another_breaches() {
    let d =
        evaluate(&[errors(0, 10_000), not_a_bucket("latency")], clock(60), policy(InconclusivePolicy::Pause));
    match &d.decision {
        Decision::Misconfigured(u) => {
            assert_eq!(u.check, "latency");
            let reason = d.decision.reason();
            assert!(reason.contains("not a bucket boundary"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(d.checks[1].result, CheckResult::NoData);
    assert!(d.checks[1].reason().starts_with("cannot be computed"), "{}", d.checks[1].reason());
    let d =
        evaluate(&[errors(50, 1000), not_a_bucket("latency")], clock(60), policy(InconclusivePolicy::Pause));
    assert_eq!(kind(&d.decision), "rollback", "a real breach is named first");
}

#[test]
fn decisions() {
    use InconclusivePolicy::*;
    let cases: Vec<(&str, Vec<CheckEvidence>, StepClock, Policy, &str)> = vec![
        (
            "clean and long enough",
            vec![errors(0, 5000), slow(10, 1000)],
            clock(200),
            policy(Pause),
            "step-up",
        ),
        (
            "clean but not held long enough",
            vec![errors(0, 5000), slow(10, 1000)],
            clock(60),
            policy(Pause),
            "hold",
        ),
        ("not enough requests yet", vec![errors(0, 300), slow(2, 300)], clock(200), policy(Pause), "hold"),
        ("no data at all", vec![errors(0, 0)], clock(200), policy(Pause), "hold"),
        ("errors far over budget", vec![errors(5, 100), slow(0, 100)], clock(5), policy(Pause), "rollback"),
        (
            "slow requests over budget",
            vec![errors(0, 100), slow(60, 200)],
            clock(5),
            policy(Pause),
            "rollback",
        ),
        (
            "stable breaches as well",
            vec![with_stable(errors(5, 100), 50, 1000)],
            clock(5),
            policy(Pause),
            "stable-breaching",
        ),
        ("stable is fine", vec![with_stable(errors(5, 100), 0, 1000)], clock(5), policy(Pause), "rollback"),
        (
            "over budget, stable read but none of its events counted yet early in the step",
            vec![with_stable(errors(5, 100), 0, 0)],
            clock(5),
            policy(Pause),
            "hold",
        ),
        (
            "over budget, stable still without events after the grace",
            vec![with_stable(errors(5, 100), 0, 0)],
            clock(STABLE_GRACE.as_secs()),
            policy(Pause),
            "rollback",
        ),
        (
            "over budget, stable within it but the canary not shown worse",
            vec![with_stable(slow(12, 60), 294, 6000)],
            clock(60),
            policy(Pause),
            "hold",
        ),
        (
            "over budget and worse than a stable within budget",
            vec![with_stable(slow(30, 60), 294, 6000)],
            clock(60),
            policy(Pause),
            "rollback",
        ),
        (
            "over budget, not shown worse at the limit, slower over the whole histogram",
            vec![with_histogram(with_stable(slow(12, 60), 294, 6000), &[(0.05, 50, 1500), (0.25, 12, 294)])],
            clock(60),
            policy(Pause),
            "rollback",
        ),
        (
            "over budget, not shown worse at the limit nor anywhere else",
            vec![with_histogram(with_stable(slow(12, 60), 294, 6000), &[(0.05, 15, 1500), (0.25, 12, 294)])],
            clock(60),
            policy(Pause),
            "hold",
        ),
        (
            "over budget, not shown worse than stable until max hold",
            vec![with_stable(slow(12, 60), 294, 6000)],
            clock(1800),
            policy(Pause),
            "pause",
        ),
        (
            "not compared with stable: over budget rolls back",
            vec![with_stable(slow(12, 60), 294, 6000)],
            clock(60),
            Policy { compare_with_stable: false, ..policy(Pause) },
            "rollback",
        ),
        (
            "no verdict by maxHold, onInconclusive Promote, but the canary answered nothing",
            vec![with_stable(errors(0, 0), 0, 90_000)],
            clock(1800),
            policy(Promote),
            "pause",
        ),
        (
            "metrics down",
            vec![errors(0, 5000), unavailable("latency")],
            clock(200),
            policy(Pause),
            "metrics-unavailable",
        ),
        (
            "breach wins over an outage",
            vec![errors(5, 100), unavailable("latency")],
            clock(5),
            policy(Pause),
            "rollback",
        ),
        ("max hold, pause", vec![errors(0, 300)], clock(1800), policy(Pause), "pause"),
        ("max hold, roll back", vec![errors(0, 300)], clock(1800), policy(Rollback), "rollback"),
        (
            "max hold, promote on relative evidence",
            vec![with_stable(errors(0, 300), 0, 30000)],
            clock(1800),
            policy(Promote),
            "step-up",
        ),
        (
            "max hold, promote without stable data",
            vec![errors(0, 300)],
            clock(1800),
            policy(Promote),
            "pause",
        ),
        (
            "max hold, canary worse than stable",
            vec![with_stable(errors(1, 300), 0, 30000)],
            clock(1800),
            policy(Promote),
            "pause",
        ),
        (
            "max hold with metrics down never promotes",
            vec![unavailable("latency")],
            clock(1800),
            policy(Promote),
            "pause",
        ),
        ("no checks never promote", vec![], clock(200), policy(Pause), "hold"),
    ];
    for (name, evidence, clock, policy, expected) in cases {
        let eval = evaluate(&evidence, clock, policy);
        assert_eq!(kind(&eval.decision), expected, "{name}: {:?}", eval.decision);
        assert_eq!(eval.checks.len(), evidence.len(), "{name}: one report per check");
    }
}

#[test]
fn the_rollback_reason_names_the_check_and_its_numbers() {
    let eval = evaluate(&[errors(5, 100)], clock(5), policy(InconclusivePolicy::Pause));
    match &eval.decision {
        Decision::Rollback(cause) => {
            assert_eq!(cause.check(), "error-rate");
            let reason = eval.decision.reason();
            assert!(reason.contains("5 of 100 requests bad (5.00 %)"), "{reason}");
            assert!(reason.contains("budget 0.020 %"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let report = &eval.checks[0];
    assert_eq!(report.result, CheckResult::Fail);
    assert_eq!((report.counts().bad, report.counts().total), (5, 100));
    assert_eq!(report.value(), Some(0.05));
    assert!(report.statistic().is_some_and(|s| s.contains("breach LLR")));
}

#[test]
fn waiting_says_how_much_evidence_is_needed() {
    let eval = evaluate(&[errors(0, 312)], clock(200), policy(InconclusivePolicy::Pause));
    match &eval.decision {
        d @ Decision::Hold(_) => {
            let reason = d.reason();
            assert!(reason.contains("error-rate 312 of about"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(eval.checks[0].result, CheckResult::Pending);
    assert!(eval.checks[0].needed().is_some_and(|n| n > 312));
}

#[test]
fn waiting_says_how_long_a_decision_takes_at_the_rate_so_far() {
    let policy = policy(InconclusivePolicy::Pause);
    // 10 requests/s, about 1 900 more needed: minutes, within what maxHold leaves.
    let fast = evaluate(&[errors(0, 1000)], clock(100), policy);
    let eta = fast.checks[0].eta().expect("an estimate");
    assert!(eta > Duration::from_secs(60) && eta < Duration::from_secs(600), "{eta:?}");
    let reason = fast.decision.reason();
    assert!(reason.contains("at 10.0 requests/s") && !reason.contains("maxHold"), "{reason}");
    // 1.6 requests/s: longer than the 1 600 s maxHold leaves, and the words say what to change.
    let slow = evaluate(&[errors(0, 312)], clock(200), policy);
    assert!(slow.checks[0].eta().is_some_and(|d| d > Duration::from_secs(1600)));
    let reason = slow.decision.reason();
    assert!(reason.contains("more than maxHold leaves: raise the weight or lower the tolerance"), "{reason}");
    // No time elapsed, or nothing needed: no estimate.
    assert_eq!(evaluate(&[errors(0, 0)], clock(0), policy).checks[0].eta(), None);
    assert_eq!(evaluate(&[errors(0, 5000)], clock(200), policy).checks[0].eta(), None);
}

fn leading_to(next_weight: f64, elapsed_s: u64) -> StepClock {
    StepClock { next_weight, ..clock(elapsed_s) }
}

fn carrying(mut e: CheckEvidence, bad: u64, total: u64) -> CheckEvidence {
    e.carried = Counts { bad, total };
    e
}

#[test]
fn a_step_leading_to_a_small_weight_needs_only_to_rule_out_gross_regressions() {
    let p = policy(InconclusivePolicy::Pause);
    let d = evaluate(&[errors(0, 300)], leading_to(5.0, 200), p);
    assert_eq!(kind(&d.decision), "step-up", "{}", d.decision.reason());
    assert!(d.decision.reason().contains("vs 100x budget"), "{}", d.decision.reason());
    assert_eq!(kind(&evaluate(&[errors(0, 300)], leading_to(100.0, 200), p).decision), "hold");
    let none = Policy { exposure_scaling: 0.0, ..p };
    assert_eq!(kind(&evaluate(&[errors(0, 300)], leading_to(5.0, 200), none).decision), "hold");
}

#[test]
fn earlier_steps_count_towards_passing_but_not_towards_a_breach() {
    let p = policy(InconclusivePolicy::Pause);
    let alone = evaluate(&[errors(0, 1000)], clock(200), p);
    assert_eq!(kind(&alone.decision), "hold");
    let pooled = evaluate(&[carrying(errors(0, 1000), 0, 2500)], clock(200), p);
    assert_eq!(kind(&pooled.decision), "step-up", "{}", pooled.decision.reason());
    assert!(
        pooled.checks[0].reason().contains("and 0 of 2500 at earlier steps"),
        "{}",
        pooled.checks[0].reason()
    );
    // A step with nothing of its own decides nothing, however much came before.
    let empty = evaluate(&[carrying(errors(0, 0), 0, 100_000)], clock(200), p);
    assert_eq!(kind(&empty.decision), "hold");
    // A regression at this step is judged on this step's events alone: quiet earlier steps
    // do not dilute it.
    let bad = evaluate(&[carrying(errors(3, 300), 0, 100_000)], clock(200), p);
    assert_eq!(kind(&bad.decision), "rollback", "{}", bad.decision.reason());
}

#[test]
fn the_next_step_is_forecast_from_this_steps_rate_scaled_by_weight_and_the_evidence_pooled() {
    use crate::forecast::{Holds, Weights, next_step};
    let holds = Holds { min_healthy: Duration::from_secs(180), max_hold: Duration::from_secs(1800) };
    let policy = policy(InconclusivePolicy::Pause);
    let spec = requests("error-rate", 0.0002, 10.0);
    // Step 1 at 1 % of 100 requests/s, passed after 300 clean requests in 300 s (it only had to
    // rule out 100×); the step at 5 % must rule out 10×, pooled with those 300.
    let passed = evaluate(&[errors(0, 300)], leading_to(5.0, 300), policy);
    assert_eq!(kind(&passed.decision), "step-up", "{:?}", passed.decision);
    let weights = Weights { now: 1.0, next: 5.0, after: 100.0 };
    let forecast = next_step(&passed, std::slice::from_ref(&spec), policy, weights, holds);
    let f = &forecast.checks[0];
    let alone = crate::sprt::test_pooled(Counts::ZERO, Counts::ZERO, 0.0002, 10.0, 10.0, RATES).needed;
    let alone = alone.expect("a fresh test's size");
    // The 300 clean requests shown count for the step: it needs fewer than a fresh test (a
    // clean request moves the statistic further than the expected one at half the budget).
    let events = f.events.expect("a size");
    assert!(events + 300 <= alone && events + 400 >= alone, "{events} + 300 vs {alone}");
    assert!((f.per_second.expect("a rate") - 5.0).abs() < 1e-9, "{f:?}");
    let eta = f.eta.expect("an estimate").as_secs_f64();
    assert!((eta - events as f64 / 5.0).abs() < 1.0, "{eta} for {events} events");
    let words = forecast.describe();
    assert!(words.starts_with("at 5 %: error-rate needs about"), "{words}");
    assert!(words.contains("at 5.0 requests/s") && !words.contains("maxHold"), "{words}");
    // At 10 requests/s in all the same step needs ten times as long, more than maxHold.
    let slow = evaluate(&[errors(0, 300)], leading_to(5.0, 3000), policy);
    let words = next_step(&slow, std::slice::from_ref(&spec), policy, weights, holds).describe();
    assert!(words.contains("more than maxHold: raise the weight or lower the tolerance"), "{words}");
    // Much evidence already: the step needs its minHealthy, no more.
    let plenty = evaluate(&[errors(0, 9000)], leading_to(5.0, 300), policy);
    let quick = next_step(&plenty, std::slice::from_ref(&spec), policy, weights, holds);
    assert_eq!(quick.eta(), Some(Duration::from_secs(180)), "{quick:?}");
    assert!(quick.describe().contains("within its minHealthy of 3 min"));
    // A check that could not be read forecasts nothing; without a rate there is no time.
    let down = evaluate(&[unavailable("error-rate")], leading_to(5.0, 300), policy);
    let none = next_step(&down, std::slice::from_ref(&spec), policy, weights, holds);
    assert!(none.checks.is_empty());
    assert!(none.describe().contains("no check could be read"));
    let untimed =
        next_step(&passed, std::slice::from_ref(&spec), policy, Weights { now: 0.0, ..weights }, holds);
    assert_eq!(untimed.eta(), None);
}

#[test]
fn a_rollback_on_the_whole_histogram_says_where_the_canary_is_slower() {
    let e = with_histogram(with_stable(slow(12, 60), 294, 6000), &[(0.05, 50, 1500), (0.25, 12, 294)]);
    let d = evaluate(&[e], clock(60), policy(InconclusivePolicy::Pause));
    let reason = d.decision.reason();
    assert!(
        reason.contains("worse than stable") && reason.contains("whole histogram, strongest past 50ms"),
        "{reason}"
    );
}

#[test]
fn a_check_without_a_rate_is_named_first_in_the_forecast() {
    use crate::forecast::{Holds, Weights, next_step};
    let policy = policy(InconclusivePolicy::Pause);
    let holds = Holds { min_healthy: Duration::from_secs(180), max_hold: Duration::from_secs(1800) };
    let weights = Weights { now: 1.0, next: 5.0, after: 100.0 };
    // The error check has a rate; the custom check counted nothing this step: its time is
    // unknown, which is what a person must be told first.
    let quiet = evidence(requests("orders", 0.01, 3.0), Ok(Counts::ZERO));
    let eval = evaluate(&[errors(0, 3000), quiet.clone()], leading_to(5.0, 300), policy);
    let specs = [requests("error-rate", 0.0002, 10.0), quiet.spec];
    let f = next_step(&eval, &specs, policy, weights, holds);
    assert_eq!(f.checks.len(), 2, "{f:?}");
    assert_eq!((f.checks[0].check.as_str(), f.checks[0].eta), ("orders", None), "{f:?}");
    assert!(f.checks[1].eta.is_some(), "{f:?}");
    assert!(
        f.describe().contains("orders needs about") && f.describe().contains("no rate"),
        "{}",
        f.describe()
    );
}
