//! Moving forward: the first deploy, the steady state, a rollout's steps and the gate's
//! decisions on them.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rollgate_crds::conditions::{self as cond, EventReason};
use rollgate_crds::rollout::{CarriedEvidence, CheckForecast, HistoryAction, Phase, StepForecast, Verdict};
use rollgate_gate::format::human;
use rollgate_gate::{Decision, Evaluation};

use super::conditions::check_status;
use super::planner::Planner;
use super::*;

impl Planner<'_, '_> {
    pub(super) fn first_deploy(&mut self) {
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
            self.requeue = IDLE;
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

    pub(super) fn steady(&mut self) {
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

    pub(super) fn rollout(&mut self, evaluation: Option<&Evaluation>) {
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
                self.complete(Outcome::Aborted);
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
        if !canary_serving(self.o) {
            self.wait_for_canary();
            return;
        }
        self.status.canary_waiting_since = None;
        self.set_condition(cond::PROGRESSING, true, cond::reason::STEPPING, "stepping traffic to the canary");
        let target = self.o.spec.steps[step].weight;
        let shadow = self.o.spec.steps[step].shadow;
        self.weight = Some(target);
        self.mirror = shadow;
        self.status.canary_weight = target;
        let what = match shadow {
            Some(p) => format!(
                "{p}% of requests copied to the canary, its answers discarded (step {}/{steps}, shadow)",
                step + 1
            ),
            None => format!("weight {target}% (step {}/{steps})", step + 1),
        };
        if self.o.router_weight != Some(target) || self.o.router_mirror != shadow.unwrap_or(0) {
            // Weight is being applied; the step's clock starts once it is.
            self.status.step_started_at = None;
            self.status.message = Some(match shadow {
                Some(_) => format!("applying: {what}"),
                None => format!("applying weight {target}% (step {}/{steps})", step + 1),
            });
            self.requeue = CONVERGE;
            return;
        }
        if self.status.step_started_at.is_none() {
            self.status.step_started_at = Some(self.now());
            let (note, event) = match shadow {
                Some(_) => (format!("applied: {what}"), format!("applied: {what}")),
                None => (
                    format!("weight {target}% applied (step {}/{steps})", step + 1),
                    format!("canary weight {target}% (step {}/{steps})", step + 1),
                ),
            };
            self.record(HistoryAction::StepUp, target, &note);
            self.event(false, EventReason::WeightApplied, event);
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
                let forecast = self
                    .status
                    .forecast
                    .as_ref()
                    .filter(|f| f.step == step as i32)
                    .map_or_else(String::new, |f| format!(" (forecast {})", f.message));
                self.status.message = Some(format!("weight {target}% applied; evaluating{forecast}"));
            }
            self.keep_canary();
            return;
        };
        self.status.last_evaluated_at = Some(self.now());
        self.status.checks = eval.checks.iter().map(check_status).collect();
        if shadow.is_none() {
            // Copies are not a split: the canary answers requests nobody sees.
            self.judge_split(eval, self.status.canary_weight);
        }
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
        if self.o.dry_run {
            self.judged_dry(eval, step, &reason);
        } else {
            self.judged(eval, step, &reason);
        }
        if paused_by_spec && self.status.phase == Some(Phase::Progressing) {
            self.status.phase = Some(Phase::Paused);
            self.set_condition(cond::PAUSED, true, cond::SPEC_PAUSED, "spec.paused is true");
        } else if !paused_by_spec && self.status.phase == Some(Phase::Paused) && self.paused_by_spec_only() {
            self.status.phase = Some(Phase::Progressing);
            self.set_condition(cond::PAUSED, false, cond::reason::RESUMED, "spec.paused is false");
        }
    }

    /// Acts on the gate's decision for the current step.
    fn judged(&mut self, eval: &Evaluation, step: usize, reason: &str) {
        let steps = self.o.spec.steps.len();
        let reason = reason.to_string();
        let paused_by_spec = self.o.spec.paused;
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
            Decision::StepUp(_) => {
                self.carry(eval);
                self.forecast(eval, step + 1);
                self.advance(step + 1, &reason);
            }
        }
    }

    /// Dry run: records what the gate would have done, and moves on the plan's holds alone
    /// (each step's `minHealthy`), never rolling back by itself.
    fn judged_dry(&mut self, eval: &Evaluation, step: usize, reason: &str) {
        let steps = self.o.spec.steps.len();
        let would_roll_back = matches!(eval.decision, Decision::Rollback(_) | Decision::Misconfigured(_));
        // Once per step: the history says where the gate would have stopped, not every look.
        let said_this_step = self
            .status
            .history
            .iter()
            .rev()
            .take_while(|d| d.action != HistoryAction::StepUp)
            .any(|d| d.action == HistoryAction::WouldRollBack);
        if would_roll_back && !said_this_step {
            let note = format!("dry run: would have rolled back at step {}/{steps}: {reason}", step + 1);
            self.record(HistoryAction::WouldRollBack, self.status.canary_weight, &note);
            self.event(true, EventReason::WouldRollBack, note);
        }
        let held = self.status.step_started_at.as_ref().map_or(Duration::ZERO, |t| elapsed(t, self.o.now));
        let min = self.o.min_healthy;
        if self.o.spec.paused || self.status.phase == Some(Phase::Paused) {
            self.hold(&format!("dry run, paused; the gate says: {reason}"));
        } else if held >= min {
            self.carry(eval);
            self.forecast(eval, step + 1);
            self.advance(step + 1, &format!("dry run: held {}; the gate says: {reason}", human(min)));
        } else {
            self.hold(&format!("dry run: held {} of {}; the gate says: {reason}", human(held), human(min)));
            self.requeue = self.requeue.min(min - held + Duration::from_millis(100));
        }
    }

