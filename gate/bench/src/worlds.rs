//! Whole rollouts in a hostile world. The canary is exactly as good as stable (A/A), in
//! thousands of rollouts, while the traffic drifts over the day, errors burst on both versions
//! at once (a dependency failing, a busy node), errors come in clumps (a client retrying), or
//! stable itself is over budget (a global incident); then a bad canary in the same worlds, to
//! show that the comparison with stable does not blind the gate. Each world is judged with the
//! comparison (`compareWithStable: true`, the default) and without it.
//!
//! Traffic is Poisson per interval at 100 req/s, split by the step's weight; each version's
//! requests fail with its share (a multiple of the budget), as the world bends it.

use std::f64::consts::TAU;
use std::fmt::Write as _;

use rollgate_gate::Counts;

use crate::ERRORS;
use crate::judges::Verdict;
use crate::report::secs;
use crate::rollouts::{Ended, Rule, Timing, WEIGHTS, judge_rollout};
use crate::traffic::Rng;

/// Total requests per second.
pub const TRAFFIC: f64 = 100.0;
/// Errors per clump in the clumped world.
const CLUMP: u64 = 5;
/// A shared burst: how often one starts (on average, seconds), how long it lasts and how many
/// times the usual share both versions then fail with.
const BURST_EVERY: f64 = 600.0;
const BURST_SECONDS: u64 = 30;
const BURST_FACTOR: f64 = 50.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    Steady,
    /// Traffic ±60 % over a one-hour cycle (a day, compressed into a rollout's length).
    Drift,
    /// Every ten minutes on average, 30 s in which both versions fail 50 times as often.
    SharedBursts,
    /// Errors come five at a time, each version on its own.
    Clumped,
    /// Stable at 5× the budget all along.
    GlobalIncident,
}

pub const WORLDS: [World; 5] =
    [World::Steady, World::Drift, World::SharedBursts, World::Clumped, World::GlobalIncident];

pub const RULES: [Rule; 3] = [
    Rule {
        name: "absolute only",
        exposure_scaling: 1.0,
        pooled: true,
        compare_with_stable: false,
        weights: &WEIGHTS,
    },
    Rule {
        name: "absolute + canary vs stable (now)",
        exposure_scaling: 1.0,
        pooled: true,
        compare_with_stable: true,
        weights: &WEIGHTS,
    },
    Rule {
        name: "the same, last judged step 50 % (1 → 5 → 50, then promotion)",
        exposure_scaling: 1.0,
        pooled: true,
        compare_with_stable: true,
        weights: &CONTROLLED,
    },
];

/// Steps that keep stable serving to the end: promotion follows the last step at 50 %.
pub const CONTROLLED: [f64; 3] = [1.0, 5.0, 50.0];

/// The rule the targets are checked on: the gate today, with the default steps.
const NOW: usize = 1;
/// The gate today with a last step below 100 %.
const CONTROLLED_TO_THE_END: usize = 2;

/// A bad canary fails this many times as often as stable.
pub const BAD: f64 = 20.0;

impl World {
    fn name(self) -> &'static str {
        match self {
            World::Steady => "steady",
            World::Drift => "diurnal drift",
            World::SharedBursts => "bursts on both",
            World::Clumped => "clumped errors",
            World::GlobalIncident => "global incident",
        }
    }

    /// Stable's error share, as a multiple of the budget.
    pub fn stable_quality(self) -> f64 {
        match self {
            World::GlobalIncident => 5.0,
            _ => 0.5,
        }
    }
}

/// The world's traffic, interval by interval, for `judge_rollout`.
struct Weather {
    world: World,
    canary_quality: f64,
    burst_until: u64,
}

