//! One evaluation of a step. Each check's counts go through the sequential test (`sprt`).
//! Then, in this order:
//! 1. a check whose canary is over budget rolls back if it is also worse than stable over the
//!    same interval (`relative`), or if there is no stable to compare with. Over budget but not
//!    shown worse than stable: if stable, judged the same way, is over budget too, hold with
//!    `StableBreaching` (a global incident is not the canary's fault); otherwise hold until the
//!    comparison decides (`Wait::NotWorseThanStable`: a busy node stalls both versions alike);
//! 2. metrics that could not be read hold the step (`MetricsUnavailable`): missing data never
//!    promotes;
//! 3. every check within budget and the minimum hold passed: raise the weight;
//! 4. otherwise hold and say what is missing, until `maxHold`; then the declared policy (pause,
//!    roll back, or promote on relative evidence: the canary no worse than stable by more than
//!    the budget).
//!
//! A check that cannot be computed at all ends the step (`Misconfigured`) unless another
//! breaches.

use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::check::{CheckSpec, Unit};
use crate::decision::{
    Advance, CheckReport, Decision, Inconclusive, Judged, Pace, Pending, RollbackCause, Unreadable, Wait,
};
use crate::forecast::NextStep;
use crate::relative::{self, Slower};
use crate::split::Traffic;
use crate::sprt::{self, Counts, ErrorRates, Outcome};

/// Why a check has no counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Missing {
    /// The metrics source could not be read.
    Unavailable(String),
    /// The source answered, but the check cannot be computed from what it has (e.g. a latency
    /// limit that is not a histogram bucket boundary).
    Misconfigured(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct CheckEvidence {
    pub spec: CheckSpec,
    pub canary: Result<Counts, Missing>,
    /// The stable version over the same interval, when compared.
    pub stable: Option<Counts>,
    /// The canary's events at the earlier steps of this rollout, pooled into the pass test.
    pub carried: Counts,
    /// For a histogram check compared with stable: both versions' events slower than each
    /// bucket boundary, so the comparison covers the whole distribution (empty: compared at
    /// the check's limit only).
    pub slower: Vec<Slower>,
}

/// Where the step is: in time, and the weight (percent) the step after it exposes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepClock {
    pub elapsed: Duration,
    pub min_healthy: Duration,
    pub max_hold: Duration,
    /// The next step's weight: what this step must rule out grows as it shrinks
    /// (`sprt::pass_multiple`). 100 for the last step before promotion.
    pub next_weight: f64,
}

/// What a step that could not gather enough evidence within `maxHold` does.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum InconclusivePolicy {
    /// Stay at the current weight, paused, until a person promotes, aborts or retries.
    #[default]
    Pause,
    /// Roll back.
    Rollback,
    /// Raise the weight when the canary is no worse than stable over the step (relative
    /// evidence); otherwise pause.
    Promote,
}

/// How evidence is judged.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub rates: ErrorRates,
    /// How strongly what a step must rule out follows the next step's exposure (0 to 1).
    pub exposure_scaling: f64,
    pub on_inconclusive: InconclusivePolicy,
    pub compare_with_stable: bool,
}

/// A check's state after an evaluation.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    Pass,
    Fail,
    Pending,
    NoData,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub decision: Decision,
    pub checks: Vec<CheckReport>,
    /// Requests each version answered over the step, from the first request-counting check
    /// read for both (to judge the traffic split); `None` when none was.
    pub traffic: Option<Traffic>,
    /// What the next step will need (`forecast::next_step`), when whoever evaluated knows the
    /// steps; `evaluate` leaves it empty.
    pub next_step: Option<NextStep>,
}

/// What the checks of one evaluation found, sorted by what they mean for the step.
#[derive(Default)]
struct Findings {
    breaches: Vec<Judged>,
    stable_breaches: Vec<Judged>,
    not_worse: Vec<Judged>,
    stable_uncounted: Vec<Judged>,
    unavailable: Vec<Unreadable>,
    misconfigured: Vec<Unreadable>,
    waiting: Vec<Judged>,
    within: Vec<Judged>,
}

