//! Taking over a user's HTTPRoute (`traffic.gatewayAPI.service`): the rules whose only backend
//! is the user's Service get rollgate's two backendRefs instead, and get the original back when
//! the Rollout goes. The original is kept on the route itself, in the annotation
//! `backends.rollgate.dev/<rollout>`, so it survives a controller restart and tells a second
//! Rollout which one took the Service first.
//!
//! Pure functions over the route as JSON; the writes are `GatewayApi`'s.

use rollgate_crds::labels::TAKEN_OVER_PREFIX;
use serde_json::{Value, json};

/// The annotation holding what `rollout` took over.
pub fn annotation(rollout: &str) -> String {
    format!("{TAKEN_OVER_PREFIX}/{rollout}")
}

/// The original backendRef `rollout` took over, from the route's annotation.
pub fn original(route: &Value, rollout: &str) -> Option<Value> {
    let raw = route.pointer("/metadata/annotations")?.get(annotation(rollout))?.as_str()?;
    serde_json::from_str(raw).ok()
}

/// Another Rollout that took over `service` on this route, if any.
pub fn taken_by_other(route: &Value, service: &str, rollout: &str) -> Option<String> {
    let annotations = route.pointer("/metadata/annotations")?.as_object()?;
    annotations.iter().find_map(|(key, raw)| {
        let other = key.strip_prefix(TAKEN_OVER_PREFIX)?.strip_prefix('/')?;
        let reference: Value = serde_json::from_str(raw.as_str()?).ok()?;
        (other != rollout && super::gateway_api::is_service(&reference, service)).then(|| other.to_string())
    })
}

/// What the route's rules say about `service`.
#[derive(Debug, PartialEq)]
pub enum Sending {
    /// No rule sends to it.
    Nowhere,
    /// Some rules send only to it, all through this backendRef.
    Only(Value),
    /// It cannot be taken over; the reason.
    Refused(String),
}

/// How the route's rules send to `service`.
pub fn sending(route: &Value, service: &str) -> Sending {
    let mut found: Option<Value> = None;
    for (i, rule) in super::gateway_api::rules(route).iter().enumerate() {
        let refs = rule.get("backendRefs").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        let Some(reference) = refs.iter().find(|r| super::gateway_api::is_service(r, service)) else {
            continue;
        };
        if refs.len() > 1 {
            return Sending::Refused(format!(
                "rule {i} sends to Service {service:?} and to other backends; only rules whose one backend is {service:?} can be taken over"
            ));
        }
        if reference.get("namespace").and_then(Value::as_str).is_some() {
            return Sending::Refused(format!(
                "rule {i} sends to Service {service:?} in another namespace; only a Service in the Rollout's namespace can be taken over"
            ));
        }
        match &found {
            Some(first) if first != reference => {
                return Sending::Refused(format!(
                    "rules send to Service {service:?} through different backendRefs ({first} and {reference}); make them the same"
                ));
            }
            _ => found = Some(reference.clone()),
        }
    }
    found.map_or(Sending::Nowhere, Sending::Only)
}

/// The route's rules with every backendRef to `service` (the only one in its rule) replaced by
/// `stable` and `canary` on `port`, weighted `100 − weight` and `weight`.
pub fn taken_over(
    route: &Value,
    service: &str,
    stable: &str,
    canary: &str,
    port: i32,
    weight: i32,
) -> Vec<Value> {
    let mut rules = super::gateway_api::rules(route).to_vec();
    for rule in &mut rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else { continue };
        if let [only] = refs.as_slice()
            && super::gateway_api::is_service(only, service)
        {
            let with = |name: &str, w: i32| {
                let mut r = only.clone();
                r["name"] = json!(name);
                r["port"] = json!(port);
                r["weight"] = json!(w);
                r
            };
            *refs = vec![with(stable, 100 - weight), with(canary, weight)];
        }
    }
    rules
}

/// The route's rules with every rule sending to exactly `stable` and `canary` given back its
/// `original` backendRef.
pub fn restored(route: &Value, stable: &str, canary: &str, original: &Value) -> Vec<Value> {
    let mut rules = super::gateway_api::rules(route).to_vec();
    for rule in &mut rules {
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else { continue };
        let ours = |r: &Value| {
            super::gateway_api::is_service(r, stable) || super::gateway_api::is_service(r, canary)
        };
        if refs.len() == 2 && refs.iter().all(ours) {
            *refs = vec![original.clone()];
        }
    }
    rules
}

