//! The ends of a rollout: promotion and rollback.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rollgate_crds::conditions::{self as cond, EventReason};
use rollgate_crds::rollout::{HistoryAction, Phase, Verdict};

use super::planner::Planner;
use super::*;

impl Planner<'_, '_> {
    pub(super) fn promoted(&mut self, why: &str) {
        let first_time = self.status.phase != Some(Phase::Promoted);
        self.status.phase = Some(Phase::Promoted);
        self.status.verdict = Some(Verdict::Pass);
        self.status.canary_weight = 0;
        self.status.current_step = None;
        self.status.step_started_at = None;
        self.status.carried.clear();
        self.status.forecast = None;
        self.status.message = Some(why.to_string());
        self.set_condition(cond::PROMOTED, true, cond::reason::PROMOTED, why);
        self.set_condition(cond::PROGRESSING, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::ROLLED_BACK, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::PAUSED, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::METRICS_UNAVAILABLE, false, cond::reason::PROMOTED, why);
        self.set_condition(cond::STABLE_BREACHING, false, cond::reason::PROMOTED, why);
        self.end_split(cond::reason::PROMOTED, why);
        if first_time {
            self.record(HistoryAction::Promote, 0, why);
            self.event(false, EventReason::Promoted, why.to_string());
        }
    }

    pub(super) fn promote(&mut self) {
        let rev = self.o.revision.clone();
        self.stable = StableIntent::Adopt { replicas: self.o.spec.replicas };
        self.canary = CanaryIntent::Present { replicas: self.o.spec.replicas };
        self.requeue = CONVERGE;
        self.status.phase = Some(Phase::Progressing);
        let stable = self.o.stable.as_ref().filter(|s| s.revision.as_deref() == Some(rev.as_str()));
        if !stable.is_some_and(DeploymentState::serving) {
            // The canary keeps serving while stable takes its template.
            self.weight = Some(self.status.canary_weight);
            let why = stable.and_then(DeploymentState::endpoints_missing).map(|m| format!(" ({m})"));
            if why.is_some() {
                self.requeue = WAIT_FOR_ENDPOINTS;
            }
            self.status.message =
                Some(format!("promoting {rev}: waiting for stable to run it{}", why.unwrap_or_default()));
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
        self.complete(Outcome::Promoted);
        self.promoted(&format!("revision {rev} promoted after {} steps", self.o.spec.steps.len()));
    }

    pub(super) fn rollback(&mut self, reason: &str, check: Option<&str>) {
        self.status.canary_waiting_since = None;
        self.status.phase = Some(Phase::RolledBack);
        self.status.verdict = Some(Verdict::Fail);
        self.status.rollback_started_at = Some(self.now());
        self.status.step_started_at = None;
        self.status.carried.clear();
        self.status.forecast = None;
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
        self.complete(Outcome::RolledBack);
        self.event(true, EventReason::RolledBack, msg);
        self.rolled_back();
    }

    pub(super) fn rolled_back(&mut self) {
        self.weight = Some(0);
        self.mirror = None;
        self.status.canary_weight = 0;
        let drain = self.o.spec.drain_delay.as_std();
        let since = self.status.rollback_started_at.as_ref().map(|t| elapsed(t, self.o.now)).unwrap_or(drain);
        if self.o.router_weight == Some(0) && self.o.router_mirror == 0 && since >= drain {
            self.canary = CanaryIntent::ScaledDown;
            self.requeue = IDLE;
        } else {
            self.canary = CanaryIntent::Keep;
            self.requeue = CONVERGE.max(drain.saturating_sub(since)).min(drain.max(CONVERGE));
        }
    }
}
