//! The verdict-quality benchmark (`rollgate-gate-bench`, `make bench-gate`): how often each gate
//! rolls back a healthy canary, how often it promotes a bad one, and how long it takes, on
//! simulated traffic over a grid of total traffic, canary weight and canary quality.
//!
//! Every run of a cell draws one step of traffic (canary and stable) from a seed derived from the
//! base seed, the cell and the run, and all gates judge the same traffic. The output is a
//! Markdown report: the table, then each target of the gate with the cells that meet or miss
//! it. Same seed, same report, on any machine.

pub mod judges;
pub mod kayenta;
mod report;
pub mod rollouts;
pub mod traffic;
pub mod worlds;

use judges::{Judge, Outcome, Step, Verdict};
pub use report::{SpliceError, report, splice};
use traffic::{BadEvents, LogNormal, Rng};

use rollgate_gate::ErrorRates;
use rollgate_gate::sprt::{optimal_detection_size, optimal_pass_size};

/// A kind of check and its budget.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CheckKind {
    pub name: &'static str,
    pub budget: f64,
    pub tolerance: f64,
    /// Latency limit in seconds, for checks on slow requests.
    pub latency_limit: Option<f64>,
}

pub const ERRORS: CheckKind =
    CheckKind { name: "error rate < 0.02 %", budget: 0.0002, tolerance: 10.0, latency_limit: None };
pub const LATENCY: CheckKind =
    CheckKind { name: "p95 latency < 300 ms", budget: 0.05, tolerance: 3.0, latency_limit: Some(0.3) };

#[derive(Debug, Clone)]
pub struct Grid {
    pub kinds: Vec<CheckKind>,
    /// Total requests per second (canary and stable).
    pub traffic: Vec<f64>,
    /// The canary's share of traffic.
    pub weights: Vec<f64>,
    /// The canary's bad share as a multiple of the budget; below 1 is healthy.
    pub qualities: Vec<f64>,
    pub runs: usize,
    pub seed: u64,
    /// How long a step may last (rollgate's `maxHold`), seconds.
    pub horizon: u64,
    pub judges: Vec<Judge>,
}

/// rollgate's default error rates (`policy.falseRollbackRate`, `policy.missedDetectionRate`).
pub const RATES: ErrorRates = ErrorRates {
    false_rollback: rollgate_gate::defaults::FALSE_ROLLBACK_RATE,
    missed_detection: rollgate_gate::defaults::MISSED_DETECTION_RATE,
};

impl Grid {
    /// The grid of the issue, with rollgate's defaults (interval 10 s, minHealthy 3 m, maxHold
    /// 30 m, α = β = 1 %) and the peers' usual settings (interval 60 s, 10 intervals).
    pub fn standard(runs: usize, seed: u64) -> Self {
        let horizon = rollgate_gate::defaults::MAX_HOLD.as_secs();
        Self {
            kinds: vec![ERRORS, LATENCY],
            traffic: vec![10.0, 100.0, 1000.0],
            weights: vec![0.01, 0.05],
            qualities: vec![0.5, 2.0, 10.0, 100.0],
            runs,
            seed,
            horizon,
            judges: vec![
                Judge::Rollgate {
                    interval: rollgate_gate::defaults::INTERVAL.as_secs(),
                    min_healthy: rollgate_gate::defaults::MIN_HEALTHY.as_secs(),
                    max_hold: horizon,
                    rates: RATES,
                },
                Judge::Flagger { threshold: 1, iterations: 10 },
                Judge::Flagger { threshold: 5, iterations: 10 },
                Judge::Argo { failure_limit: 0, count: 10 },
                Judge::Argo { failure_limit: 3, count: 10 },
                Judge::Kayenta { intervals: 10 },
            ],
        }
    }

    fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for kind in &self.kinds {
            for &traffic in &self.traffic {
                for &weight in &self.weights {
                    for &quality in &self.qualities {
                        // A bad share must stay a probability (100× a 5 % budget does not exist).
                        if quality * kind.budget < 1.0 {
                            cells.push(Cell { kind: *kind, traffic, weight, quality });
                        }
                    }
                }
            }
        }
        cells
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cell {
    pub kind: CheckKind,
    pub traffic: f64,
    pub weight: f64,
    pub quality: f64,
}

impl Cell {
    fn healthy(&self) -> bool {
        self.quality <= 1.0
    }

    fn bad_events(&self, quality: f64) -> BadEvents {
        let share = quality * self.kind.budget;
        match self.kind.latency_limit {
            None => BadEvents::Errors(share),
            Some(limit) => BadEvents::Slow { latency: LogNormal::with_exceedance(limit, share, 0.5), limit },
        }
    }

    /// The expected time an optimal sequential test (one SPRT built for exactly this canary's
    /// rate, at the same α and β) needs, in seconds.
    pub fn reference_seconds(&self) -> f64 {
        let events = if self.healthy() {
            optimal_pass_size(self.kind.budget, self.quality, self.kind.tolerance, RATES)
        } else {
            optimal_detection_size(self.kind.budget, self.quality, RATES)
        };
        events / (self.traffic * self.weight)
    }
}

/// What one gate did over the runs of one cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub judge: String,
    pub rollbacks: usize,
    pub promotions: usize,
    pub inconclusive: usize,
    /// Seconds to the verdict that matters: rollback for a bad canary, any verdict for a
    /// healthy one.
    pub times: Vec<u64>,
}

