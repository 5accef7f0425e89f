//! Decisions as data, and the words for them. The gate decides with the structures below;
//! `Decision::reason`, `CheckReport::reason` and `CheckReport::statistic` make the sentences
//! that status, events and the CLI show, in one place.

use std::fmt;
use std::time::Duration;

use crate::check::Unit;
use crate::evaluate::{CheckResult, InconclusivePolicy, Missing};
use crate::format::{human, percent, rough};
use crate::relative::Comparison;
use crate::sprt::{Counts, TestResult};

/// One check's counts as the sequential test judged them.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub check: String,
    pub unit: Unit,
    pub budget: f64,
    /// This step's events.
    pub counts: Counts,
    /// The canary's events at earlier steps, pooled into the pass test.
    pub carried: Counts,
    pub test: TestResult,
    /// The canary against stable over the step, when it was over budget and stable was read.
    pub relative: Option<Comparison>,
    /// How fast the step's events come, and how much of `maxHold` is left.
    pub pace: Option<Pace>,
}

/// The step's rate of events so far, to estimate when a decision comes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// The step's events per second so far.
    pub per_second: f64,
    /// What is left of `maxHold`.
    pub left: Duration,
}

/// The longest estimate given: beyond it, "about a year" says as much.
const ESTIMATE_MAX: Duration = Duration::from_secs(365 * 86_400);

/// A check whose counts could not be had.
#[derive(Debug, Clone, PartialEq)]
pub struct Unreadable {
    pub check: String,
    pub why: String,
}

/// What a step still lacked when `maxHold` passed.
#[derive(Debug, Clone, PartialEq)]
pub enum Pending {
    /// Metrics could not be read.
    Unavailable(Vec<Unreadable>),
    /// These checks had not gathered enough evidence.
    Evidence(Vec<Judged>),
}

/// No verdict within `maxHold`: how long, what was missing, and the policy that applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Inconclusive {
    pub elapsed: Duration,
    pub pending: Pending,
    pub policy: InconclusivePolicy,
}

/// Why the weight is raised.
#[derive(Debug, Clone, PartialEq)]
pub enum Advance {
    /// Every check within budget for at least the minimum hold.
    WithinBudget { elapsed: Duration, checks: Vec<Judged> },
    /// No verdict within `maxHold`, and the canary no worse than stable (`onInconclusive: Promote`).
    RelativeEvidence(Inconclusive),
}

/// Why the step stays at its weight.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// Every check within budget, the minimum hold not over yet.
    MinHealthy { elapsed: Duration, min_healthy: Duration },
    /// These checks need more evidence.
    Evidence(Vec<Judged>),
    /// These checks are over budget, but not (yet) shown worse than stable, which is within
    /// its budget: what hurts the canary may hurt both (a busy node), so the comparison decides.
    NotWorseThanStable(Vec<Judged>),
    /// These checks are over budget, stable was read but none of its events are counted yet,
    /// and the step is young (`evaluate::STABLE_GRACE`): waiting for stable's next scrape.
    StableUncounted(Vec<Judged>),
}

/// Why the canary is rolled back.
#[derive(Debug, Clone, PartialEq)]
pub enum RollbackCause {
    /// This check is over budget.
    Breach(Judged),
    /// No verdict within `maxHold` (`onInconclusive: Rollback`).
    Inconclusive(Inconclusive),
}

impl RollbackCause {
    /// The check that failed; `inconclusive` when none did.
    pub fn check(&self) -> &str {
        match self {
            RollbackCause::Breach(j) => &j.check,
            RollbackCause::Inconclusive(_) => "inconclusive",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// The step passed: raise the weight.
    StepUp(Advance),
    /// Stay at this weight and evaluate again.
    Hold(Wait),
    /// Hold because metrics are unavailable.
    MetricsUnavailable(Vec<Unreadable>),
    /// Hold because stable breaches as well: this check is over budget on both sides.
    StableBreaching(Judged),
    /// Roll back.
    Rollback(RollbackCause),
    /// A check cannot be computed from what the source has (e.g. a latency limit that is not a
    /// bucket boundary): it would never pass, so the canary must not stay exposed.
    Misconfigured(Unreadable),
    /// Stop and wait for a person.
    Pause(Inconclusive),
}

/// The per-check report that goes into status.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckReport {
    pub name: String,
    pub result: CheckResult,
    /// The budget.
    pub threshold: f64,
    pub evidence: Result<Judged, Missing>,
    /// What the counts were read from (`CheckSpec::source`).
    pub source: Option<String>,
}

// === impl Judged ===

impl Judged {
    /// `5 of 100 requests bad (5.00 %), budget 0.020 %`.
    fn numbers(&self) -> String {
        let c = self.counts;
        let share = c.ratio().map_or_else(|| "n/a".into(), percent);
        let earlier = match self.carried {
            Counts { total: 0, .. } => String::new(),
            Counts { bad, total } => format!(" (and {bad} of {total} at earlier steps)"),
        };
        format!(
            "{} of {} {} bad ({share}){earlier}, budget {}",
            c.bad,
            c.total,
            self.unit,
            percent(self.budget)
        )
    }

