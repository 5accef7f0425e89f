//! A shadow step's copies of requests, as an HTTPRoute says them: a `RequestMirror` filter on
//! the rules that reference the two Services, or (for Traefik) the stable backendRef replaced
//! by a mirroring `TraefikService` that sends to stable and copies a share to the canary.
//!
//! Pure functions over the route as JSON; the writes are `GatewayApi`'s.

use serde_json::{Value, json};

use super::gateway_api::{is_service, rules};

const TRAEFIK_GROUP: &str = "traefik.io";
const TRAEFIK_KIND: &str = "TraefikService";

/// The backends a Rollout's route rules reference: its two Services, and the TraefikService
/// that stands in for stable while Traefik mirrors.
#[derive(Debug, Clone)]
pub struct Backends {
    pub stable: String,
    pub canary: String,
    pub shadow: String,
    /// `service.port`, which a Service backendRef needs.
    pub port: i32,
}

impl Backends {
    /// Stable as the route sends to it: its Service, or the TraefikService mirroring it.
    pub fn is_stable(&self, r: &Value) -> bool {
        is_service(r, &self.stable) || is_traefik_service(r, &self.shadow)
    }

    pub fn is_canary(&self, r: &Value) -> bool {
        is_service(r, &self.canary)
    }

    /// Whether a rule references both stable and the canary.
    pub fn in_rule(&self, rule: &Value) -> bool {
        let refs = backend_refs(rule);
        refs.iter().any(|r| self.is_stable(r)) && refs.iter().any(|r| self.is_canary(r))
    }
}

