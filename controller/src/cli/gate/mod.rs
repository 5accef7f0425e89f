//! `rollgate gate …`: the gate without a Rollout.
//!
//! - `replay FILE`: what the gate would have decided on a recorded series of counts;
//! - `eval`: judge live Prometheus series for a pipeline step that is not a rollout;
//! - `record`: write a replay file from Prometheus for a past interval.
//!
//! One module per subcommand; `render` prints decisions for all of them. The verdict-quality
//! benchmark is a separate tool (`rollgate-gate-bench`, `make bench-gate`).

mod eval;
mod record;
pub mod render;
mod replay;

use std::path::PathBuf;

use clap::{Args, Subcommand};
use rollgate_crds::duration::PositiveDuration;

use super::{EXIT_CODES, Exit, Output, gate_file};
use crate::metrics_provider::access::Access;
use crate::metrics_provider::{self, LabelMatchers, prometheus::Prometheus};

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

pub fn run(command: GateCommand) -> Exit {
    match command {
        GateCommand::Replay(a) => replay::run(a),
        GateCommand::Eval(a) => super::block_on(eval::run(a)),
        GateCommand::Record(a) => super::block_on(record::run(a)),
    }
}

pub(super) fn usage(message: String) -> Exit {
    eprintln!("rollgate: {message}");
    Exit::Usage
}

/// The gate, the canary's and stable's selectors, and the Prometheus to read, each checked.
pub(super) struct Opened {
    gate: rollgate_crds::GateSpec,
    canary: LabelMatchers,
    stable: Option<LabelMatchers>,
    prometheus: Prometheus,
}

pub(super) fn open(source: &SeriesSource) -> Result<Opened, String> {
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
    for c in gate.effective_checks().iter() {
        let unfilled = metrics_provider::queries::for_check(c, gate.source_of(c))
            .map(|q| q.unfilled(&canary))
            .unwrap_or_default();
        if !unfilled.is_empty() {
            return Err(format!(
                "checks {}: a promql query read by --selector may use only $window (it uses ${})",
                c.name,
                unfilled.join(", $")
            ));
        }
    }
    if gate.prometheus.auth.is_some() || gate.prometheus.tls.is_some() {
        return Err("prometheus.auth and prometheus.tls name Secrets the CLI does not read: remove them \
                    from the file and reach Prometheus directly (e.g. kubectl port-forward)"
            .into());
    }
    let mut access = Access::address(&gate.prometheus.address);
    access.headers = gate.prometheus.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
    let prometheus = Prometheus::new(&access).map_err(|e| format!("--prometheus: {e}"))?;
    Ok(Opened { gate, canary, stable, prometheus })
}
