//! The production playbook's defaults, in one place.
//!
//! Error rate < 0.02 %, p95 latency < 300 ms, GC-equivalent pause < 50 ms, each held for three
//! consecutive minutes at every step of 1 % → 5 % → 100 % before traffic is raised; any breach
//! rolls back at once.

use std::time::Duration;

use crate::duration::PositiveDuration;

/// How evidence is judged: the gate's own defaults.
pub use rollgate_gate::defaults::{
    ERROR_TOLERANCE, EXPOSURE_SCALING, FALSE_ROLLBACK_RATE, INTERVAL, MAX_HOLD, MIN_HEALTHY,
    MISSED_DETECTION_RATE, SHARE_TOLERANCE,
};

/// Canary weights, in percent.
pub const STEPS: [i32; 3] = [1, 5, 100];
/// Error budget: share of 5xx among requests.
pub const ERROR_RATIO: f64 = 0.0002;
/// Latency objective: this quantile …
pub const LATENCY_QUANTILE: f64 = 0.95;
/// … below this limit.
pub const LATENCY_MAX: Duration = Duration::from_millis(300);
/// GC-equivalent pause objective: this quantile of probe intervals …
pub const PAUSE_QUANTILE: f64 = 0.99;
/// … below this limit.
pub const PAUSE_MAX: Duration = Duration::from_millis(50);
/// A canary that is not fully available within this time is rolled back.
pub const PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
/// After a rollback moves traffic away, how long before the canary is scaled to zero.
pub const DRAIN_DELAY: Duration = Duration::from_secs(10);
/// Workload replicas.
pub const REPLICAS: i32 = 1;
/// Service port.
pub const SERVICE_PORT: i32 = 80;
/// Container port the Services send traffic to.
pub const TARGET_PORT: i32 = 8080;
/// How many past decisions the status keeps.
pub const HISTORY_LIMIT: usize = 20;

// Serde default functions (serde needs paths to functions).

pub fn steps() -> Vec<crate::rollout::Step> {
    STEPS.iter().map(|w| crate::rollout::Step { weight: *w, shadow: None, min_healthy: None }).collect()
}
pub fn replicas() -> i32 {
    REPLICAS
}
pub fn service_port() -> i32 {
    SERVICE_PORT
}
pub fn target_port() -> i32 {
    TARGET_PORT
}
pub fn progress_deadline() -> PositiveDuration {
    PROGRESS_DEADLINE.into()
}
pub fn drain_delay() -> PositiveDuration {
    DRAIN_DELAY.into()
}
pub fn interval() -> PositiveDuration {
    INTERVAL.into()
}
pub fn min_healthy() -> PositiveDuration {
    MIN_HEALTHY.into()
}
pub fn max_hold() -> PositiveDuration {
    MAX_HOLD.into()
}
pub fn error_ratio() -> f64 {
    ERROR_RATIO
}
pub fn latency_quantile() -> f64 {
    LATENCY_QUANTILE
}
pub fn latency_max() -> PositiveDuration {
    LATENCY_MAX.into()
}
pub fn pause_quantile() -> f64 {
    PAUSE_QUANTILE
}
pub fn pause_max() -> PositiveDuration {
    PAUSE_MAX.into()
}
pub fn exposure_scaling() -> f64 {
    EXPOSURE_SCALING
}

pub fn false_rollback_rate() -> f64 {
    FALSE_ROLLBACK_RATE
}
pub fn missed_detection_rate() -> f64 {
    MISSED_DETECTION_RATE
}
pub fn yes() -> bool {
    true
}
/// The checks of a gate that lists none; the pause check only for an app that exports
/// refserver's pause histogram.
pub fn checks(with_pause: bool) -> Vec<crate::gate::Check> {
    use crate::gate::{Check, ErrorRateCheck, LatencyCheck, PauseCheck};
    let mut out = vec![
        Check { name: "error-rate".into(), error_rate: Some(ErrorRateCheck::default()), ..Check::empty() },
        Check { name: "latency".into(), latency: Some(LatencyCheck::default()), ..Check::empty() },
    ];
    if with_pause {
        out.push(Check { name: "pause".into(), pause: Some(PauseCheck::default()), ..Check::empty() });
    }
    out
}

pub fn webhook_events() -> Vec<crate::notifications::NotificationEvent> {
    use crate::notifications::NotificationEvent::*;
    vec![Step, Promotion, Rollback]
}
pub fn webhook_timeout() -> PositiveDuration {
    std::time::Duration::from_secs(5).into()
}
pub fn webhook_retries() -> u32 {
    3
}
