//! `gatewayAPI`: sets the `weight` of the `<name>-stable` and `<name>-canary` backendRefs in
//! every rule of an HTTPRoute that references both (stable `100 − w`, canary `w`).
//!
//! Written with server-side apply under the field manager `rollgate`. HTTPRoute `rules` is an
//! atomic list, so the apply carries the rules as read with only the two weights changed: the
//! rest of the route (parents, hostnames, matches, filters) is left as it was. The route is
//! typed here only as far as needed (`DynamicObject`), as the `gateway-api` crate does not yet
//! support kube 5.

use futures::future::BoxFuture;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;
use serde_json::{Value, json};

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
}

impl GatewayApi {
    pub fn new(client: Client, route: String) -> Self {
        Self { client, route }
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

fn rules(route: &Value) -> &[Value] {
    route.pointer("/spec/rules").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn is_service(r: &Value, name: &str) -> bool {
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
            match weight_of(&value, &stable, &canary) {
                Some(w) => Ok(Some(w)),
                None => Err(missing_refs(&self.route, &stable, &canary)),
            }
        })
    }

    fn apply_weight<'a>(&'a self, ro: &'a Rollout, weight: i32) -> BoxFuture<'a, RouterResult<()>> {
        Box::pin(async move {
            let route = self.get(ro).await?;
            let rollout = ro.name_any();
            let (stable, canary) = (name(&rollout, Role::Stable), name(&rollout, Role::Canary));
            let value = serde_json::to_value(&route).map_err(Error::from)?;
            let rules = with_weight(&value, &stable, &canary, weight)
                .ok_or_else(|| missing_refs(&self.route, &stable, &canary))?;
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
