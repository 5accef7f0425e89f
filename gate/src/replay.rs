//! Replaying a recorded series of counts through the gate: "what would this gate have decided?"
//!
//! The series holds, at increasing times, the cumulative counts of each check for the canary
//! (and optionally stable), as a Prometheus counter would give them. Each sample after a step's
//! start is one evaluation over the counts since that start, exactly as the controller judges a
//! step: a passed step starts the next one from that sample, a rollback or a pause ends the
//! replay, and passing the last step promotes. The file format is documented in `docs/gate.md`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{CheckEvidence, CheckSpec, Counts, Decision, Evaluation, Missing, Policy, StepClock, evaluate};

/// The replay file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Series {
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// Seconds since the first step began.
    pub at: f64,
    /// Cumulative counts per check name.
    pub checks: BTreeMap<String, SampleCounts>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleCounts {
    pub canary: CountPair,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<CountPair>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountPair {
    pub bad: u64,
    pub total: u64,
}

/// A series that cannot be replayed: the field and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct SeriesError {
    pub field: String,
    pub reason: String,
}

/// How the replayed gate is set up.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    pub checks: Vec<CheckSpec>,
    pub policy: Policy,
    pub min_healthy: Duration,
    pub max_hold: Duration,
    /// The weight each step to pass leads to (percent), in order; the last is 100 (promotion).
    pub next_weights: Vec<f64>,
}

/// One evaluation of the replay.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub at: f64,
    /// 1-based.
    pub step: usize,
    pub evaluation: Evaluation,
}

/// How the replay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Promoted,
    RolledBack,
    Paused,
    /// The series ended first.
    Undecided,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub lines: Vec<Line>,
    pub end: End,
}

impl Series {
    /// Checks what the gate cannot judge: times out of order, counts that go down (a counter
    /// reset the file should have corrected), more bad than total, unknown checks.
    pub fn validate(&self, checks: &[CheckSpec]) -> Result<(), SeriesError> {
        let err = |field: String, reason: String| Err(SeriesError { field, reason });
        if self.samples.is_empty() {
            return err("samples".into(), "at least one sample is needed".into());
        }
        let mut last: BTreeMap<&str, (f64, SampleCounts)> = BTreeMap::new();
        let mut last_at = f64::NEG_INFINITY;
        for (i, s) in self.samples.iter().enumerate() {
            if !s.at.is_finite() || s.at < 0.0 {
                return err(format!("samples[{i}].at"), format!("{} is not a time in seconds ≥ 0", s.at));
            }
            if s.at <= last_at {
                return err(
                    format!("samples[{i}].at"),
                    format!("{} is not after the previous sample's {last_at}", s.at),
                );
            }
            last_at = s.at;
            for (name, c) in &s.checks {
                let field = format!("samples[{i}].checks.{name}");
                if !checks.iter().any(|k| &k.name == name) {
                    let known: Vec<&str> = checks.iter().map(|k| k.name.as_str()).collect();
                    return err(field, format!("not a check of the gate (its checks: {})", known.join(", ")));
                }
                let sides = [("canary", Some(c.canary)), ("stable", c.stable)];
                for (side, pair) in sides {
                    let Some(pair) = pair else { continue };
                    if pair.bad > pair.total {
                        return err(
                            format!("{field}.{side}.bad"),
                            format!("{} is more than total {}", pair.bad, pair.total),
                        );
                    }
                    let before = last.get(name.as_str()).and_then(|(_, p)| match side {
                        "canary" => Some(p.canary),
                        _ => p.stable,
                    });
                    if let Some(b) = before {
                        for (what, now, was) in [("bad", pair.bad, b.bad), ("total", pair.total, b.total)] {
                            if now < was {
                                return err(
                                    format!("{field}.{side}.{what}"),
                                    format!("went down from {was} to {now}; counts are cumulative"),
                                );
                            }
                        }
                    }
                }
                last.insert(name, (s.at, *c));
            }
        }
        Ok(())
    }
}

fn minus(now: CountPair, start: Option<CountPair>) -> Counts {
    let start = start.unwrap_or(CountPair { bad: 0, total: 0 });
    Counts { bad: now.bad.saturating_sub(start.bad), total: now.total.saturating_sub(start.total) }
}

