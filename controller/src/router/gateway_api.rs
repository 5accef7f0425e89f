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

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use futures::future::BoxFuture;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;
use rollgate_crds::conditions::EventReason;
use rollgate_crds::rollout::Mirror;
use serde_json::{Value, json};

use super::mirror::{self, Backends};
use super::takeover::{self, Sending};
use super::traefik_service::{self, Ensured};
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
    /// How a shadow step copies requests (`traffic.gatewayAPI.mirror`).
    mirror: Mirror,
    /// The last read found the route still sending to `service`.
    pending: AtomicBool,
    /// Percent mirrored to the canary at the last read.
    mirrored: AtomicI32,
    /// This pass's time (when a new TraefikService has settled).
    now: k8s_openapi::jiff::Timestamp,
}

impl GatewayApi {
    pub fn new(client: Client, route: String, service: Option<String>, mirror: Mirror) -> Self {
        Self {
            client,
            route,
            service,
            mirror,
            pending: AtomicBool::new(false),
            mirrored: AtomicI32::new(0),
            now: k8s_openapi::jiff::Timestamp::now(),
        }
    }

    /// The same, for a pass at `now`.
    pub fn at(self, now: k8s_openapi::jiff::Timestamp) -> Self {
        Self { now, ..self }
    }

    fn backends(ro: &Rollout) -> Backends {
        let rollout = ro.name_any();
        Backends {
            stable: name(&rollout, Role::Stable),
            canary: name(&rollout, Role::Canary),
            shadow: traefik_service::name(&rollout),
            port: ro.spec.service.port,
        }
    }

    /// Percent of requests the route copies to the canary now. With Traefik, a Rollout with a
    /// shadow step reads its TraefikService on every pass, so one of that name it does not own
    /// is an `InvalidSpec` before anything is written.
    async fn mirrored_now(&self, ro: &Rollout, route: &Value, b: &Backends) -> RouterResult<i32> {
        match self.mirror {
            Mirror::RequestMirror => Ok(mirror::request_mirror_percent(route, b)),
            Mirror::TraefikService => {
                let on = mirror::traefik_mirroring(route, b);
                if !on && !ro.spec.steps.iter().any(|s| s.shadow.is_some()) {
                    return Ok(0);
                }
                let percent = traefik_service::percent(&self.client, ro).await?;
                // A route sending to a TraefikService that is gone: unknown, so set again.
                Ok(if on { percent.unwrap_or(-1) } else { 0 })
            }
        }
    }

