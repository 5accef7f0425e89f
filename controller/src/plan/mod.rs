//! The step state machine: what the world should look like next, from what it looks like now.
//!
//! Pure and synchronous. The reconciler observes (the Rollout, its two Deployments, the router's
//! current weight, requested actions, and — when `evaluation_window` asks for it — the gate's
//! evaluation) and applies the returned `Plan`: the Deployments to keep, adopt or remove, the
//! canary weight, the new status, the events. Every fact needed to continue lives in the
//! Rollout's status, so a restart at any point resumes the same rollout.
//!
//! For a template revision `R` and stable revision `S`:
//! - no `S` yet: `R` becomes stable directly (no gate);
//! - `R == S`: steady, no canary, all traffic to stable;
//! - `R != S`: a rollout: start (or supersede a half-done one), wait for the canary to be
//!   available (or roll back after `progressDeadline`), apply each step's weight, let the gate
//!   judge it, step up, and after the last step promote (stable adopts `R`, traffic returns to
//!   stable, the canary is removed), or roll back (weight 0 at once, the canary removed after
//!   `drainDelay`).

mod conditions;
mod outcomes;
mod planner;
mod split;
mod stepping;

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use rollgate_crds::conditions::EventReason;
pub use rollgate_crds::revision::revision_of;
use rollgate_crds::rollout::Phase;
use rollgate_crds::{RolloutSpec, RolloutStatus};

use rollgate_gate::Evaluation;
use rollgate_gate::format::human;

/// Requeue while waiting for Kubernetes to converge (Deployments, routes).
pub const CONVERGE: Duration = Duration::from_secs(2);
/// Requeue of a Rollout with a problem its watches may not show the end of (a Secret, a
/// Prometheus that was unreachable): looked at again now and then.
pub const STEADY: Duration = Duration::from_secs(600);
/// Marks a Rollout with nothing pending (promoted, rolled back and scaled down, failed): it is not
/// requeued at all, since every object it depends on is watched (its Deployments, Services,
/// pods, HTTPRoute, ReleaseGate and adopted Deployment wake it when they change). A value, not a
/// wait: `reconcile` turns it into `Action::await_change()`.
pub const IDLE: Duration = Duration::from_secs(3600);
/// Requeue after a name conflict: the other object is not watched, so look again now and then.
pub const CONFLICT_RECHECK: Duration = Duration::from_secs(30);
/// Longest requeue while waiting for Deployments: their changes are watched and wake the
/// Rollout at once, so a waiting Rollout is not polled; it is woken at its deadline (or after
/// this long, whichever is sooner) to check it.
pub const WAIT_FOR_DEPLOYMENT: Duration = Duration::from_secs(600);
/// Requeue while an available Deployment's pods are not yet ready endpoints of its Service:
/// EndpointSlices are not watched, and they usually follow within a second.
pub const WAIT_FOR_ENDPOINTS: Duration = Duration::from_millis(500);

/// One of the two Deployments, as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploymentState {
    pub revision: Option<String>,
    pub replicas: i32,
    /// Every desired replica is updated and ready, and the Deployment controller has seen the
    /// latest spec.
    pub available: bool,
    /// What the Deployment controller reports as wrong (a ReplicaFailure such as an exceeded
    /// quota, or its own progress deadline), if anything.
    pub problem: Option<String>,
    /// A pod of this Deployment that cannot run and will not heal by waiting (a container
    /// crash-looping, an image that cannot be had), named with its reason.
    pub stuck: Option<String>,
    /// Ready endpoints in the EndpointSlices of its Service, when they were read: only just
    /// before traffic moves to it (see `endpoints_wanted`), since a gateway answers 503 for a
    /// share of traffic sent to a Service it has no ready endpoint for.
    pub ready_endpoints: Option<i32>,
}

impl DeploymentState {
    /// Available, and (when they were read) every replica is a ready endpoint of its Service.
    pub fn serving(&self) -> bool {
        self.available && self.ready_endpoints.is_none_or(|n| n >= self.replicas)
    }

    /// Why an available Deployment is not serving yet, if that is the case.
    fn endpoints_missing(&self) -> Option<String> {
        let ready = self.ready_endpoints?;
        (self.available && ready < self.replicas)
            .then(|| format!("{ready} of {} pods are ready endpoints of its Service yet", self.replicas))
    }
}

