//! `ReleaseGate`: a reusable SLO policy (the Prometheus endpoint, the checks, and how evidence is
//! judged), and `GateSpec`, the same thing inline in a `Rollout`.
//!
//! Every check is a budget on the share of bad events among counted events: 5xx among requests
//! (`errorRate`), requests slower than a limit (`latency`), runtime probe intervals that paused
//! longer than a limit (`pause`), or any pair of PromQL counts (`promql`).

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::bounds::*;
use crate::defaults;
use crate::duration::PositiveDuration;
use crate::metrics::{MetricPreset, MetricSource};
pub use crate::prometheus::PrometheusSource;

/// What a step does when `maxHold` passes without a conclusive verdict (the gate's type).
pub use rollgate_gate::InconclusivePolicy;

/// A reusable SLO policy that Rollouts reference with `spec.gateRef`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rollgate.dev",
    version = "v1alpha1",
    kind = "ReleaseGate",
    namespaced,
    shortname = "rgate",
    doc = "A reusable release gate: SLO checks read from Prometheus and the policy that judges them.",
    printcolumn(name = "Prometheus", type_ = "string", json_path = ".spec.prometheus.address"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct ReleaseGateSpec {
    #[serde(flatten)]
    pub gate: GateSpec,
    /// Webhooks notified of the transitions of every Rollout that references this gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::notifications::Notifications>,
}

/// The SLO checks and how their evidence is judged.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.checks.all(c, self.checks.exists_one(d, d.name == c.name))").message("checks: names must be unique"))]
pub struct GateSpec {
    /// Where the metrics are read.
    pub prometheus: PrometheusSource,
    /// Where the request checks read their counts, unless a check sets its own
    /// (default: `preset: refserver`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub metrics: MetricSource,
    /// The checks; every one must hold. None: the playbook's error rate (< 0.02 %) and p95
    /// latency (< 300 ms) read from `metrics`, and, with the `refserver` preset, its runtime
    /// pause (p99 < 50 ms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = CHECKS_MAX))]
    pub checks: Vec<Check>,
    /// How evidence is gathered and judged.
    #[serde(default)]
    pub policy: GatePolicy,
}

/// One SLO: a budget on the share of bad events. Exactly one kind is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.errorRate), has(self.latency), has(self.pause), has(self.promql)].filter(x, x).size() == 1").message("exactly one of errorRate, latency, pause, promql must be set"))]
#[x_kube(validation = Rule::new("!has(self.metrics) || has(self.errorRate) || has(self.latency)").message("metrics is only for errorRate and latency checks"))]
pub struct Check {
    /// Name shown in status and events; unique within the gate.
    #[schemars(length(min = 1, max = CHECK_NAME_MAX_LEN), regex(pattern = CHECK_NAME_PATTERN))]
    pub name: String,
    /// Share of 5xx among the canary's requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_rate: Option<ErrorRateCheck>,
    /// A latency quantile below a limit (p95 < 300 ms means fewer than 5 % of requests slower
    /// than 300 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyCheck>,
    /// The GC-equivalent pause: runtime stalls longer than a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<PauseCheck>,
    /// Any pair of counts from PromQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promql: Option<PromqlCheck>,
    /// Where this check reads its counts (`errorRate` and `latency` only); default: the gate's
    /// `metrics`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricSource>,
    /// How many times over budget a canary must be for promotion to be ruled out (with
    /// probability `policy.missedDetectionRate`). Smaller values catch smaller regressions and
    /// need more traffic to pass a step. Default 10 for `errorRate`, 3 for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = TOLERANCE_MIN, max = TOLERANCE_MAX))]
    pub tolerance: Option<f64>,
}

impl Check {
    /// A check with no kind set (for struct-update syntax).
    pub fn empty() -> Self {
        Self {
            name: String::new(),
            error_rate: None,
            latency: None,
            pause: None,
            promql: None,
            metrics: None,
            tolerance: None,
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ErrorRateCheck {
    /// Largest acceptable share of 5xx responses, e.g. 0.0002 for 0.02 %.
    #[serde(default = "defaults::error_ratio")]
    #[schemars(range(min = RATIO_MIN, max = RATIO_MAX))]
    pub max_ratio: f64,
}

impl Default for ErrorRateCheck {
    fn default() -> Self {
        Self { max_ratio: defaults::ERROR_RATIO }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LatencyCheck {
    /// The quantile, e.g. 0.95 for p95.
    #[serde(default = "defaults::latency_quantile")]
    #[schemars(range(min = QUANTILE_MIN, max = QUANTILE_MAX))]
    pub quantile: f64,
    /// The limit; must be a bucket boundary of the request-duration histogram (refserver has
    /// 300ms).
    #[serde(default = "defaults::latency_max")]
    pub max: PositiveDuration,
}

impl Default for LatencyCheck {
    fn default() -> Self {
        Self { quantile: defaults::LATENCY_QUANTILE, max: defaults::LATENCY_MAX.into() }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PauseCheck {
    /// Which runtime's pause metric to read.
    #[serde(default)]
    pub preset: PausePreset,
    /// The quantile of pauses that must stay under `max`.
    #[serde(default = "defaults::pause_quantile")]
    #[schemars(range(min = QUANTILE_MIN, max = QUANTILE_MAX))]
    pub quantile: f64,
    /// The pause limit; must be a bucket boundary of the preset's histogram.
    #[serde(default = "defaults::pause_max")]
    pub max: PositiveDuration,
}

impl Default for PauseCheck {
    fn default() -> Self {
        Self {
            preset: PausePreset::default(),
            quantile: defaults::PAUSE_QUANTILE,
            max: defaults::PAUSE_MAX.into(),
        }
    }
}

/// The runtime whose pause histogram a `pause` check reads.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum PausePreset {
    /// `runtime_pause_seconds`: refserver's runtime probe lateness.
    #[default]
    Refserver,
    /// `go_sched_pauses_total_gc_seconds`: Go's stop-the-world GC pauses (client_golang runtime
    /// metrics, Go 1.22+).
    Go,
    /// `jvm_gc_duration_seconds`: JVM GC pauses (OpenTelemetry JVM runtime metrics).
    Jvm,
}

/// A custom check: two PromQL expressions giving counts of bad and of all events. Each is
/// evaluated as an increase over the evaluation window; `$window` is replaced by it (e.g.
/// `increase(my_bad_total{...}[$window])`), and `$namespace`, `$name` (the Rollout), `$role`
/// (canary or stable) and `$revision` by the values for the side being judged (escaped for
/// PromQL string literals).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PromqlCheck {
    /// Count of bad events over `$window`.
    #[schemars(length(min = 1, max = PROMQL_MAX_LEN))]
    pub bad: String,
    /// Count of all events over `$window`.
    #[schemars(length(min = 1, max = PROMQL_MAX_LEN))]
    pub total: String,
    /// Largest acceptable share of bad events.
    #[schemars(range(min = RATIO_MIN, max = RATIO_MAX))]
    pub max_ratio: f64,
}

/// How evidence is gathered and judged.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatePolicy {
    /// How often the checks are evaluated.
    #[serde(default = "defaults::interval")]
    pub interval: PositiveDuration,
    /// How long every step must stay healthy before weight is raised (a step may override it).
    #[serde(default = "defaults::min_healthy")]
    pub min_healthy: PositiveDuration,
    /// Longest a step may wait for enough evidence; then `onInconclusive` applies.
    #[serde(default = "defaults::max_hold")]
    pub max_hold: PositiveDuration,
    /// What a step that could not gather enough evidence within `maxHold` does.
    #[serde(default)]
    pub on_inconclusive: InconclusivePolicy,
    /// Largest accepted probability of rolling back a canary that is within budget.
    #[serde(default = "defaults::false_rollback_rate")]
    #[schemars(range(min = ERROR_RATE_MIN, max = ERROR_RATE_MAX))]
    pub false_rollback_rate: f64,
    /// Largest accepted probability of promoting a canary `tolerance` times over budget
    /// (default 0.005).
    #[serde(default = "defaults::missed_detection_rate")]
    #[schemars(range(min = ERROR_RATE_MIN, max = ERROR_RATE_MAX))]
    pub missed_detection_rate: f64,
    /// How much less a step must rule out when the step after it exposes fewer users: a step
    /// leading to weight `w` passes once a canary `tolerance × (100 / w)^exposureScaling` times
    /// over budget is ruled out (at most 100×; never less than the tolerance). 1 (default):
    /// the worst canary a step lets through harms the next step's users no more than one at
    /// the tolerance would harm everyone; 0: every step rules out the tolerance. Rolling back
    /// is not affected.
    #[serde(default = "defaults::exposure_scaling")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub exposure_scaling: f64,
    /// Compare the canary with the stable version over the same interval: a check over budget
    /// rolls back only when the canary is also worse than stable (its share of the bad events
    /// above its share of traffic, a test valid at every look). Otherwise the step holds: with
    /// condition `StableBreaching` when stable breaches too, or until the comparison decides.
    /// Without stable traffic (the canary at 100 %) the budget alone decides.
    #[serde(default = "defaults::yes")]
    pub compare_with_stable: bool,
    /// Judge every step and say what the gate would have done, without acting on it: the plan
    /// advances each step once its `minHealthy` has passed and never rolls back by itself. A
    /// verdict to roll back is recorded in `status.history` (`WouldRollBack`), as a Warning
    /// Event and a `rollback` notification marked `"dryRun": true`, and counted in
    /// `rollgate_dry_run_rollbacks_total`. How a team learns to trust an automatic judge before
    /// letting it act. Default false.
    #[serde(default)]
    pub dry_run: bool,
}

impl Default for GatePolicy {
    fn default() -> Self {
        Self {
            interval: defaults::interval(),
            min_healthy: defaults::min_healthy(),
            max_hold: defaults::max_hold(),
            on_inconclusive: InconclusivePolicy::default(),
            false_rollback_rate: defaults::FALSE_ROLLBACK_RATE,
            missed_detection_rate: defaults::MISSED_DETECTION_RATE,
            exposure_scaling: defaults::EXPOSURE_SCALING,
            compare_with_stable: true,
            dry_run: false,
        }
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

// === impl GateSpec ===

impl GateSpec {
    /// The checks in force: the spec's, or the defaults for the gate's metric source.
    pub fn effective_checks(&self) -> std::borrow::Cow<'_, [Check]> {
        if self.checks.is_empty() {
            std::borrow::Cow::Owned(defaults::checks(self.metrics.preset() == Some(MetricPreset::Refserver)))
        } else {
            std::borrow::Cow::Borrowed(&self.checks)
        }
    }

    /// Where `check` reads its request counts.
    pub fn source_of<'a>(&'a self, check: &'a Check) -> &'a MetricSource {
        check.metrics.as_ref().unwrap_or(&self.metrics)
    }
}

// === the gate's view of this API ===

impl Check {
    /// What the check measures, in the gate's terms; `None` when no kind is set.
    pub fn measure(&self) -> Option<rollgate_gate::Measure> {
        use rollgate_gate::Measure;
        if let Some(e) = &self.error_rate {
            return Some(Measure::ErrorRate { max_ratio: e.max_ratio });
        }
        if let Some(l) = &self.latency {
            return Some(Measure::Latency { quantile: l.quantile });
        }
        if let Some(p) = &self.pause {
            return Some(Measure::Pause { quantile: p.quantile });
        }
        self.promql.as_ref().map(|q| Measure::Share { max_ratio: q.max_ratio })
    }
}

impl TryFrom<&Check> for rollgate_gate::CheckSpec {
    type Error = rollgate_gate::CheckError;

    fn try_from(check: &Check) -> Result<Self, Self::Error> {
        let measure = check
            .measure()
            .ok_or_else(|| rollgate_gate::CheckError::NoMeasure { check: check.name.clone() })?;
        Self::new(check.name.clone(), measure, check.tolerance)
    }
}

impl From<&GatePolicy> for rollgate_gate::Policy {
    fn from(p: &GatePolicy) -> Self {
        Self {
            rates: rollgate_gate::ErrorRates {
                false_rollback: p.false_rollback_rate,
                missed_detection: p.missed_detection_rate,
            },
            exposure_scaling: p.exposure_scaling,
            on_inconclusive: p.on_inconclusive,
            compare_with_stable: p.compare_with_stable,
        }
    }
}
