//! The mirroring `TraefikService` `<rollout>-shadow` (`traffic.gatewayAPI.mirror:
//! TraefikService`): it sends every request to `<rollout>-stable` and copies a share to
//! `<rollout>-canary`, whose answers Traefik discards. Created with the Rollout as controller
//! owner, so it goes with the Rollout; one of that name that the Rollout does not own is refused
//! as a name conflict, never changed.

use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client, Resource, ResourceExt};
use rollgate_crds::Rollout;
use rollgate_crds::conditions::EventReason;
use rollgate_crds::labels::ROLLOUT;
use serde_json::{Value, json};

use super::{RouterError, RouterResult};
use crate::error::Error;
use crate::plan::SpecProblem;
use crate::scope::field_manager;
use crate::workload::{Role, name as workload_name};

pub fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("traefik.io", "v1alpha1", "TraefikService"),
        "traefikservices",
    )
}

/// The TraefikService's name for `rollout`.
pub fn name(rollout: &str) -> String {
    format!("{rollout}-shadow")
}

fn api(client: &Client, ro: &Rollout) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), &ro.namespace().unwrap_or_default(), &resource())
}

/// The `mirroring` spec that copies `percent` of stable's requests to the canary.
pub fn mirroring(ro: &Rollout, percent: i32) -> Value {
    let rollout = ro.name_any();
    let port = ro.spec.service.port;
    json!({
        "name": workload_name(&rollout, Role::Stable),
        "port": port,
        "mirrors": [{"name": workload_name(&rollout, Role::Canary), "port": port, "percent": percent}],
    })
}

/// Percent the Rollout's TraefikService copies to the canary; `None` when there is none. One of
/// that name the Rollout does not own is a name conflict.
pub async fn percent(client: &Client, ro: &Rollout) -> RouterResult<Option<i32>> {
    let Some(found) = api(client, ro).get_opt(&name(&ro.name_any())).await.map_err(Error::from)? else {
        return Ok(None);
    };
    if !owned_by(&found, ro) {
        return Err(conflict(&found.name_any()));
    }
    Ok(found.data.pointer("/spec/mirroring/mirrors/0/percent").and_then(Value::as_i64).map(|p| p as i32))
}

fn conflict(name: &str) -> RouterError {
    RouterError::Spec(SpecProblem::with_reason(
        EventReason::NameConflict,
        format!(
            "traffic.gatewayAPI.mirror: TraefikService {name:?} exists and is not owned by this Rollout; rename the Rollout or remove it"
        ),
    ))
}

fn owned_by(obj: &DynamicObject, ro: &Rollout) -> bool {
    let uid = ro.uid();
    obj.owner_references().iter().any(|o| o.controller == Some(true) && Some(&o.uid) == uid.as_ref())
}

/// How long a new TraefikService exists before a route refers to it. Traefik reads it through
/// its kubernetesCRD provider and the route through its Gateway API provider, separately: a
/// route to a TraefikService the first has not published yet fails stable's requests (404) for
/// as long as that takes (about 0.6 s in the suite, on a loaded machine).
pub const SETTLE: Duration = Duration::from_secs(10);

/// Where the Rollout's TraefikService stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ensured {
    /// As wanted, and old enough for a route to refer to it.
    Settled,
    /// As wanted, created less than `SETTLE` ago.
    Settling,
    /// Created or changed now.
    Written,
}

/// Whether an object created at `created` (unknown: settled) has existed for `SETTLE` at `now`.
pub fn settled(created: Option<Timestamp>, now: Timestamp) -> bool {
    created.is_none_or(|c| now.duration_since(c).unsigned_abs() >= SETTLE || now < c)
}

/// Creates the TraefikService, or makes the Rollout's own one copy `percent`.
pub async fn ensure(client: &Client, ro: &Rollout, percent: i32, now: Timestamp) -> RouterResult<Ensured> {
    let api = api(client, ro);
    let rollout = ro.name_any();
    let own = name(&rollout);
    let wanted = mirroring(ro, percent);
    match api.get_opt(&own).await.map_err(Error::from)? {
        Some(found) if !owned_by(&found, ro) => Err(conflict(&own)),
        Some(found) if found.data.pointer("/spec/mirroring") == Some(&wanted) => {
            let created = found.metadata.creation_timestamp.as_ref().map(|t| t.0);
            Ok(if settled(created, now) { Ensured::Settled } else { Ensured::Settling })
        }
        Some(found) => {
            // The uid makes a patch to an object replaced meanwhile fail instead of adopting it.
            let patch = json!({"metadata": {"uid": found.uid()}, "spec": {"mirroring": wanted}});
            let params =
                PatchParams { field_manager: Some(field_manager().to_string()), ..PatchParams::default() };
            api.patch(&own, &params, &Patch::Merge(&patch)).await.map_err(Error::from)?;
            Ok(Ensured::Written)
        }
        None => {
            let object = json!({
                "apiVersion": "traefik.io/v1alpha1",
                "kind": "TraefikService",
                "metadata": {
                    "name": own,
                    "labels": {ROLLOUT: rollout},
                    "ownerReferences": ro.controller_owner_ref(&()).map(|o| vec![o]),
                },
                "spec": {"mirroring": wanted},
            });
            let object: DynamicObject = serde_json::from_value(object).map_err(Error::from)?;
            let params =
                PostParams { field_manager: Some(field_manager().to_string()), ..PostParams::default() };
            match api.create(&params, &object).await {
                Ok(_) => Ok(Ensured::Written),
                Err(kube::Error::Api(s)) if s.code == 404 => Err(RouterError::Spec(SpecProblem::invalid(
                    "traffic.gatewayAPI.mirror: TraefikService is not served by this cluster (install Traefik's CRDs, or use RequestMirror)",
                ))),
                Err(e) => Err(RouterError::Other(Error::from(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_route_refers_to_a_new_traefik_service_only_once_it_has_settled() {
        let created = Timestamp::from_second(1_800_000_000).expect("time");
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("time");
        assert!(!settled(Some(created), at(0)));
        assert!(!settled(Some(created), at(9)));
        assert!(settled(Some(created), at(10)));
        assert!(settled(None, at(0)), "unknown creation: not held back");
        assert!(settled(Some(created), at(-30)), "a clock behind the API server's does not hold it for ever");
    }
}
