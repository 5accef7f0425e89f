//! The sequential test on counts of bad events.
//!
//! A check is a budget `p0` on the share of bad events. Two questions are asked of the counts
//! (`bad` of `total`) after every evaluation:
//!
//! - **Is the canary over budget?** Wald's sequential probability ratio test of `H0: p = p0`
//!   against each alternative `H1: p = m·p0` for `m` in {2, 10, 100} (and the check's tolerance),
//!   each at level `α/K` (Bonferroni over the K alternatives). The first log-likelihood ratio to
//!   reach `ln((1−β)/(α/K))` rolls back. Under `p ≤ p0` the chance that any ever does is at most
//!   α, however often the test is looked at: the SPRT is built for continuous monitoring.
//!   Having several alternatives keeps it near the optimal test for each kind of bad canary: a
//!   100× canary is caught by the 100× test after a handful of events.
//! - **Is it within budget?** The SPRT of `p0` against `tolerance·p0` reaching
//!   `ln(β/(1−α))`: a canary `tolerance` times over budget gets here with probability at most β.
//!
//! Neither → undecided, with an estimate of how many events in all a decision needs at the
//! observed rate. Zero events decide nothing. What a step must rule out to pass grows with the
//! exposure of the step after it (`pass_multiple`), and the pass test pools the canary's events
//! of earlier steps (`test_pooled`). Pure arithmetic; see `docs/gate.md`.

/// Multiples of the budget tested for a breach (besides the tolerance).
pub const ALTERNATIVES: [f64; 3] = [2.0, 10.0, 100.0];

/// The largest multiple a step may leave unexcluded: the grossest breach alternative.
pub const MAX_PASS_MULTIPLE: f64 = 100.0;

/// The multiple of the budget a step must rule out before the weight becomes `next_weight`
/// percent: `tolerance · (100 / next_weight)^scaling`, between `tolerance` and
/// [`MAX_PASS_MULTIPLE`].
///
/// The harm a canary `m` times over budget does at weight `w` is proportional to `w·m`. With
/// `scaling` 1, a canary that passes a step harms the users of the next step no more than a
/// canary at the tolerance would harm everyone at 100 %: leaving 1 % for 5 % needs only to rule
/// out 20× the tolerance (capped at 100×), leaving 5 % for 100 % the tolerance itself. Scaling
/// 0 asks the tolerance of every step. Only passing gets easier: the breach tests, and so the
/// chance of rolling back a healthy canary, do not change.
/// A weight that is not a positive number asks for the tolerance: doubt never makes a step easier.
pub fn pass_multiple(tolerance: f64, next_weight: f64, scaling: f64) -> f64 {
    if !(next_weight > 0.0 && scaling.is_finite()) {
        return tolerance;
    }
    let exposure = 100.0 / next_weight.min(100.0);
    let m = tolerance * exposure.powf(scaling.clamp(0.0, 1.0));
    m.clamp(tolerance, MAX_PASS_MULTIPLE.max(tolerance))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Counts {
    pub bad: u64,
    pub total: u64,
}

impl Counts {
    pub const ZERO: Counts = Counts { bad: 0, total: 0 };

    pub fn ratio(&self) -> Option<f64> {
        (self.total > 0).then(|| self.bad as f64 / self.total as f64)
    }
}

/// The error rates the test is built for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ErrorRates {
    /// Largest probability of rolling back a canary within budget (α).
    pub false_rollback: f64,
    /// Largest probability of passing a canary `tolerance` times over budget (β).
    pub missed_detection: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    /// Evidence that the canary is over budget.
    Breach,
    /// Evidence that the canary is within budget.
    WithinBudget,
    /// Not enough evidence either way.
    Undecided,
    /// No events at all.
    NoData,
}

/// What the test concluded, and the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct TestResult {
    pub outcome: Outcome,
    /// Largest log-likelihood ratio among the breach tests, with its alternative multiple.
    pub breach_llr: f64,
    pub breach_multiple: f64,
    /// Rollback boundary for the breach tests.
    pub breach_bound: f64,
    /// The multiple of the budget the pass test rules out (the tolerance, or more for a step
    /// whose next weight is small: `pass_multiple`).
    pub pass_multiple: f64,
    /// Log-likelihood ratio of the pass test (budget against `pass_multiple`).
    pub pass_llr: f64,
    /// Pass boundary (negative).
    pub pass_bound: f64,
    /// About how many events in all a decision needs at the observed rate (undecided only).
    pub needed: Option<u64>,
}

