//! How rollouts end and how long they take, and how the gate's Prometheus answers: the series
//! an operator dashboard charts (change-failure rate, time to a decision, time per step, query
//! latency and errors).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::plan::{Completed, Outcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `promoted`, `rolled_back` or `aborted`.
    pub result: &'static str,
}

/// A decision takes seconds to hours: 5 s … 4 h.
const DECISION_BUCKETS: [f64; 12] =
    [5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0];
/// A query takes milliseconds to its 5 s timeout.
const QUERY_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

pub struct Outcomes {
    pub completed: Family<ResultLabels, Counter>,
    pub decision: Family<ResultLabels, Histogram, fn() -> Histogram>,
    pub step: Histogram,
    pub query_duration: Histogram,
    pub query_errors: Counter,
}

impl Outcomes {
    pub fn register(registry: &mut Registry) -> Self {
        let completed = Family::<ResultLabels, Counter>::default();
        registry.register(
            "rollouts_completed",
            "Rollouts that ended, by result: promoted, rolled_back (by the gate or a deadline), aborted (by a person)",
            completed.clone(),
        );
        let decision: Family<ResultLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(DECISION_BUCKETS));
        registry.register(
            "decision_seconds",
            "Time from a rollout's start to its end, by result",
            decision.clone(),
        );
        let step = Histogram::new(DECISION_BUCKETS);
        registry.register(
            "step_duration_seconds",
            "Time from a step's weight applied to the step passed",
            step.clone(),
        );
        let query_duration = Histogram::new(QUERY_BUCKETS);
        registry.register(
            "prometheus_query_duration_seconds",
            "Duration of the gate's Prometheus queries, failed ones included",
            query_duration.clone(),
        );
        let query_errors = Counter::default();
        registry.register(
            "prometheus_query_errors",
            "The gate's Prometheus queries that failed (no answer, an error status, a malformed result)",
            query_errors.clone(),
        );
        // Each result has a series from the start: a rate over them is 0, not "no data".
        for outcome in [Outcome::Promoted, Outcome::RolledBack, Outcome::Aborted] {
            let labels = ResultLabels { result: outcome.as_str() };
            let _ = completed.get_or_create(&labels);
            let _ = decision.get_or_create(&labels);
        }
        Self { completed, decision, step, query_duration, query_errors }
    }

    /// Records a pass's end of a rollout and passed step, if any.
    pub fn record(&self, completed: Option<Completed>, step_passed_after: Option<Duration>) {
        if let Some(c) = completed {
            let labels = ResultLabels { result: c.outcome.as_str() };
            self.completed.get_or_create(&labels).inc();
            if let Some(after) = c.after {
                self.decision.get_or_create(&labels).observe(after.as_secs_f64());
            }
        }
        if let Some(after) = step_passed_after {
            self.step.observe(after.as_secs_f64());
        }
    }

    /// Records one Prometheus query.
    pub fn query(&self, took: Duration, ok: bool) {
        self.query_duration.observe(took.as_secs_f64());
        if !ok {
            self.query_errors.inc();
        }
    }
}
