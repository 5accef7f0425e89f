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