/// Log-likelihood ratio of `p1` against `p0` after `bad` of `total`.
pub fn llr(c: Counts, p0: f64, p1: f64) -> f64 {
    let good = (c.total - c.bad.min(c.total)) as f64;
    c.bad as f64 * (p1 / p0).ln() + good * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// Expected change of the log-likelihood ratio per event when the true rate is `p`.
fn drift(p: f64, p0: f64, p1: f64) -> f64 {
    p * (p1 / p0).ln() + (1.0 - p) * ((1.0 - p1) / (1.0 - p0)).ln()
}

/// The alternatives tested for a breach: the fixed multiples and the tolerance, those that are
/// still probabilities.
pub fn alternatives(p0: f64, tolerance: f64) -> Vec<f64> {
    let mut ms: Vec<f64> = ALTERNATIVES.iter().copied().chain(std::iter::once(tolerance)).collect();
    ms.sort_by(f64::total_cmp);
    ms.dedup();
    ms.retain(|m| m * p0 < 1.0 && *m > 1.0);
    ms
}

/// The pass alternative: `multiple·p0`, kept below 1.
fn pass_alternative(p0: f64, multiple: f64) -> f64 {
    (multiple * p0).min((1.0 + p0) / 2.0)
}

/// The test of a step that must rule out the tolerance (the last one before 100 %).
pub fn test(c: Counts, p0: f64, tolerance: f64, rates: ErrorRates) -> TestResult {
    test_ruling_out(c, p0, tolerance, tolerance, rates)
}

/// The test of a step that must rule out `pass_multiple` times the budget to pass; breaches
/// are tested as in [`test`].
pub fn test_ruling_out(
    c: Counts,
    p0: f64,
    tolerance: f64,
    pass_multiple: f64,
    rates: ErrorRates,
) -> TestResult {
    test_pooled(c, Counts::ZERO, p0, tolerance, pass_multiple, rates)
}

/// The test of a step whose canary already showed `carried` events at earlier steps.
///
/// Passing pools them with the step's own: the canary is the same version at every weight, and
/// the pass test's likelihood ratio over all its events is a test from its first event on
/// (Ville's inequality holds for the whole sequence, whatever the weights were), so a step
/// does not start from zero. A breach is judged on the step's own events, as a fresh test: a
/// regression that shows only at a higher weight is not diluted by the quiet steps before it.
/// A step with no events of its own decides nothing.
pub fn test_pooled(
    step: Counts,
    carried: Counts,
    p0: f64,
    tolerance: f64,
    pass_multiple: f64,
    rates: ErrorRates,
) -> TestResult {
    let alpha = rates.false_rollback;
    let beta = rates.missed_detection;
    let ms = alternatives(p0, tolerance);
    let k = ms.len().max(1) as f64;
    let breach_bound = ((1.0 - beta) / (alpha / k)).ln();
    let pass_bound = (beta / (1.0 - alpha)).ln();
    let p_pass = pass_alternative(p0, pass_multiple);
    let pooled = Counts { bad: step.bad + carried.bad, total: step.total + carried.total };

    let (breach_llr, breach_multiple) = ms
        .iter()
        .map(|m| (llr(step, p0, m * p0), *m))
        .fold((f64::NEG_INFINITY, 0.0), |best, x| if x.0 > best.0 { x } else { best });
    let pass_llr = llr(pooled, p0, p_pass);

    let outcome = if step.total == 0 {
        Outcome::NoData
    } else if breach_llr >= breach_bound {
        Outcome::Breach
    } else if pass_llr <= pass_bound {
        Outcome::WithinBudget
    } else {
        Outcome::Undecided
    };

    let needed = (outcome == Outcome::Undecided || outcome == Outcome::NoData).then(|| {
        // At the observed rate (or half the budget, the healthy reference, before any bad
        // event), how many more events until one of the boundaries is expected to be reached.
        let p = match pooled.ratio() {
            Some(r) if pooled.bad > 0 => r,
            _ => p0 / 2.0,
        };
        let to_pass = {
            let d = drift(p, p0, p_pass);
            (d < 0.0).then(|| (pass_bound - pass_llr) / d)
        };
        let to_breach = ms
            .iter()
            .filter_map(|m| {
                let d = drift(p, p0, m * p0);
                (d > 0.0).then(|| (breach_bound - llr(step, p0, m * p0)) / d)
            })
            .fold(None, |acc: Option<f64>, n| Some(acc.map_or(n, |a| a.min(n))));
        let more = match (to_pass, to_breach) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => f64::INFINITY,
        };
        if more.is_finite() { step.total + more.max(1.0).ceil() as u64 } else { u64::MAX }
    });

    TestResult {
        outcome,
        breach_llr: if breach_llr.is_finite() { breach_llr } else { 0.0 },
        breach_multiple,
        breach_bound,
        pass_multiple: p_pass / p0,
        pass_llr,
        pass_bound,
        needed: needed.filter(|n| *n != u64::MAX),
    }
}

