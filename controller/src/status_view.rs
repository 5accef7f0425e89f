//! A Rollout as pipelines and people read it, and where a wait for it stands: pure functions
//! of the object, shared by the CLI (`status`, `wait`, `get`) and the verdict API. Exit codes
//! are the CLI's business (`cli::view`).

use rollgate_crds::rollout::{CheckStatus, Decision, Phase, StepForecast, Verdict};
use rollgate_crds::{Rollout, RolloutStatus};
use serde::Serialize;

/// The Rollout as pipelines and people read it (`-o json|yaml`, the verdict API).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub namespace: String,
    pub name: String,
    pub phase: Option<Phase>,
    pub verdict: Option<Verdict>,
    /// False while the controller has not yet acted on the latest spec (the phase and verdict
    /// may describe the previous revision).
    pub up_to_date: bool,
    pub canary_weight: i32,
    /// 1-based; absent before the first step.
    pub step: Option<usize>,
    /// Each step as said: `5 %`, or `shadow 20 %`.
    pub steps: Vec<String>,
    pub stable_revision: Option<String>,
    pub canary_revision: Option<String>,
    pub paused: bool,
    pub checks: Vec<CheckStatus>,
    /// What the current step was forecast to need when the step before it passed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forecast: Option<StepForecast>,
    pub history: Vec<Decision>,
    pub message: Option<String>,
}

pub fn view(ro: &Rollout) -> View {
    let st = ro.status.clone().unwrap_or_default();
    View {
        namespace: ro.metadata.namespace.clone().unwrap_or_default(),
        name: ro.metadata.name.clone().unwrap_or_default(),
        phase: st.phase,
        verdict: st.verdict,
        up_to_date: up_to_date(ro, &st),
        canary_weight: st.canary_weight,
        step: st.current_step.filter(|s| *s >= 0).map(|s| s as usize + 1),
        steps: ro
            .spec
            .steps
            .iter()
            .map(|s| match s.shadow {
                Some(p) => format!("shadow {p} %"),
                None => format!("{} %", s.weight),
            })
            .collect(),
        stable_revision: st.stable_revision,
        canary_revision: st.canary_revision,
        paused: ro.spec.paused,
        checks: st.checks,
        // Until the step's own evaluations estimate it.
        forecast: st.forecast.filter(|f| {
            st.phase == Some(Phase::Progressing)
                && st.current_step == Some(f.step)
                && st.last_evaluated_at.is_none()
        }),
        history: st.history,
        message: st.message,
    }
}

fn up_to_date(ro: &Rollout, st: &RolloutStatus) -> bool {
    st.observed_generation.is_some() && st.observed_generation == ro.metadata.generation
}

// === waiting ===

/// What `rollgate wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// Any verdict: pass or fail.
    Verdict,
    /// The new version promoted (fully stable).
    Promoted,
    /// The rollout at step N (1-based) or beyond.
    Step(usize),
}

/// A `--for` value that is not a `WaitFor`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected verdict, promoted or step=N (N ≥ 1)")]
pub struct BadWaitFor(String);

impl std::str::FromStr for WaitFor {
    type Err = BadWaitFor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "verdict" => Ok(Self::Verdict),
            "promoted" => Ok(Self::Promoted),
            _ => match s.strip_prefix("step=").map(str::parse::<usize>) {
                Some(Ok(n)) if n >= 1 => Ok(Self::Step(n)),
                _ => Err(BadWaitFor(s.to_string())),
            },
        }
    }
}

/// Where a wait stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    /// The condition holds.
    Reached,
    /// Rolled back or failed.
    Failed,
    /// Held for a person (waiting on would hang).
    Paused,
    /// Keep waiting.
    Pending,
}

pub fn waited(ro: &Rollout, want: WaitFor) -> Waited {
    let st = ro.status.clone().unwrap_or_default();
    if !up_to_date(ro, &st) {
        return Waited::Pending;
    }
    match (st.phase, want) {
        (Some(Phase::RolledBack | Phase::Failed), _) => Waited::Failed,
        (Some(Phase::Paused), _) => Waited::Paused,
        (_, WaitFor::Verdict) if st.verdict == Some(Verdict::Pass) => Waited::Reached,
        (_, WaitFor::Verdict) if st.verdict == Some(Verdict::Fail) => Waited::Failed,
        (Some(Phase::Promoted), _) => Waited::Reached,
        (Some(Phase::Progressing), WaitFor::Step(n)) => {
            let at = st.current_step.unwrap_or(-1) + 1;
            if st.step_started_at.is_some() && at >= n as i32 { Waited::Reached } else { Waited::Pending }
        }
        _ => Waited::Pending,
    }
}
