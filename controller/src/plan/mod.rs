//! The step state machine: what the world should look like next, from what it looks like now.
//!
//! Pure and synchronous. The reconciler observes (the Rollout, its two Deployments, the router's
//! current weight, requested actions, and — when `evaluation_window` asks for it — the gate's
//! evaluation) and applies the returned `Plan`: the Deployments to keep, adopt or remove, the
//! canary weight, the new status, the events. Every fact needed to continue lives in the
//! Rollout's status, so a restart at any point resumes the same rollout.
//!
//! For a template revision `R` and stable revision `S`:
//! - no `S` yet: `R` becomes stable directly (no gate);
//! - `R == S`: steady, no canary, all traffic to stable;
//! - `R != S`: a rollout: start (or supersede a half-done one), wait for the canary to be
//!   available (or roll back after `progressDeadline`), apply each step's weight, let the gate
//!   judge it, step up, and after the last step promote (stable adopts `R`, traffic returns to
//!   stable, the canary is removed), or roll back (weight 0 at once, the canary removed after
//!   `drainDelay`).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use rollgate_crds::conditions::{self as cond, EventReason};
use rollgate_crds::defaults::HISTORY_LIMIT;
pub use rollgate_crds::revision::revision_of;
use rollgate_crds::rollout::{
    CheckStatus, Decision as DecisionRecord, HandledActions, HistoryAction, Phase, Verdict,
};
use rollgate_crds::{RolloutSpec, RolloutStatus};

use rollgate_gate::format::human;
use rollgate_gate::{CheckReport, Decision, Evaluation};

/// Requeue while waiting for Kubernetes to converge (Deployments, routes).
pub const CONVERGE: Duration = Duration::from_secs(2);
/// Requeue in a steady state: a safety net only, since every object a Rollout depends on is
/// watched (its Deployments, Services, HTTPRoute and ReleaseGate wake it when they change).
pub const STEADY: Duration = Duration::from_secs(600);
/// Requeue after a name conflict: the other object is not watched, so look again now and then.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(30);
/// Longest requeue while waiting for Deployments: their changes are watched and wake the
/// Rollout at once, so a waiting Rollout is not polled; it is woken at its deadline (or after
/// this long, whichever is sooner) to check it.
pub const WAIT_FOR_DEPLOYMENT: Duration = STEADY;

/// One of the two Deployments, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentState {
    pub revision: Option<String>,
    pub replicas: i32,
    /// Every desired replica is updated and ready, and the Deployment controller has seen the
    /// latest spec.
    pub available: bool,
    /// What the Deployment controller reports as wrong (a ReplicaFailure such as an exceeded
    /// quota, or its own progress deadline), if anything.
    pub problem: Option<String>,
}

/// One-shot actions requested through annotations and not yet handled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    /// (token, full promotion)
    pub promote: Option<(String, bool)>,
    pub abort: Option<String>,
    pub retry: Option<String>,
}

/// Why the spec cannot be acted on (a permanent error, until the spec or the cluster changes).
#[derive(Debug, Clone, PartialEq)]
pub struct SpecProblem {
    /// `InvalidSpec`, `NameConflict` or `RejectedByApi`: the `InvalidSpec` condition's reason and
    /// the Event's.
    pub reason: EventReason,
    pub message: String,
}

impl SpecProblem {
    /// The spec itself is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { reason: EventReason::InvalidSpec, message: message.into() }
    }

    pub fn with_reason(reason: EventReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub spec: &'a RolloutSpec,
    pub status: RolloutStatus,
    /// Hash of `spec.template`.
    pub revision: String,
    pub stable: Option<DeploymentState>,
    pub canary: Option<DeploymentState>,
    /// The canary weight the router applies now (None: unknown or no route yet).
    pub router_weight: Option<i32>,
    pub actions: Actions,
    /// Problems found outside the schema (missing gate, invalid template…).
    pub spec_problem: Option<SpecProblem>,
    /// How long a step must stay healthy (step override or gate policy).
    pub gate_interval: Duration,
}

/// What the stable Deployment should be.
#[derive(Debug, Clone, PartialEq)]
pub enum StableIntent {
    /// Leave its template alone; these replicas.
    Keep { replicas: i32 },
    /// Give it the Rollout's current template (first deploy, promotion).
    Adopt { replicas: i32 },
}

