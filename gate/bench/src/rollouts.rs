//! Whole rollouts: the canary stepped 1 → 5 → 100 % by rollgate's real `gate::evaluate`, every
//! step judged as the controller judges it (every `interval`, `minHealthy`, `maxHold` with
//! `onInconclusive: Pause`), under three rules:
//!
//! - every step rules out the tolerance and starts from zero (exposure scaling 0, nothing
//!   carried: the gate before the exposure rule);
//! - what a step rules out follows the next step's exposure (`policy.exposureScaling` 1);
//! - and the canary's events of the steps it passed are pooled into the next step's pass test
//!   (`status.carried`): today's gate.
//!
//! Traffic is Poisson per second at the total rate, split by the step's weight; the canary's
//! requests fail with `quality × budget`, stable's with half the budget. Same seed, same table.

use std::fmt::Write as _;
use std::time::Duration;

use rollgate_gate::{
    self as gate, CheckEvidence, CheckSpec, Counts, Decision, InconclusivePolicy, Policy, StepClock, Unit,
};

use crate::judges::Verdict;
use crate::report::secs;
use crate::traffic::{BadEvents, Rng};
use crate::{ERRORS, RATES};

/// One way of judging a whole rollout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    pub name: &'static str,
    pub exposure_scaling: f64,
    pub pooled: bool,
    /// `policy.compareWithStable`: a breach rolls back only if the canary is also worse than
    /// stable.
    pub compare_with_stable: bool,
    /// The steps' weights, percent.
    pub weights: &'static [f64],
}

pub const RULES: [Rule; 3] = [
    Rule {
        name: "each step: tolerance, from zero",
        exposure_scaling: 0.0,
        pooled: false,
        compare_with_stable: true,
        weights: &WEIGHTS,
    },
    Rule {
        name: "exposure-scaled",
        exposure_scaling: 1.0,
        pooled: false,
        compare_with_stable: true,
        weights: &WEIGHTS,
    },
    Rule {
        name: "exposure-scaled + pooled (now)",
        exposure_scaling: 1.0,
        pooled: true,
        compare_with_stable: true,
        weights: &WEIGHTS,
    },
];

/// The steps' weights, percent: rollgate's default.
pub const WEIGHTS: [f64; 3] = [1.0, 5.0, 100.0];

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RolloutCell {
    /// Total requests per second.
    pub traffic: f64,
    /// The canary's error share as a multiple of the budget.
    pub quality: f64,
}

/// The cells: the error check (0.02 %) at 10, 100 and 1 000 req/s, healthy and bad canaries.
pub fn cells() -> Vec<RolloutCell> {
    let mut v = Vec::new();
    for traffic in [10.0, 100.0, 1000.0] {
        for quality in [0.5, 10.0, 100.0] {
            v.push(RolloutCell { traffic, quality });
        }
    }
    v
}

/// What one rule did over the runs of one cell.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RolloutTally {
    pub promoted: usize,
    pub rolled_back: usize,
    pub paused: usize,
    /// Seconds from the start to the verdict that matters: promotion of a healthy canary,
    /// rollback of a bad one.
    pub times: Vec<u64>,
}

impl RolloutTally {
    fn runs(&self) -> usize {
        self.promoted + self.rolled_back + self.paused
    }

    fn quantile(&self, q: f64) -> Option<u64> {
        crate::quantile(&self.times, q)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RolloutResult {
    pub cell: RolloutCell,
    pub tallies: Vec<(Rule, RolloutTally)>,
}

/// Timing of the gate: rollgate's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub interval: u64,
    pub min_healthy: u64,
    pub max_hold: u64,
}

impl Timing {
    pub fn defaults() -> Self {
        Self {
            interval: gate::defaults::INTERVAL.as_secs(),
            min_healthy: gate::defaults::MIN_HEALTHY.as_secs(),
            max_hold: gate::defaults::MAX_HOLD.as_secs(),
        }
    }
}

/// Counts of `seconds` of traffic at `rate` requests per second failing with `share`.
fn draw(rng: &mut Rng, rate: f64, share: f64, seconds: u64) -> Counts {
    let s = crate::traffic::stream(rng, rate, BadEvents::Errors(share), seconds as usize);
    s.iter().fold(Counts::ZERO, |c, x| Counts { bad: c.bad + x.bad, total: c.total + x.total })
}

pub fn add(a: Counts, b: Counts) -> Counts {
    Counts { bad: a.bad + b.bad, total: a.total + b.total }
}

/// How one rollout ended.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ended {
    pub verdict: Verdict,
    /// Seconds from the start to the verdict.
    pub at: u64,
    /// Whether a step was ever held because stable breached too.
    pub stable_breaching: bool,
    /// The step (0-based) the verdict came at; the number of steps once promoted.
    pub step: usize,
}

