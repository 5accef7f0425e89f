//! What the CLI shows of a Rollout (`rollgate status`, `rollgate get`) and the exit code of a
//! wait: pure functions of the object and of `status_view`.

use k8s_openapi::jiff::Timestamp;
use rollgate_crds::Rollout;
use rollgate_crds::rollout::{CheckResult, CheckStatus, Phase, Verdict};

use super::Exit;
pub use crate::status_view::{View, WaitFor, Waited, view, waited};

/// The exit code a wait ends with; `None` while it goes on.
pub trait WaitExit {
    fn exit(self) -> Option<Exit>;
}

impl WaitExit for Waited {
    fn exit(self) -> Option<Exit> {
        match self {
            Waited::Reached => Some(Exit::Pass),
            Waited::Failed => Some(Exit::Fail),
            Waited::Paused => Some(Exit::Inconclusive),
            Waited::Pending => None,
        }
    }
}

// === text ===

/// `rollgate status` as text; `tty` draws progress bars.
pub fn render(v: &View, tty: bool, now: Timestamp) -> String {
    let mut out = String::new();
    let phase = v.phase.map_or("Pending".to_string(), |p| format!("{p:?}"));
    let step = match (v.step, v.phase) {
        (Some(s), Some(Phase::Progressing | Phase::Paused)) => format!(", step {s} of {}", v.steps.len()),
        _ => String::new(),
    };
    out.push_str(&format!(
        "rollout {}/{}: {phase}, canary weight {} %{step}{}\n",
        v.namespace,
        v.name,
        v.canary_weight,
        if v.up_to_date { "" } else { " (the controller has not acted on the latest change yet)" }
    ));
    let revision = |r: &Option<String>| r.clone().unwrap_or_else(|| "–".into());
    out.push_str(&format!(
        "  revisions  canary {}  stable {}\n",
        revision(&v.canary_revision),
        revision(&v.stable_revision)
    ));
    let current = match v.phase {
        Some(Phase::Progressing | Phase::Paused) => v.step,
        _ => None,
    };
    let steps: Vec<String> = v
        .steps
        .iter()
        .enumerate()
        .map(|(i, w)| match current {
            Some(c) if i + 1 < c => format!("{w} done"),
            Some(c) if i + 1 == c => format!("[{w} now]"),
            _ if v.phase == Some(Phase::Promoted) && v.canary_revision == v.stable_revision => {
                format!("{w} done")
            }
            _ => w.clone(),
        })
        .collect();
    out.push_str(&format!("  steps      {}\n", steps.join("  →  ")));
    if v.paused {
        out.push_str("  paused     by spec.paused (rollgate resume to continue)\n");
    }
    if let Some(f) = &v.forecast {
        out.push_str(&format!("  forecast   {} (from the step before, scaled by weight)\n", f.message));
    }
    if !v.checks.is_empty() {
        out.push_str("  checks\n");
        let width = v.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &v.checks {
            out.push_str(&format!("    {:<width$}  {:<7}  {}\n", c.name, result_word(c.result), c.reason));
            if let Some(line) = evidence(c, tty) {
                out.push_str(&format!("    {:<width$}           {line}\n", ""));
            }
            if let Some(source) = &c.source {
                out.push_str(&format!("    {:<width$}           reads {source}\n", ""));
            }
        }
    }
    if !v.history.is_empty() {
        out.push_str("  decisions (latest last)\n");
        for d in v.history.iter().rev().take(5).rev() {
            out.push_str(&format!(
                "    {:>8} ago  {:<12} {:>3} %  {}\n",
                ago(d.time.0, now),
                d.action,
                d.weight,
                d.reason
            ));
        }
    }
    if let Some(m) = &v.message {
        out.push_str(&format!("  message    {m}\n"));
    }
    let verdict = match v.verdict {
        Some(Verdict::Pass) => "Pass",
        Some(Verdict::Fail) => "Fail",
        None => "none yet",
    };
    out.push_str(&format!("  verdict    {verdict}\n"));
    out
}

