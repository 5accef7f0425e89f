//! What the next step will need, said before it starts: how many canary events its pass test
//! needs on top of what the canary has already shown, and how long that takes at this step's
//! rate scaled to the next step's weight. Shown while the next step has not been evaluated yet,
//! so a person knows at once whether it will decide within `maxHold`.

use std::time::Duration;

use crate::check::{CheckSpec, Unit};
use crate::evaluate::{Evaluation, Policy};
use crate::format::rough;
use crate::sprt::{self, Counts};

/// The longest estimate given: beyond it, "365 days" says as much.
const LONGEST: Duration = Duration::from_secs(365 * 86_400);

/// The weights around the step that was just judged, percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// The share of requests the canary saw in the step judged: its weight, or on a shadow
    /// step the share copied to it.
    pub now: f64,
    /// The next step's weight.
    pub next: f64,
    /// The weight after the next step (100 when the next step is the last): what the next step
    /// must rule out follows it.
    pub after: f64,
}

/// The next step's holds: at least `min_healthy`, and undecided after `max_hold`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holds {
    pub min_healthy: Duration,
    pub max_hold: Duration,
}

/// One check at the next step.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub check: String,
    pub unit: Unit,
    /// About how many of the canary's events the next step's pass test needs, beyond those the
    /// canary has shown so far (pooled); `None` when, at the share of bad events seen so far, it
    /// would reach neither bound.
    pub events: Option<u64>,
    /// The canary's expected events per second at the next step.
    pub per_second: Option<f64>,
    /// About how long the next step takes to pass: at least its `minHealthy`.
    pub eta: Option<Duration>,
}

/// The next step, as forecast at the end of the step before it.
#[derive(Debug, Clone, PartialEq)]
pub struct NextStep {
    pub weight: f64,
    pub holds: Holds,
    /// The checks, slowest first.
    pub checks: Vec<Forecast>,
}

/// The forecast for the step after the one `evaluation` judged. A check that could not be read
/// is left out (nothing to forecast from); its own reason says why.
pub fn next_step(
    evaluation: &Evaluation,
    specs: &[CheckSpec],
    policy: Policy,
    weights: Weights,
    holds: Holds,
) -> NextStep {
    let min_healthy = holds.min_healthy;
    let scale = if weights.now > 0.0 { weights.next / weights.now } else { 0.0 };
    let mut checks: Vec<Forecast> = evaluation
        .checks
        .iter()
        .filter_map(|report| {
            let judged = report.evidence.as_ref().ok()?;
            let spec = specs.iter().find(|s| s.name == judged.check)?;
            let shown = Counts {
                bad: judged.carried.bad + judged.counts.bad,
                total: judged.carried.total + judged.counts.total,
            };
            let pass = sprt::pass_multiple(spec.tolerance, weights.after, policy.exposure_scaling);
            let test =
                sprt::test_pooled(Counts::ZERO, shown, spec.budget, spec.tolerance, pass, policy.rates);
            let events = test.needed;
            // Requests follow the weight; probe time and custom events come from the pods,
            // which run at every weight.
            let scale = if judged.unit == Unit::Requests { scale } else { 1.0 };
            let per_second = judged.pace.map(|p| p.per_second * scale).filter(|r| *r > 0.0);
            let eta = per_second.zip(events).map(|(r, n)| {
                let wait = Duration::try_from_secs_f64(n as f64 / r).unwrap_or(LONGEST);
                wait.min(LONGEST).max(min_healthy)
            });
            Some(Forecast { check: judged.check.clone(), unit: judged.unit, events, per_second, eta })
        })
        .collect();
    // A check that will not decide, or whose time is unknown, is the one to be told of first.
    checks.sort_by_key(|c| (c.events.is_some(), c.eta.is_some(), std::cmp::Reverse(c.eta)));
    NextStep { weight: weights.next, holds, checks }
}

// === impl NextStep ===

impl NextStep {
    /// The longest of the checks' estimates: when the step is expected to pass.
    pub fn eta(&self) -> Option<Duration> {
        self.checks.first().and_then(|c| c.eta)
    }

    /// `at 5 %: error-rate needs about 2650 more requests, ≈ 9 min at 4.9 requests/s`, with what
    /// to change when that is more than `maxHold`.
    pub fn describe(&self) -> String {
        let Holds { min_healthy, max_hold } = self.holds;
        let weight = format!("{} %", crate::format::multiple(self.weight));
        let Some(slowest) = self.checks.first() else {
            return format!("at {weight}: no check could be read to forecast from");
        };
        let Some(events) = slowest.events else {
            return format!(
                "at {weight}: {} will not decide at the share of bad events seen so far (between its bounds)",
                slowest.check
            );
        };
        let mut words = format!("at {weight}: {} needs about {events} more {}", slowest.check, slowest.unit);
        match (slowest.eta, slowest.per_second) {
            (Some(eta), Some(rate)) if eta <= min_healthy => {
                words.push_str(&format!(
                    " (≈ {} at {rate:.1} {}/s), within its minHealthy of {}",
                    rough(eta),
                    slowest.unit,
                    rough(min_healthy)
                ));
            }
            (Some(eta), Some(rate)) => {
                words.push_str(&format!(", ≈ {} at {rate:.1} {}/s", rough(eta), slowest.unit));
                if eta > max_hold {
                    words.push_str(
                        " (more than maxHold: raise the weight or lower the tolerance to decide sooner)",
                    );
                }
            }
            _ => words.push_str(" (no rate to forecast its time from)"),
        }
        words
    }
}