    /// About how long until a decision at the step's rate so far (undecided only).
    pub fn eta(&self) -> Option<Duration> {
        let more = self.test.needed?.saturating_sub(self.counts.total) as f64;
        let pace = self.pace.filter(|p| p.per_second > 0.0)?;
        Some(
            Duration::try_from_secs_f64(more / pace.per_second).map_or(ESTIMATE_MAX, |d| d.min(ESTIMATE_MAX)),
        )
    }

    /// `312 of about 16000 requests, ≈ 48 min at 5.4 requests/s`, or `0 requests so far`; and
    /// what to change when that is more than `maxHold` leaves.
    fn progress(&self) -> String {
        let Some(n) = self.test.needed else {
            return format!("{} {} so far", self.counts.total, self.unit);
        };
        let mut words = format!("{} of about {} {}", self.counts.total, n, self.unit);
        if let (Some(eta), Some(pace)) = (self.eta(), self.pace) {
            words.push_str(&format!(", ≈ {} at {:.1} {}/s", rough(eta), pace.per_second, self.unit));
            if eta > pace.left {
                words.push_str(
                    " (more than maxHold leaves: raise the weight or lower the tolerance to decide sooner)",
                );
            }
        }
        words
    }

    /// `over budget: … (breach LLR 3.10 vs 10x budget ≥ bound 6.20)`, and how the canary
    /// compares with stable when it was compared.
    fn over_budget(&self) -> String {
        let t = &self.test;
        let stable = self.relative.as_ref().map_or_else(String::new, |c| format!("; {}", compared(c)));
        format!(
            "over budget: {} (breach LLR {:.2} vs {}x budget ≥ bound {:.2}){stable}",
            self.numbers(),
            t.breach_llr,
            t.breach_multiple,
            t.breach_bound
        )
    }

    /// `error-rate 0 of 5000 bad, pass LLR vs 10x budget -5.10 ≤ -4.60`.
    fn within_budget(&self) -> String {
        let t = &self.test;
        format!(
            "{} {} of {} bad, pass LLR vs {}x budget {:.2} ≤ {:.2}",
            self.check,
            self.counts.bad,
            self.counts.total,
            crate::format::multiple(t.pass_multiple),
            t.pass_llr,
            t.pass_bound
        )
    }
}

/// `worse than stable: 80.00 % of the bad events at 1.00 % of the traffic (ln e-value 9.10 vs
/// 4.61)`.
fn compared(c: &Comparison) -> String {
    let share =
        c.bad_share.map_or_else(|| "no bad events".into(), |s| format!("{} of the bad events", percent(s)));
    let verdict = if c.worse() { "worse than stable" } else { "not shown worse than stable" };
    let whole = c
        .strongest_past_s
        .map_or_else(String::new, |s| format!(", whole histogram, strongest past {}", human_seconds(s)));
    format!(
        "{verdict}: {share} at {} of the traffic (ln e-value {:.2} vs {:.2}{whole})",
        percent(c.traffic_share),
        c.log_e,
        c.bound
    )
}

/// A bucket boundary as people read it: `25ms`, `1.5s`.
fn human_seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{}ms", crate::format::multiple(s * 1000.0))
    } else {
        format!("{}s", crate::format::multiple(s))
    }
}

fn joined<T>(items: &[T], sep: &str, f: impl Fn(&T) -> String) -> String {
    items.iter().map(f).collect::<Vec<_>>().join(sep)
}

fn unavailable(checks: &[Unreadable]) -> String {
    format!("metrics unavailable ({})", joined(checks, "; ", |u| format!("{}: {}", u.check, u.why)))
}