/// Which Services' endpoints the reconciler must read before planning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointsWanted {
    pub stable: bool,
    pub canary: bool,
}

/// One-shot actions requested through annotations and not yet handled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Actions {
    /// (token, full promotion)
    pub promote: Option<(String, bool)>,
    pub abort: Option<String>,
    pub retry: Option<String>,
}

/// Why the spec cannot be acted on (a permanent error, until the spec or the cluster changes).
#[derive(Debug, Clone, PartialEq)]
pub struct SpecProblem {
    /// `InvalidSpec`, `NameConflict` or `RejectedByApi`: the `InvalidSpec` condition's reason and
    /// the Event's.
    pub reason: EventReason,
    pub message: String,
}

impl SpecProblem {
    /// The spec itself is wrong.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self { reason: EventReason::InvalidSpec, message: message.into() }
    }

    pub fn with_reason(reason: EventReason, message: impl Into<String>) -> Self {
        Self { reason, message: message.into() }
    }
}

#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub now: Timestamp,
    pub generation: Option<i64>,
    pub spec: &'a RolloutSpec,
    pub status: RolloutStatus,
    /// Hash of `spec.template`.
    pub revision: String,
    pub stable: Option<DeploymentState>,
    pub canary: Option<DeploymentState>,
    /// The canary weight the router applies now (None: unknown or no route yet).
    pub router_weight: Option<i32>,
    /// Percent of requests the router copies to the canary now.
    pub router_mirror: i32,
    pub actions: Actions,
    /// Problems found outside the schema (missing gate, invalid template…).
    pub spec_problem: Option<SpecProblem>,
    /// How often the gate evaluates.
    pub gate_interval: Duration,
    /// How long the current step must stay healthy (the step's override or the gate policy's).
    pub min_healthy: Duration,
    /// `policy.dryRun`: the gate's verdicts are recorded, never acted on.
    pub dry_run: bool,
}

/// What the stable Deployment should be.
#[derive(Debug, Clone, PartialEq)]
pub enum StableIntent {
    /// Leave its template alone; these replicas.
    Keep { replicas: i32 },
    /// Give it the Rollout's current template (first deploy, promotion).
    Adopt { replicas: i32 },
}

/// What the canary Deployment should be.
#[derive(Debug, Clone, PartialEq)]
pub enum CanaryIntent {
    Absent,
    /// Present with the Rollout's current template.
    Present {
        replicas: i32,
    },
    /// Leave it as it is (draining after a rollback).
    Keep,
    /// Keep the Deployment (for inspection) with zero replicas: after a rollback's drain.
    ScaledDown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub warning: bool,
    pub reason: EventReason,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub stable: StableIntent,
    pub canary: CanaryIntent,
    /// Canary weight the router must apply (None: leave the router alone).
    pub weight: Option<i32>,
    /// Percent of requests the router must copy to the canary (None: leave it alone).
    pub mirror: Option<i32>,
    pub status: RolloutStatus,
    pub events: Vec<Event>,
    pub requeue: Duration,
    /// The rollout ended in this pass: how, and how long after it began.
    pub completed: Option<Completed>,
    /// A step passed in this pass, this long after its weight was applied.
    pub step_passed_after: Option<Duration>,
}

/// How a rollout ended (the `result` label of `rollgate_rollouts_completed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Promoted,
    RolledBack,
    Aborted,
}

impl Outcome {
    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
            Outcome::Aborted => "aborted",
        }
    }
}

/// A rollout's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completed {
    pub outcome: Outcome,
    /// Since the rollout started (or superseded the one before), when the history says.
    pub after: Option<Duration>,
}