    pub(super) fn start(&mut self, rev: &str) {
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
        self.status.carried.clear();
        self.status.forecast = None;
        self.status.phase = Some(Phase::Progressing);
        self.status.verdict = None;
        self.status.message = Some(why.clone());
        self.set_condition(cond::PROGRESSING, true, action.as_str(), &why);
        self.set_condition(cond::PROMOTED, false, action.as_str(), &why);
        self.end_split(action.as_str(), &why);
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

    pub(super) fn wait_for_canary(&mut self) {
        self.canary = CanaryIntent::Present { replicas: self.canary_replicas(self.status.canary_weight) };
        let waiting_since = self.status.canary_waiting_since.get_or_insert(Time(self.o.now));
        let since = elapsed(waiting_since, self.o.now);
        let deadline = self.o.spec.progress_deadline.as_std();
        if since > deadline {
            self.rollback(&format!("canary not available within progressDeadline {}", human(deadline)), None);
            return;
        }
        // A canary that cannot run will not become available by waiting: say why now. Only
        // this revision's: the Deployment may still hold a superseded template's pods.
        let current =
            self.o.canary.as_ref().filter(|c| c.revision.as_deref() == Some(self.o.revision.as_str()));
        if let Some(stuck) = current.and_then(|c| c.stuck.clone()) {
            self.rollback(&format!("the canary cannot run: {stuck}"), None);
            return;
        }
        let endpoints = self.o.canary.as_ref().and_then(DeploymentState::endpoints_missing);
        let problem = self.o.canary.as_ref().and_then(|c| c.problem.clone()).or(endpoints.clone());
        let since_at = self.status.canary_waiting_since.as_ref().map_or(self.o.now, |t| t.0);
        self.status.message =
            Some(waiting("waiting for the canary to be available", since_at, deadline, problem));
        let poll = if endpoints.is_some() { WAIT_FOR_ENDPOINTS } else { WAIT_FOR_DEPLOYMENT };
        self.requeue = poll.min(deadline.saturating_sub(since) + Duration::from_secs(1));
    }

    pub(super) fn canary_replicas(&self, weight: i32) -> i32 {
        replica_split(self.o.spec, weight).1
    }

    pub(super) fn hold(&mut self, reason: &str) {
        self.status.message = Some(reason.to_string());
        self.keep_canary();
    }

    pub(super) fn keep_canary(&mut self) {
        self.canary = CanaryIntent::Present { replicas: self.canary_replicas(self.status.canary_weight) };
        if self.o.spec.traffic.replica_ratio.is_some() {
            self.stable =
                StableIntent::Keep { replicas: replica_split(self.o.spec, self.status.canary_weight).0 };
        }
    }

    pub(super) fn pause(&mut self, reason: &str) {
        if self.status.phase != Some(Phase::Paused) {
            self.record(HistoryAction::Pause, self.status.canary_weight, reason);
            self.event(true, EventReason::Paused, reason.to_string());
        }
        self.status.phase = Some(Phase::Paused);
        self.set_condition(cond::PAUSED, true, cond::reason::INCONCLUSIVE, reason);
        self.hold(reason);
    }

    /// Adds the events of the step just passed to what the next step's pass test pools.
    fn carry(&mut self, eval: &Evaluation) {
        for report in &eval.checks {
            let Ok(judged) = &report.evidence else { continue };
            let carried = &mut self.status.carried;
            match carried.iter_mut().find(|c| c.check == judged.check && c.threshold == judged.budget) {
                Some(c) => {
                    c.bad += judged.counts.bad;
                    c.total += judged.counts.total;
                }
                None => {
                    carried.retain(|c| c.check != judged.check);
                    carried.push(CarriedEvidence {
                        check: judged.check.clone(),
                        threshold: judged.budget,
                        bad: judged.counts.bad,
                        total: judged.counts.total,
                    });
                }
            }
        }
    }

    /// What step `next` will need, forecast from the step that just passed (none without an
    /// evaluation, as after a promotion someone requested).
    fn forecast(&mut self, eval: &Evaluation, next: usize) {
        self.status.forecast = eval.next_step.as_ref().map(|n| StepForecast {
            step: next as i32,
            estimated_seconds: n.eta().map(|d| d.as_secs()),
            checks: n
                .checks
                .iter()
                .map(|c| CheckForecast {
                    name: c.check.clone(),
                    needed: c.events,
                    estimated_seconds: c.eta.map(|d| d.as_secs()),
                })
                .collect(),
            message: n.describe(),
        });
    }

    pub(super) fn advance(&mut self, next: usize, reason: &str) {
        let steps = self.o.spec.steps.len();
        if self.status.forecast.as_ref().is_some_and(|f| f.step != next as i32) {
            self.status.forecast = None;
        }
        self.step_passed_after = self.status.step_started_at.as_ref().map(|t| elapsed(t, self.o.now));
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
            self.mirror = None;
            let forecast =
                self.status.forecast.as_ref().map_or_else(String::new, |f| format!("; next {}", f.message));
            self.status.message =
                Some(format!("step {}/{steps} passed: {reason}; raising weight to {w}%{forecast}", next));
            self.weight = Some(w);
            self.status.canary_weight = w;
            self.keep_canary();
            self.requeue = CONVERGE;
        }
    }
}
