//! The reconcile loop: observe, plan (pure), record, act.
//!
//! `reconcile` reads the Rollout's world (its gate, Deployments, Services, the router's weight,
//! requested actions), asks `plan::evaluation_window` whether the gate must be evaluated and,
//! if so, gathers evidence from the metric provider; then `plan::plan` decides. The new status
//! is written first (only when it differs), so a crash never undoes a decision; then the plan
//! is acted on: the weight first (so traffic leaves a canary before it changes), then the
//! Services and Deployments through `owned` (only objects this Rollout owns, only when they
//! differ); then the events. Errors back off per object, exponentially.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, Client, Resource, ResourceExt};
use rollgate_crds::conditions::{self as cond, EventReason};
use rollgate_crds::labels::{
    ACTION_ABORT, ACTION_PROMOTE, ACTION_RETRY, FINALIZER_RESTORE, FINALIZER_RESTORE_ROUTE,
};
use rollgate_crds::{Rollout, RolloutStatus};
use serde_json::json;
use tracing::Instrument;

use crate::error::{Error, Result};
use crate::metrics_provider::Span;
use crate::observability::ErrorLabels;
use crate::owned::WriteError;
use crate::plan::{self, Actions, Observed, Plan, SpecProblem, revision_of};
use crate::router::{self, RouterError};
use crate::scope::field_manager;
use crate::workload::{self, Role};

mod access;
mod adopt;
mod apply;
mod context;
mod endpoints;
pub mod events;
mod finalizers;
mod gate;
mod notifications;
mod route;
use crate::notify::count;
use apply::World;
pub use context::{Clock, Context, ProviderFactory};
use gate::{evaluate_gate, resolve_gate, validate};
use notifications::notify;
pub use notifications::{notification_kind, notification_payload};

/// The Rollout to plan from. The watch cache can lag behind this controller's own status write
/// (a Deployment or route event may trigger the next pass first); planning from the older
/// status would repeat a step that was already taken, e.g. put back a weight just raised. So a
/// cached copy whose resourceVersion is not the one last written is read again from the API
/// server; when it matches, the cache is used as is (no extra request).
async fn fresh(ro: Arc<Rollout>, ctx: &Context, ns: &str, name: &str) -> Result<Arc<Rollout>> {
    if ctx.is_current(ns, name, ro.metadata.resource_version.as_deref()) {
        return Ok(ro);
    }
    read(ctx, ns, name).await
}

/// The Rollout as the API server holds it now.
async fn read(ctx: &Context, ns: &str, name: &str) -> Result<Arc<Rollout>> {
    let api: Api<Rollout> = Api::namespaced(ctx.client.clone(), ns);
    let latest = api.get(name).await?;
    ctx.remember_version(ns, name, latest.metadata.resource_version.clone());
    Ok(Arc::new(latest))
}

pub async fn reconcile(ro: Arc<Rollout>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let ns = ro.namespace().unwrap_or_default();
    let name = ro.name_any();
    if !ctx.shards.holds(&ns, &name) {
        // Another replica's shard (its series are that replica's to export); acquiring the
        // shard reconciles every Rollout again.
        ctx.metrics.forget(&ns, &name);
        ctx.forget(&ns, &name);
        return Ok(Action::await_change());
    }
    ctx.metrics.reconciles.inc();
    // Cached while its shard was another replica's: only its name, gate and route are there.
    let ro = if crate::watches::is_trimmed(&ro) { read(&ctx, &ns, &name).await? } else { ro };
    if ro.meta().deletion_timestamp.is_some() {
        // The route goes back to the user's Service, then an adopted Deployment serves again,
        // before the finalizers go; then owner references let the garbage collector remove
        // rollgate's Deployments and Services.
        if finalizers::has(&ro, FINALIZER_RESTORE_ROUTE)
            && !route::restore(&ctx.client, &ro, (ctx.clock)()).await?
        {
            return Ok(Action::requeue(plan::CONVERGE));
        }
        if finalizers::has(&ro, FINALIZER_RESTORE) && !adopt::release(&ctx.client, &ro).await? {
            return Ok(Action::requeue(plan::CONVERGE));
        }
        finalizers::remove(&ctx.client, &ro, &[FINALIZER_RESTORE_ROUTE, FINALIZER_RESTORE]).await?;
        ctx.metrics.forget(&ns, &name);
        ctx.forget(&ns, &name);
        return Ok(Action::await_change());
    }
    ctx.metrics.reconciles_in_flight.inc();
    let span = tracing::info_span!("reconcile", namespace = %ns, rollout = %name);
    let result = async {
        let ro = fresh(ro, &ctx, &ns, &name).await?;
        reconcile_inner(&ro, &ctx, &ns, &name).await
    }
    .instrument(span)
    .await;
    ctx.metrics.reconcile_duration.observe(started.elapsed().as_secs_f64());
    ctx.metrics.reconciles_in_flight.dec();
    if result.is_ok()
        && let Ok(mut f) = ctx.failures.lock()
    {
        f.remove(&(ns, name));
    }
    result
}

