//! The gate: evidence in, decision out. Pure and synchronous: no kube or HTTP types.
//!
//! Each check's counts go through the sequential test (`sprt`). Then, in this order:
//! 1. a check whose canary is over budget rolls back, unless the stable version, judged the same
//!    way over the same interval, is over budget too (then the problem is not the canary: hold
//!    with `StableBreaching`);
//! 2. metrics that could not be read hold the step (`MetricsUnavailable`): missing data never
//!    promotes;
//! 3. every check within budget and the minimum hold passed: raise the weight;
//! 4. otherwise hold and say what is missing, until `maxHold`; then the declared policy (pause,
//!    roll back, or promote on relative evidence: the canary no worse than stable by more than
//!    the budget).

pub mod replay;
pub mod sprt;

use std::time::Duration;

use rollgate_crds::gate::{GatePolicy, InconclusivePolicy};
use rollgate_crds::rollout::CheckResult;

pub use sprt::{Counts, ErrorRates, Outcome};

/// One check, as the gate needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    /// Largest acceptable share of bad events.
    pub budget: f64,
    /// Multiple of the budget that must not be promoted.
    pub tolerance: f64,
    /// What the events are, for messages ("requests", "probe intervals").
    pub unit: &'static str,
}

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
}

/// Where the step is in time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepClock {
    pub elapsed: Duration,
    pub min_healthy: Duration,
    pub max_hold: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub rates: ErrorRates,
    pub on_inconclusive: InconclusivePolicy,
    pub compare_with_stable: bool,
}

