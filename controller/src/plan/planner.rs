//! The planner: the status being written, the intents, the events, and the bookkeeping
//! every transition shares (conditions, history, one-shot actions).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rollgate_crds::RolloutStatus;
use rollgate_crds::conditions::{self as cond, EventReason};
use rollgate_crds::defaults::HISTORY_LIMIT;
use rollgate_crds::rollout::{Decision as DecisionRecord, HandledActions, HistoryAction, Phase};

use super::*;

// === impl Planner ===

pub(super) struct Planner<'a, 'o> {
    pub(super) o: &'a Observed<'o>,
    pub(super) status: RolloutStatus,
    pub(super) stable: StableIntent,
    pub(super) canary: CanaryIntent,
    pub(super) weight: Option<i32>,
    /// Percent copied to the canary in a shadow step; none means 0 whenever a weight is set.
    pub(super) mirror: Option<i32>,
    pub(super) events: Vec<Event>,
    pub(super) requeue: Duration,
    pub(super) completed: Option<Completed>,
    pub(super) step_passed_after: Option<Duration>,
}

impl<'a, 'o> Planner<'a, 'o> {
    pub(super) fn new(o: &'a Observed<'o>) -> Self {
        let mut status = o.status.clone();
        status.observed_generation = o.generation;
        Self {
            o,
            status,
            stable: StableIntent::Keep { replicas: o.spec.replicas },
            canary: CanaryIntent::Keep,
            weight: None,
            mirror: None,
            events: Vec::new(),
            requeue: IDLE,
            completed: None,
            step_passed_after: None,
        }
    }

    pub(super) fn finish(mut self) -> Plan {
        self.status.step_label = self.status.current_step.map(|i| {
            let n = self.o.spec.steps.len();
            if (i as usize) < n { format!("{}/{}", i + 1, n) } else { "promoting".to_string() }
        });
        Plan {
            stable: self.stable,
            canary: self.canary,
            mirror: self.mirror.or(self.weight.map(|_| 0)),
            weight: self.weight,
            status: self.status,
            events: self.events,
            requeue: self.requeue,
            completed: self.completed,
            step_passed_after: self.step_passed_after,
        }
    }

    pub(super) fn now(&self) -> Time {
        Time(self.o.now)
    }

    /// Marks the rollout as ended in this pass.
    pub(super) fn complete(&mut self, outcome: Outcome) {
        let began = self
            .status
            .history
            .iter()
            .rev()
            .find(|d| d.action == HistoryAction::Start || d.action == HistoryAction::Supersede);
        let after = began.map(|d| elapsed(&d.time, self.o.now));
        self.completed = Some(Completed { outcome, after });
    }

    pub(super) fn event(&mut self, warning: bool, reason: EventReason, note: String) {
        self.events.push(Event { warning, reason, note });
    }

    pub(super) fn record(&mut self, action: HistoryAction, weight: i32, reason: &str) {
        self.status.history.push(DecisionRecord {
            time: self.now(),
            action,
            weight,
            reason: reason.to_string(),
        });
        let excess = self.status.history.len().saturating_sub(HISTORY_LIMIT);
        self.status.history.drain(..excess);
    }

    pub(super) fn set_condition(&mut self, type_: &str, on: bool, reason: &str, message: &str) {
        set_condition(&mut self.status.conditions, type_, on, reason, message, self.o.generation, self.o.now);
    }

    pub(super) fn invalid(&mut self, problem: &SpecProblem) {
        self.status.phase = Some(Phase::Failed);
        self.status.message = Some(format!("invalid spec: {}", problem.message));
        let was =
            self.o.status.conditions.iter().find(|c| c.type_ == cond::INVALID_SPEC && c.status == "True");
        let new = was.is_none_or(|c| problem.reason != c.reason.as_str() || c.message != problem.message);
        self.set_condition(cond::INVALID_SPEC, true, problem.reason.as_str(), &problem.message);
        if new {
            self.event(true, problem.reason, problem.message.clone());
        }
        // Nothing changes in the cluster while the spec is invalid.
        // Another object's name, or a Deployment to adopt that does not exist yet: neither is
        // watched, so look again now and then.
        self.requeue = match problem.reason {
            EventReason::NameConflict | EventReason::WorkloadNotFound => CONFLICT_RECHECK,
            _ => STEADY,
        };
    }

    pub(super) fn valid(&mut self) {
        self.set_condition(cond::INVALID_SPEC, false, cond::reason::VALID, "the spec is valid");
        if self.status.phase == Some(Phase::Failed) {
            self.status.phase = None;
        }
    }

    /// Whether a condition was true before this pass.
    pub(super) fn was_on(&self, type_: &str) -> bool {
        self.o.status.conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
    }

    pub(super) fn paused_by_spec_only(&self) -> bool {
        self.status.conditions.iter().any(|c| c.type_ == cond::PAUSED && c.reason == cond::SPEC_PAUSED)
    }

    /// Marks requested actions that make no sense now as handled, with a Warning Event, so that
    /// they are not acted on later (a stale promote would promote the next canary at once).
    pub(super) fn ignore_actions(&mut self, promote: bool, abort: bool, retry: bool, why: &str) {
        let a = &self.o.actions;
        let mut ignored = Vec::new();
        if promote && let Some((token, _)) = a.promote.clone() {
            self.handled(|h| h.promote = Some(token));
            ignored.push("promote");
        }
        if abort && let Some(token) = a.abort.clone() {
            self.handled(|h| h.abort = Some(token));
            ignored.push("abort");
        }
        if retry && let Some(token) = a.retry.clone() {
            self.handled(|h| h.retry = Some(token));
            ignored.push("retry");
        }
        if !ignored.is_empty() {
            self.event(
                true,
                EventReason::ActionIgnored,
                format!("{} request ignored: {why}", ignored.join(" and ")),
            );
        }
    }

    pub(super) fn handled(&mut self, f: impl FnOnce(&mut HandledActions)) {
        let mut h = self.status.handled_actions.clone().unwrap_or_default();
        f(&mut h);
        self.status.handled_actions = Some(h);
    }
}
