//! The gates being compared, each judging one canary step from per-second counts.
//!
//! - `Rollgate`: the real `gate::evaluate`, every `interval`, on the counts since the step began
//!   (stable's too), with `minHealthy` and `maxHold` as configured.
//! - `Flagger`: every 60 s, the point estimate of the last 1 m window against the budget; a window
//!   without requests is "no values found", a failed check; failed checks are cumulative and
//!   `threshold` of them roll back; after `iterations` intervals the canary is promoted.
//! - `Argo`: an AnalysisRun measuring every 60 s, `count` times; a measurement fails when the
//!   window's ratio is over the budget or undefined (0/0 is NaN, and `NaN <= x` is false); more
//!   than `failureLimit` failures roll back; otherwise it succeeds after the last measurement.
//! - `Kayenta`: every 60 s, the canary's 10 s error ratios since the step began against
//!   stable's by Mann-Whitney at 98 % (`kayenta`); "High" rolls back, `intervals` judgements
//!   without it promote.

use std::time::Duration;

use rollgate_gate::{
    self as gate, CheckEvidence, CheckSpec, Counts, Decision, ErrorRates, InconclusivePolicy, Policy,
    StepClock, Unit,
};

use crate::kayenta;
use crate::traffic::Second;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Promote,
    Rollback,
    /// The horizon ended without a verdict (rollgate's `maxHold` with `onInconclusive: Pause`).
    Inconclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Seconds since the step began.
    pub at: u64,
}

/// One step's traffic, per second, for both versions.
pub struct Step<'a> {
    pub canary: &'a [Second],
    pub stable: &'a [Second],
    pub budget: f64,
    pub tolerance: f64,
}

