//! Condition types and reasons (metav1.Condition form), usable with `kubectl wait`.

pub const PROGRESSING: &str = "Progressing";
pub const PROMOTED: &str = "Promoted";
pub const ROLLED_BACK: &str = "RolledBack";
pub const PAUSED: &str = "Paused";
pub const METRICS_UNAVAILABLE: &str = "MetricsUnavailable";
pub const INVALID_SPEC: &str = "InvalidSpec";
pub const STABLE_BREACHING: &str = "StableBreaching";

/// Every condition type the controller maintains, in display order.
pub const ALL: [&str; 7] =
    [PROGRESSING, PROMOTED, ROLLED_BACK, PAUSED, METRICS_UNAVAILABLE, INVALID_SPEC, STABLE_BREACHING];

/// Reasons of the `InvalidSpec` condition (and of the Warning Event that comes with it).
pub mod invalid {
    /// The spec itself is wrong (schema, gate, router, template).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A name the Rollout needs is taken by an object it does not own.
    pub const NAME_CONFLICT: &str = "NameConflict";
    /// The API server refused an object built from the spec (e.g. a container name it rejects).
    pub const REJECTED_BY_API: &str = "RejectedByAPI";
}

/// Reason of `Progressing=False` when a first version never became available.
pub const PROGRESS_DEADLINE_EXCEEDED: &str = "ProgressDeadlineExceeded";