/// Expected number of events an SPRT built for exactly `m·p0` (one alternative, at `α`, `β`)
/// needs to reject `p0` when the true rate is `m·p0`: the reference "optimal" sample size.
pub fn optimal_detection_size(p0: f64, m: f64, rates: ErrorRates) -> f64 {
    let p1 = m * p0;
    let a = ((1.0 - rates.missed_detection) / rates.false_rollback).ln();
    let b = (rates.missed_detection / (1.0 - rates.false_rollback)).ln();
    let d = drift(p1, p0, p1);
    ((1.0 - rates.missed_detection) * a + rates.missed_detection * b) / d
}

/// Expected number of events the single SPRT of `p0` against `tolerance·p0` needs to accept
/// `p0` when the true rate is `share·p0` (below the budget): the reference for passing.
pub fn optimal_pass_size(p0: f64, share: f64, tolerance: f64, rates: ErrorRates) -> f64 {
    let p1 = pass_alternative(p0, tolerance);
    let a = ((1.0 - rates.missed_detection) / rates.false_rollback).ln();
    let b = (rates.missed_detection / (1.0 - rates.false_rollback)).ln();
    let d = drift(share * p0, p0, p1);
    ((1.0 - rates.false_rollback) * b + rates.false_rollback * a) / d
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const RATES: ErrorRates = ErrorRates { false_rollback: 0.01, missed_detection: 0.01 };

    fn t(bad: u64, total: u64, p0: f64) -> TestResult {
        test(Counts { bad, total }, p0, 10.0, RATES)
    }

    #[test]
    fn no_events_decide_nothing() {
        let r = t(0, 0, 0.0002);
        assert_eq!(r.outcome, Outcome::NoData);
        assert!(r.needed.is_some());
    }

    #[test]
    fn what_a_step_rules_out_grows_as_the_next_exposure_shrinks() {
        // Errors (tolerance 10): leaving 1 % for 5 % rules out 200×, capped at the grossest
        // breach alternative; leaving 5 % for 100 % the tolerance itself.
        assert_eq!(pass_multiple(10.0, 5.0, 1.0), 100.0);
        assert_eq!(pass_multiple(10.0, 20.0, 1.0), 50.0);
        assert_eq!(pass_multiple(10.0, 100.0, 1.0), 10.0);
        // Half the scaling: the square root of the exposure ratio.
        assert!((pass_multiple(10.0, 25.0, 0.5) - 20.0).abs() < 1e-9);
        // No scaling, or nonsense weights, never ask for less than the tolerance.
        assert_eq!(pass_multiple(10.0, 5.0, 0.0), 10.0);
        assert_eq!(pass_multiple(10.0, 250.0, 1.0), 10.0);
        assert_eq!(pass_multiple(10.0, 0.0, 1.0), 10.0);
        assert_eq!(pass_multiple(10.0, f64::NAN, 1.0), 10.0);
        assert_eq!(pass_multiple(10.0, 5.0, f64::NAN), 10.0);
    }

    #[test]
    fn a_step_leading_to_a_small_weight_passes_sooner_and_rolls_back_the_same() {
        let clean = Counts { bad: 0, total: 300 };
        let last = test_ruling_out(clean, 0.0002, 10.0, 10.0, RATES);
        let first = test_ruling_out(clean, 0.0002, 10.0, 100.0, RATES);
        assert_eq!(last.outcome, Outcome::Undecided);
        assert_eq!(first.outcome, Outcome::WithinBudget);
        assert_eq!(first.pass_multiple, 100.0);
        let bad = Counts { bad: 3, total: 300 };
        let (a, b) = (
            test_ruling_out(bad, 0.0002, 10.0, 10.0, RATES),
            test_ruling_out(bad, 0.0002, 10.0, 100.0, RATES),
        );
        assert_eq!((a.outcome, a.breach_llr, a.breach_bound), (b.outcome, b.breach_llr, b.breach_bound));
        assert_eq!(a.outcome, Outcome::Breach);
    }

    #[test]
    fn a_few_clean_requests_are_not_enough_at_a_tight_budget() {
        let r = t(0, 300, 0.0002);
        assert_eq!(r.outcome, Outcome::Undecided);
        // H0 0.02 % vs 0.2 %: at a healthy canary's expected rate (half the budget), the pass
        // boundary ln(0.01/0.99) is about 2 900 requests away from zero.
        let needed = r.needed.expect("estimate");
        assert!((2800..=2950).contains(&needed), "{needed}");
    }

    #[test]
    fn enough_clean_requests_pass() {
        assert_eq!(t(0, 2600, 0.0002).outcome, Outcome::WithinBudget);
        assert_eq!(t(1, 4000, 0.0002).outcome, Outcome::WithinBudget);
    }

    #[test]
    fn a_burst_of_errors_breaches_quickly() {
        // 100× budget = 2 % errors: 3 errors in 60 requests is already conclusive.
        let r = t(3, 60, 0.0002);
        assert_eq!(r.outcome, Outcome::Breach, "{r:?}");
        assert_eq!(r.breach_multiple, 100.0);
        // One error in a hundred is not.
        assert_eq!(t(1, 100, 0.0002).outcome, Outcome::Undecided);
    }

    #[test]
    fn monotone_in_bad_events() {
        let p0 = 0.01;
        let mut last = f64::NEG_INFINITY;
        for bad in 0..=50 {
            let r = t(bad, 500, p0);
            assert!(r.breach_llr >= last, "bad={bad}");
            last = r.breach_llr;
        }
        // More bad events never turn a breach into a pass.
        let mut seen_breach = false;
        for bad in 0..=50 {
            let o = t(bad, 500, p0).outcome;
            if seen_breach {
                assert_eq!(o, Outcome::Breach, "bad={bad}");
            }
            seen_breach |= o == Outcome::Breach;
        }
        assert!(seen_breach);
    }

    #[test]
    fn boundaries_follow_the_error_rates() {
        let r = t(0, 10, 0.01);
        // K alternatives at α/K: ln(0.99 / (0.01 / K)).
        let k = alternatives(0.01, 10.0).len() as f64;
        assert!((r.breach_bound - (0.99 / (0.01 / k)).ln()).abs() < 1e-12);
        assert!((r.pass_bound - (0.01f64 / 0.99).ln()).abs() < 1e-12);
    }

    #[test]
    fn alternatives_stay_probabilities() {
        assert_eq!(alternatives(0.0002, 10.0), vec![2.0, 10.0, 100.0]);
        assert_eq!(alternatives(0.05, 3.0), vec![2.0, 3.0, 10.0]);
        assert_eq!(alternatives(0.2, 3.0), vec![2.0, 3.0]);
    }

    /// Random budgets, tolerances, error rates and counts (a fixed seed, so failures
    /// reproduce): the properties the gate relies on.
    #[test]
    fn properties_hold_on_random_inputs() {
        let mut rng = StdRng::seed_from_u64(11);
        for case in 0..20_000 {
            let p0 = 10f64.powf(-4.0 + 3.0 * rng.random::<f64>()) / 2.0;
            let tolerance = 1.5 + 20.0 * rng.random::<f64>();
            let rates = ErrorRates {
                false_rollback: 0.001 + 0.1 * rng.random::<f64>(),
                missed_detection: 0.001 + 0.1 * rng.random::<f64>(),
            };
            let total = (rng.random::<f64>() * 20_000.0) as u64;
            let bad = (rng.random::<f64>() * rng.random::<f64>() * total as f64) as u64;
            let c = Counts { bad, total };
            let r = test(c, p0, tolerance, rates);
            let why = format!("case {case}: {c:?} p0 {p0} tolerance {tolerance} {rates:?} → {r:?}");
            // Zero events decide nothing.
            if total == 0 {
                assert_eq!(r.outcome, Outcome::NoData, "{why}");
                continue;
            }
            // The outcome is exactly what the statistic and its boundaries say.
            let expected = if r.breach_llr >= r.breach_bound {
                Outcome::Breach
            } else if r.pass_llr <= r.pass_bound {
                Outcome::WithinBudget
            } else {
                Outcome::Undecided
            };
            assert_eq!(r.outcome, expected, "{why}");
            assert!(r.breach_bound > 0.0 && r.pass_bound < 0.0, "{why}");
            // One more bad event (in place of a good one) never weakens the case for a breach
            // or strengthens the case for a pass.
            if bad < total {
                let worse = test(Counts { bad: bad + 1, total }, p0, tolerance, rates);
                assert!(worse.breach_llr >= r.breach_llr - 1e-9, "{why}");
                assert!(worse.pass_llr >= r.pass_llr - 1e-9, "{why}");
                if r.outcome == Outcome::Breach {
                    assert_eq!(worse.outcome, Outcome::Breach, "{why}");
                }
                if worse.outcome == Outcome::WithinBudget {
                    assert_eq!(r.outcome, Outcome::WithinBudget, "{why}");
                }
            }
            // An undecided test says how much evidence it needs, and it is more than it has.
            if r.outcome == Outcome::Undecided
                && let Some(n) = r.needed
            {
                assert!(n > total, "{why}");
            }
        }
    }

    #[test]
    fn the_reference_size_matches_the_issue_figure() {
        // 0.02 % budget, canary at 10×: about 1 600 requests for an optimal SPRT.
        let n = optimal_detection_size(0.0002, 10.0, RATES);
        assert!((1500.0..1700.0).contains(&n), "{n}");
    }
}
