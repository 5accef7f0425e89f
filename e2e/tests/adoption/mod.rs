//! Scenario 18: a team already runs a Deployment behind its own Service, and hands it to
//! rollgate with `spec.workloadRef`. rollgate runs its template, scales it to zero once its own
//! stable serves, rolls out a change made to that Deployment, keeps canary pods out of the
//! team's Service, refuses a second Rollout claiming the same Deployment and a reference to a
//! missing one, and on deletion gives the Deployment back, serving, before its own pods go. The
//! team's Service answers every request throughout.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use rollgate_crds::labels::{ADOPTED_BY, FINALIZER_RESTORE, REPLICAS_BEFORE_ADOPTION};
use rollgate_crds::rollout::{Phase, Verdict};
use rollgate_crds::{Rollout, RolloutStatus};

use super::common::{Cluster, Controller, Load, OnFailure, refserver_image, report, route_yaml, wait_until};

/// The team's own objects: the Deployment `shop` (2 replicas of `version`), its Service, and a
/// route to that Service (`shop-direct`), which must answer throughout.
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
"#
    )
}

/// A Rollout `name` adopting the Deployment `target`, with rollgate's route `name`.
fn rollout_yaml(c: &Cluster, ns: &str, name: &str, target: &str) -> String {
    let (prometheus, route) = (&c.prometheus, route_yaml(ns, name));
    format!(
        r#"{route}---
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 2
  drainDelay: 2s
  workloadRef: {{name: {target}}}
  steps: [{{weight: 50}}, {{weight: 100}}]
  traffic: {{gatewayAPI: {{httpRoute: {name}}}}}
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

#[tokio::test]
async fn scenario_18_an_existing_deployment_is_adopted_rolled_out_and_given_back() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-adopt").await;
    let mut guard = OnFailure::new(&c, &ns);
    let ctl = Controller::start(&c, &ns).await;
    guard.watch(&ctl);
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &ns);
    let rollouts: Api<Rollout> = Api::namespaced(c.client.clone(), &ns);

    // The team's service, before rollgate.
    let (ok, out) = c.apply(&team_yaml(&ns, "v1")).await;
    assert!(ok, "{out}");
    let load = Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("shop-direct.{ns}.e2e"), 40, 4);
    wait_until("the team's service answers", Duration::from_secs(120), || async {
        let s = load.snapshot();
        s.len() >= 100 && s[s.len() - 100..].iter().all(|x| x.status == 200 && x.version == "v1")
    })
    .await;
    let settled = load.snapshot().len();

    // A reference to a Deployment that does not exist: a clear condition, nothing created.
    let (ok, out) = c.apply(&rollout_yaml(&c, &ns, "ghost", "nothing-here")).await;
    assert!(ok, "{out}");
    let message = refused(&c, &ns, "ghost", "WorkloadNotFound").await;
    assert!(message.contains("Deployment \"nothing-here\" not found"), "{message}");
    assert!(deployments.get_opt("ghost-stable").await.expect("get").is_none(), "ghost created a Deployment");

    // Adoption: rollgate's stable runs the team's template; the team's Deployment goes to zero.
    let applied = Instant::now();
    let (ok, out) = c.apply(&rollout_yaml(&c, &ns, "shop", "shop")).await;
    assert!(ok, "{out}");
    wait_until("shop adopted and scaled to zero", Duration::from_secs(120), || async {
        let d = deployments.get("shop").await.expect("shop");
        c.status(&ns, "shop").await.phase == Some(Phase::Promoted)
            && d.spec.and_then(|s| s.replicas) == Some(0)
            && d.status.and_then(|s| s.replicas).unwrap_or(0) == 0
    })
    .await;
    let adopted_in = applied.elapsed();
    let d = deployments.get("shop").await.expect("shop");
    assert_eq!(d.metadata.labels.unwrap_or_default().get(ADOPTED_BY).map(String::as_str), Some("shop"));
    let before = d.metadata.annotations.unwrap_or_default().get(REPLICAS_BEFORE_ADOPTION).cloned();
    assert_eq!(before.as_deref(), Some("2"));
    let ro = c.rollout(&ns, "shop").await;
    assert!(ro.metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER_RESTORE));

    // A second Rollout claiming the same Deployment is refused, naming the first.
    let (ok, out) = c.apply(&rollout_yaml(&c, &ns, "rival", "shop")).await;
    assert!(ok, "{out}");
    let message = refused(&c, &ns, "rival", "NameConflict").await;
    assert!(message.contains("is adopted by Rollout \"shop\""), "{message}");
    assert!(deployments.get_opt("rival-stable").await.expect("get").is_none(), "rival created a Deployment");
    for name in ["rival", "ghost"] {
        rollouts.delete(name, &DeleteParams::default()).await.expect("delete");
    }

    // Traffic through rollgate's route too: the canary is judged on it.
    let routed = Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("shop.{ns}.e2e"), 40, 4);
    wait_until("rollgate's route answers", Duration::from_secs(60), || async {
        let s = routed.snapshot();
        s.len() >= 100 && s[s.len() - 100..].iter().all(|x| x.status == 200 && x.version == "v1")
    })
    .await;
    let routed_from = routed.snapshot().len();

    // The team changes its own Deployment: that is a rollout, judged like any other.
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
    let at_half = load.snapshot().len();
    wait_until("v2 promoted", Duration::from_secs(300), || async {
        let st = c.status(&ns, "shop").await;
        st.phase == Some(Phase::Promoted) && st.history.iter().filter(|h| h.action == "StepUp").count() == 2
    })
    .await;
    assert_eq!(c.status(&ns, "shop").await.verdict, Some(Verdict::Pass));
    let through_route = routed.stop().await[routed_from..].to_vec();
    let lost = through_route.iter().filter(|s| s.status != 200).count();
    assert_eq!(lost, 0, "{lost} of {} requests through rollgate's route failed", through_route.len());
    assert!(through_route.iter().any(|s| s.version == "v2"), "the canary served through rollgate's route");
    // While the canary ran at 50 % on rollgate's route, the team's Service served only v1.
    let during: Vec<String> = load.snapshot()[settled..at_half].iter().map(|s| s.version.clone()).collect();
    assert!(during.iter().all(|v| v == "v1"), "the team's Service reached the canary");
    wait_until("the team's service serves v2", Duration::from_secs(60), || async {
        load.snapshot().iter().rev().take(50).all(|s| s.version == "v2")
    })
    .await;

    // Deleting the Rollout gives the Deployment back, serving, before rollgate's pods go.
    let deleted = Instant::now();
    rollouts.delete("shop", &DeleteParams::default()).await.expect("delete");
    wait_until("the Rollout gone", Duration::from_secs(120), || async {
        rollouts.get_opt("shop").await.expect("get").is_none()
    })
    .await;
    let released_in = deleted.elapsed();
    let d = deployments.get("shop").await.expect("shop");
    assert_eq!(d.spec.as_ref().and_then(|s| s.replicas), Some(2), "replicas restored");
    assert_eq!(d.status.as_ref().and_then(|s| s.available_replicas), Some(2), "available before release");
    assert!(!d.metadata.labels.unwrap_or_default().contains_key(ADOPTED_BY), "claim removed");
    wait_until("the team's own pods serve v2", Duration::from_secs(120), || async {
        deployments.get_opt("shop-stable").await.expect("get").is_none()
            && load.snapshot().iter().rev().take(50).all(|s| s.status == 200 && s.version == "v2")
    })
    .await;

    let seen = load.stop().await[settled..].to_vec();
    let failed: Vec<u16> = seen.iter().filter(|s| s.status != 200).map(|s| s.status).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests to the team's Service failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    report(
        &c,
        "scenario-18-adoption",
        serde_json::json!({
            "apply_to_adopted_s": adopted_in.as_secs_f64(),
            "delete_to_released_s": released_in.as_secs_f64(),
            "requests_to_the_teams_service": seen.len(),
            "failed": failed.len(),
        }),
    );
    ctl.kill().await;
}
