//! What a check means to the gate: the one mapping from an SLO to a budget on the share of bad
//! events, with the tolerance that says how bad a canary must be to be ruled out, and the unit
//! its events are counted in. The API (`rollgate-crds`) says which measure a check declares;
//! a change to what a budget means is made here, and only here.

use std::fmt;

use crate::defaults::{ERROR_TOLERANCE, SHARE_TOLERANCE};

/// What a check measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Measure {
    /// Failed requests: at most `max_ratio` of all requests.
    ErrorRate { max_ratio: f64 },
    /// A latency quantile under a limit: p95 < 300 ms means at most 5 % of requests slower
    /// than 300 ms.
    Latency { quantile: f64 },
    /// A quantile of runtime pauses under a limit, read the same way as latency.
    Pause { quantile: f64 },
    /// Any pair of counts: at most `max_ratio` of the events bad.
    Share { max_ratio: f64 },
}

impl Measure {
    /// The largest acceptable share of bad events.
    pub fn budget(self) -> f64 {
        match self {
            Measure::ErrorRate { max_ratio } | Measure::Share { max_ratio } => max_ratio,
            Measure::Latency { quantile } | Measure::Pause { quantile } => 1.0 - quantile,
        }
    }

    /// The tolerance when the check does not set one.
    pub fn default_tolerance(self) -> f64 {
        match self {
            Measure::ErrorRate { .. } => ERROR_TOLERANCE,
            _ => SHARE_TOLERANCE,
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Measure::ErrorRate { .. } | Measure::Latency { .. } => Unit::Requests,
            Measure::Pause { .. } => Unit::Pauses,
            Measure::Share { .. } => Unit::Events,
        }
    }
}

/// What the events of a check are, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Requests,
    Pauses,
    Events,
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Unit::Requests => "requests",
            Unit::Pauses => "pauses",
            Unit::Events => "events",
        })
    }
}

/// One check, as the gate judges it.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckSpec {
    pub name: String,
    /// Largest acceptable share of bad events.
    pub budget: f64,
    /// Multiple of the budget that must not be promoted.
    pub tolerance: f64,
    pub unit: Unit,
    /// What the counts are read from, in words (the series, the histogram boundary judged),
    /// for status; set by whoever gathers them.
    pub source: Option<String>,
}

/// A check the gate cannot judge.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CheckError {
    #[error("check {check}: no check kind is set")]
    NoMeasure { check: String },
    #[error("check {check}: the budget {budget} is not a share of events between 0 and 1")]
    Budget { check: String, budget: f64 },
    #[error("check {check}: tolerance {tolerance} must be a number greater than 1")]
    Tolerance { check: String, tolerance: f64 },
}

impl CheckSpec {
    /// The check `name` measuring `measure`, with `tolerance` or the measure's default.
    pub fn new(
        name: impl Into<String>,
        measure: Measure,
        tolerance: Option<f64>,
    ) -> Result<Self, CheckError> {
        let name = name.into();
        let budget = measure.budget();
        if !(budget > 0.0 && budget < 1.0) {
            return Err(CheckError::Budget { check: name, budget });
        }
        let tolerance = tolerance.unwrap_or_else(|| measure.default_tolerance());
        if !(tolerance > 1.0 && tolerance.is_finite()) {
            return Err(CheckError::Tolerance { check: name, tolerance });
        }
        Ok(Self { name, budget, tolerance, unit: measure.unit(), source: None })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_under_a_limit_is_a_budget_on_the_share_over_it() {
        let p95 = CheckSpec::new("latency", Measure::Latency { quantile: 0.95 }, None).expect("valid");
        assert!((p95.budget - 0.05).abs() < 1e-12);
        assert_eq!((p95.tolerance, p95.unit), (SHARE_TOLERANCE, Unit::Requests));
        let pause = CheckSpec::new("pause", Measure::Pause { quantile: 0.99 }, Some(5.0)).expect("valid");
        assert!((pause.budget - 0.01).abs() < 1e-12);
        assert_eq!((pause.tolerance, pause.unit), (5.0, Unit::Pauses));
    }

    #[test]
    fn shares_are_their_own_budget() {
        let errors = CheckSpec::new("errors", Measure::ErrorRate { max_ratio: 0.0002 }, None).expect("valid");
        assert_eq!((errors.budget, errors.tolerance, errors.unit), (0.0002, ERROR_TOLERANCE, Unit::Requests));
        let custom = CheckSpec::new("q", Measure::Share { max_ratio: 0.1 }, None).expect("valid");
        assert_eq!((custom.budget, custom.tolerance, custom.unit), (0.1, SHARE_TOLERANCE, Unit::Events));
    }

    #[test]
    fn what_cannot_be_judged_is_refused_with_the_check_named() {
        let e = CheckSpec::new("q", Measure::Share { max_ratio: 0.0 }, None).expect_err("no budget");
        assert_eq!(e.to_string(), "check q: the budget 0 is not a share of events between 0 and 1");
        let e = CheckSpec::new("q", Measure::Share { max_ratio: 0.1 }, Some(1.0)).expect_err("tolerance");
        assert!(matches!(e, CheckError::Tolerance { .. }), "{e}");
        let e = CheckSpec::new("q", Measure::Latency { quantile: f64::NAN }, None).expect_err("NaN");
        assert!(matches!(e, CheckError::Budget { .. }), "{e}");
    }
}
