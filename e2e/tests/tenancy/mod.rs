//! Scenario 16: two installations on one cluster, as two teams run them. One is scoped to its
//! namespace (`--watch-namespace`), the other to the Rollouts labelled with its instance id
//! (`--instance blue`); they roll out at the same time, and neither touches the other's objects:
//! each object's managedFields name only its own installation, each log only its own namespace,
//! and a Rollout in neither scope is left alone.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{DynamicObject, ObjectMeta};
use rollgate_crds::rollout::{Phase, Verdict};

use super::common::{Cluster, Controller, Load, OnFailure, http_route_resource, rollout_yaml, wait_until};

const NAME: &str = "web";

/// The Rollout `name` of `version` in `ns`, with `labels` on the Rollout; two steps, so that
/// both installations finish in about a minute.
fn yaml(c: &Cluster, ns: &str, name: &str, version: &str, labels: &str) -> String {
    rollout_yaml(ns, name, version, &[], "")
        .replace("PROMETHEUS", &c.prometheus)
        .replace(
            &format!("kind: Rollout\nmetadata: {{name: {name}, namespace: {ns}}}"),
            &format!("kind: Rollout\nmetadata: {{name: {name}, namespace: {ns}, labels: {{{labels}}}}}"),
        )
        .replace("  replicas: 1\n", "  replicas: 1\n  steps: [{weight: 50}, {weight: 100}]\n")
}

/// The field managers of an object.
fn managers(meta: &ObjectMeta) -> Vec<String> {
    let mut m: Vec<String> = meta.managed_fields.iter().flatten().filter_map(|f| f.manager.clone()).collect();
    m.sort();
    m.dedup();
    m
}

/// The rollgate field managers among them (kubectl's and the API server's are not ours).
fn rollgate_managers(meta: &ObjectMeta) -> Vec<String> {
    managers(meta).into_iter().filter(|m| m.starts_with("rollgate")).collect()
}

async fn holder(c: &Cluster, lease: &str) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "default");
    leases.get_opt(lease).await.ok().flatten()?.spec?.holder_identity
}

#[tokio::test]
async fn scenario_16_two_scoped_installations_never_touch_each_others_rollouts() {
    let c = Cluster::connect().await;
    let a = c.namespace("e2e-team-a").await;
    let b = c.namespace("e2e-team-b").await;
    let mut guard_a = OnFailure::new(&c, &a);
    let mut guard_b = OnFailure::new(&c, &b);
    let ctl_a = Controller::start_with(&c, "team-a", &["--watch-namespace", &a]).await;
    let ctl_b = Controller::start_with(&c, "team-b", &["--instance", "blue"]).await;
    guard_a.watch(&ctl_a);
    guard_b.watch(&ctl_b);
    // Each leads through its own Lease: neither stands by for the other.
    wait_until("both installations lead", Duration::from_secs(60), || async {
        holder(&c, "rollgate-controller").await.as_deref() == Some("e2e-team-a")
            && holder(&c, "rollgate-blue-controller").await.as_deref() == Some("e2e-team-b")
    })
    .await;

    // a/web is unlabelled (team A's), b/web carries instance blue (team B's), b/orphan is
    // unlabelled in a namespace team A does not watch: nobody's.
    let blue = "rollgate.dev/instance: blue";
    for (ns, name, labels) in [(&a, NAME, ""), (&b, NAME, blue), (&b, "orphan", "")] {
        let (ok, out) = c.apply(&yaml(&c, ns, name, "v1", labels)).await;
        assert!(ok, "{out}");
    }
    wait_until("v1 stable in both namespaces", Duration::from_secs(120), || async {
        c.status(&a, NAME).await.phase == Some(Phase::Promoted)
            && c.status(&b, NAME).await.phase == Some(Phase::Promoted)
    })
    .await;
    let load_a = Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("{NAME}.{a}.e2e"), 60, 4);
    let load_b = Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("{NAME}.{b}.e2e"), 60, 4);
    // The gateway serves a route a moment after it is written: each load counts from the point
    // where 100 responses in a row were v1 and 200.
    let settled = |s: &[super::common::Seen]| {
        s.len() >= 100 && s[s.len() - 100..].iter().all(|x| x.status == 200 && x.version == "v1")
    };
    wait_until("steady traffic on both", Duration::from_secs(60), || async {
        settled(&load_a.snapshot()) && settled(&load_b.snapshot())
    })
    .await;
    let (from_a, from_b) = (load_a.snapshot().len(), load_b.snapshot().len());

    // Both teams roll out v2 at the same time.
    for (ns, labels) in [(&a, ""), (&b, blue)] {
        let (ok, out) = c.apply(&yaml(&c, ns, NAME, "v2", labels)).await;
        assert!(ok, "{out}");
    }
    wait_until("v2 promoted in both namespaces", Duration::from_secs(300), || async {
        let (sa, sb) = (c.status(&a, NAME).await, c.status(&b, NAME).await);
        let done = |st: &rollgate_crds::RolloutStatus| {
            st.phase == Some(Phase::Promoted)
                && st.history.iter().filter(|d| d.action == "StepUp").count() == 2
        };
        done(&sa) && done(&sb)
    })
    .await;
    let seen_a = load_a.stop().await[from_a..].to_vec();
    let seen_b = load_b.stop().await[from_b..].to_vec();
    for (ns, seen) in [(&a, &seen_a), (&b, &seen_b)] {
        assert_eq!(c.status(ns, NAME).await.verdict, Some(Verdict::Pass), "{ns}");
        let failed: Vec<u16> = seen.iter().filter(|s| s.status != 200).map(|s| s.status).collect();
        assert!(failed.is_empty(), "{ns}: {} of {} requests failed: {failed:?}", failed.len(), seen.len());
        assert!(seen.iter().any(|s| s.version == "v2"), "{ns}: v2 served");
    }

    // Each installation wrote only its own objects, under its own field manager.
    for (ns, want) in [(&a, "rollgate"), (&b, "rollgate-blue")] {
        let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), ns);
        let stable = deployments.get(&format!("{NAME}-stable")).await.expect("stable Deployment");
        assert_eq!(rollgate_managers(&stable.metadata), [want], "{ns}/{NAME}-stable");
        let routes: Api<DynamicObject> = Api::namespaced_with(c.client.clone(), ns, &http_route_resource());
        let route = routes.get(NAME).await.expect("route");
        assert_eq!(rollgate_managers(&route.metadata), [want], "{ns}/{NAME} route");
        let rollout = c.rollout(ns, NAME).await;
        assert_eq!(rollgate_managers(&rollout.metadata), [want], "{ns}/{NAME} Rollout status");
    }
    // The Rollout in neither scope: no status, nothing created.
    let orphan = c.rollout(&b, "orphan").await;
    assert!(orphan.status.is_none(), "b/orphan was acted on: {:?}", orphan.status);
    assert!(rollgate_managers(&orphan.metadata).is_empty(), "{:?}", managers(&orphan.metadata));
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), &b);
    assert!(deployments.get_opt("orphan-stable").await.ok().flatten().is_none(), "b/orphan got a Deployment");

    // Each log names only its own namespace.
    let log_a = std::fs::read_to_string(&ctl_a.log).unwrap_or_default();
    let log_b = std::fs::read_to_string(&ctl_b.log).unwrap_or_default();
    assert!(log_a.contains(&a) && !log_a.contains(&b), "team A's controller acted in {b}");
    assert!(log_b.contains(&b) && !log_b.contains(&a), "team B's controller acted in {a}");
    ctl_a.kill().await;
    ctl_b.kill().await;
}
