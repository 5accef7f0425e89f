//! `replicaRatio`: no gateway; the weight is approximated by the replica counts behind one
//! Service (`<name>`) that selects both roles. Applying a weight is done by the workload
//! intents (the planner sizes both Deployments with `replica_split`); this router reports which
//! weight the running replicas give.

use futures::future::BoxFuture;
use rollgate_crds::Rollout;

use super::{RouterResult, TrafficRouter};
use crate::plan::{DeploymentState, replica_split};

pub struct ReplicaRatio {
    stable: Option<DeploymentState>,
    canary: Option<DeploymentState>,
}

impl ReplicaRatio {
    pub fn new(stable: Option<DeploymentState>, canary: Option<DeploymentState>) -> Self {
        Self { stable, canary }
    }

    fn weight(&self, ro: &Rollout) -> Option<i32> {
        let stable = self.stable.as_ref().filter(|s| s.available)?;
        let canary_replicas = match &self.canary {
            None => 0,
            Some(c) if !c.available => return None,
            Some(c) => c.replicas,
        };
        let last = ro.status.as_ref().map_or(0, |s| s.canary_weight);
        let expected = replica_split(&ro.spec, last);
        if canary_replicas == 0 {
            return Some(0);
        }
        ((stable.replicas, canary_replicas) == expected).then_some(last)
    }
}

impl TrafficRouter for ReplicaRatio {
    fn current_weight<'a>(&'a self, ro: &'a Rollout) -> BoxFuture<'a, RouterResult<Option<i32>>> {
        Box::pin(async move { Ok(self.weight(ro)) })
    }

    fn apply_weight<'a>(&'a self, _: &'a Rollout, _: i32) -> BoxFuture<'a, RouterResult<()>> {
        Box::pin(async { Ok(()) })
    }
}