impl Weather {
    fn interval(&mut self, rng: &mut Rng, at: u64, seconds: u64, weight: f64) -> (Counts, Counts) {
        let rate = match self.world {
            World::Drift => TRAFFIC * (1.0 + 0.6 * (TAU * at as f64 / 3600.0).sin()),
            _ => TRAFFIC,
        };
        let mut factor = 1.0;
        if self.world == World::SharedBursts {
            if at >= self.burst_until && rng.uniform() < seconds as f64 / BURST_EVERY {
                self.burst_until = at + BURST_SECONDS;
            }
            if at < self.burst_until {
                factor = BURST_FACTOR;
            }
        }
        let budget = ERRORS.budget;
        let canary_rate = rate * weight / 100.0;
        let canary = self.side(rng, canary_rate * seconds as f64, self.canary_quality * budget * factor);
        let stable = self.side(
            rng,
            (rate - canary_rate) * seconds as f64,
            self.world.stable_quality() * budget * factor,
        );
        (canary, stable)
    }

    fn side(&self, rng: &mut Rng, mean_total: f64, share: f64) -> Counts {
        let total = rng.poisson(mean_total);
        let share = share.min(1.0);
        let bad = match self.world {
            World::Clumped => (CLUMP * rng.binomial(total, share / CLUMP as f64)).min(total),
            _ => rng.binomial(total, share),
        };
        Counts { bad, total }
    }
}

/// One world and canary, judged by each rule over the same traffic.
#[derive(Debug, Clone, PartialEq)]
pub struct WorldResult {
    pub world: World,
    /// The canary's error share as a multiple of stable's.
    pub versus_stable: f64,
    pub tallies: Vec<(Rule, WorldTally)>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorldTally {
    pub promoted: usize,
    pub rolled_back: usize,
    pub paused: usize,
    /// Rollouts in which a step was held because stable breached too.
    pub stable_breaching: usize,
    /// Rollbacks at the last step, where the canary takes all traffic and stable answers nothing
    /// to compare with.
    pub rolled_back_alone: usize,
    /// Seconds to the verdict that matters (promotion of an A/A canary, rollback of a bad one).
    pub times: Vec<u64>,
}

impl WorldTally {
    fn runs(&self) -> usize {
        self.promoted + self.rolled_back + self.paused
    }