impl From<&GatePolicy> for Policy {
    fn from(p: &GatePolicy) -> Self {
        Policy {
            rates: ErrorRates {
                false_rollback: p.false_rollback_rate,
                missed_detection: p.missed_detection_rate,
            },
            on_inconclusive: p.on_inconclusive,
            compare_with_stable: p.compare_with_stable,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The step passed: raise the weight.
    StepUp { reason: String },
    /// Stay at this weight and evaluate again.
    Hold { reason: String },
    /// Hold because metrics are unavailable.
    MetricsUnavailable { reason: String },
    /// Hold because stable breaches as well.
    StableBreaching { check: String, reason: String },
    /// Roll back.
    Rollback { check: String, reason: String },
    /// A check cannot be computed from what the source has (e.g. a latency limit that is not a
    /// bucket boundary): it would never pass, so the canary must not stay exposed.
    Misconfigured { check: String, reason: String },
    /// Stop and wait for a person.
    Pause { reason: String },
}

/// The per-check report that goes into status.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub name: String,
    pub result: CheckResult,
    pub value: Option<f64>,
    pub threshold: f64,
    pub bad: u64,
    pub total: u64,
    pub needed: Option<u64>,
    pub statistic: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub decision: Decision,
    pub checks: Vec<CheckReport>,
}

pub fn evaluate(evidence: &[CheckEvidence], clock: StepClock, policy: Policy) -> Evaluation {
    let mut reports = Vec::with_capacity(evidence.len());
    let mut breaches: Vec<(String, String)> = Vec::new();
    let mut stable_breaches: Vec<(String, String)> = Vec::new();
    let mut unavailable: Vec<String> = Vec::new();
    let mut misconfigured: Vec<(String, String)> = Vec::new();
    let mut waiting: Vec<String> = Vec::new();
    let mut within: Vec<String> = Vec::new();
    let mut all_within = !evidence.is_empty();

    for e in evidence {
        let spec = &e.spec;
        let counts = match &e.canary {
            Ok(c) => *c,
            Err(missing @ (Missing::Unavailable(why) | Missing::Misconfigured(why))) => {
                all_within = false;
                if matches!(missing, Missing::Misconfigured(_)) {
                    misconfigured.push((spec.name.clone(), why.clone()));
                } else {
                    unavailable.push(format!("{}: {why}", spec.name));
                }
                reports.push(CheckReport {
                    name: spec.name.clone(),
                    result: CheckResult::NoData,
                    value: None,
                    threshold: spec.budget,
                    bad: 0,
                    total: 0,
                    needed: None,
                    statistic: None,
                    reason: if matches!(missing, Missing::Misconfigured(_)) {
                        format!("cannot be computed: {why}")
                    } else {
                        format!("metrics unavailable: {why}")
                    },
                });
                continue;
            }
        };
        let r = sprt::test(counts, spec.budget, spec.tolerance, policy.rates);
        let value = counts.ratio();
        let numbers = format!(
            "{} of {} {} bad ({}), budget {}",
            counts.bad,
            counts.total,
            spec.unit,
            value.map_or_else(|| "n/a".into(), percent),
            percent(spec.budget)
        );
        let statistic = Some(format!(
            "breach LLR {:.2} (vs {}x budget) / bound {:.2}; pass LLR {:.2} / bound {:.2}",
            r.breach_llr, r.breach_multiple, r.breach_bound, r.pass_llr, r.pass_bound
        ));
        let (result, reason) = match r.outcome {
            Outcome::Breach => {
                let stable_too = policy.compare_with_stable
                    && e.stable.is_some_and(|s| {
                        sprt::test(s, spec.budget, spec.tolerance, policy.rates).outcome == Outcome::Breach
                    });
                let reason = format!(
                    "over budget: {numbers} (breach LLR {:.2} vs {}x budget ≥ bound {:.2})",
                    r.breach_llr, r.breach_multiple, r.breach_bound
                );
                if stable_too {
                    stable_breaches.push((spec.name.clone(), format!("{reason}; stable is over budget too")));
                } else {
                    breaches.push((spec.name.clone(), reason.clone()));
                }
                (CheckResult::Fail, reason)
            }
            Outcome::WithinBudget => {
                within.push(format!(
                    "{} {} of {} bad, pass LLR {:.2} ≤ {:.2}",
                    spec.name, counts.bad, counts.total, r.pass_llr, r.pass_bound
                ));
                (CheckResult::Pass, format!("within budget: {numbers}"))
            }
            Outcome::Undecided | Outcome::NoData => {
                all_within = false;
                let progress = match r.needed {
                    Some(n) => format!("{} of about {} {}", counts.total, n, spec.unit),
                    None => format!("{} {} so far", counts.total, spec.unit),
                };
                waiting.push(format!("{} {progress}", spec.name));
                let result =
                    if r.outcome == Outcome::NoData { CheckResult::NoData } else { CheckResult::Pending };
                (result, format!("waiting for evidence: {progress}; {numbers}"))
            }
        };
        reports.push(CheckReport {
            name: spec.name.clone(),
            result,
            value,
            threshold: spec.budget,
            bad: counts.bad,
            total: counts.total,
            needed: r.needed,
            statistic,
            reason,
        });
    }

    let decision = decide(
        &breaches,
        &stable_breaches,
        &unavailable,
        &waiting,
        all_within.then_some(within.as_slice()),
        evidence,
        clock,
        policy,
    );
    // A real breach still wins; otherwise a check that cannot be computed ends the step.
    let decision = match (decision, misconfigured.into_iter().next()) {
        (d @ Decision::Rollback { .. }, _) | (d, None) => d,
        (_, Some((check, why))) => {
            Decision::Misconfigured { reason: format!("{check} cannot be computed: {why}"), check }
        }
    };
    Evaluation { decision, checks: reports }
}

#[allow(clippy::too_many_arguments)]
fn decide(
    breaches: &[(String, String)],
    stable_breaches: &[(String, String)],
    unavailable: &[String],
    waiting: &[String],
    // The evidence of each check, when every check is within budget.
    all_within: Option<&[String]>,
    evidence: &[CheckEvidence],
    clock: StepClock,
    policy: Policy,
) -> Decision {
    if let Some((check, reason)) = breaches.first() {
        return Decision::Rollback { check: check.clone(), reason: format!("{check} {reason}") };
    }
    if let Some((check, reason)) = stable_breaches.first() {
        return Decision::StableBreaching { check: check.clone(), reason: format!("{check} {reason}") };
    }
    let over_max_hold = clock.elapsed >= clock.max_hold;
    if !unavailable.is_empty() {
        let reason = format!("metrics unavailable ({})", unavailable.join("; "));
        if over_max_hold {
            return inconclusive(policy.on_inconclusive, false, &reason, clock);
        }
        return Decision::MetricsUnavailable { reason };
    }
    if let Some(within) = all_within {
        if clock.elapsed >= clock.min_healthy {
            return Decision::StepUp {
                reason: format!(
                    "every check within budget for {} ({})",
                    human(clock.elapsed),
                    within.join("; ")
                ),
            };
        }
        return Decision::Hold {
            reason: format!(
                "every check within budget; holding {} of {} minimum",
                human(clock.elapsed),
                human(clock.min_healthy)
            ),
        };
    }
    let reason = format!("waiting for evidence: {}", waiting.join(", "));
    if over_max_hold {
        let relative_ok = evidence.iter().all(no_worse_than_stable);
        return inconclusive(policy.on_inconclusive, relative_ok, &reason, clock);
    }
    Decision::Hold { reason }
}

fn inconclusive(policy: InconclusivePolicy, relative_ok: bool, why: &str, clock: StepClock) -> Decision {
    let after = format!("no verdict after {} (maxHold): {why}", human(clock.elapsed));
    match policy {
        InconclusivePolicy::Pause => Decision::Pause { reason: after },
        InconclusivePolicy::Rollback => Decision::Rollback { check: "inconclusive".into(), reason: after },
        InconclusivePolicy::Promote if relative_ok => Decision::StepUp {
            reason: format!("{after}; canary no worse than stable, promoting on relative evidence"),
        },
        InconclusivePolicy::Promote => Decision::Pause {
            reason: format!("{after}; no relative evidence that the canary is as good as stable"),
        },
    }
}

/// Relative evidence: the canary's bad share is not above stable's by more than the budget,
/// and stable has data to compare with.
fn no_worse_than_stable(e: &CheckEvidence) -> bool {
    match (&e.canary, e.stable.and_then(|s| s.ratio())) {
        (Ok(c), Some(stable)) => c.ratio().is_none_or(|canary| canary <= stable + e.spec.budget),
        _ => false,
    }
}

fn percent(x: f64) -> String {
    let p = x * 100.0;
    if p == 0.0 {
        "0 %".into()
    } else if p < 0.1 {
        format!("{p:.3} %")
    } else {
        format!("{p:.2} %")
    }
}

/// `3m`, `2m30s`, `45s`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

#[cfg(test)]
mod tests;