    /// Writes the route's rules (server-side apply of `rules` alone).
    async fn write_rules(&self, ro: &Rollout, rules: Vec<Value>) -> RouterResult<()> {
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
        Ok(())
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
        let mut value = serde_json::to_value(&route)?;
        // Stable's backendRef as it is outside a shadow step, so the original replaces it.
        if let Some(rules) = mirror::with_traefik_mirror(&value, &Self::backends(ro), false) {
            value["spec"]["rules"] = Value::Array(rules);
        }
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
pub fn weight_of(route: &Value, b: &Backends) -> Option<i32> {
    rules(route).iter().find_map(|rule| {
        let refs = rule.get("backendRefs")?.as_array()?;
        let w = |is: &dyn Fn(&Value) -> bool| {
            refs.iter().find(|r| is(r)).map(|r| r.get("weight").and_then(Value::as_i64).unwrap_or(1))
        };
        let (s, c) = (w(&|r| b.is_stable(r))?, w(&|r| b.is_canary(r))?);
        Some(if s + c == 0 { 0 } else { ((c * 100 + (s + c) / 2) / (s + c)) as i32 })
    })
}

/// The route's rules with the two weights set; `None` when no rule references both Services.
pub fn with_weight(route: &Value, b: &Backends, weight: i32) -> Option<Vec<Value>> {
    let mut rules = rules(route).to_vec();
    let mut found = false;
    for rule in rules.iter_mut().filter(|r| b.in_rule(r)) {
        found = true;
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else { continue };
        for r in refs.iter_mut() {
            if b.is_stable(r) {
                r["weight"] = json!(100 - weight);
            } else if b.is_canary(r) {
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
            let b = Self::backends(ro);
            let (stable, canary) = (&b.stable, &b.canary);
            let value = serde_json::to_value(&route).map_err(Error::from)?;
            if let Some(w) = weight_of(&value, &b) {
                self.mirrored.store(self.mirrored_now(ro, &value, &b).await?, Ordering::Relaxed);
                return Ok(Some(w));
            }
            self.mirrored.store(0, Ordering::Relaxed);
            let Some(service) = &self.service else {
                return Err(missing_refs(&self.route, stable, canary));
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

    fn mirrored(&self) -> i32 {
        self.mirrored.load(Ordering::Relaxed)
    }

    fn apply_mirror<'a>(&'a self, ro: &'a Rollout, percent: i32) -> BoxFuture<'a, RouterResult<()>> {
        Box::pin(async move {
            let value = serde_json::to_value(self.get(ro).await?).map_err(Error::from)?;
            let b = Self::backends(ro);
            let rules = match self.mirror {
                Mirror::RequestMirror => mirror::with_request_mirror(&value, &b, percent),
                Mirror::TraefikService => {
                    let on = percent > 0;
                    if on && !mirror::traefik_mirroring(&value, &b) {
                        // The route refers to it only once it has settled (`SETTLE`), so stable's
                        // requests never go to a service Traefik does not know yet.
                        match traefik_service::ensure(&self.client, ro, percent, self.now).await? {
                            Ensured::Settled => {}
                            Ensured::Written | Ensured::Settling => {
                                tracing::info!(route = %self.route, percent, "mirroring TraefikService written; the route follows once it has settled");
                                return Ok(());
                            }
                        }
                    } else if on {
                        traefik_service::ensure(&self.client, ro, percent, self.now).await?;
                    }
                    mirror::with_traefik_mirror(&value, &b, on)
                }
            };
            let rules = rules.ok_or_else(|| missing_refs(&self.route, &b.stable, &b.canary))?;
            self.write_rules(ro, rules).await?;
            tracing::info!(route = %self.route, percent, mirror = ?self.mirror, "canary mirror applied");
            Ok(())
        })
    }

    fn apply_weight<'a>(&'a self, ro: &'a Rollout, weight: i32) -> BoxFuture<'a, RouterResult<()>> {
        Box::pin(async move {
            let route = self.get(ro).await?;
            let b = Self::backends(ro);
            let value = serde_json::to_value(&route).map_err(Error::from)?;
            let Some(rules) = with_weight(&value, &b, weight) else {
                return match &self.service {
                    Some(service) => self.take_over(ro, &value, service, weight).await,
                    None => Err(missing_refs(&self.route, &b.stable, &b.canary)),
                };
            };
            self.write_rules(ro, rules).await?;
            tracing::info!(route = %self.route, weight, "canary weight applied");
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> Backends {
        Backends {
            stable: "web-stable".into(),
            canary: "web-canary".into(),
            shadow: "web-shadow".into(),
            port: 80,
        }
    }

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
        assert_eq!(weight_of(&route(), &web()), Some(0));
        let r = json!({"spec": {"rules": [{"backendRefs": [{"name": "web-stable", "weight": 95}, {"name": "web-canary", "weight": 5}]}]}});
        assert_eq!(weight_of(&r, &web()), Some(5));
        let defaults =
            json!({"spec": {"rules": [{"backendRefs": [{"name": "web-stable"}, {"name": "web-canary"}]}]}});
        assert_eq!(weight_of(&defaults, &web()), Some(50), "weight defaults to 1 each");
        assert_eq!(
            weight_of(
                &route(),
                &Backends { stable: "other-stable".into(), canary: "other-canary".into(), ..web() }
            ),
            None
        );
    }

    #[test]
    fn sets_only_the_two_weights() {
        let rules = with_weight(&route(), &web(), 5).expect("found");
        assert_eq!(rules[0], route()["spec"]["rules"][0], "other rules untouched");
        assert_eq!(rules[1]["backendRefs"][0]["weight"], 95);
        assert_eq!(rules[1]["backendRefs"][1]["weight"], 5);
        assert_eq!(rules[1]["backendRefs"][1]["port"], 80);
        assert_eq!(
            with_weight(&route(), &Backends { stable: "a".into(), canary: "b".into(), ..web() }, 5),
            None
        );
    }

    #[test]
    fn other_kinds_of_backend_are_not_services() {
        let r = json!({"spec": {"rules": [{"backendRefs": [
            {"name": "web-stable", "kind": "Service"},
            {"name": "web-canary", "group": "example.com", "kind": "Bucket"}
        ]}]}});
        assert_eq!(weight_of(&r, &web()), None);
    }
}
