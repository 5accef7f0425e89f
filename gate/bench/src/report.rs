//! The benchmark's Markdown report: the table, each target met or missed, and its place in
//! a document between the markers.

use std::fmt::Write as _;

use crate::judges::Judge;
use crate::{Cell, CellResult, ERRORS, Grid, Tally};

pub(crate) fn pct(x: f64) -> String {
    if x == 0.0 { "0".into() } else { format!("{:.1} %", x * 100.0) }
}

pub(crate) fn secs(s: Option<u64>) -> String {
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
