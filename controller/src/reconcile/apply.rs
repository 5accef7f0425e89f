//! Observe and act: the objects a Rollout owns as read this pass, and the writes that carry a
//! plan out. Every write goes through `owned` (no adoption, no write when nothing differs).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;
use rollgate_crds::conditions::EventReason;

use crate::error::Result;
use crate::owned::{self, WriteError};
use crate::plan::{CanaryIntent, DeploymentState, Plan, SpecProblem, StableIntent};
use crate::workload::{self, Role};

/// The objects a Rollout needs, as read this pass (`None`: absent).
#[derive(Debug, Default)]
pub struct World {
    pub stable: Option<Deployment>,
    pub canary: Option<Deployment>,
    /// `<name>-stable`, `<name>-canary` and, with `replicaRatio`, `<name>` (role `None`: the
    /// Service selecting both).
    pub services: Vec<(Option<Role>, Option<Service>)>,
    /// The Rollout's pods, read only while one of its Deployments is not available.
    pub pods: Vec<Pod>,
    /// Labels canary pods go without: those a Deployment the Rollout adopted selects on.
    pub hidden: Vec<String>,
}

impl World {
    /// Reads the Rollout's Deployments and Services (and its pods while a Deployment is not
    /// available).
    pub async fn observe(client: &Client, ro: &Rollout) -> Result<World> {
        let ns = ro.namespace().unwrap_or_default();
        let name = ro.name_any();
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let services: Api<Service> = Api::namespaced(client.clone(), &ns);
        let stable = deployments.get_opt(&workload::name(&name, Role::Stable)).await?;
        let canary = deployments.get_opt(&workload::name(&name, Role::Canary)).await?;
        let mut roles = vec![Some(Role::Stable), Some(Role::Canary)];
        if ro.spec.traffic.replica_ratio.is_some() {
            roles.push(None);
        }
        let mut seen = Vec::with_capacity(roles.len());
        for role in roles {
            let n = role.map_or_else(|| name.clone(), |r| workload::name(&name, r));
            seen.push((role, services.get_opt(&n).await?));
        }
        // Pods are read only while a Deployment is not available: why it is not is what a
        // person (and the canary's fate) needs.
        let mut pods = Vec::new();
        if [&stable, &canary].into_iter().flatten().any(|d| !workload::state(d).available) {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let selector = format!("{}={name}", rollgate_crds::labels::ROLLOUT);
            pods = api.list(&ListParams::default().labels(&selector)).await?.items;
        }
        Ok(World { stable, canary, services: seen, pods, hidden: Vec::new() })
    }

    /// The state of `role`'s Deployment, with the pod that keeps it from running, if any.
    pub fn state(&self, role: Role) -> Option<DeploymentState> {
        let d = match role {
            Role::Stable => self.stable.as_ref(),
            Role::Canary => self.canary.as_ref(),
        }?;
        let mut state = workload::state(d);
        if !state.available
            && let Some(revision) = &state.revision
        {
            state.stuck = workload::stuck_pod(&self.pods, revision);
            if state.stuck.is_some() {
                state.problem = state.stuck.clone();
            }
        }
        Some(state)
    }

    /// The first object that exists under a name this Rollout needs but is not its own.
    pub fn conflict(&self, uid: &str) -> Option<SpecProblem> {
        let deployments =
            [&self.stable, &self.canary].into_iter().flatten().map(|d| owned::check_owned(d, uid));
        let services =
            self.services.iter().filter_map(|(_, s)| s.as_ref()).map(|s| owned::check_owned(s, uid));
        deployments.chain(services).find_map(|r| r.err()).map(|e| problem_of(&e))
    }
}

/// A write error that no retry fixes, as the spec problem the status shows.
pub fn problem_of(e: &WriteError) -> SpecProblem {
    let reason = match e {
        WriteError::Conflict { .. } => EventReason::NameConflict,
        WriteError::Rejected { .. } | WriteError::Failed { .. } => EventReason::RejectedByApi,
    };
    SpecProblem::with_reason(reason, e.to_string())
}

/// Carries out the workload part of `plan`: Services, then Deployments.
pub async fn workload(
    client: &Client,
    ro: &Rollout,
    plan: &Plan,
    world: &World,
    revision: &str,
) -> Result<()> {
    let ns = ro.namespace().unwrap_or_default();
    let uid = ro.uid().unwrap_or_default();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    for (role, observed) in &world.services {
        owned::ensure(&services, &uid, observed.as_ref(), &workload::service(ro, *role)).await?;
    }

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let stable = world.stable.as_ref();
    let stable_wanted = match &plan.stable {
        StableIntent::Adopt { replicas } => {
            Some(workload::deployment(ro, Role::Stable, &ro.spec.template, revision, *replicas))
        }
        StableIntent::Keep { replicas } => {
            let kept = stable.and_then(workload::existing_template);
            if kept.is_none() {
                tracing::warn!("the stable Deployment is missing or unlabelled; leaving it alone");
            }
            kept.map(|(template, rev)| workload::deployment(ro, Role::Stable, &template, &rev, *replicas))
        }
    };
    if let Some(d) = stable_wanted {
        owned::ensure(&deployments, &uid, stable, &d).await?;
    }
    let canary = world.canary.as_ref();
    let canary_wanted = match &plan.canary {
        CanaryIntent::Present { replicas } => {
            let template = super::adopt::without_labels(&ro.spec.template, &world.hidden);
            Some(workload::deployment(ro, Role::Canary, &template, revision, *replicas))
        }
        CanaryIntent::ScaledDown => canary
            .and_then(workload::existing_template)
            .map(|(template, rev)| workload::deployment(ro, Role::Canary, &template, &rev, 0)),
        CanaryIntent::Absent => {
            if let Some(c) = canary {
                owned::delete_owned(&deployments, &uid, c).await?;
            }
            None
        }
        CanaryIntent::Keep => None,
    };
    if let Some(d) = canary_wanted {
        owned::ensure(&deployments, &uid, canary, &d).await?;
    }
    Ok(())
}
