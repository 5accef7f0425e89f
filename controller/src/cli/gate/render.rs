//! How `rollgate gate` prints decisions: one line per evaluation, or one JSON object.

use rollgate_gate::replay::{End, Replay};
use rollgate_gate::{CheckReport, Decision, Evaluation};
use serde_json::json;

use crate::cli::Output;

pub fn render_replay(r: &Replay, steps: usize, output: Output) -> String {
    let mut out = String::new();
    for l in &r.lines {
        match output {
            Output::Text => out.push_str(&format!(
                "{:>7}  step {}/{steps}  {:<18} {}\n",
                format!("{}s", l.at),
                l.step,
                word(&l.evaluation.decision),
                l.evaluation.decision.reason()
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

pub fn word(d: &Decision) -> &'static str {
    match d {
        Decision::StepUp(..) => "pass",
        Decision::Hold(..) => "hold",
        Decision::MetricsUnavailable(..) => "metrics-unavailable",
        Decision::StableBreaching(..) => "stable-breaching",
        Decision::Rollback(..) => "fail",
        Decision::Misconfigured(..) => "misconfigured",
        Decision::Pause(..) => "inconclusive",
    }
}

pub fn check_line(c: &CheckReport) -> String {
    let statistic = c.statistic().map(|s| format!(" [{s}]")).unwrap_or_default();
    format!("{}: {:?}, {}{statistic}", c.name, c.result, c.reason())
}

pub fn evaluation_json(at: Option<f64>, step: Option<usize>, e: &Evaluation) -> serde_json::Value {
    json!({
        "at": at,
        "step": step,
        "decision": word(&e.decision),
        "reason": e.decision.reason(),
        "checks": e.checks.iter().map(|c| json!({
            "name": c.name,
            "result": format!("{:?}", c.result),
            "bad": c.counts().bad,
            "total": c.counts().total,
            "value": c.value(),
            "threshold": c.threshold,
            "needed": c.needed(),
            "statistic": c.statistic(),
            "reason": c.reason(),
        })).collect::<Vec<_>>(),
    })
}