impl Step<'_> {
    /// Counts over seconds `[from, to)`.
    fn window(series: &[Second], from: usize, to: usize) -> Counts {
        let to = to.min(series.len());
        let from = from.min(to);
        series[from..to]
            .iter()
            .fold(Counts { bad: 0, total: 0 }, |c, s| Counts { bad: c.bad + s.bad, total: c.total + s.total })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Judge {
    Rollgate { interval: u64, min_healthy: u64, max_hold: u64, rates: ErrorRates },
    Flagger { threshold: u32, iterations: u32 },
    Argo { failure_limit: u32, count: u32 },
    Kayenta { intervals: u32 },
}

const PEER_INTERVAL: usize = 60;

impl Judge {
    pub fn name(&self) -> String {
        match self {
            Judge::Rollgate { .. } => "rollgate".into(),
            Judge::Flagger { threshold, .. } => format!("Flagger-style, threshold {threshold}"),
            Judge::Argo { failure_limit, .. } => format!("Argo-style, failureLimit {failure_limit}"),
            Judge::Kayenta { .. } => "Kayenta-style, Mann-Whitney 98 %".into(),
        }
    }

    pub fn judge(&self, step: &Step<'_>) -> Outcome {
        match *self {
            Judge::Rollgate { interval, min_healthy, max_hold, rates } => {
                rollgate(step, interval, min_healthy, max_hold, rates)
            }
            Judge::Flagger { threshold, iterations } => {
                let mut failed = 0;
                for i in 1..=iterations as usize {
                    let end = i * PEER_INTERVAL;
                    let w = Step::window(step.canary, end - PEER_INTERVAL, end);
                    let ok = w.ratio().is_some_and(|r| r <= step.budget);
                    if !ok {
                        failed += 1;
                        if failed >= threshold {
                            return Outcome { verdict: Verdict::Rollback, at: end as u64 };
                        }
                    }
                }
                Outcome { verdict: Verdict::Promote, at: (iterations as usize * PEER_INTERVAL) as u64 }
            }
            Judge::Argo { failure_limit, count } => {
                let mut failed = 0;
                for i in 1..=count as usize {
                    let end = i * PEER_INTERVAL;
                    let w = Step::window(step.canary, end - PEER_INTERVAL, end);
                    if !w.ratio().is_some_and(|r| r <= step.budget) {
                        failed += 1;
                        if failed > failure_limit {
                            return Outcome { verdict: Verdict::Rollback, at: end as u64 };
                        }
                    }
                }
                Outcome { verdict: Verdict::Promote, at: (count as usize * PEER_INTERVAL) as u64 }
            }
            Judge::Kayenta { intervals } => {
                for i in 1..=intervals as usize {
                    let end = i * PEER_INTERVAL;
                    let (canary, stable) =
                        (kayenta::samples(step.canary, end), kayenta::samples(step.stable, end));
                    if kayenta::higher(&canary, &stable) {
                        return Outcome { verdict: Verdict::Rollback, at: end as u64 };
                    }
                }
                Outcome { verdict: Verdict::Promote, at: (intervals as usize * PEER_INTERVAL) as u64 }
            }
        }
    }
}

fn rollgate(step: &Step<'_>, interval: u64, min_healthy: u64, max_hold: u64, rates: ErrorRates) -> Outcome {
    let policy = Policy {
        rates,
        on_inconclusive: InconclusivePolicy::Pause,
        compare_with_stable: true,
        exposure_scaling: 1.0,
    };
    let spec = CheckSpec {
        name: "error-rate".into(),
        budget: step.budget,
        tolerance: step.tolerance,
        unit: Unit::Requests,
        source: None,
    };
    let mut at = interval;
    loop {
        let end = at as usize;
        let evidence = [CheckEvidence {
            spec: spec.clone(),
            canary: Ok(Step::window(step.canary, 0, end)),
            stable: Some(Step::window(step.stable, 0, end)),
            carried: Counts::ZERO,
            slower: Vec::new(),
        }];
        let clock = StepClock {
            elapsed: Duration::from_secs(at),
            min_healthy: Duration::from_secs(min_healthy),
            max_hold: Duration::from_secs(max_hold),
            next_weight: 100.0,
        };
        let verdict = match gate::evaluate(&evidence, clock, policy).decision {
            Decision::StepUp(..) => Some(Verdict::Promote),
            Decision::Rollback(..) | Decision::Misconfigured(..) => Some(Verdict::Rollback),
            Decision::Pause(..) => Some(Verdict::Inconclusive),
            Decision::Hold(..) | Decision::MetricsUnavailable(..) | Decision::StableBreaching(..) => None,
        };
        if let Some(verdict) = verdict {
            return Outcome { verdict, at };
        }
        if at >= max_hold {
            return Outcome { verdict: Verdict::Inconclusive, at };
        }
        at = (at + interval).min(max_hold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATES: ErrorRates = ErrorRates { false_rollback: 0.01, missed_detection: 0.01 };

    fn seconds(n: usize, total: u64, bad_every: usize) -> Vec<Second> {
        (0..n).map(|i| Second { total, bad: u64::from(bad_every > 0 && i % bad_every == 0) }).collect()
    }

    fn rollgate() -> Judge {
        Judge::Rollgate { interval: 10, min_healthy: 180, max_hold: 1800, rates: RATES }
    }

    #[test]
    fn flagger_counts_an_empty_window_as_a_failed_check() {
        let canary = seconds(600, 0, 0);
        let step = Step { canary: &canary, stable: &canary, budget: 0.0002, tolerance: 10.0 };
        let o = Judge::Flagger { threshold: 1, iterations: 10 }.judge(&step);
        assert_eq!(o, Outcome { verdict: Verdict::Rollback, at: 60 });
        let o = Judge::Argo { failure_limit: 3, count: 10 }.judge(&step);
        assert_eq!(o, Outcome { verdict: Verdict::Rollback, at: 240 }, "the fourth failure is one too many");
    }

    #[test]
    fn one_error_in_a_window_fails_a_point_estimate_at_a_tight_budget() {
        // 10 requests/s, one error in the third minute only.
        let mut canary = seconds(1800, 10, 0);
        canary[150].bad = 1;
        let step = Step { canary: &canary, stable: &canary, budget: 0.0002, tolerance: 10.0 };
        assert_eq!(Judge::Argo { failure_limit: 0, count: 10 }.judge(&step).verdict, Verdict::Rollback);
        assert_eq!(Judge::Flagger { threshold: 5, iterations: 10 }.judge(&step).verdict, Verdict::Promote);
        // The sequential gate: one error in 18 000 requests is well within 0.02 %.
        let clean = seconds(1800, 90, 0);
        let step = Step { canary: &canary, stable: &clean, budget: 0.0002, tolerance: 10.0 };
        assert_eq!(rollgate().judge(&step).verdict, Verdict::Promote);
    }

    #[test]
    fn rollgate_ends_inconclusive_when_the_horizon_holds_too_little_traffic() {
        let canary = seconds(1800, 0, 0);
        let step = Step { canary: &canary, stable: &canary, budget: 0.0002, tolerance: 10.0 };
        assert_eq!(rollgate().judge(&step), Outcome { verdict: Verdict::Inconclusive, at: 1800 });
    }

    #[test]
    fn rollgate_rolls_back_a_clearly_bad_canary_at_an_evaluation() {
        // 5 requests/s, one error every 10 s (2 %, 100× the budget).
        let canary = seconds(1800, 5, 10);
        let stable = seconds(1800, 95, 0);
        let step = Step { canary: &canary, stable: &stable, budget: 0.0002, tolerance: 10.0 };
        let o = rollgate().judge(&step);
        assert_eq!(o.verdict, Verdict::Rollback);
        assert!(o.at <= 30 && o.at.is_multiple_of(10), "{o:?}");
    }
}
