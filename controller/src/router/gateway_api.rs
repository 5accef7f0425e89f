//! `gatewayAPI`: sets the `weight` of the `<name>-stable` and `<name>-canary` backendRefs in
//! every rule of an HTTPRoute that references both (stable `100 − w`, canary `w`).
//!
//! Written with server-side apply under the field manager `rollgate`. HTTPRoute `rules` is an
//! atomic list, so the apply carries the rules as read with only the two weights changed: the
//! rest of the route (parents, hostnames, matches, filters) is left as it was. The route is
//! typed here only as far as needed (`DynamicObject`), as the `gateway-api` crate does not yet
//! support kube 5.
//!
//! With `service`, a route that still sends to the user's Service reads as weight 0 (all
//! traffic reaches stable through it) and is taken over (see `takeover`) on the first weight
//! written; `restore` gives it back.

use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::BoxFuture;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;
use rollgate_crds::conditions::EventReason;
use serde_json::{Value, json};

use super::takeover::{self, Sending};
use super::{RouterError, RouterResult, TrafficRouter};
use crate::error::Error;
use crate::plan::SpecProblem;
use crate::scope::field_manager;
use crate::workload::{Role, name};

pub fn http_route_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

pub struct GatewayApi {
    client: Client,
    route: String,
    /// The user's Service whose rules are taken over (`traffic.gatewayAPI.service`).
    service: Option<String>,
    /// The last read found the route still sending to `service`.
    pending: AtomicBool,
}

impl GatewayApi {
    pub fn new(client: Client, route: String, service: Option<String>) -> Self {
        Self { client, route, service, pending: AtomicBool::new(false) }
    }

    fn api(&self, ro: &Rollout) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &ro.namespace().unwrap_or_default(), &http_route_resource())
    }

    async fn get(&self, ro: &Rollout) -> RouterResult<DynamicObject> {
        match self.api(ro).get_opt(&self.route).await.map_err(Error::from)? {
            Some(r) => Ok(r),
            None => Err(RouterError::Spec(SpecProblem::invalid(format!(
                "traffic.gatewayAPI.httpRoute: HTTPRoute {:?} not found in namespace {:?}",
                self.route,
                ro.namespace().unwrap_or_default()
            )))),
        }
    }

    /// Replaces the backendRefs to `service` by the two Services at `weight`, remembering the
    /// original on the route. The resourceVersion lets only one of two Rollouts racing for the
    /// same Service win; the other's retry finds the annotation and is refused.
    async fn take_over(&self, ro: &Rollout, route: &Value, service: &str, weight: i32) -> RouterResult<()> {
        let rollout = ro.name_any();
        let original = match takeover::sending(route, service) {
            Sending::Only(original) => original,
            Sending::Refused(why) => return Err(self.refused(&why)),
            Sending::Nowhere => return Err(self.nowhere(ro, service)),
        };
        let (stable, canary) = (name(&rollout, Role::Stable), name(&rollout, Role::Canary));
        let rules = takeover::taken_over(route, service, &stable, &canary, ro.spec.service.port, weight);
        let patch = json!({
            "metadata": {
                "resourceVersion": route.pointer("/metadata/resourceVersion"),
                "annotations": {takeover::annotation(&rollout): original.to_string()},
            },
            "spec": {"rules": rules},
        });
        self.api(ro).patch(&self.route, &merge_params(), &Patch::Merge(&patch)).await.map_err(Error::from)?;
        self.pending.store(false, Ordering::Relaxed);
        tracing::info!(route = %self.route, service, weight, "route taken over");
        Ok(())
    }

    /// Gives the route back its original backendRefs. True once the route is back and every
    /// gateway reporting on it has seen that (or there is nothing to give back).
    pub async fn restore(&self, ro: &Rollout) -> Result<bool, Error> {
        let Some(route) = self.api(ro).get_opt(&self.route).await? else {
            return Ok(true);
        };
        let rollout = ro.name_any();
        let value = serde_json::to_value(&route)?;
        let Some(original) = takeover::original(&value, &rollout) else {
            return Ok(takeover::accepted(&value));
        };
        let (stable, canary) = (name(&rollout, Role::Stable), name(&rollout, Role::Canary));
        let patch = json!({
            "metadata": {
                "resourceVersion": route.resource_version(),
                "annotations": {takeover::annotation(&rollout): null},
            },
            "spec": {"rules": takeover::restored(&value, &stable, &canary, &original)},
        });
        self.api(ro).patch(&self.route, &merge_params(), &Patch::Merge(&patch)).await?;
        tracing::info!(route = %self.route, backend = %original, "route given back");
        Ok(false)
    }

    fn refused(&self, why: &str) -> RouterError {
        RouterError::Spec(SpecProblem::invalid(format!(
            "traffic.gatewayAPI.service: HTTPRoute {:?}: {why}",
            self.route
        )))
    }

    fn nowhere(&self, ro: &Rollout, service: &str) -> RouterError {
        let rollout = ro.name_any();
        RouterError::Spec(SpecProblem::invalid(format!(
            "traffic.gatewayAPI.service: HTTPRoute {:?} has no rule whose backendRefs are Service {service:?} (to take over) or both {:?} and {:?}",
            self.route,
            name(&rollout, Role::Stable),
            name(&rollout, Role::Canary)
        )))
    }
}