/// Whether every gateway that reports on the route has seen its current generation (a route
/// no gateway reports on counts as seen: nothing else will ever say so).
pub fn accepted(route: &Value) -> bool {
    let generation = route.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
    let parents = route.pointer("/status/parents").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    parents.iter().all(|p| {
        let conditions = p.get("conditions").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
        conditions
            .iter()
            .any(|c| c.get("observedGeneration").and_then(Value::as_i64).unwrap_or(0) >= generation)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Value {
        json!({
            "metadata": {"generation": 3},
            "spec": {"rules": [
                {"matches": [{"path": {"value": "/admin"}}], "backendRefs": [{"name": "admin", "port": 80}]},
                {"backendRefs": [{"name": "shop", "port": 8080}]},
                {"matches": [{"path": {"value": "/api"}}], "backendRefs": [{"name": "shop", "port": 8080}], "filters": []},
            ]},
        })
    }

    #[test]
    fn rules_whose_only_backend_is_the_service_are_taken_over_and_given_back() {
        let original = json!({"name": "shop", "port": 8080});
        assert_eq!(sending(&route(), "shop"), Sending::Only(original.clone()));
        assert_eq!(sending(&route(), "cart"), Sending::Nowhere);
        let rules = taken_over(&route(), "shop", "web-stable", "web-canary", 80, 5);
        assert_eq!(rules[0], route()["spec"]["rules"][0], "other rules untouched");
        for rule in &rules[1..] {
            assert_eq!(
                rule["backendRefs"],
                json!([{"name": "web-stable", "port": 80, "weight": 95}, {"name": "web-canary", "port": 80, "weight": 5}])
            );
        }
        assert_eq!(rules[2]["matches"], route()["spec"]["rules"][2]["matches"], "matches kept");
        let mut now = route();
        now["spec"]["rules"] = json!(rules);
        assert_eq!(sending(&now, "shop"), Sending::Nowhere);
        assert_eq!(
            super::super::gateway_api::weight_of(
                &now,
                &super::super::mirror::Backends {
                    stable: "web-stable".into(),
                    canary: "web-canary".into(),
                    shadow: "web-shadow".into(),
                    port: 80
                }
            ),
            Some(5)
        );
        let back = restored(&now, "web-stable", "web-canary", &original);
        assert_eq!(json!(back), route()["spec"]["rules"]);
    }

    #[test]
    fn a_rule_shared_with_other_backends_or_another_namespace_is_refused() {
        let shared = json!({"spec": {"rules": [{"backendRefs": [{"name": "shop"}, {"name": "other"}]}]}});
        let Sending::Refused(why) = sending(&shared, "shop") else { panic!("not refused") };
        assert!(why.contains("rule 0 sends to Service \"shop\" and to other backends"), "{why}");
        let elsewhere = json!({"spec": {"rules": [{"backendRefs": [{"name": "shop", "namespace": "b"}]}]}});
        assert!(
            matches!(sending(&elsewhere, "shop"), Sending::Refused(w) if w.contains("another namespace"))
        );
        let ports = json!({"spec": {"rules": [{"backendRefs": [{"name": "shop", "port": 80}]}, {"backendRefs": [{"name": "shop", "port": 81}]}]}});
        assert!(
            matches!(sending(&ports, "shop"), Sending::Refused(w) if w.contains("different backendRefs"))
        );
    }

    #[test]
    fn the_annotation_names_the_rollout_that_took_the_service() {
        let mut r = route();
        r["metadata"]["annotations"] =
            json!({annotation("first"): r#"{"name":"shop","port":8080}"#, "other": "x"});
        assert_eq!(taken_by_other(&r, "shop", "second").as_deref(), Some("first"));
        assert_eq!(taken_by_other(&r, "shop", "first"), None, "its own claim");
        assert_eq!(taken_by_other(&r, "cart", "second"), None);
        assert_eq!(original(&r, "first"), Some(json!({"name": "shop", "port": 8080})));
    }

    #[test]
    fn a_route_is_accepted_once_every_parent_saw_its_generation() {
        let mut r = route();
        assert!(accepted(&r), "no gateway reports");
        r["status"] = json!({"parents": [{"conditions": [{"type": "Accepted", "observedGeneration": 2}]}]});
        assert!(!accepted(&r));
        r["status"]["parents"][0]["conditions"][0]["observedGeneration"] = json!(3);
        assert!(accepted(&r));
    }
}
