//! The traffic split as it happened: `TrafficSplitDiverged` and a Warning Event when the canary's
//! share of the step's requests is far from the route's weight (`rollgate_gate::split`). The
//! gate is not fooled by it (it judges the requests the canary did get); people are told why a
//! step takes longer than its weight suggests, and the data plane is not trusted blindly.

use rollgate_crds::conditions::{self as cond, EventReason};
use rollgate_gate::Evaluation;
use rollgate_gate::format::percent;
use rollgate_gate::split::{self, Split};

use super::elapsed;
use super::planner::Planner;

impl Planner<'_, '_> {
    /// Judges the split of the step evaluated at route weight `weight`.
    pub(super) fn judge_split(&mut self, eval: &Evaluation, weight: i32) {
        let Some(traffic) = eval.traffic else {
            return;
        };
        let settled =
            self.status.step_started_at.as_ref().is_some_and(|t| elapsed(t, self.o.now) >= split::SETTLE);
        if !settled {
            return;
        }
        match split::judge(weight, traffic) {
            Split::Unknown => {}
            diverged @ Split::Diverged { .. } => {
                let what = diverged.describe().unwrap_or_default();
                if !self.was_on(cond::TRAFFIC_SPLIT_DIVERGED) {
                    self.event(
                        true,
                        EventReason::TrafficSplitDiverged,
                        format!("the data plane does not split traffic as the route asks: {what}"),
                    );
                }
                self.set_condition(cond::TRAFFIC_SPLIT_DIVERGED, true, cond::reason::SPLIT_DIVERGED, &what);
            }
            Split::Matches { observed } => {
                let what =
                    format!("the canary answered {} of the requests at weight {weight} %", percent(observed));
                self.set_condition(cond::TRAFFIC_SPLIT_DIVERGED, false, cond::reason::SPLIT_MATCHES, &what);
            }
        }
    }

    /// A split judged for an earlier canary no longer holds once a new one starts or stable takes
    /// it over (after a rollback it stays: it may be why the canary had so little traffic).
    pub(super) fn end_split(&mut self, reason: &str, why: &str) {
        if self.status.conditions.iter().any(|c| c.type_ == cond::TRAFFIC_SPLIT_DIVERGED) {
            self.set_condition(cond::TRAFFIC_SPLIT_DIVERGED, false, reason, why);
        }
    }
}