    fn count(&mut self, ended: Ended, rule: &Rule, matters: Verdict) {
        match ended.verdict {
            Verdict::Promote => self.promoted += 1,
            Verdict::Rollback => {
                self.rolled_back += 1;
                let alone = rule.weights.get(ended.step).is_some_and(|w| *w >= 100.0);
                self.rolled_back_alone += usize::from(alone);
            }
            Verdict::Inconclusive => self.paused += 1,
        }
        self.stable_breaching += usize::from(ended.stable_breaching);
        if ended.verdict == matters {
            self.times.push(ended.at);
        }
    }
}

/// Every world with an A/A canary (`aa_runs` rollouts each) and a bad one (`bad_runs`).
pub fn run(aa_runs: usize, bad_runs: usize, seed: u64, timing: Timing) -> Vec<WorldResult> {
    let mut results = Vec::new();
    for (index, world) in WORLDS.iter().enumerate() {
        for (versus_stable, runs) in [(1.0, aa_runs), (BAD, bad_runs)] {
            let canary_quality = versus_stable * world.stable_quality();
            let matters = if versus_stable <= 1.0 { Verdict::Promote } else { Verdict::Rollback };
            let tallies = RULES
                .iter()
                .map(|rule| {
                    let mut t = WorldTally::default();
                    for r in 0..runs {
                        let s = seed
                            ^ 0x3091_0000_0000
                            ^ ((index as u64) << 40)
                            ^ ((versus_stable as u64) << 48)
                            ^ (r as u64).wrapping_mul(0x9E37_79B9);
                        let mut weather = Weather { world: *world, canary_quality, burst_until: 0 };
                        let ended = judge_rollout(&mut Rng::seeded(s), *rule, timing, |rng, at, secs, w| {
                            weather.interval(rng, at, secs, w)
                        });
                        t.count(ended, rule, matters);
                    }
                    (*rule, t)
                })
                .collect();
            results.push(WorldResult { world: *world, versus_stable, tallies });
        }
    }
    results
}

fn pct(n: usize, of: usize) -> String {
    crate::report::pct(n as f64 / of.max(1) as f64)
}

/// The Markdown section: the table, then the targets met or missed.
pub fn report(results: &[WorldResult]) -> String {
    let mut out = String::new();
    let aa: usize = results.iter().filter(|r| r.versus_stable <= 1.0).map(|r| now(r).runs()).sum();
    let _ = writeln!(
        out,
        "#### Whole rollouts in hostile worlds: A/A canaries and {BAD}× canaries, 1 → 5 → 100 % \
         (and 1 → 5 → 50 %), {TRAFFIC} req/s\n\n{aa} A/A rollouts in all under each rule (the canary exactly as good as stable); \
         same timing as above. Stable fails at 0.5× the budget (5× in the global incident). \
         \"held: stable\" counts the rollouts in which a step was held because stable breached too; \
         \"at 100 %\" the rollbacks at the last step, where stable serves nothing to compare with.\n"
    );
    let _ = writeln!(
        out,
        "| world | canary | rule | promoted | rolled back | at 100 % | paused | held: stable | median |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in results {
        let canary =
            if r.versus_stable <= 1.0 { "A/A".to_string() } else { format!("{}× stable", r.versus_stable) };
        for (i, (rule, t)) in r.tallies.iter().enumerate() {
            let lead = if i == 0 { format!("| {} | {canary} ", r.world.name()) } else { "| | ".into() };
            let n = t.runs();
            let _ = writeln!(
                out,
                "{lead}| {} | {} | {} | {} | {} | {} | {} |",
                rule.name,
                pct(t.promoted, n),
                pct(t.rolled_back, n),
                pct(t.rolled_back_alone, n),
                pct(t.paused, n),
                pct(t.stable_breaching, n),
                secs(crate::quantile(&t.times, 0.5)),
            );
        }
    }
    let _ = writeln!(out, "\nTargets (the gate today, the second rule):\n");
    for line in targets(results) {
        let _ = writeln!(out, "- {line}");
    }
    out
}

fn now(r: &WorldResult) -> &WorldTally {
    &r.tallies[NOW].1
}

fn share(n: usize, t: &WorldTally) -> f64 {
    n as f64 / t.runs().max(1) as f64
}

/// The targets for A/A rollouts, global incidents and bad canaries, met or missed.
pub fn targets(results: &[WorldResult]) -> Vec<String> {
    let verdict = |met: bool| if met { "met" } else { "**MISSED**" };
    let mut lines = Vec::new();
    let aa: Vec<&WorldResult> =
        results.iter().filter(|r| r.versus_stable <= 1.0 && r.world != World::Clumped).collect();
    let worst = |f: &dyn Fn(&WorldTally) -> usize| {
        aa.iter()
            .map(|r| (share(f(now(r)), now(r)), r.world.name()))
            .fold((0.0, "none"), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (compared, at) = worst(&|t| t.rolled_back - t.rolled_back_alone);
    lines.push(format!(
        "A/A canaries rolled back ≤ 1 % per rollout while stable serves (1 % and 5 %), in every world the \
         test assumes (all but clumped): {} (worst {:.2} %, {at})",
        verdict(compared <= 0.01),
        compared * 100.0
    ));
    let (whole, at) = worst(&|t| t.rolled_back);
    lines.push(format!(
        "A/A canaries rolled back ≤ 1 % per whole rollout, default steps 1 → 5 → 100: {} (worst {:.2} %, \
         {at}: at 100 % there is no stable to compare with, and a burst on everything looks like the \
         canary's)",
        verdict(whole <= 0.01),
        whole * 100.0
    ));
    let (whole, at) = aa
        .iter()
        .map(|r| {
            let t = &r.tallies[CONTROLLED_TO_THE_END].1;
            (share(t.rolled_back, t), r.world.name())
        })
        .fold((0.0, "none"), |a, b| if b.0 > a.0 { b } else { a });
    lines.push(format!(
        "A/A canaries rolled back ≤ 1 % per whole rollout, steps 1 → 5 → 50 (stable serves at every judged \
         step): {} (worst {:.2} %, {at})",
        verdict(whole <= 0.01),
        whole * 100.0
    ));
    if let Some(r) = results.iter().find(|r| r.versus_stable <= 1.0 && r.world == World::Steady) {
        let t = &r.tallies[CONTROLLED_TO_THE_END].1;
        let median = crate::quantile(&t.times, 0.5).filter(|_| t.promoted * 2 > t.runs());
        lines.push(format!(
            "healthy 0.5× canary promoted in the median within 45 m, steps 1 → 5 → 50: {} (median {}, {} \
             promoted)",
            verdict(median.is_some_and(|s| s <= 45 * 60)),
            secs(median),
            pct(t.promoted, t.runs())
        ));
    }
    if let Some(r) = results.iter().find(|r| r.versus_stable <= 1.0 && r.world == World::Clumped) {
        lines.push(format!(
            "clumped errors break the assumption (a clump counts as five independent errors): {} of A/A \
             canaries rolled back (reported, not a target)",
            pct(now(r).rolled_back, now(r).runs())
        ));
    }
    if let Some(r) = results.iter().find(|r| r.versus_stable <= 1.0 && r.world == World::GlobalIncident) {
        let t = now(r);
        let compared = t.rolled_back - t.rolled_back_alone;
        lines.push(format!(
            "global incident: 0 rollbacks blamed on the canary while stable serves, and the condition says \
             stable is breaching: {} ({compared} of {} rolled back at 1 % or 5 %: the comparison bounds this by \
             α = 1 %, it cannot make it 0; {} held with StableBreaching)",
            verdict(compared == 0 && t.stable_breaching > 0),
            t.runs(),
            pct(t.stable_breaching, t.runs())
        ));
        lines.push(format!(
            "global incident at 100 %, where stable serves nothing: 0 rollbacks: {} ({} of the A/A canaries \
             reached 100 % and were rolled back there: with no control, a global incident is the canary's)",
            verdict(t.rolled_back_alone == 0),
            pct(t.rolled_back_alone, t.runs())
        ));
    }
    let bad: Vec<&WorldResult> = results.iter().filter(|r| r.versus_stable > 1.0).collect();
    for (rule, steps) in [(NOW, "1 → 5 → 100"), (CONTROLLED_TO_THE_END, "1 → 5 → 50")] {
        let worst = bad
            .iter()
            .map(|r| {
                let t = &r.tallies[rule].1;
                share(t.promoted, t)
            })
            .fold(0.0, f64::max);
        lines.push(format!(
            "{BAD}× canaries promoted ≤ 1 % in every world, steps {steps}: {} (worst {:.1} %)",
            verdict(worst <= 0.01),
            worst * 100.0
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_global_incident_holds_with_stable_breaching_while_stable_serves() {
        let results = run(40, 10, 11, Timing::defaults());
        let incident = results
            .iter()
            .find(|r| r.world == World::GlobalIncident && r.versus_stable <= 1.0)
            .expect("the A/A global incident");
        let (with, without) = (&incident.tallies[NOW].1, &incident.tallies[0].1);
        // Rolled back only at 100 %, where stable serves nothing to compare with.
        assert_eq!(with.rolled_back, with.rolled_back_alone, "{with:?}");
        assert!(with.stable_breaching > 0, "{with:?}");
        // Without the comparison the same canaries are rolled back: the cell can fail.
        assert!(without.rolled_back > 20, "{without:?}");
    }

    #[test]
    fn a_bad_canary_is_rolled_back_in_every_world_with_the_comparison() {
        for r in run(0, 10, 13, Timing::defaults()).iter().filter(|r| r.versus_stable > 1.0) {
            let t = &r.tallies[NOW].1;
            assert_eq!(t.promoted, 0, "{:?}: {t:?}", r.world);
            assert!(t.rolled_back >= 9, "{:?}: {t:?}", r.world);
        }
    }
}
