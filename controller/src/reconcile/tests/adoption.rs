//! Adopting a user's Deployment (`spec.workloadRef`) against the stateful fake: claimed before
//! anything is created, scaled to zero once rollgate's stable is available, given back (scaled
//! up and available) before the finalizer goes; a missing one refused with nothing created.

use rollgate_crds::labels::{ADOPTED_BY, FINALIZER_RESTORE, REPLICAS_BEFORE_ADOPTION};
use rollgate_crds::rollout::WorkloadRef;

use super::*;

const THEIRS: &str = "/apis/apps/v1/namespaces/shop/deployments/theirs";

fn their_deployment() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "theirs", "namespace": "shop", "generation": 1},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "theirs"}},
            "template": {
                "metadata": {"labels": {"app": "theirs", "team": "a"}},
                "spec": {"containers": [{"name": "app", "image": "theirs:1"}]},
            },
        },
        "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3},
    })
}

fn adopting() -> Rollout {
    let mut spec = RolloutSpec::test().with_replica_ratio();
    spec.template = Default::default();
    spec.workload_ref = Some(WorkloadRef { name: "theirs".into() });
    rollout(spec, None)
}

fn condition(st: &RolloutStatus, type_: &str) -> Option<(String, String)> {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_ && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_referenced_deployment_is_run_by_rollgate_then_given_back_serving() {
    let h = Harness::new(&adopting(), 0.0, 0.0);
    h.fake.put(THEIRS, their_deployment());
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("first pass");
    // Claimed (finalizer first), and rollgate's stable runs their template.
    assert!(h.rollout().metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER_RESTORE));
    let theirs = h.fake.get(THEIRS).unwrap_or_default();
    assert_eq!(theirs["metadata"]["labels"][ADOPTED_BY], "web");
    let stable = h.fake.get(DEPLOY_STABLE).expect("web-stable created");
    assert_eq!(stable["spec"]["template"]["spec"]["containers"][0]["image"], "theirs:1");
    assert_eq!(
        stable["spec"]["template"]["metadata"]["labels"]["app"], "theirs",
        "their Service selects stable"
    );
    assert_eq!(theirs["spec"]["replicas"], 3, "not scaled down before stable is available");

    h.pass(&ctl, 5).await.expect("second pass");
    assert_eq!(h.status().phase, Some(Phase::Promoted));
    let theirs = h.fake.get(THEIRS).unwrap_or_default();
    assert_eq!(theirs["spec"]["replicas"], 0, "scaled to zero once stable serves");
    assert_eq!(theirs["metadata"]["annotations"][REPLICAS_BEFORE_ADOPTION], "3");

    // A change to their template is a rollout; canary pods lose the labels they select on.
    let mut changed = h.fake.get(THEIRS).unwrap_or_default();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("theirs:2");
    h.fake.put(THEIRS, changed);
    h.pass(&ctl, 5).await.expect("rollout pass");
    let canary = h.fake.get(DEPLOY_CANARY).expect("web-canary created");
    assert_eq!(canary["spec"]["template"]["spec"]["containers"][0]["image"], "theirs:2");
    let labels = &canary["spec"]["template"]["metadata"]["labels"];
    assert!(labels.get("app").is_none(), "{labels}");
    assert_eq!(labels["team"], "a");

    // Deleted: scaled back, and the finalizer goes only once it is available again.
    h.mark_deleted();
    let mut down = h.fake.get(THEIRS).unwrap_or_default();
    down["status"] = json!({"observedGeneration": 1, "replicas": 0, "availableReplicas": 0});
    h.fake.put(THEIRS, down);
    let action = h.pass(&ctl, 1).await.expect("deletion pass");
    assert_eq!(action, Action::requeue(crate::plan::CONVERGE), "waits for their Deployment");
    assert_eq!(h.fake.get(THEIRS).unwrap_or_default()["spec"]["replicas"], 3);
    assert!(h.rollout().metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER_RESTORE));
    h.pass(&ctl, 1).await.expect("release pass");
    let theirs = h.fake.get(THEIRS).unwrap_or_default();
    assert!(theirs["metadata"]["labels"].get(ADOPTED_BY).is_none_or(Value::is_null), "claim removed");
    assert!(h.rollout().metadata.finalizers.unwrap_or_default().is_empty(), "finalizer removed");
}

#[tokio::test]
async fn a_reference_to_a_missing_deployment_creates_nothing() {
    let h = Harness::new(&adopting(), 0.0, 0.0);
    let ctl = h.controller();
    let action = h.pass(&ctl, 5).await.expect("a missing Deployment is not an error");
    assert_eq!(action, Action::requeue(crate::plan::CONFLICT_RECHECK), "looked at again");
    let (reason, message) = condition(&h.status(), "InvalidSpec").expect("InvalidSpec");
    assert_eq!(reason, "WorkloadNotFound");
    assert!(message.contains("spec.workloadRef: Deployment \"theirs\" not found"), "{message}");
    let writes = h.writes_since(0);
    assert!(writes.iter().all(|w| w.path == STATUS || w.path.contains("/events")), "{writes:?}");
}