/// Whether the gate must be evaluated before planning, and over which window (time since the
/// current step's weight was applied).
pub fn evaluation_window(o: &Observed<'_>) -> Option<Duration> {
    if o.spec_problem.is_some() || o.status.stable_revision.as_deref() == Some(o.revision.as_str()) {
        return None;
    }
    if o.status.stable_revision.is_none() || o.status.canary_revision.as_deref() != Some(o.revision.as_str())
    {
        return None;
    }
    if matches!(o.status.phase, Some(Phase::RolledBack)) {
        return None;
    }
    let step = o.status.current_step? as usize;
    if step >= o.spec.steps.len() || !canary_available(o) {
        return None;
    }
    let started = o.status.step_started_at.as_ref()?;
    let target = &o.spec.steps[step];
    if o.router_weight != Some(target.weight) || o.router_mirror != target.shadow.unwrap_or(0) {
        return None;
    }
    // Once per interval: the status written after an evaluation triggers another reconcile,
    // which must not evaluate (and write) again.
    if let Some(last) = &o.status.last_evaluated_at
        && elapsed(last, o.now) < o.gate_interval
    {
        return None;
    }
    Some(elapsed(started, o.now))
}

pub fn plan(o: &Observed<'_>, evaluation: Option<&Evaluation>) -> Plan {
    let mut p = Planner::new(o);
    if let Some(problem) = &o.spec_problem {
        p.invalid(problem);
        return p.finish();
    }
    p.valid();
    match o.status.stable_revision.clone() {
        None => p.first_deploy(),
        Some(stable) if stable == o.revision => p.steady(),
        Some(_) => p.rollout(evaluation),
    }
    p.finish()
}

/// Whose endpoints to read: traffic is about to move to a Deployment the gateway may not route
/// to yet. The canary's before its first weight (available, and the route still sends it
/// nothing); stable's before a promotion returns traffic to it. A replica-ratio router sends
/// traffic through one Service that a pod joins once ready, so it needs neither.
pub fn endpoints_wanted(o: &Observed<'_>) -> EndpointsWanted {
    let mut wanted = EndpointsWanted::default();
    if o.spec.traffic.replica_ratio.is_some()
        || o.spec_problem.is_some()
        || !matches!(o.status.phase, Some(Phase::Progressing | Phase::Paused))
        || o.status.canary_revision.as_deref() != Some(o.revision.as_str())
    {
        return wanted;
    }
    let step = o.status.current_step.unwrap_or(0).max(0) as usize;
    if step < o.spec.steps.len() {
        wanted.canary = canary_available(o) && o.router_weight.unwrap_or(0) == 0;
    } else {
        wanted.stable = o.router_weight != Some(0)
            && o.stable
                .as_ref()
                .is_some_and(|s| s.available && s.revision.as_deref() == Some(o.revision.as_str()));
    }
    wanted
}

/// What a Rollout waiting for a Deployment says. No elapsed time: it would change the status,
/// and so write it and wake the Rollout again, on every pass.
fn waiting(what: &str, since: Timestamp, deadline: Duration, problem: Option<String>) -> String {
    let problem = problem.map(|p| format!(": {p}")).unwrap_or_default();
    format!("{what} (progressDeadline {} from {since}){problem}", human(deadline))
}

fn canary_available(o: &Observed<'_>) -> bool {
    o.canary.as_ref().is_some_and(|c| c.available && c.revision.as_deref() == Some(o.revision.as_str()))
}

/// The canary is available and, when its endpoints were read, the gateway can route to it.
fn canary_serving(o: &Observed<'_>) -> bool {
    canary_available(o) && o.canary.as_ref().is_some_and(DeploymentState::serving)
}

/// (stable, canary) replicas. With a gateway both run the full count (the canary must carry
/// up to 100 %); with `replicaRatio` the split approximates the weight: canary =
/// ⌈weight × replicas⌉, stable = the rest, at least one until the canary has all traffic.
pub fn replica_split(spec: &RolloutSpec, weight: i32) -> (i32, i32) {
    let r = spec.replicas;
    if spec.traffic.replica_ratio.is_none() {
        return (r, r);
    }
    if weight <= 0 {
        return (r, 0);
    }
    let canary = ((i64::from(weight) * i64::from(r) + 99) / 100) as i32;
    let stable = if weight >= 100 { 0 } else { (r - canary).max(1) };
    (stable, canary.max(1))
}

fn elapsed(since: &Time, now: Timestamp) -> Duration {
    let d = now.duration_since(since.0);
    Duration::try_from(d).unwrap_or_default()
}

pub use conditions::set_condition;
use planner::Planner;

#[cfg(test)]
mod tests;