/// Replays `series` (validated first) through the gate.
pub fn replay(series: &Series, setup: &Setup) -> Result<Replay, SeriesError> {
    series.validate(&setup.checks)?;
    let mut lines = Vec::new();
    let mut step = 1;
    let mut start = &series.samples[0];
    for sample in &series.samples[1..] {
        if sample.at <= start.at {
            continue;
        }
        let evidence: Vec<CheckEvidence> = setup
            .checks
            .iter()
            .map(|spec| {
                let before = start.checks.get(&spec.name);
                let canary = match sample.checks.get(&spec.name) {
                    Some(now) => Ok(minus(now.canary, before.map(|b| b.canary))),
                    None => Err(Missing::Unavailable(format!("no counts at {}s", sample.at))),
                };
                let stable = sample
                    .checks
                    .get(&spec.name)
                    .and_then(|now| now.stable)
                    .map(|now| minus(now, before.and_then(|b| b.stable)));
                CheckEvidence {
                    spec: spec.clone(),
                    canary,
                    stable,
                    carried: Counts::ZERO,
                    slower: Vec::new(),
                }
            })
            .collect();
        let clock = StepClock {
            elapsed: Duration::from_secs_f64(sample.at - start.at),
            min_healthy: setup.min_healthy,
            max_hold: setup.max_hold,
            next_weight: setup.next_weights.get(step - 1).copied().unwrap_or(100.0),
        };
        let evaluation = evaluate(&evidence, clock, setup.policy);
        let decision = evaluation.decision.clone();
        lines.push(Line { at: sample.at, step, evaluation });
        match decision {
            Decision::StepUp(..) if step >= setup.next_weights.len() => {
                return Ok(Replay { lines, end: End::Promoted });
            }
            Decision::StepUp(..) => {
                step += 1;
                start = sample;
            }
            Decision::Rollback(..) | Decision::Misconfigured(..) => {
                return Ok(Replay { lines, end: End::RolledBack });
            }
            Decision::Pause(..) => return Ok(Replay { lines, end: End::Paused }),
            Decision::Hold(..) | Decision::MetricsUnavailable(..) | Decision::StableBreaching(..) => {}
        }
    }
    Ok(Replay { lines, end: End::Undecided })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorRates, InconclusivePolicy, Unit};

    fn setup(steps: usize) -> Setup {
        Setup {
            checks: vec![CheckSpec {
                name: "errors".into(),
                budget: 0.01,
                tolerance: 10.0,
                unit: Unit::Requests,
                source: None,
            }],
            policy: Policy {
                rates: ErrorRates { false_rollback: 0.01, missed_detection: 0.01 },
                exposure_scaling: 0.0,
                on_inconclusive: InconclusivePolicy::Pause,
                compare_with_stable: true,
            },
            min_healthy: Duration::from_secs(10),
            max_hold: Duration::from_secs(600),
            next_weights: vec![100.0; steps],
        }
    }

    fn sample(at: f64, bad: u64, total: u64) -> Sample {
        let counts = SampleCounts { canary: CountPair { bad, total }, stable: None };
        Sample { at, checks: BTreeMap::from([("errors".to_string(), counts)]) }
    }

    #[test]
    fn each_step_counts_from_its_own_start() {
        // 1 000 clean requests pass step 1 at 10 s; step 2 starts from there, so its 40 errors
        // in the next 500 requests are judged alone (8 %) and roll back.
        let series =
            Series { samples: vec![sample(0.0, 0, 0), sample(10.0, 0, 1000), sample(20.0, 40, 1500)] };
        let r = replay(&series, &setup(3)).expect("replayed");
        assert_eq!(r.end, End::RolledBack);
        assert_eq!(r.lines.len(), 2);
        assert!(matches!(r.lines[0].evaluation.decision, Decision::StepUp(..)));
        assert_eq!(
            (
                r.lines[1].step,
                r.lines[1].evaluation.checks[0].counts().bad,
                r.lines[1].evaluation.checks[0].counts().total
            ),
            (2, 40, 500)
        );
    }

    #[test]
    fn the_last_step_passing_promotes() {
        let series = Series { samples: vec![sample(0.0, 0, 0), sample(10.0, 0, 1000)] };
        assert_eq!(replay(&series, &setup(1)).expect("replayed").end, End::Promoted);
    }

    #[test]
    fn a_sample_without_a_check_is_missing_data_not_zero() {
        let mut gap = sample(10.0, 0, 1000);
        gap.checks.clear();
        let series = Series { samples: vec![sample(0.0, 0, 0), gap] };
        let r = replay(&series, &setup(3)).expect("replayed");
        assert!(matches!(r.lines[0].evaluation.decision, Decision::MetricsUnavailable(..)), "{r:?}");
        assert_eq!(r.end, End::Undecided);
    }

    #[test]
    fn times_must_increase() {
        let series = Series { samples: vec![sample(0.0, 0, 0), sample(0.0, 0, 10)] };
        let e = replay(&series, &setup(3)).expect_err("rejected");
        assert_eq!(e.field, "samples[1].at");
    }
}