/// How long into a step a check over budget waits for stable's first counted events before the
/// budget alone decides: longer than the scrape intervals in common use (15 s, 30 s). After it,
/// a stable with no events (none of the traffic, or no such series) is really silent.
pub const STABLE_GRACE: Duration = Duration::from_secs(30);

pub fn evaluate(evidence: &[CheckEvidence], clock: StepClock, policy: Policy) -> Evaluation {
    let mut reports = Vec::with_capacity(evidence.len());
    let mut found = Findings::default();

    for e in evidence {
        let spec = &e.spec;
        let counts = match &e.canary {
            Ok(c) => *c,
            Err(missing) => {
                let (Missing::Unavailable(why) | Missing::Misconfigured(why)) = missing;
                let unreadable = Unreadable { check: spec.name.clone(), why: why.clone() };
                match missing {
                    Missing::Misconfigured(_) => found.misconfigured.push(unreadable),
                    Missing::Unavailable(_) => found.unavailable.push(unreadable),
                }
                reports.push(CheckReport {
                    name: spec.name.clone(),
                    result: CheckResult::NoData,
                    threshold: spec.budget,
                    evidence: Err(missing.clone()),
                    source: spec.source.clone(),
                });
                continue;
            }
        };
        let mut judged = Judged {
            check: spec.name.clone(),
            unit: spec.unit,
            budget: spec.budget,
            counts,
            carried: e.carried,
            test: sprt::test_pooled(
                counts,
                e.carried,
                spec.budget,
                spec.tolerance,
                sprt::pass_multiple(spec.tolerance, clock.next_weight, policy.exposure_scaling),
                policy.rates,
            ),
            relative: None,
            pace: pace(counts, clock),
        };
        let result = match judged.test.outcome {
            Outcome::Breach => {
                let stable = e.stable.filter(|_| policy.compare_with_stable);
                let alpha = policy.rates.false_rollback;
                judged.relative = stable.and_then(|s| match e.slower.as_slice() {
                    [] => relative::compare(counts, s, alpha),
                    slower => relative::compare_distributions(counts, s, slower, alpha),
                });
                match (judged.relative, stable) {
                    (Some(c), Some(s)) if !c.worse() => {
                        let stable_over = sprt::test(s, spec.budget, spec.tolerance, policy.rates).outcome
                            == Outcome::Breach;
                        if stable_over {
                            found.stable_breaches.push(judged.clone());
                        } else {
                            found.not_worse.push(judged.clone());
                        }
                    }
                    // Stable read but no events of it counted yet, early in the step: its next
                    // scrape has not landed in the window (a short window, a scrape delayed by
                    // a busy node), which says nothing about stable. Wait for it briefly rather
                    // than judge on the budget alone.
                    (None, Some(s)) if s.total == 0 && clock.elapsed < STABLE_GRACE => {
                        found.stable_uncounted.push(judged.clone())
                    }
                    _ => found.breaches.push(judged.clone()),
                }
                CheckResult::Fail
            }
            Outcome::WithinBudget => {
                found.within.push(judged.clone());
                CheckResult::Pass
            }
            Outcome::Undecided => {
                found.waiting.push(judged.clone());
                CheckResult::Pending
            }
            Outcome::NoData => {
                found.waiting.push(judged.clone());
                CheckResult::NoData
            }
        };
        reports.push(CheckReport {
            name: spec.name.clone(),
            result,
            threshold: spec.budget,
            evidence: Ok(judged),
            source: spec.source.clone(),
        });
    }

    let all_within = !evidence.is_empty() && found.within.len() == evidence.len();
    let mut misconfigured = std::mem::take(&mut found.misconfigured).into_iter();
    let decision = decide(found, all_within, evidence, clock, policy);
    // A real breach still wins; otherwise a check that cannot be computed ends the step.
    let decision = match (decision, misconfigured.next()) {
        (d @ Decision::Rollback(_), _) | (d, None) => d,
        (_, Some(u)) => Decision::Misconfigured(u),
    };
    let traffic = evidence.iter().find_map(|e| match (&e.canary, e.stable) {
        (Ok(c), Some(s)) if e.spec.unit == Unit::Requests => {
            Some(Traffic { canary: c.total, stable: s.total })
        }
        _ => None,
    });
    Evaluation { decision, checks: reports, traffic, next_step: None }
}