fn waiting(checks: &[Judged]) -> String {
    format!("waiting for evidence: {}", joined(checks, ", ", |j| format!("{} {}", j.check, j.progress())))
}

// === impl Inconclusive ===

impl fmt::Display for Inconclusive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match &self.pending {
            Pending::Unavailable(u) => unavailable(u),
            Pending::Evidence(w) => waiting(w),
        };
        write!(f, "no verdict after {} (maxHold): {why}", human(self.elapsed))
    }
}

// === impl Decision ===

impl Decision {
    /// The decision in words, as status messages and events show it.
    pub fn reason(&self) -> String {
        match self {
            Decision::StepUp(Advance::WithinBudget { elapsed, checks }) => format!(
                "every check within budget for {} ({})",
                human(*elapsed),
                joined(checks, "; ", Judged::within_budget)
            ),
            Decision::StepUp(Advance::RelativeEvidence(i)) => {
                format!("{i}; canary no worse than stable, promoting on relative evidence")
            }
            Decision::Hold(Wait::MinHealthy { elapsed, min_healthy }) => format!(
                "every check within budget; holding {} of {} minimum",
                human(*elapsed),
                human(*min_healthy)
            ),
            Decision::Hold(Wait::Evidence(checks)) => waiting(checks),
            Decision::Hold(Wait::StableUncounted(checks)) => format!(
                "holding until stable's events are counted to compare with: {}",
                joined(checks, "; ", |j| format!("{} {}", j.check, j.over_budget()))
            ),
            Decision::Hold(Wait::NotWorseThanStable(checks)) => {
                format!("holding: {}", joined(checks, "; ", |j| format!("{} {}", j.check, j.over_budget())))
            }
            Decision::MetricsUnavailable(checks) => unavailable(checks),
            Decision::StableBreaching(j) => {
                format!("{} {}; stable is over budget too", j.check, j.over_budget())
            }
            Decision::Rollback(RollbackCause::Breach(j)) => format!("{} {}", j.check, j.over_budget()),
            Decision::Rollback(RollbackCause::Inconclusive(i)) => i.to_string(),
            Decision::Misconfigured(u) => format!("{} cannot be computed: {}", u.check, u.why),
            Decision::Pause(i) if i.policy == InconclusivePolicy::Promote => {
                format!("{i}; no relative evidence that the canary is as good as stable")
            }
            Decision::Pause(i) => i.to_string(),
        }
    }
}

// === impl CheckReport ===

impl CheckReport {
    pub fn counts(&self) -> Counts {
        self.evidence.as_ref().map_or(Counts { bad: 0, total: 0 }, |j| j.counts)
    }

    /// The observed share of bad events.
    pub fn value(&self) -> Option<f64> {
        self.evidence.as_ref().ok().and_then(|j| j.counts.ratio())
    }

    /// About how many events in all a decision needs (undecided only).
    pub fn needed(&self) -> Option<u64> {
        self.evidence.as_ref().ok().and_then(|j| j.test.needed)
    }

    /// About how long until a decision at the step's rate so far (undecided only).
    pub fn eta(&self) -> Option<Duration> {
        self.evidence.as_ref().ok().and_then(Judged::eta)
    }

    /// The check's state in words.
    pub fn reason(&self) -> String {
        match &self.evidence {
            Err(Missing::Misconfigured(why)) => format!("cannot be computed: {why}"),
            Err(Missing::Unavailable(why)) => format!("metrics unavailable: {why}"),
            Ok(j) => match self.result {
                CheckResult::Fail => j.over_budget(),
                CheckResult::Pass => format!("within budget: {}", j.numbers()),
                CheckResult::Pending | CheckResult::NoData => {
                    format!("waiting for evidence: {}; {}", j.progress(), j.numbers())
                }
            },
        }
    }

    /// The test statistics behind the result.
    pub fn statistic(&self) -> Option<String> {
        let t = &self.evidence.as_ref().ok()?.test;
        Some(format!(
            "breach LLR {:.2} (vs {}x budget) / bound {:.2}; pass LLR {:.2} (vs {}x budget) / bound {:.2}",
            t.breach_llr,
            t.breach_multiple,
            t.breach_bound,
            t.pass_llr,
            crate::format::multiple(t.pass_multiple),
            t.pass_bound
        ))
    }
}
