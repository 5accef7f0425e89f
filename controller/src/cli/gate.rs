//! `rollgate gate …`: the gate without a Rollout.
//!
//! - `replay FILE`: what the gate would have decided on a recorded series of counts;
//! - `eval`: judge live Prometheus series for a pipeline step that is not a rollout;
//! - `record`: write a replay file from Prometheus for a past interval;
//! - `bench`: the verdict-quality benchmark against Flagger- and Argo-style rules.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use k8s_openapi::jiff::Timestamp;
use rollgate_crds::duration::PositiveDuration;
use serde_json::json;

use super::{EXIT_CODES, Exit, Output, gate_file};
use crate::gate::replay::{CountPair, End, Replay, Sample, Series, Setup};
use crate::gate::{CheckReport, Decision, Evaluation, Missing, Policy, StepClock, evaluate, human};
use crate::gate_bench;
use crate::metrics_provider::{self, LabelMatchers, SeriesSelector, prometheus::Prometheus};

#[derive(Debug, Subcommand)]
pub enum GateCommand {
    /// Replay a recorded series of cumulative counts through a gate and print each decision.
    #[command(after_help = EXIT_CODES)]
    Replay(ReplayArgs),
    /// Evaluate a gate against live Prometheus series (a pipeline step that is not a rollout).
    #[command(after_help = EXIT_CODES)]
    Eval(EvalArgs),
    /// Record a replay file from Prometheus: the cumulative counts of each check of a gate for
    /// the selected series over a past interval.
    Record(RecordArgs),
    /// The verdict-quality benchmark: rollgate's gate against Flagger- and Argo-style rules on
    /// simulated traffic (a report, deterministic for a seed).
    Bench(BenchArgs),
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// JSON file: {"samples": [{"at": SECONDS, "checks": {NAME: {"canary": {"bad": N, "total": N},
    /// "stable": {...}}}}]}, counts cumulative (see docs/gate.md).
    pub file: PathBuf,
    /// The gate: a ReleaseGate manifest, a Rollout with an inline gate, or a bare gate spec.
    /// Default: the playbook's gate (error rate < 0.02 %, p95 < 300 ms, p99 pause < 50 ms).
    #[arg(long)]
    pub gate: Option<PathBuf>,
    /// Steps to pass before promotion.
    #[arg(long, default_value_t = rollgate_crds::defaults::STEPS.len())]
    pub steps: usize,
    /// Minimum hold of a passing step (default: the gate's policy.minHealthy).
    #[arg(long)]
    pub min_healthy: Option<PositiveDuration>,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
}

/// Where `eval` and `record` read from: the gate, Prometheus, and the series.
#[derive(Debug, Args)]
pub struct SeriesSource {
    /// The gate: a ReleaseGate manifest, a Rollout with an inline gate, or a bare gate spec.
    #[arg(long)]
    pub gate: PathBuf,
    /// Prometheus base URL (default: the gate's prometheus.address).
    #[arg(long)]
    pub prometheus: Option<String>,
    /// PromQL label matchers of the series to judge, e.g. 'namespace="shop",role="canary"'.
    #[arg(long)]
    pub selector: String,
    /// Label matchers of a reference version over the same interval (compareWithStable).
    #[arg(long)]
    pub stable_selector: Option<String>,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub source: SeriesSource,
    /// How long to gather evidence from now (or, with --lookback, how far back to look).
    #[arg(long = "for")]
    pub duration: PositiveDuration,
    /// Judge the last --for at once instead of waiting for new evidence.
    #[arg(long)]
    pub lookback: bool,
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub source: SeriesSource,
    /// Start of the interval (RFC 3339, e.g. 2026-11-27T05:00:00Z).
    #[arg(long, conflicts_with = "since")]
    pub from: Option<String>,
    /// Start of the interval as a duration before --to (e.g. 30m).
    #[arg(long)]
    pub since: Option<PositiveDuration>,
    /// End of the interval (RFC 3339; default: now).
    #[arg(long)]
    pub to: Option<String>,
    /// Time between samples.
    #[arg(long, default_value = "10s")]
    pub every: PositiveDuration,
}