/// The step's events per second so far and what is left of `maxHold`.
fn pace(counts: Counts, clock: StepClock) -> Option<Pace> {
    let seconds = clock.elapsed.as_secs_f64();
    (seconds > 0.0).then(|| Pace {
        per_second: counts.total as f64 / seconds,
        left: clock.max_hold.saturating_sub(clock.elapsed),
    })
}

fn decide(
    mut found: Findings,
    all_within: bool,
    evidence: &[CheckEvidence],
    clock: StepClock,
    policy: Policy,
) -> Decision {
    if !found.breaches.is_empty() {
        return Decision::Rollback(RollbackCause::Breach(found.breaches.swap_remove(0)));
    }
    if !found.stable_breaches.is_empty() {
        return Decision::StableBreaching(found.stable_breaches.swap_remove(0));
    }
    if !found.stable_uncounted.is_empty() {
        return Decision::Hold(Wait::StableUncounted(found.stable_uncounted));
    }
    let over_max_hold = clock.elapsed >= clock.max_hold;
    if !found.not_worse.is_empty() {
        if over_max_hold {
            found.not_worse.append(&mut found.waiting);
            return inconclusive(policy.on_inconclusive, false, Pending::Evidence(found.not_worse), clock);
        }
        return Decision::Hold(Wait::NotWorseThanStable(found.not_worse));
    }
    if !found.unavailable.is_empty() {
        if over_max_hold {
            return inconclusive(
                policy.on_inconclusive,
                false,
                Pending::Unavailable(found.unavailable),
                clock,
            );
        }
        return Decision::MetricsUnavailable(found.unavailable);
    }
    if all_within {
        if clock.elapsed >= clock.min_healthy {
            return Decision::StepUp(Advance::WithinBudget { elapsed: clock.elapsed, checks: found.within });
        }
        return Decision::Hold(Wait::MinHealthy { elapsed: clock.elapsed, min_healthy: clock.min_healthy });
    }
    if over_max_hold {
        let relative_ok = evidence.iter().all(no_worse_than_stable);
        return inconclusive(policy.on_inconclusive, relative_ok, Pending::Evidence(found.waiting), clock);
    }
    Decision::Hold(Wait::Evidence(found.waiting))
}

fn inconclusive(
    policy: InconclusivePolicy,
    relative_ok: bool,
    pending: Pending,
    clock: StepClock,
) -> Decision {
    let i = Inconclusive { elapsed: clock.elapsed, pending, policy };
    match policy {
        InconclusivePolicy::Pause => Decision::Pause(i),
        InconclusivePolicy::Rollback => Decision::Rollback(RollbackCause::Inconclusive(i)),
        InconclusivePolicy::Promote if relative_ok => Decision::StepUp(Advance::RelativeEvidence(i)),
        InconclusivePolicy::Promote => Decision::Pause(i),
    }
}

/// Relative evidence: the canary's bad share is not above stable's by more than the budget,
/// and both have events to compare (a canary that answered nothing shows nothing).
fn no_worse_than_stable(e: &CheckEvidence) -> bool {
    match (&e.canary, e.stable.and_then(|s| s.ratio())) {
        (Ok(c), Some(stable)) => c.ratio().is_some_and(|canary| canary <= stable + e.spec.budget),
        _ => false,
    }
}