/// What the canary Deployment should be.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryIntent {
    Absent,
    /// Present with the Rollout's current template.
    Present {
        replicas: i32,
    },
    /// Leave it as it is (draining after a rollback).
    Keep,
    /// Keep the Deployment (for inspection) with zero replicas: after a rollback's drain.
    ScaledDown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: EventReason,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub stable: StableIntent,
    pub canary: CanaryIntent,
    /// Canary weight the router must apply (None: leave the router alone).
    pub weight: Option<i32>,
    pub status: RolloutStatus,
    pub events: Vec<Event>,
    pub requeue: Duration,
}

/// Whether the gate must be evaluated before planning, and over which window (time since the
/// current step's weight was applied).
pub fn evaluation_window(o: &Observed<'_>) -> Option<Duration> {
    if o.spec_problem.is_some() || o.status.stable_revision.as_deref() == Some(o.revision.as_str()) {
        return None;
    }
    if o.status.stable_revision.is_none() || o.status.canary_revision.as_deref() != Some(o.revision.as_str())
    {
        return None;
    }
    if matches!(o.status.phase, Some(Phase::RolledBack)) {
        return None;
    }
    let step = o.status.current_step? as usize;
    if step >= o.spec.steps.len() || !canary_available(o) {
        return None;
    }
    let started = o.status.step_started_at.as_ref()?;
    if o.router_weight != Some(o.spec.steps[step].weight) {
        return None;
    }
    // Once per interval: the status written after an evaluation triggers another reconcile,
    // which must not evaluate (and write) again.
    if let Some(last) = &o.status.last_evaluated_at
        && elapsed(last, o.now) < o.gate_interval
    {
        return None;
    }
    Some(elapsed(started, o.now))
}

pub fn plan(o: &Observed<'_>, evaluation: Option<&Evaluation>) -> Plan {
    let mut p = Planner::new(o);
    if let Some(problem) = &o.spec_problem {
        p.invalid(problem);
        return p.finish();
    }
    p.valid();
    match o.status.stable_revision.clone() {
        None => p.first_deploy(),
        Some(stable) if stable == o.revision => p.steady(),
        Some(_) => p.rollout(evaluation),
    }
    p.finish()
}

// === impl Planner ===

struct Planner<'a, 'o> {
    o: &'a Observed<'o>,
    status: RolloutStatus,
    stable: StableIntent,
    canary: CanaryIntent,
    weight: Option<i32>,
    events: Vec<Event>,
    requeue: Duration,
}

impl<'a, 'o> Planner<'a, 'o> {
    fn new(o: &'a Observed<'o>) -> Self {
        let mut status = o.status.clone();
        status.observed_generation = o.generation;
        Self {
            o,
            status,
            stable: StableIntent::Keep { replicas: o.spec.replicas },
            canary: CanaryIntent::Keep,
            weight: None,
            events: Vec::new(),
            requeue: STEADY,
        }
    }

    fn finish(mut self) -> Plan {
        self.status.step_label = self.status.current_step.map(|i| {
            let n = self.o.spec.steps.len();
            if (i as usize) < n { format!("{}/{}", i + 1, n) } else { "promoting".to_string() }
        });
        Plan {
            stable: self.stable,
            canary: self.canary,
            weight: self.weight,
            status: self.status,
            events: self.events,
            requeue: self.requeue,
        }
    }

    fn now(&self) -> Time {
        Time(self.o.now)
    }

    fn event(&mut self, warning: bool, reason: EventReason, note: String) {
        self.events.push(Event { warning, reason, note });
    }

    fn record(&mut self, action: HistoryAction, weight: i32, reason: &str) {
        self.status.history.push(DecisionRecord {
            time: self.now(),
            action,
            weight,
            reason: reason.to_string(),
        });
        let excess = self.status.history.len().saturating_sub(HISTORY_LIMIT);
        self.status.history.drain(..excess);
    }

    fn set_condition(&mut self, type_: &str, on: bool, reason: &str, message: &str) {
        set_condition(&mut self.status.conditions, type_, on, reason, message, self.o.generation, self.o.now);
    }

