//! Taking over a user's HTTPRoute (`traffic.gatewayAPI.service`) against the stateful fake: the
//! finalizer first, the route moved to rollgate's Services only once stable serves, canary pods
//! kept out of the user's Service, the route given back before the finalizer goes, and a
//! second Rollout taking the same Service refused, naming the first.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rollgate_crds::labels::FINALIZER_RESTORE_ROUTE;

use super::*;

const THEIR_SERVICE: &str = "/api/v1/namespaces/shop/services/shop";
const ORIGINAL: &str = r#"{"name":"shop","port":8080}"#;

fn their_route() -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop", "generation": 1, "resourceVersion": "1"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "shop", "port": 8080}]}]},
    })
}

fn taking_over(name: &str) -> Rollout {
    let mut spec = RolloutSpec::test();
    if let Some(gw) = spec.traffic.gateway_api.as_mut() {
        gw.service = Some("shop".into());
    }
    let labels = [("app", "web"), ("team", "a")].map(|(k, v)| (k.to_string(), v.to_string()));
    spec.template = PodTemplateSpec {
        metadata: Some(ObjectMeta { labels: Some(labels.into_iter().collect()), ..Default::default() }),
        ..spec.template
    };
    let mut ro = rollout(spec, None);
    ro.metadata.name = Some(name.into());
    ro
}

fn with_their_objects(ro: &Rollout) -> Harness {
    let h = Harness::new(ro, 0.0, 0.0);
    h.fake.put(ROUTE, their_route());
    h.fake.put(
        THEIR_SERVICE,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop", "namespace": "shop"},
               "spec": {"selector": {"app": "web"}, "ports": [{"port": 8080}]}}),
    );
    h
}

fn backends(h: &Harness) -> Value {
    h.fake.get(ROUTE).unwrap_or_default()["spec"]["rules"][0]["backendRefs"].clone()
}

#[tokio::test]
async fn the_users_route_is_taken_over_once_stable_serves_and_given_back() {
    let h = with_their_objects(&taking_over("web"));
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("first pass");
    assert!(h.rollout().metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER_RESTORE_ROUTE));
    assert_eq!(backends(&h), json!([{"name": "shop", "port": 8080}]), "not before stable serves");

    h.pass(&ctl, 5).await.expect("second pass");
    assert_eq!(h.status().phase, Some(Phase::Promoted));
    assert_eq!(
        backends(&h),
        json!([{"name": "web-stable", "port": 80, "weight": 100}, {"name": "web-canary", "port": 80, "weight": 0}])
    );
    let route = h.fake.get(ROUTE).unwrap_or_default();
    assert_eq!(route["metadata"]["annotations"]["backends.rollgate.dev/web"], ORIGINAL);

    // A new version: canary pods lack the label the user's Service selects on.
    let mut ro = serde_json::to_value(h.rollout()).unwrap_or_default();
    ro["spec"]["template"]["spec"]["containers"][0]["image"] = json!("registry.local/refserver:v2");
    ro["metadata"]["generation"] = json!(2);
    h.fake.put(ROLLOUT, ro);
    h.pass(&ctl, 5).await.expect("rollout pass");
    let canary = h.fake.get(DEPLOY_CANARY).expect("web-canary created");
    let labels = &canary["spec"]["template"]["metadata"]["labels"];
    assert!(labels.get("app").is_none(), "{labels}");
    assert_eq!(labels["team"], "a");

    // Deleted: the route goes back first; the finalizer goes once that is done.
    h.mark_deleted();
    let action = h.pass(&ctl, 1).await.expect("deletion pass");
    assert_eq!(action, Action::requeue(crate::plan::CONVERGE), "waits for the gateway");
    assert_eq!(backends(&h), json!([{"name": "shop", "port": 8080}]), "given back");
    let route = h.fake.get(ROUTE).unwrap_or_default();
    assert!(route["metadata"]["annotations"].get("backends.rollgate.dev/web").is_none_or(Value::is_null));
    assert!(h.rollout().metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER_RESTORE_ROUTE));
    h.pass(&ctl, 1).await.expect("release pass");
    assert!(h.rollout().metadata.finalizers.unwrap_or_default().is_empty(), "finalizer removed");
}

#[tokio::test]
async fn a_second_rollout_taking_the_same_service_is_refused_naming_the_first() {
    let h = with_their_objects(&taking_over("web"));
    let mut route = their_route();
    route["metadata"]["annotations"] = json!({"backends.rollgate.dev/first": ORIGINAL});
    route["spec"]["rules"][0]["backendRefs"] =
        json!([{"name": "first-stable", "weight": 100}, {"name": "first-canary", "weight": 0}]);
    h.fake.put(ROUTE, route);
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("a conflict is not an error");
    let invalid = h.status().conditions.into_iter().find(|c| c.type_ == "InvalidSpec" && c.status == "True");
    let invalid = invalid.expect("InvalidSpec");
    assert_eq!(invalid.reason, "NameConflict");
    assert!(invalid.message.contains("is taken over by Rollout \"first\""), "{}", invalid.message);
    assert!(h.fake.get(DEPLOY_STABLE).is_none(), "nothing created");
    assert!(h.rollout().metadata.finalizers.unwrap_or_default().is_empty(), "nothing to give back");
}

#[tokio::test]
async fn a_missing_service_is_named() {
    let h = with_their_objects(&taking_over("web"));
    h.fake.remove(THEIR_SERVICE);
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("not an error");
    let invalid = h.status().conditions.into_iter().find(|c| c.type_ == "InvalidSpec" && c.status == "True");
    let message = invalid.expect("InvalidSpec").message;
    assert!(message.contains("traffic.gatewayAPI.service: Service \"shop\" not found"), "{message}");
}
