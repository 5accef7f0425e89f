//! The gate: evidence in, decision out. Pure and synchronous, and kept so by Cargo: this crate
//! depends on no Kubernetes, HTTP or async crate.
//!
//! - `check`: what a check means to the gate (its budget, tolerance and unit), the one mapping
//!   from an SLO to a budget on the share of bad events;
//! - `sprt`: the sequential test on counts;
//! - `relative`: the canary against stable, a two-sample test valid at every look;
//! - `evaluate`: one evaluation of a step, every check judged, one `Decision`;
//! - `decision`: decisions as data, and the words for them (`Decision::reason`);
//! - `replay`: a recorded series of counts through the gate;
//! - `forecast`: what the next step will need, said before it starts;
//! - `split`: whether the traffic split that happened is the one the route asked for;
//! - `defaults`: how evidence is judged unless a gate says otherwise;
//! - `format`: durations and shares as people read them.

pub mod check;
pub mod decision;
pub mod defaults;
mod evaluate;
pub mod forecast;
pub mod format;
pub mod relative;
pub mod replay;
pub mod split;
pub mod sprt;

pub use check::{CheckError, CheckSpec, Measure, Unit};
pub use decision::{
    Advance, CheckReport, Decision, Inconclusive, Judged, Pace, Pending, RollbackCause, Unreadable, Wait,
};
pub use evaluate::{
    CheckEvidence, CheckResult, Evaluation, InconclusivePolicy, Missing, Policy, STABLE_GRACE, StepClock,
    evaluate,
};
pub use relative::Slower;
pub use split::{Split, Traffic};
pub use sprt::{Counts, ErrorRates, Outcome};

#[cfg(test)]
mod properties;
#[cfg(test)]
mod tests;
