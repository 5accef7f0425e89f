//! `rollgate-gate-bench`: runs the verdict-quality benchmark and prints its report, or writes it
//! between the markers of a Markdown file (`make bench-gate` writes docs/gate.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rollgate_gate_bench::{Grid, report, rollouts, run, splice, worlds};

/// The verdict-quality benchmark: rollgate's gate against Flagger- and Argo-style rules on
/// simulated traffic. The report depends only on --runs and --seed.
#[derive(Debug, Parser)]
#[command(name = "rollgate-gate-bench", version)]
struct Args {
    /// Runs per cell.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,
    #[arg(long, default_value_t = 20_261_127)]
    seed: u64,
    /// Worker threads (the report does not depend on it). Default: the CPUs.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    threads: Option<u64>,
    /// Write the report into this Markdown file between `<!-- bench-gate:begin -->` and
    /// `<!-- bench-gate:end -->` instead of printing it.
    #[arg(long)]
    update: Option<PathBuf>,
}

fn main() -> ExitCode {
    let a = Args::parse();
    let threads =
        a.threads.map_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()), |t| t as usize);
    let grid = Grid::standard(a.runs as usize, a.seed);
    let started = Instant::now();
    let results = run(&grid, threads);
    let rollouts = rollouts::run(a.runs as usize, a.seed, rollouts::Timing::defaults());
    // Two A/A rollouts per run in each of the five worlds (10 000 in all at the default 1 000
    // runs), and a fifth as many bad canaries.
    let runs = a.runs as usize;
    let worlds = worlds::run(2 * runs, (runs / 5).max(1), a.seed, rollouts::Timing::defaults());
    let report = format!(
        "{}\n{}\n{}",
        report(&grid, &results),
        rollouts::report(runs, &rollouts),
        worlds::report(&worlds)
    );
    eprintln!(
        "rollgate-gate-bench: {} cells × {} runs in {:.1} s",
        results.len(),
        a.runs,
        started.elapsed().as_secs_f64()
    );
    let Some(path) = a.update else {
        print!("{report}");
        return ExitCode::SUCCESS;
    };
    let command = format!("rollgate-gate-bench --runs {} --seed {}", a.runs, a.seed);
    let updated = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|doc| splice(&doc, &report, &command).map_err(|e| e.to_string()))
        .and_then(|doc| std::fs::write(&path, doc).map_err(|e| e.to_string()));
    match updated {
        Ok(()) => {
            eprintln!("rollgate-gate-bench: report written into {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("rollgate-gate-bench: --update {}: {e}", path.display());
            ExitCode::from(2)
        }
    }
}
