//! The gate a Rollout uses: resolved (inline or a ReleaseGate), checked for what the schema
//! cannot check, and evaluated over the current step's window.

use kube::{Api, Client, ResourceExt};
use rollgate_crds::notifications::Notifications;
use rollgate_crds::{GateSpec, ReleaseGate, Rollout, RolloutStatus};
use rollgate_gate::forecast::{self, Holds, Weights};
use rollgate_gate::{CheckSpec, Counts, Evaluation, Policy, StepClock, evaluate};

use crate::error::Result;
use crate::metrics_provider::{self, MetricProvider, Selector, Span};
use crate::plan::SpecProblem;

/// The gate and the ReleaseGate's webhooks: inline, or the referenced ReleaseGate (a missing
/// one is a spec problem).
pub(super) async fn resolve_gate(
    client: &Client,
    ro: &Rollout,
    ns: &str,
) -> Result<Result<(GateSpec, Option<Notifications>), SpecProblem>> {
    if let Some(g) = &ro.spec.gate {
        return Ok(Ok((g.clone(), None)));
    }
    let Some(r) = &ro.spec.gate_ref else {
        return Ok(Err(SpecProblem::invalid("spec: exactly one of gate and gateRef must be set")));
    };
    let gates: Api<ReleaseGate> = Api::namespaced(client.clone(), ns);
    Ok(match gates.get_opt(&r.name).await? {
        Some(g) => Ok((g.spec.gate, g.spec.notifications)),
        None => Err(SpecProblem::invalid(format!(
            "gateRef: ReleaseGate {:?} not found in namespace {ns:?}",
            r.name
        ))),
    })
}

/// What the schema cannot check.
pub(super) fn validate(ro: &Rollout, gate: &GateSpec) -> Result<(), SpecProblem> {
    if let Some(problem) = rollgate_crds::rollout::name_problem(&ro.name_any()) {
        return Err(SpecProblem::invalid(problem));
    }
    let containers = ro.spec.template.spec.as_ref().map_or(0, |s| s.containers.len());
    if containers == 0 {
        return Err(SpecProblem::invalid("template.spec.containers: at least one container is required"));
    }
    for check in gate.effective_checks().iter() {
        metrics_provider::queries::for_check(check, gate.source_of(check))
            .map_err(|e| SpecProblem::invalid(format!("gate.{e}")))?;
        CheckSpec::try_from(check).map_err(|e| SpecProblem::invalid(format!("gate.{e}")))?;
    }
    Ok(())
}

#[tracing::instrument(name = "evaluate", skip_all, fields(window_s = span.window.as_secs()))]
pub(super) async fn evaluate_gate(
    provider: &dyn MetricProvider,
    ro: &Rollout,
    gate: &GateSpec,
    status: &RolloutStatus,
    revision: &str,
    span: Span,
) -> Result<Evaluation> {
    let window = span.window;
    let ns = ro.namespace().unwrap_or_default();
    let canary =
        Selector { namespace: ns.clone(), rollout: ro.name_any(), role: "canary", revision: revision.into() };
    let step = status.current_step.unwrap_or(0).max(0) as usize;
    // At 100 % stable serves nothing: there is nothing to compare with, and the budget decides.
    let stable_serves = ro.spec.steps.get(step).is_none_or(|s| s.weight < 100);
    let stable = status.stable_revision.as_ref().filter(|_| stable_serves).map(|r| Selector {
        namespace: ns,
        rollout: ro.name_any(),
        role: "stable",
        revision: r.clone(),
    });
    let mut evidence =
        metrics_provider::gather(provider, gate, &canary, stable.as_ref().map(|s| s as _), span).await?;
    for e in &mut evidence {
        if let Some(c) =
            status.carried.iter().find(|c| c.check == e.spec.name && c.threshold == e.spec.budget)
        {
            e.carried = Counts { bad: c.bad, total: c.total };
        }
    }
    let min_healthy =
        ro.spec.steps.get(step).and_then(|s| s.min_healthy).unwrap_or(gate.policy.min_healthy).as_std();
    let next_weight = ro.spec.steps.get(step + 1).map_or(100.0, |s| f64::from(s.weight));
    let clock =
        StepClock { elapsed: window, min_healthy, max_hold: gate.policy.max_hold.as_std(), next_weight };
    let policy = Policy::from(&gate.policy);
    let mut evaluation = evaluate(&evidence, clock, policy);
    if let Some(next) = ro.spec.steps.get(step + 1) {
        let now = ro.spec.steps.get(step).map_or(0, |s| s.shadow.unwrap_or(s.weight));
        let weights = Weights {
            now: f64::from(now),
            next: f64::from(next.weight),
            after: ro.spec.steps.get(step + 2).map_or(100.0, |s| f64::from(s.weight)),
        };
        let holds = Holds {
            min_healthy: next.min_healthy.unwrap_or(gate.policy.min_healthy).as_std(),
            max_hold: gate.policy.max_hold.as_std(),
        };
        let specs: Vec<CheckSpec> = evidence.iter().map(|e| e.spec.clone()).collect();
        evaluation.next_step = Some(forecast::next_step(&evaluation, &specs, policy, weights, holds));
    }
    tracing::info!(decision = %evaluation.decision.reason(), window_s = window.as_secs(), "gate evaluated");
    Ok(evaluation)
}