// === the progress of a wait ===

/// `Progressing, step 2 of 3, canary weight 5 %`.
fn state(v: &View) -> String {
    let phase = v.phase.map_or("Pending".to_string(), |p| format!("{p:?}"));
    let step = match (v.step, v.phase) {
        (Some(s), Some(Phase::Progressing | Phase::Paused)) => format!(", step {s} of {}", v.steps.len()),
        _ => String::new(),
    };
    format!("{phase}{step}, canary weight {} %", v.canary_weight)
}

/// The line `rollgate wait` prints when the rollout moves: its state and the controller's
/// message. Equal lines mean nothing moved.
pub fn transition_line(v: &View) -> String {
    let waiting = if v.up_to_date { "" } else { " (the controller has not acted on the latest change yet)" };
    match &v.message {
        Some(m) => format!("{}{waiting}: {m}", state(v)),
        None => format!("{}{waiting}", state(v)),
    }
}

/// The line `rollgate wait` prints every minute: the state, and each undecided check's evidence
/// against what a decision needs, with the estimate at the step's rate.
pub fn heartbeat_line(v: &View) -> String {
    let checks: Vec<String> =
        v.checks.iter().filter_map(|c| Some(format!("{} {}", c.name, evidence_words(c)?))).collect();
    if checks.is_empty() {
        format!("still {}", state(v))
    } else {
        format!("still {}; {}", state(v), checks.join("; "))
    }
}

fn result_word(r: CheckResult) -> &'static str {
    match r {
        CheckResult::Pass => "pass",
        CheckResult::Fail => "FAIL",
        CheckResult::Pending => "pending",
        CheckResult::NoData => "no data",
    }
}

/// `312 of about 1500 requests, ≈ 48 min`: an undecided check's evidence against what a
/// decision needs, and the estimate; `None` once decided.
fn evidence_words(c: &CheckStatus) -> Option<String> {
    let needed = c.needed?;
    let unit = c.unit.as_deref().unwrap_or("events");
    let eta = c
        .estimated_seconds
        .map(|s| format!(", ≈ {}", rollgate_gate::format::rough(std::time::Duration::from_secs(s))))
        .unwrap_or_default();
    Some(format!("{} of about {needed} {unit}{eta}", c.total))
}

/// Evidence gathered against what a decision needs: a bar in a terminal, words otherwise.
pub fn evidence(c: &CheckStatus, tty: bool) -> Option<String> {
    let needed = c.needed?;
    let words = evidence_words(c)?;
    if !tty {
        return Some(format!("evidence: {words}"));
    }
    const WIDTH: usize = 24;
    let filled =
        ((c.total as f64 / needed.max(1) as f64) * WIDTH as f64).round().clamp(0.0, WIDTH as f64) as usize;
    Some(format!("[{}{}] {words}", "#".repeat(filled), "-".repeat(WIDTH - filled)))
}

fn ago(t: Timestamp, now: Timestamp) -> String {
    let s = now.as_second().saturating_sub(t.as_second()).max(0) as u64;
    rollgate_gate::format::human(std::time::Duration::from_secs(s))
}

/// One line of `rollgate get`.
pub fn row(ro: &Rollout, now: Timestamp) -> [String; 6] {
    let v = view(ro);
    let age = ro.metadata.creation_timestamp.as_ref().map_or("–".into(), |t| ago(t.0, now));
    [
        v.namespace,
        v.name,
        v.phase.map_or("Pending".into(), |p| format!("{p:?}")),
        format!("{} %", v.canary_weight),
        v.verdict.map_or("–".into(), |x| format!("{x:?}")),
        age,
    ]
}

/// Rows as aligned columns under a header.
pub fn table(header: [&str; 6], rows: &[[String; 6]]) -> String {
    let mut widths = header.map(str::len);
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}   "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests;