    fn invalid(&mut self, problem: &SpecProblem) {
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
        self.requeue = if problem.reason == EventReason::NameConflict { CONFLICT_RECHECK } else { STEADY };
    }

    fn valid(&mut self) {
        self.set_condition(cond::INVALID_SPEC, false, cond::reason::VALID, "the spec is valid");
        if self.status.phase == Some(Phase::Failed) {
            self.status.phase = None;
        }
    }

    fn first_deploy(&mut self) {
        self.ignore_actions(true, true, true, "the first version is being deployed");
        self.stable = StableIntent::Adopt { replicas: self.o.spec.replicas };
        self.canary = CanaryIntent::Absent;
        self.weight = Some(0);
        let stable =
            self.o.stable.as_ref().filter(|s| s.revision.as_deref() == Some(self.o.revision.as_str()));
        if stable.is_some_and(|s| s.available) {
            let rev = self.o.revision.clone();
            self.status.stable_revision = Some(rev.clone());
            self.status.canary_revision = None;
            self.status.stable_waiting_since = None;
            self.promoted(&format!("first version {rev} deployed as stable"));
            return;
        }
        let rev = self.o.revision.clone();
        let problem = stable.and_then(|s| s.problem.clone());
        let since = elapsed(self.status.stable_waiting_since.get_or_insert(Time(self.o.now)), self.o.now);
        let deadline = self.o.spec.progress_deadline.as_std();
        if since > deadline {
            // Nothing to roll back to: the version stays deployed, and the Rollout says it failed.
            let why = format!(
                "the first version {rev} was not available within progressDeadline {}{}",
                human(deadline),
                problem.map(|p| format!(": {p}")).unwrap_or_default()
            );
            let already = self.o.status.conditions.iter().any(|c| {
                c.type_ == cond::PROGRESSING
                    && c.status == "False"
                    && c.reason == cond::PROGRESS_DEADLINE_EXCEEDED
            });
            if !already {
                self.record(HistoryAction::Fail, 0, &why);
                self.event(true, EventReason::ProgressDeadlineExceeded, why.clone());
            }
            self.status.phase = Some(Phase::Failed);
            self.status.verdict = Some(Verdict::Fail);
            self.status.message = Some(why.clone());
            self.set_condition(cond::PROGRESSING, false, cond::PROGRESS_DEADLINE_EXCEEDED, &why);
            self.requeue = STEADY;
            return;
        }
        self.status.phase = Some(Phase::Progressing);
        let since_at = self.status.stable_waiting_since.as_ref().map_or(self.o.now, |t| t.0);
        self.status.message = Some(waiting(
            &format!("deploying the first version {rev} as stable"),
            since_at,
            deadline,
            problem,
        ));
        self.set_condition(
            cond::PROGRESSING,
            true,
            cond::reason::FIRST_DEPLOY,
            "deploying the first version",
        );
        self.requeue = WAIT_FOR_DEPLOYMENT.min(deadline.saturating_sub(since) + Duration::from_secs(1));
    }

    fn steady(&mut self) {
        self.ignore_actions(true, true, true, "no rollout is in progress");
        self.canary = CanaryIntent::Absent;
        self.weight = Some(0);
        if self.status.phase != Some(Phase::Promoted) {
            let reason = if self.status.canary_revision.is_some() {
                "the template is the stable version again; canary removed"
            } else {
                "stable"
            };
            self.status.current_step = None;
            self.status.step_started_at = None;
            self.status.rollback_started_at = None;
            self.promoted(reason);
        }
    }

    fn promoted(&mut self, why: &str) {
        let first_time = self.status.phase != Some(Phase::Promoted);
        self.status.phase = Some(Phase::Promoted);
        self.status.verdict = Some(Verdict::Pass);
        self.status.canary_weight = 0;
        self.status.current_step = None;
        self.status.step_started_at = None;
        self.status.message = Some(why.to_string());
        self.set_condition(cond::PROMOTED, true, cond::reason::PROMOTED, why);
        self.set_condition(cond::PROGRESSING, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::ROLLED_BACK, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::PAUSED, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::METRICS_UNAVAILABLE, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::STABLE_BREACHING, false, cond::reason::PROMOTED, why);
        if first_time {
            self.record(HistoryAction::Promote, 0, why);
            self.event(false, EventReason::Promoted, why.to_string());
        }
    }

