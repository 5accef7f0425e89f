//! `rollgate gate replay FILE`: what the gate would have decided on a recorded series.

use rollgate_gate::Policy;
use rollgate_gate::replay::{End, Series, Setup};

use super::render::render_replay;
use super::{ReplayArgs, usage};
use crate::cli::{Exit, gate_file};

pub(super) fn run(a: ReplayArgs) -> Exit {
    let gate = match &a.gate {
        Some(path) => gate_file::load(path, None),
        None => Ok(gate_file::default_gate()),
    };
    let gate = match gate {
        Ok(g) => g,
        Err(e) => return usage(e),
    };
    let series: Series = match crate::cli::read_bounded(&a.file, crate::cli::MAX_SERIES_FILE)
        .map_err(|e| e.to_string())
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
        // A recorded series says nothing of the weights it was taken at: every step is judged
        // as the last one before promotion (the full tolerance).
        next_weights: vec![100.0; a.steps],
    };
    let result = match rollgate_gate::replay::replay(&series, &setup) {
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
