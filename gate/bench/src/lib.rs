//! The verdict-quality benchmark (`rollgate-gate-bench`, `make bench-gate`): how often each gate
//! rolls back a healthy canary, how often it promotes a bad one, and how long it takes, on
//! simulated traffic over a grid of total traffic, canary weight and canary quality.
//!
//! Every run of a cell draws one step of traffic (canary and stable) from a seed derived from the
//! base seed, the cell and the run, and all gates judge the same traffic. The output is a
//! Markdown report: the table, then each target of the gate with the cells that meet or miss
//! it. Same seed, same report, on any machine.

pub mod judges;
pub mod traffic;

use std::fmt::Write as _;

use judges::{Judge, Outcome, Step, Verdict};
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
        let mut t = self.times.clone();
        t.sort_unstable();
        if t.is_empty() {
            return None;
        }
        let i = ((q * t.len() as f64).ceil() as usize).clamp(1, t.len()) - 1;
        Some(t[i])
    }
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

fn pct(x: f64) -> String {
    if x == 0.0 { "0".into() } else { format!("{:.1} %", x * 100.0) }
}

fn secs(s: Option<u64>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s < 120 => format!("{s} s"),
        Some(s) => format!("{:.1} m", s as f64 / 60.0),
    }
}

fn secs_f(s: f64) -> String {
    if s < 120.0 { format!("{s:.0} s") } else { format!("{:.1} m", s / 60.0) }
}

/// The Markdown report: one table per check kind, then the targets.
pub fn report(grid: &Grid, results: &[CellResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} runs per cell, seed {}, horizon {} (rollgate's maxHold); peers: 10 intervals of 60 s.\n",
        grid.runs,
        grid.seed,
        secs(Some(grid.horizon))
    );
    for kind in &grid.kinds {
        let _ = writeln!(out, "#### {} (tolerance {}×)\n", kind.name, kind.tolerance);
        let _ = writeln!(
            out,
            "| req/s | weight | canary | gate | rolled back | promoted | inconclusive | median | p95 | optimal |"
        );
        let _ = writeln!(out, "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|");
        for r in results.iter().filter(|r| r.cell.kind == *kind) {
            let c = r.cell;
            let canary =
                if c.healthy() { format!("healthy {}×", c.quality) } else { format!("bad {}×", c.quality) };
            for (i, t) in r.tallies.iter().enumerate() {
                let (lead, reference) = if i == 0 {
                    (
                        format!("| {} | {} % | {canary} ", c.traffic, c.weight * 100.0),
                        secs_f(c.reference_seconds()),
                    )
                } else {
                    ("| | | ".into(), String::new())
                };
                let _ = writeln!(
                    out,
                    "{lead}| {} | {} | {} | {} | {} | {} | {reference} |",
                    t.judge,
                    pct(t.share(t.rollbacks)),
                    pct(t.share(t.promotions)),
                    pct(t.share(t.inconclusive)),
                    secs(t.quantile(0.5)),
                    secs(t.quantile(0.95)),
                );
            }
        }
        out.push('\n');
    }
    out.push_str(&targets(grid, results));
    out
}

