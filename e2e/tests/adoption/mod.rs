//! Scenario 18: a team already runs a Deployment behind its own Service and HTTPRoute, and hands
//! both to rollgate with `spec.workloadRef` and `traffic.gatewayAPI.service`. rollgate runs its
//! template, scales it to zero once its own stable serves, takes over the route's rule, rolls
//! out a change made to that Deployment through the team's own route, keeps canary pods out of
//! the team's Service, refuses a second Rollout claiming the same Deployment or the same route
//! rule and a reference to a missing Deployment, and on deletion gives the route and the
//! Deployment back, serving, before its own pods go. Every request answers throughout.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, ListParams};
use rollgate_crds::labels::{
    ADOPTED_BY, FINALIZER_RESTORE, FINALIZER_RESTORE_ROUTE, REPLICAS_BEFORE_ADOPTION,
};
use rollgate_crds::rollout::{Phase, Verdict};
use rollgate_crds::{Rollout, RolloutStatus};

use super::common::{
    Cluster, Controller, Load, OnFailure, http_route_resource, refserver_image, report,
    rollout_yaml as template_rollout_yaml, wait_until,
};

/// The team's own objects: the Deployment `shop` (2 replicas of `version`), its Service, the
/// route users reach it by (`shop-direct`, taken over), and a route standing for the Service's
/// in-cluster clients (`shop-internal`, never touched).
fn team_yaml(ns: &str, version: &str) -> String {
    let image = refserver_image();
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: shop, namespace: {ns}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: shop}}}}
  template:
    metadata: {{labels: {{app: shop}}}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
        - name: refserver
          image: {image}
          env:
            - {{name: REFSERVER_VERSION, value: "{version}"}}
            - {{name: REFSERVER_SHUTDOWN_DRAIN_DELAY_MS, value: "3000"}}
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe: {{httpGet: {{path: /readyz, port: http}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: shop, namespace: {ns}}}
spec:
  selector: {{app: shop}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop-direct, namespace: {ns}}}
spec:
  parentRefs: [{{name: rollgate-demo, namespace: default}}]
  hostnames: ["shop-direct.{ns}.e2e"]
  rules:
    - backendRefs: [{{name: shop, port: 80}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: shop-internal, namespace: {ns}}}
spec:
  parentRefs: [{{name: rollgate-demo, namespace: default}}]
  hostnames: ["shop-internal.{ns}.e2e"]
  rules:
    - backendRefs: [{{name: shop, port: 80}}]
"#
    )
}

/// A Rollout `name` adopting the Deployment `target` and the team's route to Service `shop`.
fn rollout_yaml(c: &Cluster, ns: &str, name: &str, target: &str) -> String {
    let prometheus = &c.prometheus;
    format!(
        r#"
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 2
  drainDelay: 2s
  workloadRef: {{name: {target}}}
  steps: [{{weight: 50}}, {{weight: 100}}]
  traffic: {{gatewayAPI: {{httpRoute: shop-direct, service: shop}}}}
  gate:
    prometheus: {{address: "{prometheus}"}}
    checks:
      - {{name: error-rate, errorRate: {{maxRatio: 0.01}}}}
    policy: {{interval: 2s, minHealthy: 10s, maxHold: 5m}}
"#
    )
}

/// Waits until the Rollout `name` is refused with `InvalidSpec=True` and `reason`; its message.
async fn refused(c: &Cluster, ns: &str, name: &str, reason: &str) -> String {
    let invalid = || async {
        let st: RolloutStatus = c.status(ns, name).await;
        st.conditions
            .iter()
            .find(|x| x.type_ == "InvalidSpec" && x.status == "True" && x.reason == reason)
            .map(|x| x.message.clone())
    };
    wait_until(&format!("{name} refused ({reason})"), Duration::from_secs(60), || async {
        invalid().await.is_some()
    })
    .await;
    invalid().await.unwrap_or_default()
}

/// The backendRefs of the team's route's one rule.
async fn backends(c: &Cluster, ns: &str) -> serde_json::Value {
    let routes: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), ns, &http_route_resource());
    let route = routes.get("shop-direct").await.expect("shop-direct");
    serde_json::to_value(&route)
        .unwrap_or_default()
        .pointer("/spec/rules/0/backendRefs")
        .cloned()
        .unwrap_or_default()
}

