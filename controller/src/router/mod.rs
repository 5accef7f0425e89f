//! Traffic routers: how a canary weight becomes a share of real requests.
//!
//! One small trait, one module per implementation, chosen by the Rollout's typed
//! `spec.traffic`. A router that cannot work with what it finds (a missing HTTPRoute, a route
//! without the two backendRefs) says so as a `SpecProblem`, shown in the `InvalidSpec`
//! condition, instead of silently doing nothing.

pub mod gateway_api;
pub mod mirror;
pub mod replica_ratio;
pub mod takeover;
pub mod traefik_service;

use futures::future::BoxFuture;
use kube::Client;
use rollgate_crds::Rollout;

use crate::error::Error;
use crate::plan::{DeploymentState, SpecProblem};

#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The configuration cannot work; retrying will not help until the user changes it.
    #[error("{}", .0.message)]
    Spec(SpecProblem),
    #[error(transparent)]
    Other(#[from] Error),
}

pub type RouterResult<T> = Result<T, RouterError>;

pub trait TrafficRouter: Send + Sync {
    /// The canary weight (percent) the data plane applies now; `None` when unknown.
    fn current_weight<'a>(&'a self, ro: &'a Rollout) -> BoxFuture<'a, RouterResult<Option<i32>>>;
    /// Sets the canary weight (percent).
    fn apply_weight<'a>(&'a self, ro: &'a Rollout, weight: i32) -> BoxFuture<'a, RouterResult<()>>;
    /// The last `current_weight` found a user's route still to be taken over: writing weight 0
    /// takes it over.
    fn takeover_pending(&self) -> bool {
        false
    }
    /// Percent of requests the data plane copied to the canary at the last `current_weight`
    /// (negative: copies are set up, to a share that cannot be read).
    fn mirrored(&self) -> i32 {
        0
    }
    /// Copies `percent` of the requests to the canary, its answers discarded (0: none).
    fn apply_mirror<'a>(&'a self, _ro: &'a Rollout, percent: i32) -> BoxFuture<'a, RouterResult<()>> {
        Box::pin(async move {
            if percent == 0 {
                return Ok(());
            }
            Err(RouterError::Spec(SpecProblem::invalid(
                "steps[0].shadow: this traffic router cannot copy requests to the canary; a shadow step needs traffic.gatewayAPI",
            )))
        })
    }
}

/// The router the Rollout asks for.
pub fn for_rollout(
    now: k8s_openapi::jiff::Timestamp,
    client: Client,
    ro: &Rollout,
    stable: Option<&DeploymentState>,
    canary: Option<&DeploymentState>,
) -> Box<dyn TrafficRouter> {
    match (&ro.spec.traffic.gateway_api, &ro.spec.traffic.replica_ratio) {
        (Some(gw), _) => Box::new(
            gateway_api::GatewayApi::new(client, gw.http_route.clone(), gw.service.clone(), gw.mirror)
                .at(now),
        ),
        (None, _) => Box::new(replica_ratio::ReplicaRatio::new(stable.cloned(), canary.cloned())),
    }
}