async fn reconcile_inner(ro: &Rollout, ctx: &Context, ns: &str, name: &str) -> Result<Action> {
    let client = ctx.client.clone();
    // An adopted Deployment lends its template (canary pods lose the labels it selects on);
    // the rest of the pass sees the Rollout as if the template were its own.
    let (adopted, adoption_problem) = match adopt::resolve(&client, ro).await? {
        Some(Ok(d)) => (Some(d), None),
        Some(Err(p)) => (None, Some(p)),
        None => (None, None),
    };
    let effective;
    let ro = match &adopted {
        Some(d) => {
            effective = adopt::with_template(ro, d);
            &effective
        }
        None => ro,
    };
    let (gate, gate_hooks, mut problem) = match resolve_gate(&client, ro, ns).await? {
        Ok((g, hooks)) => {
            let problem = validate(ro, &g).err();
            (Some(g), hooks, problem)
        }
        Err(p) => (None, None, Some(p)),
    };
    if adoption_problem.is_some() {
        problem = adoption_problem;
    }
    let route_hidden = match route::selected_labels(&client, ro).await? {
        Ok(labels) => labels,
        Err(p) => {
            problem = problem.or(Some(p));
            Vec::new()
        }
    };
    let mut provider = None;
    if let (Some(g), None) = (&gate, &problem) {
        match access::provider(ctx, ns, &g.prometheus).await? {
            Ok(p) => provider = Some(p),
            Err(p) => problem = Some(p),
        }
    }
    let mut world = World::observe(&client, ro).await?;
    let mut hidden = adopted.as_ref().map(adopt::selected_labels).unwrap_or_default();
    hidden.extend(route_hidden);
    hidden.sort();
    hidden.dedup();
    world.hidden = hidden;
    let uid = ro.uid().unwrap_or_default();
    problem = problem.or_else(|| world.conflict(&uid)).or_else(|| rejected_before(ro));
    let stable_s = world.state(Role::Stable);
    let canary_s = world.state(Role::Canary);
    let router = router::for_rollout((ctx.clock)(), client.clone(), ro, stable_s.as_ref(), canary_s.as_ref());
    let mut router_weight = None;
    if problem.is_none() {
        match router.current_weight(ro).await {
            Ok(w) => router_weight = w,
            Err(RouterError::Spec(p)) => problem = Some(p),
            Err(RouterError::Other(e)) => return Err(e),
        }
    }
    if problem.is_none() {
        claim(ctx, ro, adopted.as_ref()).await?;
    }
    let status = ro.status.clone().unwrap_or_default();
    let revision = revision_of(&ro.spec.template);
    let policy = gate.as_ref().map(|g| g.policy.clone()).unwrap_or_default();
    let mut observed = Observed {
        now: (ctx.clock)(),
        generation: ro.metadata.generation,
        spec: &ro.spec,
        status: status.clone(),
        revision: revision.clone(),
        stable: stable_s,
        canary: canary_s,
        router_weight,
        router_mirror: router.mirrored(),
        actions: actions_from(ro, &status),
        spec_problem: problem.clone(),
        gate_interval: policy.interval.as_std(),
        min_healthy: status
            .current_step
            .and_then(|s| ro.spec.steps.get(usize::try_from(s).ok()?))
            .and_then(|s| s.min_healthy)
            .unwrap_or(policy.min_healthy)
            .as_std(),
        dry_run: policy.dry_run,
    };
    let wanted = plan::endpoints_wanted(&observed);
    for (want, role, state) in [
        (wanted.stable, Role::Stable, observed.stable.as_mut()),
        (wanted.canary, Role::Canary, observed.canary.as_mut()),
    ] {
        if let (true, Some(state)) = (want, state) {
            state.ready_endpoints = endpoints::ready(&client, ns, &workload::name(name, role)).await?;
        }
    }
    let evaluation = match (plan::evaluation_window(&observed), &gate, &provider) {
        (Some(window), Some(gate), Some(provider)) => {
            // Every query of this evaluation is read at the instant the window ends.
            let span = Span { window, time: Some(observed.now.as_second()) };
            Some(evaluate_gate(provider.as_ref(), ro, gate, &status, &revision, span).await?)
        }
        _ => None,
    };
    let mut plan = plan::plan(&observed, evaluation.as_ref());
    // The `scale` subresource: what an autoscaler reads (it writes `spec.replicas`).
    plan.status.replicas = Some(ro.spec.replicas);
    plan.status.selector = Some(workload::stable_selector(name));

    // The decision is recorded before it is acted on: a crash after this write resumes from
    // it (acting is idempotent), never from the state before it.
    write_status(ctx, ns, name, ro.status.as_ref(), &plan.status).await?;
    if problem.is_none() {
        let seen = (router_weight, router.mirrored());
        match act(&client, ro, &plan, &world, router.as_ref(), seen, &revision).await {
            Ok(()) => {
                let stable_serves = plan.status.stable_revision.is_some()
                    && observed.stable.as_ref().is_some_and(|s| s.available);
                // rollgate's stable serves the adopted Deployment's pods' traffic from here.
                if let (Some(d), true) = (&adopted, stable_serves) {
                    adopt::scale_down(&client, ro, d).await?;
                }
                // The user's route moves to rollgate's Services once stable has endpoints
                // (EndpointSlices are not watched: looked at again shortly until then).
                if stable_serves && router.takeover_pending() && plan.weight.is_none_or(|w| w == 0) {
                    let stable = workload::name(name, Role::Stable);
                    if endpoints::ready(&client, ns, &stable).await?.is_none_or(|n| n > 0) {
                        router.apply_weight(ro, 0).await.map_err(router_error)?;
                    } else {
                        plan.requeue = plan.requeue.min(plan::WAIT_FOR_ENDPOINTS);
                    }
                }
            }
            Err(Error::Owned(e @ (WriteError::Conflict { .. } | WriteError::Rejected { .. }))) => {
                // Permanent for this spec: shown as InvalidSpec, not retried until it changes.
                tracing::warn!(error = %e, "an owned object cannot be written");
                observed.status = plan.status.clone();
                observed.spec_problem = Some(apply::problem_of(&e));
                let mut refused = plan::plan(&observed, None);
                write_status(ctx, ns, name, Some(&plan.status), &refused.status).await?;
                plan.events.append(&mut refused.events);
                refused.events = std::mem::take(&mut plan.events);
                plan = refused;
            }
            Err(e) => {
                let failed = plan::Event {
                    warning: true,
                    reason: EventReason::WriteFailed,
                    note: match &e {
                        // Owned-object errors name the object; the route's are the router's.
                        Error::Owned(w) => w.to_string(),
                        other => format!("traffic router: {other}"),
                    },
                };
                plan.events.push(failed);
                publish_events(ctx, ro, &plan.events).await;
                return Err(e);
            }
        }
    }
    publish_events(ctx, ro, &plan.events).await;
    if let Err(e) = notify(ctx, ro, &plan, gate_hooks.as_ref(), policy.dry_run).await {
        // The decision is written and acted on; a notification must not undo or repeat it.
        count(&ctx.metrics, "failed");
        tracing::warn!(error = %e, "reading a webhook's Secret failed; notification not sent");
    }
    let would = plan.events.iter().filter(|e| e.reason == EventReason::WouldRollBack).count();
    ctx.metrics.dry_run_rollbacks.inc_by(would as u64);
    ctx.metrics.observe(ns, name, &plan.status);
    ctx.metrics.outcomes.record(plan.completed, plan.step_passed_after);
    if plan.requeue == plan::IDLE {
        return Ok(Action::await_change());
    }
    Ok(Action::requeue(plan.requeue))
}

