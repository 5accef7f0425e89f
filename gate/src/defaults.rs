//! How evidence is judged unless a gate says otherwise. The API (`rollgate-crds`) re-exports
//! these as its defaults.

use std::time::Duration;

/// How long a step must stay healthy before its weight is raised.
pub const MIN_HEALTHY: Duration = Duration::from_secs(180);
/// How often the gate evaluates.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Longest a step may wait for enough evidence before the inconclusive policy applies.
pub const MAX_HOLD: Duration = Duration::from_secs(30 * 60);
/// Largest accepted probability of rolling back a canary that is within budget.
pub const FALSE_ROLLBACK_RATE: f64 = 0.01;
/// Largest accepted probability of promoting a canary `tolerance` times over budget. Half of
/// the 1 % target: Wald's bound on it is nearly reached at the tolerance (see the benchmark in
/// docs/gate.md), so the default leaves room for it.
pub const MISSED_DETECTION_RATE: f64 = 0.005;
/// How strongly what a step must rule out follows the exposure of the step after it (`sprt::
/// pass_multiple`): 1 keeps the harm of the worst canary a step lets through no larger at the
/// next weight than a canary at the tolerance would do at 100 %; 0 asks every step for the
/// tolerance.
pub const EXPOSURE_SCALING: f64 = 1.0;
/// How many times over budget a canary must be for promotion to be ruled out (error checks).
pub const ERROR_TOLERANCE: f64 = 10.0;
/// The same, for latency, pause and custom checks, whose budgets are larger shares.
pub const SHARE_TOLERANCE: f64 = 3.0;
