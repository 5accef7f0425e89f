//! Status conditions and check reports as the API holds them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use rollgate_crds::conditions::{self as cond};
use rollgate_crds::rollout::CheckStatus;
use rollgate_gate::CheckReport;

pub(super) fn check_status(r: &CheckReport) -> CheckStatus {
    CheckStatus {
        name: r.name.clone(),
        result: r.result,
        value: r.value(),
        threshold: r.threshold,
        bad: r.counts().bad,
        total: r.counts().total,
        needed: r.needed(),
        estimated_seconds: r.eta().map(|d| d.as_secs()),
        statistic: r.statistic(),
        reason: r.reason(),
        source: r.source.clone(),
        unit: r.evidence.as_ref().ok().map(|j| j.unit.to_string()),
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