/// Each target of the gate, checked cell by cell.
fn targets(grid: &Grid, results: &[CellResult]) -> String {
    let interval = match grid.judges.first() {
        Some(Judge::Rollgate { interval, .. }) => *interval as f64,
        _ => 10.0,
    };
    let mut out = String::from("#### Targets, checked on the table above\n\n");
    let mut line = |ok: bool, what: String, misses: Vec<String>| {
        let mark = if ok { "met" } else { "MISSED" };
        let _ = write!(out, "- **{mark}**: {what}");
        if !misses.is_empty() {
            let _ = write!(out, " — misses: {}", misses.join("; "));
        }
        out.push('\n');
    };
    let label = |c: &Cell| {
        format!("{} at {} % of {} req/s, {}×", c.kind.name, c.weight * 100.0, c.traffic, c.quality)
    };
    let ours = |r: &CellResult| r.tallies.first().cloned();

    let mut misses = Vec::new();
    for r in results.iter().filter(|r| r.cell.healthy()) {
        if let Some(t) = ours(r)
            && t.share(t.rollbacks) > 0.01
        {
            misses.push(format!("{} ({})", label(&r.cell), pct(t.share(t.rollbacks))));
        }
    }
    line(misses.is_empty(), "false rollbacks ≤ 1 % in every healthy cell".into(), misses);

    let mut misses = Vec::new();
    for r in results.iter().filter(|r| r.cell.quality >= 10.0) {
        if let Some(t) = ours(r)
            && t.share(t.promotions) > 0.01
        {
            misses.push(format!("{} ({})", label(&r.cell), pct(t.share(t.promotions))));
        }
    }
    line(misses.is_empty(), "promotions of a ≥ 10× bad canary ≤ 1 % in every cell".into(), misses);

    let mut misses = Vec::new();
    let mut interval_bound = 0;
    for r in results.iter().filter(|r| !r.cell.healthy()) {
        let Some(t) = ours(r) else { continue };
        let Some(median) = t.quantile(0.5) else { continue };
        if t.share(t.rollbacks) < 0.5 {
            continue;
        }
        // Decisions are taken at evaluations: the first one at or after 1.5× the reference.
        let allowed = (1.5 * r.cell.reference_seconds() / interval).ceil().max(1.0) * interval;
        if allowed <= interval {
            interval_bound += 1;
        }
        if median as f64 > allowed {
            misses.push(format!("{} (median {} > {})", label(&r.cell), secs(Some(median)), secs_f(allowed)));
        }
    }
    line(
        misses.is_empty(),
        format!(
            "median time to roll back within 1.5× the optimal test's expected time, rounded up to the \
             next evaluation ({interval_bound} cells are decided at the first evaluation, where the \
             interval and not the evidence sets the time)"
        ),
        misses,
    );

    let fast = results.iter().find(|r| {
        r.cell.kind == ERRORS && r.cell.quality == 100.0 && r.cell.weight == 0.05 && r.cell.traffic == 100.0
    });
    if let Some(t) = fast.and_then(ours) {
        let p95 = t.quantile(0.95);
        line(
            t.quantile(0.5).is_some_and(|s| s < 30) && t.share(t.rollbacks) >= 0.99,
            format!(
                "a 100× bad canary at 5 % of 100 req/s is rolled back in under 30 s (median {1}, p95 {0}, {2} rolled back; two errors are the least evidence that can convict, and they arrive at 0.1 per second)",
                secs(p95),
                secs(t.quantile(0.5)),
                pct(t.share(t.rollbacks))
            ),
            Vec::new(),
        );
    }

    // Fewer false rollbacks than each baseline in each healthy cell, while promoting canaries at
    // or over the tolerance (what the gate is built not to promote) no more often.
    let mut misses = Vec::new();
    let (mut compared, mut ties) = (0, 0);
    for r in results.iter().filter(|r| r.cell.healthy()) {
        let Some(t) = ours(r) else { continue };
        for (i, base) in r.tallies.iter().enumerate().skip(1) {
            compared += 1;
            let ours_fr = t.share(t.rollbacks);
            let theirs_fr = base.share(base.rollbacks);
            let more_promoted: Vec<String> = results
                .iter()
                .filter(|b| {
                    b.cell.quality >= b.cell.kind.tolerance
                        && b.cell.kind == r.cell.kind
                        && b.cell.traffic == r.cell.traffic
                        && b.cell.weight == r.cell.weight
                })
                .filter(|b| {
                    let (ours, theirs) = (&b.tallies[0], &b.tallies[i]);
                    more_beyond_noise(ours, ours.promotions, theirs, theirs.promotions)
                })
                .map(|b| format!("{}×", b.cell.quality))
                .collect();
            let tie = ours_fr == 0.0 && theirs_fr == 0.0;
            ties += usize::from(tie);
            if (!tie && ours_fr >= theirs_fr) || !more_promoted.is_empty() {
                misses.push(format!(
                    "{} vs {} ({} vs {}{})",
                    label(&r.cell),
                    base.judge,
                    pct(ours_fr),
                    pct(theirs_fr),
                    if more_promoted.is_empty() {
                        String::new()
                    } else {
                        format!(", and promotes more {} canaries", more_promoted.join(", "))
                    }
                ));
            }
        }
    }
    line(
        misses.is_empty(),
        format!(
            "fewer false rollbacks than each baseline in each healthy cell, while promoting canaries at \
             or over the tolerance no more often beyond sampling noise (two-proportion z > 2) \
             ({compared} comparisons; in {ties} neither rolled back a healthy canary, a tie at zero \
             where fewer is impossible)"
        ),
        misses,
    );
    out
}

/// Whether `a_hits` of `a`'s runs is more than `b_hits` of `b`'s by more than sampling noise:
/// the two-proportion z statistic above 2.
fn more_beyond_noise(a: &Tally, a_hits: usize, b: &Tally, b_hits: usize) -> bool {
    let (na, nb) = (a.runs().max(1) as f64, b.runs().max(1) as f64);
    let (pa, pb) = (a_hits as f64 / na, b_hits as f64 / nb);
    let pooled = (a_hits + b_hits) as f64 / (na + nb);
    let se = (pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb)).sqrt();
    if se == 0.0 { pa > pb } else { (pa - pb) / se > 2.0 }
}

const BEGIN: &str = "<!-- bench-gate:begin -->";
const END: &str = "<!-- bench-gate:end -->";

/// A document the report cannot be written into.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SpliceError {
    #[error("no {0} marker")]
    NoMarker(&'static str),
    #[error("{END} comes before {BEGIN}")]
    OutOfOrder,
}

/// Replaces the text between `<!-- bench-gate:begin -->` and `<!-- bench-gate:end -->`.
pub fn splice(doc: &str, report: &str, command: &str) -> Result<String, SpliceError> {
    let start = doc.find(BEGIN).ok_or(SpliceError::NoMarker(BEGIN))?;
    let end = doc.find(END).ok_or(SpliceError::NoMarker(END))?;
    if end < start {
        return Err(SpliceError::OutOfOrder);
    }
    Ok(format!(
        "{}{BEGIN}\n<!-- generated by `{command}`; do not edit by hand -->\n\n{report}\n{}",
        &doc[..start],
        &doc[end..]
    ))
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