fn backend_refs(rule: &Value) -> &[Value] {
    rule.get("backendRefs").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn is_traefik_service(r: &Value, name: &str) -> bool {
    r.get("group").and_then(Value::as_str) == Some(TRAEFIK_GROUP)
        && r.get("kind").and_then(Value::as_str) == Some(TRAEFIK_KIND)
        && r.get("name").and_then(Value::as_str) == Some(name)
}

fn is_mirror_to(filter: &Value, canary: &str) -> bool {
    filter.get("type").and_then(Value::as_str) == Some("RequestMirror")
        && filter.pointer("/requestMirror/backendRef").is_some_and(|r| is_service(r, canary))
}

/// Percent mirrored to the canary by a `RequestMirror` filter of the first rule referencing both
/// Services (0: none). Neither `percent` nor `fraction` means every request.
pub fn request_mirror_percent(route: &Value, b: &Backends) -> i32 {
    let Some(rule) = rules(route).iter().find(|r| b.in_rule(r)) else { return 0 };
    let filters = rule.get("filters").and_then(Value::as_array).map_or(&[][..], Vec::as_slice);
    let Some(mirror) = filters.iter().find(|f| is_mirror_to(f, &b.canary)) else { return 0 };
    let spec = &mirror["requestMirror"];
    if let Some(p) = spec.get("percent").and_then(Value::as_i64) {
        return p as i32;
    }
    match (spec.pointer("/fraction/numerator").and_then(Value::as_i64), spec.pointer("/fraction/denominator"))
    {
        (Some(n), d) => {
            let d = d.and_then(Value::as_i64).filter(|d| *d > 0).unwrap_or(100);
            ((n * 100 + d / 2) / d) as i32
        }
        (None, _) => 100,
    }
}

/// The route's rules with the canary mirrored at `percent` (0: the filter removed) on every
/// rule referencing both Services; `None` when no rule does. The user's own filters stay.
pub fn with_request_mirror(route: &Value, b: &Backends, percent: i32) -> Option<Vec<Value>> {
    let mut rules = rules(route).to_vec();
    let mut found = false;
    for rule in rules.iter_mut().filter(|r| b.in_rule(r)) {
        found = true;
        let mut filters: Vec<Value> = rule
            .get("filters")
            .and_then(Value::as_array)
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter(|f| !is_mirror_to(f, &b.canary))
            .cloned()
            .collect();
        if percent > 0 {
            filters.push(json!({
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": b.canary, "port": b.port}, "percent": percent},
            }));
        }
        match rule.as_object_mut() {
            Some(obj) if filters.is_empty() => {
                obj.remove("filters");
            }
            Some(obj) => {
                obj.insert("filters".into(), Value::Array(filters));
            }
            None => {}
        }
    }
    found.then_some(rules)
}

/// Whether the route sends stable's share through the mirroring TraefikService.
pub fn traefik_mirroring(route: &Value, b: &Backends) -> bool {
    rules(route)
        .iter()
        .filter(|r| b.in_rule(r))
        .any(|r| backend_refs(r).iter().any(|x| is_traefik_service(x, &b.shadow)))
}

/// The route's rules with stable's backendRef sent through the TraefikService (`on`) or
/// straight to its Service, its weight kept; `None` when no rule references both.
pub fn with_traefik_mirror(route: &Value, b: &Backends, on: bool) -> Option<Vec<Value>> {
    let mut rules = rules(route).to_vec();
    let mut found = false;
    for rule in rules.iter_mut().filter(|r| b.in_rule(r)) {
        found = true;
        let Some(refs) = rule.get_mut("backendRefs").and_then(Value::as_array_mut) else { continue };
        // Only the name, kind and port change: the weight and any filters of the ref stay.
        for r in refs.iter_mut() {
            let (to_stable, to_shadow) = (is_service(r, &b.stable), is_traefik_service(r, &b.shadow));
            let Some(obj) = r.as_object_mut() else { continue };
            if on && to_stable {
                obj.insert("group".into(), json!(TRAEFIK_GROUP));
                obj.insert("kind".into(), json!(TRAEFIK_KIND));
                obj.insert("name".into(), json!(b.shadow));
                obj.remove("port");
            } else if !on && to_shadow {
                obj.remove("group");
                obj.remove("kind");
                obj.insert("name".into(), json!(b.stable));
                obj.insert("port".into(), json!(b.port));
            }
        }
    }
    found.then_some(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Backends {
        Backends {
            stable: "web-stable".into(),
            canary: "web-canary".into(),
            shadow: "web-shadow".into(),
            port: 80,
        }
    }

    fn route() -> Value {
        json!({"spec": {"rules": [
            {"matches": [{"path": {"type": "PathPrefix", "value": "/admin"}}], "backendRefs": [{"name": "admin", "port": 80}]},
            {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": [{"name": "x", "value": "1"}]}}],
             "backendRefs": [
                {"name": "web-stable", "port": 80, "weight": 100},
                {"name": "web-canary", "port": 80, "weight": 0}
            ]}
        ]}})
    }

    fn with_rules(rules: Vec<Value>) -> Value {
        json!({"spec": {"rules": rules}})
    }

    #[test]
    fn a_request_mirror_is_added_beside_the_users_filters_and_removed_again() {
        let b = backends();
        assert_eq!(request_mirror_percent(&route(), &b), 0);
        let on = with_rules(with_request_mirror(&route(), &b, 20).expect("rule found"));
        assert_eq!(request_mirror_percent(&on, &b), 20);
        let filters = on["spec"]["rules"][1]["filters"].as_array().expect("filters");
        assert_eq!(filters.len(), 2, "the user's header filter stays: {filters:?}");
        assert_eq!(filters[1]["requestMirror"]["backendRef"], json!({"name": "web-canary", "port": 80}));
        assert_eq!(on["spec"]["rules"][0], route()["spec"]["rules"][0], "other rules untouched");
        let again = with_rules(with_request_mirror(&on, &b, 30).expect("rule found"));
        assert_eq!(
            again["spec"]["rules"][1]["filters"].as_array().map(Vec::len),
            Some(2),
            "replaced, not added"
        );
        let off = with_rules(with_request_mirror(&again, &b, 0).expect("rule found"));
        assert_eq!(off, route());
        assert_eq!(with_request_mirror(&route(), &Backends { canary: "x".into(), ..b }, 5), None);
    }

    #[test]
    fn a_mirror_without_percent_copies_every_request_and_a_fraction_is_read() {
        let b = backends();
        let mut r = route();
        r["spec"]["rules"][1]["filters"] = json!([{"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "web-canary", "port": 80}}}]);
        assert_eq!(request_mirror_percent(&r, &b), 100);
        r["spec"]["rules"][1]["filters"][0]["requestMirror"]["fraction"] =
            json!({"numerator": 1, "denominator": 8});
        assert_eq!(request_mirror_percent(&r, &b), 13);
    }

    #[test]
    fn traefik_mirroring_swaps_stables_backend_and_back() {
        let b = backends();
        assert!(!traefik_mirroring(&route(), &b));
        let on = with_rules(with_traefik_mirror(&route(), &b, true).expect("rule found"));
        assert!(traefik_mirroring(&on, &b));
        assert_eq!(
            on["spec"]["rules"][1]["backendRefs"][0],
            json!({"group": "traefik.io", "kind": "TraefikService", "name": "web-shadow", "weight": 100})
        );
        assert!(b.in_rule(&on["spec"]["rules"][1]), "the TraefikService stands for stable");
        let off = with_rules(with_traefik_mirror(&on, &b, false).expect("rule found"));
        assert_eq!(off, route());
    }
}
