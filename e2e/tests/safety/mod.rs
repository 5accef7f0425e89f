//! Scenarios 10 and 11: rollgate never takes over or deletes what a Rollout does not own, and
//! every error only the API server can find shows in the Rollout's status and Events.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::DeleteParams;
use rollgate_crds::Rollout;
use serde_json::{Value, json};

use super::common::{Cluster, Controller, OnFailure, rollout_yaml, wait_until};

/// The InvalidSpec condition as (status, reason, message).
async fn invalid_spec(c: &Cluster, ns: &str, name: &str) -> Option<(String, String, String)> {
    let api: Api<Rollout> = Api::namespaced(c.client.clone(), ns);
    let ro = api.get_opt(name).await.ok().flatten()?;
    let st = ro.status?;
    let cond = st.conditions.into_iter().find(|c| c.type_ == "InvalidSpec")?;
    Some((cond.status, cond.reason, cond.message))
}

fn user_service(ns: &str, name: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}, labels: {{team: theirs}}}}
spec:
  selector: {{app: theirs}}
  ports: [{{port: 8080}}]
"#
    )
}

/// The parts of a Service its owner cares about: selector, labels, ownerReferences.
fn essentials(s: &Service) -> Value {
    json!({
        "selector": s.spec.as_ref().and_then(|x| x.selector.clone()),
        "labels": s.metadata.labels,
        "owners": s.metadata.owner_references,
        "uid": s.metadata.uid,
    })
}

#[tokio::test]
async fn scenario_10_a_users_objects_are_never_taken_over_nor_deleted() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-ownership").await;
    let mut guard = OnFailure::new(&c, &ns);
    let ctl = Controller::start(&c, &ns).await;
    guard.watch(&ctl);
    let services: Api<Service> = Api::namespaced(c.client.clone(), &ns);

    // The user already has Services `coll` and `coll-canary`; a replicaRatio Rollout `coll`
    // would need both names.
    for name in ["coll", "coll-canary"] {
        let (ok, out) = c.apply(&user_service(&ns, name)).await;
        assert!(ok, "{out}");
    }
    let before: Vec<Value> = vec![
        essentials(&services.get("coll").await.expect("coll")),
        essentials(&services.get("coll-canary").await.expect("coll-canary")),
    ];
    let yaml = rollout_yaml(&ns, "coll", "v1", &[], "")
        .replace("PROMETHEUS", &c.prometheus)
        .replace("  traffic: {gatewayAPI: {httpRoute: coll}}", "  traffic: {replicaRatio: {}}");
    let rollout_only = yaml.split("---").nth(1).expect("the Rollout document").to_string();
    let (ok, out) = c.apply(&rollout_only).await;
    assert!(ok, "{out}");
    wait_until("InvalidSpec NameConflict", Duration::from_secs(60), || async {
        invalid_spec(&c, &ns, "coll").await.is_some_and(|(s, r, _)| s == "True" && r == "NameConflict")
    })
    .await;
    let (_, _, message) = invalid_spec(&c, &ns, "coll").await.expect("condition");
    assert!(
        message.contains("/coll-canary exists and is not owned by this Rollout (controller: none)"),
        "{message}"
    );
    wait_until("a NameConflict Event naming the Service", Duration::from_secs(30), || async {
        let events = c.events(&ns);
        events.contains("reason: NameConflict") && events.contains("coll-canary exists")
    })
    .await;
    let after: Vec<Value> = vec![
        essentials(&services.get("coll").await.expect("coll")),
        essentials(&services.get("coll-canary").await.expect("coll-canary")),
    ];
    assert_eq!(before, after, "the user's Services are untouched");
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(c.client.clone(), &ns);
    assert!(deployments.get_opt("coll-stable").await.ok().flatten().is_none(), "nothing was created");

    // Deleting the Rollout leaves the user's Services in place.
    let rollouts: Api<Rollout> = Api::namespaced(c.client.clone(), &ns);
    rollouts.delete("coll", &DeleteParams::foreground()).await.expect("delete the Rollout");
    wait_until("the Rollout is gone", Duration::from_secs(60), || async {
        rollouts.get_opt("coll").await.ok().flatten().is_none()
    })
    .await;
    let left: Vec<Value> = vec![
        essentials(&services.get("coll").await.expect("coll still exists")),
        essentials(&services.get("coll-canary").await.expect("coll-canary still exists")),
    ];
    assert_eq!(before, left, "deleting the Rollout deleted nothing of the user's");

    // A Rollout whose name ends where another's Services begin is refused at admission.
    let intruder = rollout_yaml(&ns, "web-stable", "v1", &[], "").replace("PROMETHEUS", &c.prometheus);
    let intruder = intruder.split("---").nth(1).expect("the Rollout document").to_string();
    let (ok, out) = c.apply(&intruder).await;
    assert!(!ok, "accepted: {out}");
    assert!(out.contains("metadata.name: must not end in -stable or -canary"), "{out}");
    ctl.kill().await;
}

#[tokio::test]
async fn scenario_11_what_only_the_api_server_rejects_shows_in_status_and_events() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-rejected").await;
    let mut guard = OnFailure::new(&c, &ns);
    let ctl = Controller::start(&c, &ns).await;
    guard.watch(&ctl);

    // Names the API server refuses at admission, with a message naming the field.
    for name in ["web.v2".to_string(), "a".repeat(57)] {
        let yaml = rollout_yaml(&ns, &name, "v1", &[], "").replace("PROMETHEUS", &c.prometheus);
        let (ok, out) = c.apply(yaml.split("---").nth(1).expect("the Rollout document")).await;
        assert!(!ok, "{name} accepted: {out}");
        assert!(out.contains("metadata.name"), "{name}: {out}");
    }

    // A container name Kubernetes rejects: only the Deployment write can tell.
    let yaml = rollout_yaml(&ns, "badname", "v1", &[], "")
        .replace("PROMETHEUS", &c.prometheus)
        .replace("- name: refserver", "- name: Bad_Name");
    let (ok, out) = c.apply(&yaml).await;
    assert!(ok, "{out}");
    wait_until("InvalidSpec RejectedByAPI", Duration::from_secs(60), || async {
        invalid_spec(&c, &ns, "badname").await.is_some_and(|(s, r, _)| s == "True" && r == "RejectedByAPI")
    })
    .await;
    let (_, _, message) = invalid_spec(&c, &ns, "badname").await.expect("condition");
    assert!(message.contains("Deployment") && message.contains("badname-stable"), "{message}");
    assert!(message.contains("Bad_Name"), "the API server's own message: {message}");
    wait_until("a RejectedByAPI Event", Duration::from_secs(30), || async {
        c.events(&ns).contains("reason: RejectedByAPI")
    })
    .await;
    let st = c.status(&ns, "badname").await;
    assert_eq!(st.phase, Some(rollgate_crds::rollout::Phase::Failed));
    ctl.kill().await;
}