/// Takes what the Rollout gives back when deleted: each finalizer first, then the adopted
/// Deployment's claim label (the route is taken over later, once stable serves).
async fn claim(ctx: &Context, ro: &Rollout, adopted: Option<&Deployment>) -> Result<()> {
    let mut wanted = Vec::new();
    if adopted.is_some() {
        wanted.push(FINALIZER_RESTORE);
    }
    if ro.spec.traffic.gateway_api.as_ref().is_some_and(|g| g.service.is_some()) {
        wanted.push(FINALIZER_RESTORE_ROUTE);
    }
    if let Some(version) = finalizers::ensure(&ctx.client, ro, &wanted).await? {
        ctx.remember_version(&ro.namespace().unwrap_or_default(), &ro.name_any(), Some(version));
    }
    if let Some(d) = adopted {
        adopt::claim(&ctx.client, ro, d).await?;
    }
    Ok(())
}

/// Writes `status` when it differs from `current`, the status the API server holds.
async fn write_status(
    ctx: &Context,
    ns: &str,
    name: &str,
    current: Option<&RolloutStatus>,
    status: &RolloutStatus,
) -> Result<()> {
    if current != Some(status) {
        let written = patch_status(&ctx.client, ns, name, status).await?;
        ctx.remember_version(ns, name, written.metadata.resource_version);
    }
    Ok(())
}