/// Most samples one recording may hold.
pub const MAX_SAMPLES: u64 = 5000;

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Runs per cell.
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    #[arg(long, default_value_t = 20_261_127)]
    pub seed: u64,
    /// Worker threads (the report does not depend on it). Default: the CPUs.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the report into this Markdown file between `<!-- bench-gate:begin -->` and
    /// `<!-- bench-gate:end -->` instead of printing it.
    #[arg(long)]
    pub update: Option<PathBuf>,
}

pub fn run(command: GateCommand) -> Exit {
    match command {
        GateCommand::Replay(a) => replay(a),
        GateCommand::Eval(a) => super::block_on(eval(a)),
        GateCommand::Record(a) => super::block_on(record(a)),
        GateCommand::Bench(a) => bench(a),
    }
}

fn usage(message: String) -> Exit {
    eprintln!("rollgate: {message}");
    Exit::Usage
}

// === replay ===

fn replay(a: ReplayArgs) -> Exit {
    let gate = match &a.gate {
        Some(path) => gate_file::load(path, None),
        None => Ok(gate_file::default_gate()),
    };
    let gate = match gate {
        Ok(g) => g,
        Err(e) => return usage(e),
    };
    let series: Series = match super::read_bounded(&a.file, super::MAX_SERIES_FILE)
        .and_then(|t| serde_json::from_str(&t).map_err(|e| format!("{}: {e}", a.file.display())))
    {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    if a.steps == 0 {
        return usage("--steps: must be at least 1".into());
    }
    let checks = match gate_file::check_specs(&gate) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let setup = Setup {
        checks,
        policy: Policy::from(&gate.policy),
        min_healthy: a.min_healthy.unwrap_or(gate.policy.min_healthy).as_std(),
        max_hold: gate.policy.max_hold.as_std(),
        steps: a.steps,
    };
    let result = match crate::gate::replay::replay(&series, &setup) {
        Ok(r) => r,
        Err(e) => return usage(format!("{}: {e}", a.file.display())),
    };
    print!("{}", render_replay(&result, a.steps, a.output));
    match result.end {
        End::Promoted => Exit::Pass,
        End::RolledBack => Exit::Fail,
        End::Paused | End::Undecided => Exit::Inconclusive,
    }
}

pub fn render_replay(r: &Replay, steps: usize, output: Output) -> String {
    let mut out = String::new();
    for l in &r.lines {
        match output {
            Output::Text => out.push_str(&format!(
                "{:>7}  step {}/{steps}  {:<18} {}\n",
                format!("{}s", l.at),
                l.step,
                word(&l.evaluation.decision),
                reason(&l.evaluation.decision)
            )),
            Output::Json => {
                out.push_str(&format!("{}\n", evaluation_json(Some(l.at), Some(l.step), &l.evaluation)))
            }
        }
    }
    let end = match r.end {
        End::Promoted => "promoted",
        End::RolledBack => "rolled back",
        End::Paused => "paused for a person",
        End::Undecided => "undecided when the series ended",
    };
    match output {
        Output::Text => out.push_str(&format!("result: {end}\n")),
        Output::Json => out.push_str(&format!("{}\n", json!({ "result": end }))),
    }
    out
}

/// The gate, the canary's and stable's selectors, and the Prometheus to read, each checked.
struct Opened {
    gate: rollgate_crds::GateSpec,
    canary: LabelMatchers,
    stable: Option<LabelMatchers>,
    prometheus: Prometheus,
}

fn open(source: &SeriesSource) -> Result<Opened, String> {
    let gate = gate_file::load(&source.gate, source.prometheus.as_deref())?;
    if gate.prometheus.address == gate_file::NO_PROMETHEUS {
        return Err("--prometheus: needed, the gate file has no prometheus.address".into());
    }
    let canary = LabelMatchers::parse(&source.selector).map_err(|e| format!("--selector: {e}"))?;
    let stable = source
        .stable_selector
        .as_deref()
        .map(LabelMatchers::parse)
        .transpose()
        .map_err(|e| format!("--stable-selector: {e}"))?;
    for c in &gate.checks {
        let unfilled =
            metrics_provider::queries::for_check(c).map(|q| q.unfilled(&canary)).unwrap_or_default();
        if !unfilled.is_empty() {
            return Err(format!(
                "checks {}: a promql query read by --selector may use only $window (it uses ${})",
                c.name,
                unfilled.join(", $")
            ));
        }
    }
    let prometheus = Prometheus::new(&gate.prometheus.address).map_err(|e| format!("--prometheus: {e}"))?;
    Ok(Opened { gate, canary, stable, prometheus })
}

// === eval ===

async fn eval(a: EvalArgs) -> Exit {
    let Opened { gate, canary, stable, prometheus: provider } = match open(&a.source) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let total = a.duration.as_std();
    let min_healthy = gate.policy.min_healthy.as_std().min(total);
    let interval = gate.policy.interval.as_std();
    let started = Instant::now();
    loop {
        let elapsed = if a.lookback { total } else { started.elapsed().min(total) };
        let stable_sel = stable.as_ref().map(|s| s as &dyn SeriesSelector);
        let window = elapsed.max(Duration::from_secs(1));
        let evidence = match metrics_provider::gather(&provider, &gate, &canary, stable_sel, window).await {
            Ok(e) => e,
            Err(e) => return usage(e.to_string()),
        };
        let clock = StepClock { elapsed, min_healthy, max_hold: total };
        let evaluation = evaluate(&evidence, clock, Policy::from(&gate.policy));
        let last = a.lookback || elapsed >= total;
        match a.output {
            Output::Text => println!(
                "{:>7}  {:<18} {}",
                human(elapsed),
                word(&evaluation.decision),
                reason(&evaluation.decision)
            ),
            Output::Json => println!("{}", evaluation_json(Some(elapsed.as_secs_f64()), None, &evaluation)),
        }
        // No metrics could be read at all: the gate could not judge (not an undecided verdict).
        let unreadable = !evidence.is_empty()
            && evidence.iter().all(|e| matches!(e.canary, Err(crate::gate::Missing::Unavailable(_))));
        let exit = match &evaluation.decision {
            Decision::StepUp { .. } => Some(Exit::Pass),
            Decision::Rollback { .. } => Some(Exit::Fail),
            // The gate cannot be computed from this source: a configuration error.
            Decision::Misconfigured { .. } => Some(Exit::Usage),
            _ if last && unreadable => Some(Exit::Usage),
            Decision::Pause { .. } => Some(Exit::Inconclusive),
            _ if last => Some(Exit::Inconclusive),
            _ => None,
        };
        if let Some(exit) = exit {
            if a.output == Output::Text {
                for c in &evaluation.checks {
                    println!("  {}", check_line(c));
                }
            }
            return exit;
        }
        let next = (elapsed + interval).min(total);
        tokio::time::sleep_until(tokio::time::Instant::from_std(started + next)).await;
    }
}

// === record ===

fn timestamp(flag: &str, text: &str) -> Result<Timestamp, String> {
    text.parse::<Timestamp>().map_err(|e| format!("{flag}: {text:?} is not an RFC 3339 time ({e})"))
}

async fn record(a: RecordArgs) -> Exit {
    match record_series(&a).await {
        Ok(series) => {
            let mut out = String::from("{\"samples\": [\n");
            for (i, sample) in series.samples.iter().enumerate() {
                let line = serde_json::to_string(sample).unwrap_or_default();
                out.push_str(&format!("  {line}{}\n", if i + 1 < series.samples.len() { "," } else { "" }));
            }
            out.push_str("]}\n");
            print!("{out}");
            Exit::Pass
        }
        Err(e) => usage(e),
    }
}

async fn record_series(a: &RecordArgs) -> Result<Series, String> {
    let Opened { gate, canary, stable, prometheus } = open(&a.source)?;
    let to = match &a.to {
        Some(t) => timestamp("--to", t)?,
        None => Timestamp::now(),
    };
    let from = match (&a.from, a.since) {
        (Some(f), _) => timestamp("--from", f)?,
        (None, Some(since)) => to
            .checked_sub(
                k8s_openapi::jiff::SignedDuration::try_from(since.as_std())
                    .map_err(|e| format!("--since: {e}"))?,
            )
            .map_err(|e| format!("--since: {e}"))?,
        (None, None) => return Err("--from or --since: one is needed".into()),
    };
    let span = to.as_second() - from.as_second();
    if span <= 0 {
        return Err(format!("--from: {from} is not before --to {to}"));
    }
    let every = a.every.as_std().as_secs().max(1);
    let samples = span as u64 / every;
    if samples > MAX_SAMPLES {
        return Err(format!(
            "--every: {samples} samples over {span}s; at most {MAX_SAMPLES} (use a longer --every)"
        ));
    }
    let zero = crate::gate::replay::SampleCounts { canary: CountPair { bad: 0, total: 0 }, stable: None };
    let names = gate.checks.iter().map(|c| (c.name.clone(), zero));
    let mut series = Series { samples: vec![Sample { at: 0.0, checks: names.collect() }] };
    for i in 1..=samples {
        let elapsed = i * every;
        let at = prometheus.at(from.as_second() + elapsed as i64);
        let stable_sel = stable.as_ref().map(|s| s as &dyn SeriesSelector);
        let evidence =
            metrics_provider::gather(&at, &gate, &canary, stable_sel, Duration::from_secs(elapsed))
                .await
                .map_err(|e| e.to_string())?;
        let mut checks = std::collections::BTreeMap::new();
        for e in evidence {
            match e.canary {
                Ok(c) => {
                    let pair = |c: crate::gate::Counts| CountPair { bad: c.bad, total: c.total };
                    let counts =
                        crate::gate::replay::SampleCounts { canary: pair(c), stable: e.stable.map(pair) };
                    checks.insert(e.spec.name, counts);
                }
                // Left out: the replay reads a missing check as "metrics unavailable" then.
                Err(Missing::Unavailable(why)) if i == 1 => {
                    return Err(format!("reading {} from {}: {why}", e.spec.name, gate.prometheus.address));
                }
                Err(_) => {}
            }
        }
        series.samples.push(Sample { at: elapsed as f64, checks });
    }
    Ok(series)
}

// === bench ===

fn bench(a: BenchArgs) -> Exit {
    if a.runs == 0 {
        return usage("--runs: must be at least 1".into());
    }
    let threads = a.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let grid = gate_bench::Grid::standard(a.runs, a.seed);
    let started = Instant::now();
    let results = gate_bench::run(&grid, threads);
    let report = gate_bench::report(&grid, &results);
    eprintln!(
        "rollgate: {} cells × {} runs in {:.1} s",
        results.len(),
        a.runs,
        started.elapsed().as_secs_f64()
    );
    match a.update {
        None => {
            print!("{report}");
            Exit::Pass
        }
        Some(path) => {
            let command = format!("rollgate gate bench --runs {} --seed {}", a.runs, a.seed);
            let updated = std::fs::read_to_string(&path)
                .map_err(|e| e.to_string())
                .and_then(|doc| gate_bench::splice(&doc, &report, &command))
                .and_then(|doc| std::fs::write(&path, doc).map_err(|e| e.to_string()));
            match updated {
                Ok(()) => {
                    eprintln!("rollgate: report written into {}", path.display());
                    Exit::Pass
                }
                Err(e) => usage(format!("--update {}: {e}", path.display())),
            }
        }
    }
}

// === output ===

pub fn word(d: &Decision) -> &'static str {
    match d {
        Decision::StepUp { .. } => "pass",
        Decision::Hold { .. } => "hold",
        Decision::MetricsUnavailable { .. } => "metrics-unavailable",
        Decision::StableBreaching { .. } => "stable-breaching",
        Decision::Rollback { .. } => "fail",
        Decision::Misconfigured { .. } => "misconfigured",
        Decision::Pause { .. } => "inconclusive",
    }
}

pub fn reason(d: &Decision) -> &str {
    match d {
        Decision::StepUp { reason }
        | Decision::Hold { reason }
        | Decision::MetricsUnavailable { reason }
        | Decision::StableBreaching { reason, .. }
        | Decision::Rollback { reason, .. }
        | Decision::Misconfigured { reason, .. }
        | Decision::Pause { reason } => reason,
    }
}

pub fn check_line(c: &CheckReport) -> String {
    let statistic = c.statistic.as_deref().map(|s| format!(" [{s}]")).unwrap_or_default();
    format!("{}: {:?}, {}{statistic}", c.name, c.result, c.reason)
}

pub fn evaluation_json(at: Option<f64>, step: Option<usize>, e: &Evaluation) -> serde_json::Value {
    json!({
        "at": at,
        "step": step,
        "decision": word(&e.decision),
        "reason": reason(&e.decision),
        "checks": e.checks.iter().map(|c| json!({
            "name": c.name,
            "result": format!("{:?}", c.result),
            "bad": c.bad,
            "total": c.total,
            "value": c.value,
            "threshold": c.threshold,
            "needed": c.needed,
            "statistic": c.statistic,
            "reason": c.reason,
        })).collect::<Vec<_>>(),
    })
}
