//! Properties of `evaluate` over arbitrary evidence: missing data never makes a verdict.
//!
//! - a check without counts (metrics unavailable, or not computable) never lets a step pass;
//! - a rollback for a breach names a check that has bad events of its own;
//! - with no events at all, nothing is decided but holding, pausing, or the rollback a user
//!   chose for an inconclusive step;
//! - a step passes only with every check counted and `minHealthy` over.

use std::time::Duration;

use proptest::prelude::*;

use crate::*;

fn spec() -> impl Strategy<Value = CheckSpec> {
    prop_oneof![
        Just(("error-rate", 0.0002, 10.0, Unit::Requests)),
        Just(("latency", 0.05, 3.0, Unit::Requests)),
        Just(("pause", 0.01, 3.0, Unit::Pauses)),
        (1e-5f64..0.5, 1.5f64..100.0).prop_map(|(b, t)| ("custom", b, t, Unit::Events)),
    ]
    .prop_map(|(name, budget, tolerance, unit)| CheckSpec {
        name: name.into(),
        budget,
        tolerance,
        unit,
        source: None,
    })
}

fn counts() -> impl Strategy<Value = Counts> {
    prop_oneof![
        Just(Counts::ZERO),
        (0u64..50_000).prop_flat_map(|total| (0..=total).prop_map(move |bad| Counts { bad, total })),
        (0u64..20).prop_map(|bad| Counts { bad, total: bad }),
    ]
}

fn canary() -> impl Strategy<Value = Result<Counts, Missing>> {
    prop_oneof![
        3 => counts().prop_map(Ok),
        1 => Just(Err(Missing::Unavailable("connection refused".into()))),
        1 => Just(Err(Missing::Misconfigured("no bucket boundary at or below 300ms".into()))),
    ]
}

fn slower() -> impl Strategy<Value = Vec<Slower>> {
    proptest::collection::vec(
        (1e-3f64..2.0, 0u64..5000, 0u64..50_000).prop_map(|(bound_s, canary, stable)| Slower {
            bound_s,
            canary,
            stable,
        }),
        0..4,
    )
}

fn evidence() -> impl Strategy<Value = Vec<CheckEvidence>> {
    proptest::collection::vec(
        (spec(), canary(), proptest::option::of(counts()), counts(), slower()).prop_map(
            |(spec, canary, stable, carried, slower)| CheckEvidence { spec, canary, stable, carried, slower },
        ),
        1..4,
    )
    .prop_map(|mut v| {
        // Names are unique within a gate.
        for (i, e) in v.iter_mut().enumerate() {
            e.spec.name = format!("{}-{i}", e.spec.name);
        }
        v
    })
}

fn clock() -> impl Strategy<Value = StepClock> {
    (0u64..4000, 0u64..600, 60u64..3600, prop_oneof![Just(1.0), Just(5.0), Just(50.0), Just(100.0)]).prop_map(
        |(elapsed, min_healthy, max_hold, next_weight)| StepClock {
            elapsed: Duration::from_secs(elapsed),
            min_healthy: Duration::from_secs(min_healthy),
            max_hold: Duration::from_secs(max_hold),
            next_weight,
        },
    )
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        prop_oneof![
            Just(InconclusivePolicy::Pause),
            Just(InconclusivePolicy::Rollback),
            Just(InconclusivePolicy::Promote)
        ],
        any::<bool>(),
        0.0f64..=1.0,
    )
        .prop_map(|(on_inconclusive, compare_with_stable, exposure_scaling)| Policy {
            rates: ErrorRates { false_rollback: 0.01, missed_detection: 0.005 },
            on_inconclusive,
            compare_with_stable,
            exposure_scaling,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, ..ProptestConfig::default() })]

    #[test]
    fn missing_data_never_makes_a_verdict(evidence in evidence(), clock in clock(), policy in policy()) {
        let eval = evaluate(&evidence, clock, policy);
        let counted = |name: &str| {
            evidence.iter().find(|e| e.spec.name == name).and_then(|e| e.canary.as_ref().ok()).copied()
        };
        let any_missing = evidence.iter().any(|e| e.canary.is_err());
        let none_counted = evidence.iter().all(|e| e.canary.as_ref().is_ok_and(|c| c.total == 0));
        match &eval.decision {
            Decision::StepUp(advance) => {
                prop_assert!(!any_missing, "passed with a check uncounted: {:?}", eval.decision);
                prop_assert!(!none_counted, "passed on no events: {:?}", eval.decision);
                if let Advance::WithinBudget { .. } = advance {
                    prop_assert!(clock.elapsed >= clock.min_healthy);
                    prop_assert!(evidence.iter().all(|e| e.canary.as_ref().is_ok_and(|c| c.total > 0)));
                }
            }
            Decision::Rollback(RollbackCause::Breach(j)) => {
                let c = counted(&j.check);
                prop_assert!(c.is_some_and(|c| c.bad > 0 && c.total > 0), "breach of {} on {c:?}", j.check);
            }
            Decision::StableBreaching(j) => {
                prop_assert!(counted(&j.check).is_some_and(|c| c.bad > 0));
            }
            Decision::Misconfigured(u) => {
                let e = evidence.iter().find(|e| e.spec.name == u.check);
                prop_assert!(e.is_some_and(|e| matches!(e.canary, Err(Missing::Misconfigured(_)))));
            }
            Decision::Rollback(RollbackCause::Inconclusive(_)) => {
                prop_assert_eq!(policy.on_inconclusive, InconclusivePolicy::Rollback);
                prop_assert!(clock.elapsed >= clock.max_hold);
            }
            Decision::Hold(_) | Decision::MetricsUnavailable(_) | Decision::Pause(_) => {}
        }
        if none_counted {
            let decided = matches!(
                eval.decision,
                Decision::StepUp(_) | Decision::Rollback(RollbackCause::Breach(_)) | Decision::StableBreaching(_)
            );
            prop_assert!(!decided, "{:?}", eval.decision);
        }
    }
}