impl Tally {
    fn runs(&self) -> usize {
        self.rollbacks + self.promotions + self.inconclusive
    }

    fn share(&self, n: usize) -> f64 {
        n as f64 / self.runs().max(1) as f64
    }

    fn quantile(&self, q: f64) -> Option<u64> {
        quantile(&self.times, q)
    }
}

/// The `q` quantile of `times` (nearest rank); `None` when there are none.
fn quantile(times: &[u64], q: f64) -> Option<u64> {
    let mut t = times.to_vec();
    t.sort_unstable();
    if t.is_empty() {
        return None;
    }
    let i = ((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1;
    Some(t[i])
}

#[derive(Debug, Clone, PartialEq)]
pub struct CellResult {
    pub cell: Cell,
    pub tallies: Vec<Tally>,
}

/// Runs one cell: `runs` independent steps, each judged by every gate.
pub fn run_cell(grid: &Grid, index: usize, cell: Cell) -> CellResult {
    let mut tallies: Vec<Tally> = grid
        .judges
        .iter()
        .map(|j| Tally { judge: j.name(), rollbacks: 0, promotions: 0, inconclusive: 0, times: Vec::new() })
        .collect();
    let seconds = grid.horizon as usize;
    for run in 0..grid.runs {
        let seed = grid.seed ^ ((index as u64) << 40) ^ (run as u64).wrapping_mul(0x9E37_79B9);
        let mut rng = Rng::seeded(seed);
        let canary_rate = cell.traffic * cell.weight;
        let canary = traffic::stream(&mut rng, canary_rate, cell.bad_events(cell.quality), seconds);
        let stable = traffic::stream(&mut rng, cell.traffic - canary_rate, cell.bad_events(0.5), seconds);
        let step = Step {
            canary: &canary,
            stable: &stable,
            budget: cell.kind.budget,
            tolerance: cell.kind.tolerance,
        };
        for (judge, tally) in grid.judges.iter().zip(tallies.iter_mut()) {
            let Outcome { verdict, at } = judge.judge(&step);
            match verdict {
                Verdict::Rollback => tally.rollbacks += 1,
                Verdict::Promote => tally.promotions += 1,
                Verdict::Inconclusive => tally.inconclusive += 1,
            }
            if verdict == Verdict::Rollback || (cell.healthy() && verdict == Verdict::Promote) {
                tally.times.push(at);
            }
        }
    }
    CellResult { cell, tallies }
}

/// Runs the grid on `threads` threads; the result does not depend on how many.
pub fn run(grid: &Grid, threads: usize) -> Vec<CellResult> {
    let cells = grid.cells();
    let threads = threads.max(1);
    let mut results: Vec<Option<CellResult>> = vec![None; cells.len()];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let cells = &cells;
                scope.spawn(move || {
                    cells
                        .iter()
                        .enumerate()
                        .skip(t)
                        .step_by(threads)
                        .map(|(i, c)| (i, run_cell(grid, i, *c)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for h in handles {
            // A panicking worker is a bug in the simulator; its cells stay missing and the
            // report says so.
            if let Ok(done) = h.join() {
                for (i, r) in done {
                    results[i] = Some(r);
                }
            }
        }
    });
    results.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Grid {
        let mut g = Grid::standard(20, 42);
        g.traffic = vec![100.0];
        g.weights = vec![0.05];
        g.qualities = vec![0.5, 100.0];
        g.kinds = vec![ERRORS];
        g
    }

    #[test]
    fn the_same_seed_gives_the_same_report_whatever_the_threads() {
        let g = small();
        let one = report(&g, &run(&g, 1));
        let two = report(&g, &run(&g, 2));
        assert_eq!(one, two);
        let mut other = small();
        other.seed = 43;
        assert_ne!(report(&other, &run(&other, 1)), one, "another seed, other traffic");
    }

    #[test]
    fn a_hundredfold_bad_canary_is_caught_by_every_gate_and_fast_by_rollgate() {
        let g = small();
        let results = run(&g, 1);
        let bad = results.iter().find(|r| r.cell.quality == 100.0).expect("bad cell");
        for t in &bad.tallies {
            assert_eq!(t.rollbacks, g.runs, "{}", t.judge);
        }
        // Two errors are the least evidence that can convict (one error's likelihood ratio is
        // below any bound at α = 1 %); at 0.1 errors/s the second comes after 20 s on average.
        assert!(bad.tallies[0].quantile(0.5).is_some_and(|s| s < 30), "{:?}", bad.tallies[0]);
    }

    #[test]
    fn the_report_goes_between_the_markers() {
        let doc = "a\n<!-- bench-gate:begin -->\nold\n<!-- bench-gate:end -->\nb\n";
        let out = splice(doc, "new\n", "make bench-gate").expect("spliced");
        assert!(out.starts_with("a\n<!-- bench-gate:begin -->\n"));
        assert!(out.contains("new\n") && !out.contains("old"));
        assert!(out.ends_with("<!-- bench-gate:end -->\nb\n"));
        assert!(splice("no markers", "x", "c").is_err());
    }
}
