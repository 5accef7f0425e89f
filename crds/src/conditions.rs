//! Condition types and reasons (metav1.Condition form), usable with `kubectl wait`.

pub const PROGRESSING: &str = "Progressing";
pub const PROMOTED: &str = "Promoted";
pub const ROLLED_BACK: &str = "RolledBack";
pub const PAUSED: &str = "Paused";
pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const STABLE_BREACHING: &str = "StableBreaching";
/// The canary's observed share of requests is far from the route's weight.
pub const TRAFFIC_SPLIT_DIVERGED: &str = "TrafficSplitDiverged";

/// Every condition type the controller maintains, in display order.
pub const ALL: [&str; 8] = [
    PROGRESSING,
    PROMOTED,
    ROLLED_BACK,
    PAUSED,
    METRICS_UNAVAILABLE,
    INVALID_SPEC,
    STABLE_BREACHING,
    TRAFFIC_SPLIT_DIVERGED,
];

/// Reasons of the `InvalidSpec` condition (and of the Warning Event that comes with it).
pub mod invalid {
    /// The spec itself is wrong (schema, gate, router, template).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A name the Rollout needs is taken by an object it does not own.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The API server refused an object built from the spec (e.g. a container name it rejects).
    pub const REJECTED_BY_API: &str = "RejectedByAPI";
    /// `spec.workloadRef` names a Deployment that does not exist.
    pub const WORKLOAD_NOT_FOUND: &str = "WorkloadNotFound";
}

/// Reason of `Progressing=False` when a first version never became available.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";

/// Reason of `Paused=True` when `spec.paused` holds the rollout (a person resumes it).
pub const SPEC_PAUSED: &str = "SpecPaused";

/// The other reasons of the conditions, by the transition they record.
pub mod reason {
    pub use super::{PROGRESS_DEADLINE_EXCEEDED, SPEC_PAUSED};
    /// `InvalidSpec=False`.
    pub const VALID: &str = "Valid";
    /// `Progressing=True` while the first version is deployed.
    pub const FIRST_DEPLOY: &str = "FirstDeploy";
    /// `Progressing=True` while traffic is stepped to a canary.
    pub const STEPPING: &str = "Stepping";
    /// The canary was promoted (`Promoted=True`, the others False).
    pub const PROMOTED: &str = "Promoted";
    /// The canary was rolled back for another reason than a failed check.
    pub const ROLLED_BACK: &str = "RolledBack";
    /// `RolledBack=True` because a check failed.
    pub const GATE_FAILED: &str = "GateFailed";
    /// `Paused=True`: no verdict within `maxHold`.
    pub const INCONCLUSIVE: &str = "Inconclusive";
    /// `Paused=False`: a step passed.
    pub const ADVANCED: &str = "Advanced";
    /// `Paused=False`: `spec.paused` was cleared.
    pub const RESUMED: &str = "Resumed";
    /// `MetricsUnavailable=True` / `False`.
    pub const QUERY_FAILED: &str = "QueryFailed";
    pub const QUERIES_SUCCEEDED: &str = "QueriesSucceeded";
    /// `StableBreaching=True` / `False`.
    pub const STABLE_BREACHING: &str = super::STABLE_BREACHING;
    pub const STABLE_HEALTHY: &str = "StableHealthy";
    /// `TrafficSplitDiverged=True` / `False`.
    pub const SPLIT_DIVERGED: &str = "SplitDiverged";
    pub const SPLIT_MATCHES: &str = "SplitMatches";
}

/// The reasons of the Events rollgate publishes on a Rollout (the Event's `reason` and
/// `action`); notifications and documentation are derived from these, never from strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventReason {
    RolloutStarted,
    Superseded,
    WeightApplied,
    StepPassed,
    Promoted,
    RolledBack,
    Paused,
    Held,
    ActionIgnored,
    InvalidSpec,
    NameConflict,
    RejectedByApi,
    WorkloadNotFound,
    ProgressDeadlineExceeded,
    WriteFailed,
    TrafficSplitDiverged,
    /// Dry run: the gate's verdict was to roll back; nothing was done.
    WouldRollBack,
    /// A webhook notification could not be delivered (or its Secret read).
    NotificationFailed,
}

impl EventReason {
    pub const fn as_str(self) -> &'static str {
        match self {
            EventReason::RolloutStarted => "RolloutStarted",
            EventReason::Superseded => "Superseded",
            EventReason::WeightApplied => "WeightApplied",
            EventReason::StepPassed => "StepPassed",
            EventReason::Promoted => "Promoted",
            EventReason::RolledBack => "RolledBack",
            EventReason::Paused => "Paused",
            EventReason::Held => "Held",
            EventReason::ActionIgnored => "ActionIgnored",
            EventReason::InvalidSpec => invalid::INVALID_SPEC,
            EventReason::NameConflict => invalid::NAME_CONFLICT,
            EventReason::RejectedByApi => invalid::REJECTED_BY_API,
            EventReason::WorkloadNotFound => invalid::WORKLOAD_NOT_FOUND,
            EventReason::ProgressDeadlineExceeded => PROGRESS_DEADLINE_EXCEEDED,
            EventReason::WriteFailed => "WriteFailed",
            EventReason::TrafficSplitDiverged => TRAFFIC_SPLIT_DIVERGED,
            EventReason::WouldRollBack => "WouldRollBack",
            EventReason::NotificationFailed => "NotificationFailed",
        }
    }
}

str_named!(EventReason);