    fn rollout(&mut self, evaluation: Option<&Evaluation>) {
        let rev = self.o.revision.clone();
        if self.status.canary_revision.as_deref() != Some(rev.as_str()) {
            self.start(&rev);
        } else if let Some(token) = self.o.actions.retry.clone()
            && self.status.phase == Some(Phase::RolledBack)
        {
            self.handled(|h| h.retry = Some(token));
            self.start(&rev);
        }
        if let Some(token) = self.o.actions.abort.clone() {
            self.handled(|h| h.abort = Some(token));
            if self.status.phase != Some(Phase::RolledBack) {
                self.rollback("aborted by request", None);
            }
        }
        if self.status.phase == Some(Phase::RolledBack) {
            // A promotion requested now would apply to the retried canary at once.
            self.ignore_actions(true, false, false, "the canary was rolled back (retry first)");
            self.rolled_back();
            return;
        }
        // A retry requested during a rollout would repeat a later rollback at once.
        self.ignore_actions(false, false, true, "the rollout has not been rolled back");
        let steps = self.o.spec.steps.len();
        let step = self.status.current_step.unwrap_or(0).max(0) as usize;
        if step >= steps {
            self.promote();
            return;
        }
        if !canary_available(self.o) {
            self.wait_for_canary();
            return;
        }
        self.status.canary_waiting_since = None;
        self.set_condition(cond::PROGRESSING, true, cond::reason::STEPPING, "stepping traffic to the canary");
        let target = self.o.spec.steps[step].weight;
        self.weight = Some(target);
        self.status.canary_weight = target;
        if self.o.router_weight != Some(target) {
            // Weight is being applied; the step's clock starts once it is.
            self.status.step_started_at = None;
            self.status.message = Some(format!("applying weight {target}% (step {}/{steps})", step + 1));
            self.requeue = CONVERGE;
            return;
        }
        if self.status.step_started_at.is_none() {
            self.status.step_started_at = Some(self.now());
            self.record(
                HistoryAction::StepUp,
                target,
                &format!("weight {target}% applied (step {}/{steps})", step + 1),
            );
            self.event(
                false,
                EventReason::WeightApplied,
                format!("canary weight {target}% (step {}/{steps})", step + 1),
            );
        }
        self.requeue = self.o.gate_interval;

        if let Some((token, full)) = self.o.actions.promote.clone() {
            self.handled(|h| h.promote = Some(token));
            if full {
                self.advance(steps, "full promotion requested");
            } else {
                self.advance(step + 1, "step promotion requested");
            }
            return;
        }
        let Some(eval) = evaluation else {
            // Not due yet: leave the status as it is, come back when it is.
            let since =
                self.status.last_evaluated_at.as_ref().map_or(Duration::ZERO, |t| elapsed(t, self.o.now));
            self.requeue = self.o.gate_interval.saturating_sub(since).max(Duration::from_millis(200));
            if self.status.last_evaluated_at.is_none() {
                self.status.message = Some(format!("weight {target}% applied; evaluating"));
            }
            self.keep_canary();
            return;
        };
        self.status.last_evaluated_at = Some(self.now());
        self.status.checks = eval.checks.iter().map(check_status).collect();
        let paused_by_spec = self.o.spec.paused;
        let metrics_down = matches!(eval.decision, Decision::MetricsUnavailable(..));
        let reason = eval.decision.reason();
        if metrics_down {
            if !self.was_on(cond::METRICS_UNAVAILABLE) {
                self.event(true, EventReason::Held, format!("step {}/{steps} held: {reason}", step + 1));
            }
            self.set_condition(cond::METRICS_UNAVAILABLE, true, cond::reason::QUERY_FAILED, &reason);
        } else {
            self.set_condition(
                cond::METRICS_UNAVAILABLE,
                false,
                cond::reason::QUERIES_SUCCEEDED,
                "metrics were read",
            );
        }
        if !metrics_down && !matches!(eval.decision, Decision::StableBreaching(..)) {
            self.set_condition(
                cond::STABLE_BREACHING,
                false,
                cond::reason::STABLE_HEALTHY,
                "stable is within budget",
            );
        }
        match &eval.decision {
            Decision::Rollback(cause) => self.rollback(&reason, Some(cause.check())),
            Decision::Misconfigured(_) => {
                // Holding would keep the canary exposed for as long as nobody notices.
                self.rollback(&format!("{reason}; fix the gate, then retry"), None);
            }
            Decision::StableBreaching(_) => {
                if !self.was_on(cond::STABLE_BREACHING) {
                    self.event(
                        true,
                        EventReason::Held,
                        format!("step {}/{steps} held, not rolled back: {reason}", step + 1),
                    );
                }
                self.set_condition(cond::STABLE_BREACHING, true, cond::reason::STABLE_BREACHING, &reason);
                self.hold(&reason);
            }
            Decision::MetricsUnavailable(_) | Decision::Hold(_) => self.hold(&reason),
            Decision::Pause(_) => self.pause(&reason),
            Decision::StepUp(_) if paused_by_spec => {
                self.hold(&format!("{reason}; paused by spec.paused"));
            }
            Decision::StepUp(_) if self.status.phase == Some(Phase::Paused) => {
                // Paused by the inconclusive policy: only a person moves it on.
                self.hold(&format!("{reason}; paused, waiting for promote, abort or retry"));
            }
            Decision::StepUp(_) => self.advance(step + 1, &reason),
        }
        if paused_by_spec && self.status.phase == Some(Phase::Progressing) {
            self.status.phase = Some(Phase::Paused);
            self.set_condition(cond::PAUSED, true, cond::SPEC_PAUSED, "spec.paused is true");
        } else if !paused_by_spec && self.status.phase == Some(Phase::Paused) && self.paused_by_spec_only() {
            self.status.phase = Some(Phase::Progressing);
            self.set_condition(cond::PAUSED, false, cond::reason::RESUMED, "spec.paused is false");
        }
    }