fn merge_params() -> PatchParams {
    PatchParams { field_manager: Some(field_manager().to_string()), ..PatchParams::default() }
}

/// Canary percent of the first rule that references both Services.
pub fn weight_of(route: &Value, stable: &str, canary: &str) -> Option<i32> {
    rules(route).iter().find_map(|rule| {
        let refs = rule.get("backendRefs")?.as_array()?;
        let w = |n: &str| {
            refs.iter()
                .find(|r| is_service(r, n))
                .map(|r| r.get("weight").and_then(Value::as_i64).unwrap_or(1))
        };
        let (s, c) = (w(stable)?, w(canary)?);
        Some(if s + c == 0 { 0 } else { ((c * 100 + (s + c) / 2) / (s + c)) as i32 })
    })
}

/// The route's rules with the two weights set; `None` when no rule references both Services.
pub fn with_weight(route: &Value, stable: &str, canary: &str, weight: i32) -> Option<Vec<Value>> {
    let mut rules = rules(route).to_vec();
    let mut found = false;
    for rule in &mut rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else { continue };
        if !(refs.iter().any(|r| is_service(r, stable)) && refs.iter().any(|r| is_service(r, canary))) {
            continue;
        }
        found = true;
        for r in refs.iter_mut() {
            if is_service(r, stable) {
                r["weight"] = json!(100 - weight);
            } else if is_service(r, canary) {
                r["weight"] = json!(weight);
            }
        }
    }
    found.then_some(rules)
}