/// One rollout: its verdict and the seconds from its start to it.
pub fn simulate(rng: &mut Rng, cell: RolloutCell, rule: Rule, timing: Timing) -> (Verdict, u64) {
    let canary_share = cell.quality * ERRORS.budget;
    let ended = judge_rollout(rng, rule, timing, |rng, _, seconds, weight| {
        let canary_rate = cell.traffic * weight / 100.0;
        let canary = draw(rng, canary_rate, canary_share, seconds);
        let stable = draw(rng, cell.traffic - canary_rate, 0.5 * ERRORS.budget, seconds);
        (canary, stable)
    });
    (ended.verdict, ended.at)
}

/// One rollout of the error check judged by `rule`, step by step as the controller judges it.
/// `traffic(rng, at, seconds, weight)` gives the canary's and stable's counts of the `seconds`
/// after second `at` of the rollout, the canary at `weight` percent.
pub fn judge_rollout(
    rng: &mut Rng,
    rule: Rule,
    timing: Timing,
    mut traffic: impl FnMut(&mut Rng, u64, u64, f64) -> (Counts, Counts),
) -> Ended {
    let spec = CheckSpec {
        name: "error-rate".into(),
        budget: ERRORS.budget,
        tolerance: ERRORS.tolerance,
        unit: Unit::Requests,
        source: None,
    };
    let policy = Policy {
        rates: RATES,
        exposure_scaling: rule.exposure_scaling,
        on_inconclusive: InconclusivePolicy::Pause,
        compare_with_stable: rule.compare_with_stable,
    };
    let mut carried = Counts::ZERO;
    let mut clock_start = 0;
    let mut stable_breaching = false;
    for (i, weight) in rule.weights.iter().enumerate() {
        let next_weight = rule.weights.get(i + 1).copied().unwrap_or(100.0);
        let (mut canary, mut stable) = (Counts::ZERO, Counts::ZERO);
        let mut elapsed = 0;
        loop {
            let more = timing.interval.min(timing.max_hold - elapsed);
            let (c, s) = traffic(rng, clock_start + elapsed, more, *weight);
            canary = add(canary, c);
            stable = add(stable, s);
            elapsed += more;
            let evidence = [CheckEvidence {
                spec: spec.clone(),
                canary: Ok(canary),
                // At 100 % stable serves nothing and the controller reads none.
                stable: (*weight < 100.0).then_some(stable),
                carried: if rule.pooled { carried } else { Counts::ZERO },
                slower: Vec::new(),
            }];
            let clock = StepClock {
                elapsed: Duration::from_secs(elapsed),
                min_healthy: Duration::from_secs(timing.min_healthy),
                max_hold: Duration::from_secs(timing.max_hold),
                next_weight,
            };
            let at = clock_start + elapsed;
            match gate::evaluate(&evidence, clock, policy).decision {
                Decision::StepUp(..) => break,
                Decision::Rollback(..) | Decision::Misconfigured(..) => {
                    return Ended { verdict: Verdict::Rollback, at, stable_breaching, step: i };
                }
                Decision::Pause(..) => {
                    return Ended { verdict: Verdict::Inconclusive, at, stable_breaching, step: i };
                }
                Decision::StableBreaching(..) => stable_breaching = true,
                Decision::Hold(..) | Decision::MetricsUnavailable(..) => {}
            }
            if elapsed >= timing.max_hold {
                return Ended { verdict: Verdict::Inconclusive, at, stable_breaching, step: i };
            }
        }
        carried = add(carried, canary);
        clock_start += elapsed;
    }
    Ended { verdict: Verdict::Promote, at: clock_start, stable_breaching, step: rule.weights.len() }
}

/// Runs every cell under every rule, `runs` rollouts each; a rollout's traffic depends only on
/// the seed, the cell and the run, so the rules judge the same traffic.
pub fn run(runs: usize, seed: u64, timing: Timing) -> Vec<RolloutResult> {
    cells()
        .into_iter()
        .enumerate()
        .map(|(index, cell)| {
            let tallies = RULES
                .iter()
                .map(|rule| {
                    let mut t = RolloutTally::default();
                    for r in 0..runs {
                        let s = seed
                            ^ 0x5EED_0000_0000
                            ^ ((index as u64) << 40)
                            ^ (r as u64).wrapping_mul(0x9E37_79B9);
                        let (verdict, at) = simulate(&mut Rng::seeded(s), cell, *rule, timing);
                        match verdict {
                            Verdict::Promote => t.promoted += 1,
                            Verdict::Rollback => t.rolled_back += 1,
                            Verdict::Inconclusive => t.paused += 1,
                        }
                        let matters = if cell.quality <= 1.0 { Verdict::Promote } else { Verdict::Rollback };
                        if verdict == matters {
                            t.times.push(at);
                        }
                    }
                    (*rule, t)
                })
                .collect();
            RolloutResult { cell, tallies }
        })
        .collect()
}

fn pct(n: usize, of: usize) -> String {
    crate::report::pct(n as f64 / of.max(1) as f64)
}