/// The weight first (so traffic leaves a canary before its Deployment changes), then the
/// Services and Deployments.
async fn act(
    client: &Client,
    ro: &Rollout,
    plan: &Plan,
    world: &World,
    router: &dyn router::TrafficRouter,
    (router_weight, router_mirror): (Option<i32>, i32),
    revision: &str,
) -> Result<()> {
    // Copies stop before the canary gets real traffic, and start only once it has none.
    if let Some(m) = plan.mirror
        && m == 0
        && router_mirror != 0
    {
        router.apply_mirror(ro, 0).await.map_err(router_error)?;
    }
    if let Some(w) = plan.weight
        && router_weight != Some(w)
    {
        router.apply_weight(ro, w).await.map_err(router_error)?;
    }
    if let Some(m) = plan.mirror
        && m != 0
        && router_mirror != m
    {
        router.apply_mirror(ro, m).await.map_err(router_error)?;
    }
    apply::workload(client, ro, plan, world, revision).await
}

fn router_error(e: RouterError) -> Error {
    match e {
        RouterError::Spec(p) => Error::Router(p.message),
        RouterError::Other(e) => e,
    }
}

/// A rejection by the API server recorded for this generation: not retried until the spec
/// changes (each retry would write the same refused object again).
fn rejected_before(ro: &Rollout) -> Option<SpecProblem> {
    let status = ro.status.as_ref()?;
    status
        .conditions
        .iter()
        .find(|c| {
            c.type_ == cond::INVALID_SPEC
                && c.status == "True"
                && EventReason::RejectedByApi == c.reason.as_str()
                && c.observed_generation == ro.metadata.generation
        })
        .map(|c| SpecProblem::with_reason(EventReason::RejectedByApi, c.message.clone()))
}

/// One-shot actions from annotations whose value has not been handled yet.
pub fn actions_from(ro: &Rollout, status: &RolloutStatus) -> Actions {
    let annotations = ro.annotations();
    let handled = status.handled_actions.clone().unwrap_or_default();
    let fresh = |key: &str, done: &Option<String>| {
        annotations.get(key).filter(|v| !v.is_empty() && done.as_deref() != Some(v.as_str())).cloned()
    };
    Actions {
        promote: fresh(ACTION_PROMOTE, &handled.promote).map(|v| {
            let full = v.starts_with("full");
            (v, full)
        }),
        abort: fresh(ACTION_ABORT, &handled.abort),
        retry: fresh(ACTION_RETRY, &handled.retry),
    }
}

async fn patch_status(client: &Client, ns: &str, name: &str, status: &RolloutStatus) -> Result<Rollout> {
    let api: Api<Rollout> = Api::namespaced(client.clone(), ns);
    let patch = json!({
        "apiVersion": "rollgate.dev/v1alpha1",
        "kind": "Rollout",
        "status": status,
    });
    Ok(api.patch_status(name, &PatchParams::apply(field_manager()).force(), &Patch::Apply(&patch)).await?)
}

async fn publish_events(ctx: &Context, ro: &Rollout, events: &[plan::Event]) {
    let reference = ro.object_ref(&());
    for e in events {
        if let Err(err) = ctx.events.publish(&reference, e.warning, e.reason.as_str(), &e.note).await {
            // An event that cannot be written must not stop a rollback.
            tracing::warn!(error = %err, reason = %e.reason, "publishing an event failed");
        }
    }
}

/// Per-object exponential backoff: 1 s, 2 s, 4 s … up to 5 minutes.
pub fn error_policy(ro: Arc<Rollout>, err: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_errors.get_or_create(&ErrorLabels { kind: err.metric_label().into() }).inc();
    let key = (ro.namespace().unwrap_or_default(), ro.name_any());
    let n = match ctx.failures.lock() {
        Ok(mut f) => {
            let n = f.entry(key).or_insert(0);
            *n = n.saturating_add(1);
            *n
        }
        Err(_) => 1,
    };
    let delay = backoff(n);
    tracing::warn!(error = %err, kind = err.metric_label(), attempt = n, retry_in_s = delay.as_secs(), "reconcile failed");
    Action::requeue(delay)
}

pub fn backoff(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.saturating_sub(1).min(9)).min(Duration::from_secs(300))
}

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod tests;
