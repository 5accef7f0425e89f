//! The user's Service behind a route rollgate takes over (`traffic.gatewayAPI.service`): canary
//! pods must not carry the labels it selects on (its other clients would reach the canary
//! unweighted), and the route goes back to it before the Rollout does.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;

use crate::error::Result;
use crate::plan::SpecProblem;
use crate::router::gateway_api::GatewayApi;

/// How long a deleted Rollout waits for the gateway to report the route given back: a gateway
/// that never writes route status must not keep the Rollout forever.
pub const ACCEPT_WITHIN: Duration = Duration::from_secs(30);

/// The labels the user's Service selects on (none without `service`), or why it cannot be
/// taken over.
pub async fn selected_labels(client: &Client, ro: &Rollout) -> Result<Result<Vec<String>, SpecProblem>> {
    let Some(service) = ro.spec.traffic.gateway_api.as_ref().and_then(|g| g.service.as_ref()) else {
        return Ok(Ok(Vec::new()));
    };
    let ns = ro.namespace().unwrap_or_default();
    let api: Api<Service> = Api::namespaced(client.clone(), &ns);
    let Some(svc) = api.get_opt(service).await? else {
        return Ok(Err(SpecProblem::invalid(format!(
            "traffic.gatewayAPI.service: Service {service:?} not found in namespace {ns:?}"
        ))));
    };
    let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    Ok(Ok(selector.into_keys().collect()))
}

/// On deletion: gives the route back. True when nothing is left to wait for: the route is
/// back and the gateway has seen it, or `ACCEPT_WITHIN` has passed since the deletion.
pub async fn restore(client: &Client, ro: &Rollout, now: Timestamp) -> Result<bool> {
    let Some(gw) = &ro.spec.traffic.gateway_api else {
        return Ok(true);
    };
    let router = GatewayApi::new(client.clone(), gw.http_route.clone(), gw.service.clone(), gw.mirror);
    if router.restore(ro).await? {
        return Ok(true);
    }
    let waited = ro.metadata.deletion_timestamp.as_ref().map(|t| now.duration_since(t.0));
    let waited = waited.and_then(|d| Duration::try_from(d).ok()).unwrap_or_default();
    if waited >= ACCEPT_WITHIN {
        tracing::warn!(route = %gw.http_route, "no gateway reported the given-back route within 30 s; letting the Rollout go");
        return Ok(true);
    }
    Ok(false)
}