    /// Whether a condition was true before this pass.
    fn was_on(&self, type_: &str) -> bool {
        self.o.status.conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
    }

    fn paused_by_spec_only(&self) -> bool {
        self.status.conditions.iter().any(|c| c.type_ == cond::PAUSED && c.reason == cond::SPEC_PAUSED)
    }

    /// Marks requested actions that make no sense now as handled, with a Warning Event, so that
    /// they are not acted on later (a stale promote would promote the next canary at once).
    fn ignore_actions(&mut self, promote: bool, abort: bool, retry: bool, why: &str) {
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

    fn handled(&mut self, f: impl FnOnce(&mut HandledActions)) {
        let mut h = self.status.handled_actions.clone().unwrap_or_default();
        f(&mut h);
        self.status.handled_actions = Some(h);
    }

    fn start(&mut self, rev: &str) {
        let superseded = self.status.canary_revision.clone().filter(|old| {
            old != rev && matches!(self.status.phase, Some(Phase::Progressing | Phase::Paused))
        });
        let (action, why) = match &superseded {
            Some(old) => {
                (HistoryAction::Supersede, format!("revision {rev} supersedes {old}; restarting at step 1"))
            }
            None => (HistoryAction::Start, format!("rolling out revision {rev}")),
        };
        self.status.canary_revision = Some(rev.to_string());
        self.status.current_step = Some(0);
        self.status.step_started_at = None;
        self.status.rollback_started_at = None;
        self.status.canary_waiting_since = None;
        self.status.last_evaluated_at = None;
        self.status.traffic_returned_at = None;
        self.status.canary_weight = 0;
        self.status.checks.clear();
        self.status.phase = Some(Phase::Progressing);
        self.status.verdict = None;
        self.status.message = Some(why.clone());
        self.set_condition(cond::PROGRESSING, true, action.as_str(), &why);
        self.set_condition(cond::PROMOTED, false, action.as_str(), &why);
        self.set_condition(cond::ROLLED_BACK, false, action.as_str(), &why);
        self.set_condition(cond::PAUSED, false, action.as_str(), &why);
        self.record(action, 0, &why);
        self.event(
            false,
            if superseded.is_some() { EventReason::Superseded } else { EventReason::RolloutStarted },
            why,
        );
        // The canary gets the new template; no traffic until it is available.
        self.weight = Some(0);
    }

    fn wait_for_canary(&mut self) {
        self.canary = CanaryIntent::Present { replicas: self.canary_replicas(self.status.canary_weight) };
        let waiting_since = self.status.canary_waiting_since.get_or_insert(Time(self.o.now));
        let since = elapsed(waiting_since, self.o.now);
        let deadline = self.o.spec.progress_deadline.as_std();
        if since > deadline {
            self.rollback(&format!("canary not available within progressDeadline {}", human(deadline)), None);
            return;
        }
        let problem = self.o.canary.as_ref().and_then(|c| c.problem.clone());
        let since_at = self.status.canary_waiting_since.as_ref().map_or(self.o.now, |t| t.0);
        self.status.message =
            Some(waiting("waiting for the canary to be available", since_at, deadline, problem));
        self.requeue = WAIT_FOR_DEPLOYMENT.min(deadline.saturating_sub(since) + Duration::from_secs(1));
    }

    fn canary_replicas(&self, weight: i32) -> i32 {
        replica_split(self.o.spec, weight).1
    }

    fn hold(&mut self, reason: &str) {
        self.status.message = Some(reason.to_string());
        self.keep_canary();
    }

    fn keep_canary(&mut self) {
        self.canary = CanaryIntent::Present { replicas: self.canary_replicas(self.status.canary_weight) };
        if self.o.spec.traffic.replica_ratio.is_some() {
            self.stable =
                StableIntent::Keep { replicas: replica_split(self.o.spec, self.status.canary_weight).0 };
        }
    }

    fn pause(&mut self, reason: &str) {
        if self.status.phase != Some(Phase::Paused) {
            self.record(HistoryAction::Pause, self.status.canary_weight, reason);
            self.event(true, EventReason::Paused, reason.to_string());
        }
        self.status.phase = Some(Phase::Paused);
        self.set_condition(cond::PAUSED, true, cond::reason::INCONCLUSIVE, reason);
        self.hold(reason);
    }

    fn advance(&mut self, next: usize, reason: &str) {
        let steps = self.o.spec.steps.len();
        self.status.current_step = Some(next as i32);
        self.status.step_started_at = None;
        self.status.last_evaluated_at = None;
        self.status.phase = Some(Phase::Progressing);
        self.set_condition(cond::PAUSED, false, cond::reason::ADVANCED, reason);
        self.event(false, EventReason::StepPassed, format!("step {next}/{steps} passed: {reason}"));
        if next >= steps {
            self.record(HistoryAction::PromoteStart, self.status.canary_weight, reason);
            self.status.message = Some(format!("promoting: {reason}"));
            self.promote();
        } else {
            let w = self.o.spec.steps[next].weight;
            self.status.message =
                Some(format!("step {}/{steps} passed: {reason}; raising weight to {w}%", next));
            self.weight = Some(w);
            self.status.canary_weight = w;
            self.keep_canary();
            self.requeue = CONVERGE;
        }
    }

    fn promote(&mut self) {
        let rev = self.o.revision.clone();
        self.stable = StableIntent::Adopt { replicas: self.o.spec.replicas };
        self.canary = CanaryIntent::Present { replicas: self.o.spec.replicas };
        self.requeue = CONVERGE;
        self.status.phase = Some(Phase::Progressing);
        let stable_ready = self
            .o
            .stable
            .as_ref()
            .is_some_and(|s| s.available && s.revision.as_deref() == Some(rev.as_str()));
        if !stable_ready {
            // The canary keeps serving while stable takes its template.
            self.weight = Some(self.status.canary_weight);
            self.status.message = Some(format!("promoting {rev}: waiting for stable to run it"));
            return;
        }
        self.weight = Some(0);
        if self.o.router_weight != Some(0) {
            self.status.message = Some(format!("promoting {rev}: returning traffic to stable"));
            return;
        }
        // The route says 0, but the data plane applies it a moment later and requests in
        // flight finish: the canary is removed after the drain delay.
        let returned = self.status.traffic_returned_at.get_or_insert(Time(self.o.now));
        let since = elapsed(returned, self.o.now);
        let drain = self.o.spec.drain_delay.as_std();
        if since < drain {
            self.status.message = Some(format!("promoting {rev}: draining the canary"));
            self.requeue = (drain - since).max(Duration::from_millis(200));
            return;
        }
        self.status.traffic_returned_at = None;
        self.canary = CanaryIntent::Absent;
        self.status.stable_revision = Some(rev.clone());
        self.promoted(&format!("revision {rev} promoted after {} steps", self.o.spec.steps.len()));
    }

    fn rollback(&mut self, reason: &str, check: Option<&str>) {
        self.status.canary_waiting_since = None;
        self.status.phase = Some(Phase::RolledBack);
        self.status.verdict = Some(Verdict::Fail);
        self.status.rollback_started_at = Some(self.now());
        self.status.step_started_at = None;
        let msg = format!("rolled back: {reason}");
        self.status.message = Some(msg.clone());
        self.set_condition(
            cond::ROLLED_BACK,
            true,
            if check.is_some() { cond::reason::GATE_FAILED } else { cond::reason::ROLLED_BACK },
            reason,
        );
        self.set_condition(cond::PROGRESSING, false, cond::reason::ROLLED_BACK, reason);
        self.set_condition(cond::PAUSED, false, cond::reason::ROLLED_BACK, reason);
        self.set_condition(cond::PROMOTED, false, cond::reason::ROLLED_BACK, reason);
        self.record(HistoryAction::Rollback, 0, reason);
        self.event(true, EventReason::RolledBack, msg);
        self.rolled_back();
    }

    fn rolled_back(&mut self) {
        self.weight = Some(0);
        self.status.canary_weight = 0;
        let drain = self.o.spec.drain_delay.as_std();
        let since = self.status.rollback_started_at.as_ref().map(|t| elapsed(t, self.o.now)).unwrap_or(drain);
        if self.o.router_weight == Some(0) && since >= drain {
            self.canary = CanaryIntent::ScaledDown;
            self.requeue = STEADY;
        } else {
            self.canary = CanaryIntent::Keep;
            self.requeue = CONVERGE.max(drain.saturating_sub(since)).min(drain.max(CONVERGE));
        }
    }
}

/// What a Rollout waiting for a Deployment says. No elapsed time: it would change the status,
/// and so write it and wake the Rollout again, on every pass.
fn waiting(what: &str, since: Timestamp, deadline: Duration, problem: Option<String>) -> String {
    let problem = problem.map(|p| format!(": {p}")).unwrap_or_default();
    format!("{what} (progressDeadline {} from {since}){problem}", human(deadline))
}

fn canary_available(o: &Observed<'_>) -> bool {
    o.canary.as_ref().is_some_and(|c| c.available && c.revision.as_deref() == Some(o.revision.as_str()))
}

/// (stable, canary) replicas. With a gateway both run the full count (the canary must carry
/// up to 100 %); with `replicaRatio` the split approximates the weight: canary =
/// ⌈weight × replicas⌉, stable = the rest, at least one until the canary has all traffic.
pub fn replica_split(spec: &RolloutSpec, weight: i32) -> (i32, i32) {
    let r = spec.replicas;
    if spec.traffic.replica_ratio.is_none() {
        return (r, r);
    }
    if weight <= 0 {
        return (r, 0);
    }
    let canary = ((i64::from(weight) * i64::from(r) + 99) / 100) as i32;
    let stable = if weight >= 100 { 0 } else { (r - canary).max(1) };
    (stable, canary.max(1))
}

fn elapsed(since: &Time, now: Timestamp) -> Duration {
    let d = now.duration_since(since.0);
    Duration::try_from(d).unwrap_or_default()
}

fn check_status(r: &CheckReport) -> CheckStatus {
    CheckStatus {
        name: r.name.clone(),
        result: r.result,
        value: r.value(),
        threshold: r.threshold,
        bad: r.counts().bad,
        total: r.counts().total,
        needed: r.needed(),
        statistic: r.statistic(),
        reason: r.reason(),
    }
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change (so a
/// status that has not changed is byte-identical and not written again).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    on: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if on { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
    conditions.sort_by_key(|c| cond::ALL.iter().position(|t| *t == c.type_).unwrap_or(usize::MAX));
}

#[cfg(test)]
mod tests;
