//! Scenario 17: a data plane that does not split traffic as the route asks is noticed. Traefik's
//! weighted round-robin starts over on every configuration reload, and its first hundred picks
//! then skip a 1 % backend; an unrelated route changed every second (as on a busy cluster)
//! starves the canary. rollgate compares the canary's share of the step's requests with the
//! weight and says so: `TrafficSplitDiverged=True` and a Warning Event with both figures.

use std::time::Duration;

use kube::Api;
use kube::api::{DynamicObject, Patch, PatchParams};
use rollgate_crds::rollout::Phase;
use serde_json::json;

use super::common::{Cluster, Controller, Load, OnFailure, http_route_resource, rollout_yaml, wait_until};

const NAME: &str = "web";
const RPS: u32 = 40;

/// Two steps, 1 % then 100 %, and a minimum hold long enough for the split to be judged.
fn yaml(c: &Cluster, ns: &str, version: &str) -> String {
    rollout_yaml(ns, NAME, version, &[], "")
        .replace("PROMETHEUS", &c.prometheus)
        .replace("  replicas: 1\n", "  replicas: 1\n  steps: [{weight: 1}, {weight: 100}]\n")
        .replace("minHealthy: 10s", "minHealthy: 10m")
}

/// A route of no Rollout, through the same Gateway: changing it reloads the gateway.
fn churn_route(ns: &str, host: &str) -> serde_json::Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": "churn", "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "rollgate-demo", "namespace": "default"}],
            "hostnames": [host],
            "rules": [{"backendRefs": [{"name": format!("{NAME}-stable"), "port": 80}]}],
        }
    })
}

fn diverged(st: &rollgate_crds::RolloutStatus) -> Option<String> {
    st.conditions
        .iter()
        .find(|c| c.type_ == "TrafficSplitDiverged" && c.status == "True")
        .map(|c| c.message.clone())
}

#[tokio::test]
async fn scenario_17_a_canary_the_gateway_starves_is_reported_as_a_diverged_split() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-split").await;
    let mut guard = OnFailure::new(&c, &ns);
    let ctl = Controller::start(&c, &ns).await;
    guard.watch(&ctl);
    let (ok, out) = c.apply(&yaml(&c, &ns, "v1")).await;
    assert!(ok, "{out}");
    wait_until("v1 promoted as stable", Duration::from_secs(120), || async {
        c.status(&ns, NAME).await.phase == Some(Phase::Promoted)
    })
    .await;
    let load = Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("{NAME}.{ns}.e2e"), RPS, 4);

    // Another team's route changes every second: the gateway reloads about every 2 s (its
    // providers' throttle), fewer than 100 requests apart.
    let routes: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), &ns, &http_route_resource());
    let churn = {
        let routes = routes.clone();
        let ns = ns.clone();
        tokio::spawn(async move {
            for i in 0u64.. {
                let route = churn_route(&ns, &format!("churn-{}.{ns}.e2e", i % 2));
                let pp = PatchParams::apply("e2e-churn").force();
                let _ = routes.patch("churn", &pp, &Patch::Apply(&route)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };

    let (ok, out) = c.apply(&yaml(&c, &ns, "v2")).await;
    assert!(ok, "{out}");
    wait_until("TrafficSplitDiverged", Duration::from_secs(240), || async {
        diverged(&c.status(&ns, NAME).await).is_some()
    })
    .await;
    churn.abort();
    let st = c.status(&ns, NAME).await;
    let message = diverged(&st).unwrap_or_default();
    assert!(
        message.starts_with("the canary answered ") && message.contains("at weight 1 %, where about"),
        "{message}"
    );
    assert_eq!(st.canary_weight, 1, "still at the first step: {st:?}");
    let events = c.events(&ns);
    assert!(
        events.contains("reason: TrafficSplitDiverged")
            && events.contains("the data plane does not split traffic as the route asks"),
        "a Warning Event names it:\n{events}"
    );
    let seen = load.stop().await;
    let v2 = seen.iter().filter(|s| s.version == "v2").count();
    let failed = seen.iter().filter(|s| s.status != 200).count();
    assert_eq!(failed, 0, "{failed} of {} requests failed", seen.len());
    super::common::report(
        &c,
        "scenario-17-split",
        json!({"requests": seen.len(), "canary_requests": v2, "condition": message}),
    );
    ctl.kill().await;
}