/// The Markdown section: the table, then the targets met or missed.
pub fn report(runs: usize, results: &[RolloutResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "#### Whole rollouts, 1 → 5 → 100 %, error rate < 0.02 % (tolerance 10×)\n\n{runs} rollouts per \
         cell and rule; every step at rollgate's defaults (interval 10 s, minHealthy 3 m, maxHold 30 m, \
         then pause). Time: from the start to promotion (healthy) or rollback (bad).\n"
    );
    let _ = writeln!(out, "| req/s | canary | rule | promoted | rolled back | paused | median | p95 |");
    let _ = writeln!(out, "|---:|---|---|---:|---:|---:|---:|---:|");
    for r in results {
        let c = r.cell;
        let canary = if c.quality <= 1.0 {
            format!("healthy {}×", c.quality)
        } else {
            format!("bad {}×", c.quality)
        };
        for (i, (rule, t)) in r.tallies.iter().enumerate() {
            let lead = if i == 0 { format!("| {} | {canary} ", c.traffic) } else { "| | ".into() };
            let n = t.runs();
            let _ = writeln!(
                out,
                "{lead}| {} | {} | {} | {} | {} | {} |",
                rule.name,
                pct(t.promoted, n),
                pct(t.rolled_back, n),
                pct(t.paused, n),
                secs(t.quantile(0.5)),
                secs(t.quantile(0.95)),
            );
        }
    }
    let _ = writeln!(out, "\nTargets of the gate today (the last rule):\n");
    for line in targets(results) {
        let _ = writeln!(out, "- {line}");
    }
    out
}

fn now(r: &RolloutResult) -> &RolloutTally {
    &r.tallies[RULES.len() - 1].1
}

/// The targets for whole rollouts, each met or missed with its figure.
pub fn targets(results: &[RolloutResult]) -> Vec<String> {
    let mut lines = Vec::new();
    let verdict = |met: bool| if met { "met" } else { "**MISSED**" };
    if let Some(r) = results.iter().find(|r| r.cell.traffic == 100.0 && r.cell.quality == 0.5) {
        let t = now(r);
        let median = t.quantile(0.5).filter(|_| t.promoted * 2 > t.runs());
        let met = median.is_some_and(|s| s <= 45 * 60);
        lines.push(format!(
            "healthy 0.5× at 100 req/s promoted in the median within 45 m: {} (median {}, {} promoted)",
            verdict(met),
            secs(median),
            pct(t.promoted, t.runs())
        ));
    }
    let healthy: Vec<_> = results.iter().filter(|r| r.cell.quality <= 1.0).collect();
    let worst =
        healthy.iter().map(|r| now(r).rolled_back as f64 / now(r).runs().max(1) as f64).fold(0.0, f64::max);
    lines.push(format!(
        "healthy canaries rolled back ≤ 1 % per rollout in every cell: {} (worst {:.1} %)",
        verdict(worst <= 0.01),
        worst * 100.0
    ));
    let bad: Vec<_> = results.iter().filter(|r| r.cell.quality >= 10.0).collect();
    let worst = bad.iter().map(|r| now(r).promoted as f64 / now(r).runs().max(1) as f64).fold(0.0, f64::max);
    lines.push(format!(
        "≥ 10× canaries promoted ≤ 1 % in every cell: {} (worst {:.1} %)",
        verdict(worst <= 0.01),
        worst * 100.0
    ));
    if let Some(r) = results.iter().find(|r| r.cell.traffic == 100.0 && r.cell.quality == 100.0) {
        let median = now(r).quantile(0.5);
        lines.push(format!(
            "100× canary at 100 req/s rolled back in under 3 m (median): {} (median {})",
            verdict(median.is_some_and(|s| s < 180)),
            secs(median)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_and_exposure_scaling_promote_a_healthy_canary_sooner_on_the_same_traffic() {
        let results = run(40, 7, Timing::defaults());
        let healthy = results
            .iter()
            .find(|r| r.cell.traffic == 100.0 && r.cell.quality == 0.5)
            .expect("the healthy cell at 100 req/s");
        let promoted: Vec<usize> = healthy.tallies.iter().map(|(_, t)| t.promoted).collect();
        let medians: Vec<Option<u64>> = healthy.tallies.iter().map(|(_, t)| t.quantile(0.5)).collect();
        assert!(promoted[2] >= promoted[0], "{promoted:?}");
        assert!(medians[2] < medians[1] && medians[1] <= medians[0].or(Some(u64::MAX)), "{medians:?}");
    }

    #[test]
    fn a_hundredfold_canary_is_never_promoted_and_rolled_back_wherever_it_gets_traffic() {
        let results = run(20, 7, Timing::defaults());
        for r in results.iter().filter(|r| r.cell.quality == 100.0) {
            for (rule, t) in &r.tallies {
                let at = r.cell.traffic;
                assert_eq!(t.promoted, 0, "{} at {at} req/s: {t:?}", rule.name);
                // At 10 req/s, 1 % is 0.1 req/s: 30 minutes may hold fewer than two errors.
                if at >= 100.0 {
                    assert_eq!(t.rolled_back, 20, "{} at {at} req/s: {t:?}", rule.name);
                }
            }
        }
    }
}