pub(super) fn rules(route: &Value) -> &[Value] {
    route.pointer("/spec/rules").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

pub(super) fn is_service(r: &Value, name: &str) -> bool {
    let kind_ok = r.get("kind").and_then(Value::as_str).is_none_or(|k| k == "Service");
    let group_ok = r.get("group").and_then(Value::as_str).is_none_or(str::is_empty);
    kind_ok && group_ok && r.get("name").and_then(Value::as_str) == Some(name)
}

fn missing_refs(route: &str, stable: &str, canary: &str) -> RouterError {
    RouterError::Spec(SpecProblem::invalid(format!(
        "traffic.gatewayAPI.httpRoute: HTTPRoute {route:?} has no rule whose backendRefs include both Services {stable:?} and {canary:?}"
    )))
}

impl TrafficRouter for GatewayApi {
    fn current_weight<'a>(&'a self, ro: &'a Rollout) -> BoxFuture<'a, RouterResult<Option<i32>>> {
        Box::pin(async move {
            let route = self.get(ro).await?;
            let rollout = ro.name_any();
            let (stable, canary) = (name(&rollout, Role::Stable), name(&rollout, Role::Canary));
            let value = serde_json::to_value(&route).map_err(Error::from)?;
            if let Some(w) = weight_of(&value, &stable, &canary) {
                return Ok(Some(w));
            }
            let Some(service) = &self.service else {
                return Err(missing_refs(&self.route, &stable, &canary));
            };
            if let Some(other) = takeover::taken_by_other(&value, service, &rollout) {
                return Err(RouterError::Spec(SpecProblem::with_reason(
                    EventReason::NameConflict,
                    format!(
                        "traffic.gatewayAPI.service: Service {service:?} in HTTPRoute {:?} is taken over by Rollout {other:?}",
                        self.route
                    ),
                )));
            }
            match takeover::sending(&value, service) {
                // Every request still reaches stable, through the user's Service.
                Sending::Only(_) => {
                    self.pending.store(true, Ordering::Relaxed);
                    Ok(Some(0))
                }
                Sending::Refused(why) => Err(self.refused(&why)),
                Sending::Nowhere => Err(self.nowhere(ro, service)),
            }
        })
    }

    fn takeover_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed)
    }

    fn apply_weight<'a>(&'a self, ro: &'a Rollout, weight: i32) -> BoxFuture<'a, RouterResult<()>> {
        Box::pin(async move {
            let route = self.get(ro).await?;
            let rollout = ro.name_any();
            let (stable, canary) = (name(&rollout, Role::Stable), name(&rollout, Role::Canary));
            let value = serde_json::to_value(&route).map_err(Error::from)?;
            let Some(rules) = with_weight(&value, &stable, &canary, weight) else {
                return match &self.service {
                    Some(service) => self.take_over(ro, &value, service, weight).await,
                    None => Err(missing_refs(&self.route, &stable, &canary)),
                };
            };
            let patch = json!({
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": { "name": self.route },
                "spec": { "rules": rules },
            });
            self.api(ro)
                .patch(&self.route, &PatchParams::apply(field_manager()).force(), &Patch::Apply(&patch))
                .await
                .map_err(Error::from)?;
            tracing::info!(route = %self.route, weight, "canary weight applied");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Value {
        json!({"spec": {
            "parentRefs": [{"name": "gw"}],
            "rules": [
                {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}], "backendRefs": [{"name": "admin", "port": 80}]},
                {"backendRefs": [
                    {"name": "web-stable", "port": 80, "weight": 100},
                    {"name": "web-canary", "port": 80, "weight": 0}
                ]}
            ]
        }})
    }

    #[test]
    fn reads_the_canary_share() {
        assert_eq!(weight_of(&route(), "web-stable", "web-canary"), Some(0));
        let r = json!({"spec": {"rules": [{"backendRefs": [{"name": "web-stable", "weight": 95}, {"name": "web-canary", "weight": 5}]}]}});
        assert_eq!(weight_of(&r, "web-stable", "web-canary"), Some(5));
        let defaults =
            json!({"spec": {"rules": [{"backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]}]}});
        assert_eq!(weight_of(&defaults, "web-stable", "web-canary"), Some(50), "weight defaults to 1 each");
        assert_eq!(weight_of(&route(), "other-stable", "other-canary"), None);
    }

    #[test]
    fn sets_only_the_two_weights() {
        let rules = with_weight(&route(), "web-stable", "web-canary", 5).expect("found");
        assert_eq!(rules[0], route()["spec"]["rules"][0], "other rules untouched");
        assert_eq!(rules[1]["backendRefs"][0]["weight"], 95);
        assert_eq!(rules[1]["backendRefs"][1]["weight"], 5);
        assert_eq!(rules[1]["backendRefs"][1]["port"], 80);
        assert_eq!(with_weight(&route(), "a", "b", 5), None);
    }

    #[test]
    fn other_kinds_of_backend_are_not_services() {
        let r = json!({"spec": {"rules": [{"backendRefs": [
            {"name": "web-stable", "kind": "Service"},
            {"name": "web-canary", "group": "example.com", "kind": "Bucket"}
        ]}]}});
        assert_eq!(weight_of(&r, "web-stable", "web-canary"), None);
    }
}