/// Waits until the last 100 answers through `load` are v1 and none failed.
async fn answering(load: &Load, what: &str) {
    wait_until(what, Duration::from_secs(120), || async {
        let s = load.snapshot();
        s.len() >= 100 && s[s.len() - 100..].iter().all(|x| x.status == 200 && x.version == "v1")
    })
    .await;
}

#[tokio::test]
async fn scenario_18_an_existing_deployment_and_route_are_adopted_rolled_out_and_given_back() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-adopt").await;
    let mut guard = OnFailure::new(&c, &ns);
    let ctl = Controller::start(&c, &ns).await;
    guard.watch(&ctl);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let rollouts: Api<Rollout> = Api::namespaced(c.client.clone(), &ns);

    // The team's service, before rollgate: users through `shop-direct`, in-cluster clients
    // (stood for by `shop-internal`) straight to the Service.
    let (ok, out) = c.apply(&team_yaml(&ns, "v1")).await;
    assert!(ok, "{out}");
    let users = Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("shop-direct.{ns}.e2e"), 40, 4);
    let internal =
        Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("shop-internal.{ns}.e2e"), 20, 2);
    answering(&users, "the team's route answers").await;
    answering(&internal, "the team's Service answers").await;
    let (users_from, internal_from) = (users.snapshot().len(), internal.snapshot().len());
    let original = backends(&c, &ns).await;
    assert_eq!(original.pointer("/0/name").and_then(|n| n.as_str()), Some("shop"), "{original}");

    // A reference to a Deployment that does not exist: a clear condition, nothing created.
    let (ok, out) = c.apply(&rollout_yaml(&c, &ns, "ghost", "nothing-here")).await;
    assert!(ok, "{out}");
    let message = refused(&c, &ns, "ghost", "WorkloadNotFound").await;
    assert!(message.contains("Deployment \"nothing-here\" not found"), "{message}");
    assert!(deployments.get_opt("ghost-stable").await.expect("get").is_none(), "ghost created a Deployment");

    // Adoption: rollgate's stable runs the team's template; the team's Deployment goes to
    // zero; the route's rule moves to rollgate's two Services.
    let applied = Instant::now();
    let (ok, out) = c.apply(&rollout_yaml(&c, &ns, "shop", "shop")).await;
    assert!(ok, "{out}");
    wait_until("shop adopted, scaled to zero, its route taken over", Duration::from_secs(120), || async {
        let d = deployments.get("shop").await.expect("shop");
        let refs = backends(&c, &ns).await;
        c.status(&ns, "shop").await.phase == Some(Phase::Promoted)
            && d.spec.and_then(|s| s.replicas) == Some(0)
            && d.status.and_then(|s| s.replicas).unwrap_or(0) == 0
            && refs.pointer("/0/name").and_then(|n| n.as_str()) == Some("shop-stable")
            && refs.pointer("/1/name").and_then(|n| n.as_str()) == Some("shop-canary")
    })
    .await;
    let adopted_in = applied.elapsed();
    let d = deployments.get("shop").await.expect("shop");
    assert_eq!(d.metadata.labels.unwrap_or_default().get(ADOPTED_BY).map(String::as_str), Some("shop"));
    let before = d.metadata.annotations.unwrap_or_default().get(REPLICAS_BEFORE_ADOPTION).cloned();
    assert_eq!(before.as_deref(), Some("2"));
    let ro = c.rollout(&ns, "shop").await;
    let finalizers = ro.metadata.finalizers.unwrap_or_default();
    for f in [FINALIZER_RESTORE, FINALIZER_RESTORE_ROUTE] {
        assert!(finalizers.iter().any(|x| x == f), "{f} missing: {finalizers:?}");
    }

    // A second Rollout claiming the same Deployment, or the same route rule, is refused,
    // naming the first.
    let (ok, out) = c.apply(&rollout_yaml(&c, &ns, "rival", "shop")).await;
    assert!(ok, "{out}");
    let message = refused(&c, &ns, "rival", "NameConflict").await;
    assert!(message.contains("is adopted by Rollout \"shop\""), "{message}");
    let poacher = template_rollout_yaml(&ns, "poacher", "v1", &[], "")
        .replace("PROMETHEUS", &c.prometheus)
        .replace("httpRoute: poacher}", "httpRoute: shop-direct, service: shop}");
    let (ok, out) = c.apply(&poacher).await;
    assert!(ok, "{out}");
    let message = refused(&c, &ns, "poacher", "NameConflict").await;
    assert!(message.contains("is taken over by Rollout \"shop\""), "{message}");
    for name in ["rival", "poacher"] {
        assert!(
            deployments.get_opt(&format!("{name}-stable")).await.expect("get").is_none(),
            "{name} created a Deployment"
        );
    }
    for name in ["rival", "ghost", "poacher"] {
        rollouts.delete(name, &DeleteParams::default()).await.expect("delete");
    }

    // The team changes its own Deployment: that is a rollout, judged on the team's own route.
    let (ok, out) = c.apply(&team_yaml(&ns, "v2").replace("  replicas: 2\n", "  replicas: 0\n")).await;
    assert!(ok, "{out}");
    wait_until("the canary at 50 %", Duration::from_secs(120), || async {
        let st = c.status(&ns, "shop").await;
        st.canary_weight == 50 && st.step_started_at.is_some()
    })
    .await;
    // Canary pods carry none of the labels the team's Service selects on.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    let canary = pods.list(&ListParams::default().labels("rollgate.dev/role=canary")).await.expect("pods");
    assert!(!canary.items.is_empty(), "no canary pods");
    for p in &canary.items {
        let labels = p.metadata.labels.clone().unwrap_or_default();
        assert!(
            !labels.contains_key("app"),
            "canary pod {:?} is selected by the team's Service",
            p.metadata.name
        );
    }
    let internal_at_half = internal.snapshot().len();
    wait_until("v2 promoted", Duration::from_secs(300), || async {
        let st = c.status(&ns, "shop").await;
        st.phase == Some(Phase::Promoted) && st.history.iter().filter(|h| h.action == "StepUp").count() == 2
    })
    .await;
    assert_eq!(c.status(&ns, "shop").await.verdict, Some(Verdict::Pass));
    assert!(
        users.snapshot()[users_from..].iter().any(|s| s.version == "v2"),
        "the canary served through the team's route"
    );
    // While the canary ran at 50 %, the team's Service itself served only v1.
    let during: Vec<String> =
        internal.snapshot()[internal_from..internal_at_half].iter().map(|s| s.version.clone()).collect();
    assert!(during.iter().all(|v| v == "v1"), "the team's Service reached the canary");

    // Deleting the Rollout gives the route and the Deployment back, serving, before rollgate's
    // pods go.
    let deleted = Instant::now();
    rollouts.delete("shop", &DeleteParams::default()).await.expect("delete");
    wait_until("the Rollout gone", Duration::from_secs(120), || async {
        rollouts.get_opt("shop").await.expect("get").is_none()
    })
    .await;
    let released_in = deleted.elapsed();
    assert_eq!(backends(&c, &ns).await, original, "the route's rule given back as it was");
    let d = deployments.get("shop").await.expect("shop");
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2), "replicas restored");
    assert_eq!(d.status.as_ref().and_then(|s| s.available_replicas), Some(2), "available before release");
    assert!(!d.metadata.labels.unwrap_or_default().contains_key(ADOPTED_BY), "claim removed");
    wait_until("the team's own pods serve v2", Duration::from_secs(120), || async {
        deployments.get_opt("shop-stable").await.expect("get").is_none()
            && users.snapshot().iter().rev().take(50).all(|s| s.status == 200 && s.version == "v2")
    })
    .await;

    let mut lost = Vec::new();
    let mut seen = 0;
    for (load, from, what) in
        [(users, users_from, "the team's route"), (internal, internal_from, "the team's Service")]
    {
        let answers = load.stop().await[from..].to_vec();
        seen += answers.len();
        let failed: Vec<u16> = answers.iter().filter(|s| s.status != 200).map(|s| s.status).collect();
        if !failed.is_empty() {
            lost.push(format!("{} of {} requests to {what} failed: {failed:?}", failed.len(), answers.len()));
        }
    }
    assert!(lost.is_empty(), "{lost:?}");
    report(
        &c,
        "scenario-18-adoption",
        serde_json::json!({
            "apply_to_adopted_s": adopted_in.as_secs_f64(),
            "delete_to_released_s": released_in.as_secs_f64(),
            "requests": seen,
            "failed": 0,
        }),
    );
    ctl.kill().await;
}
