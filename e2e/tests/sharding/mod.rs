//! Scenario 19: one installation, several replicas, Rollouts split into shards (`--shards 4`).
//! The shards are held through Leases and shared evenly when a second replica appears; each
//! Rollout is reconciled by exactly the replica holding its shard; when a replica is killed its
//! shards move to the survivor, whose reconciles then cover every Rollout; a third replica that
//! joins gets its share.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use rollgate::shards::shard_of;

use super::common::{Cluster, Controller, OnFailure, report, wait_until};

const SHARDS: u32 = 4;
const INSTANCE: &str = "sharded";

/// A Rollout whose pods can never be scheduled: its first pass creates its Services and stable
/// Deployment (logged by the replica that made them), then it waits.
fn rollout(c: &Cluster, ns: &str, name: &str) -> String {
    format!(
        r#"
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: {ns}, labels: {{rollgate.dev/instance: {INSTANCE}}}}}
spec:
  replicas: 1
  template:
    spec:
      nodeSelector: {{rollgate.dev/e2e: nowhere}}
      containers: [{{name: app, image: ghcr.io/rollgate/refserver:0.1.0}}]
  traffic: {{replicaRatio: {{}}}}
  gate:
    prometheus: {{address: "{}"}}
    checks: [{{name: error-rate, errorRate: {{maxRatio: 0.01}}}}]
"#,
        c.prometheus
    )
}

/// Each shard's holder, by identity.
async fn holders(c: &Cluster) -> BTreeMap<u32, String> {
    let leases: Api<Lease> = Api::namespaced(c.client.clone(), "default");
    let prefix = format!("rollgate-{INSTANCE}-shard-");
    let mut held = BTreeMap::new();
    for l in leases.list(&ListParams::default()).await.expect("leases").items {
        let name = l.metadata.name.unwrap_or_default();
        let holder = l.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty());
        if let (Some(i), Some(h)) = (name.strip_prefix(&prefix).and_then(|i| i.parse().ok()), holder) {
            held.insert(i, h);
        }
    }
    held
}

/// Waits until every shard is held and each of `replicas` holds exactly its half or share.
async fn balanced(c: &Cluster, replicas: &[&str], within: Duration) -> BTreeMap<u32, String> {
    let each = SHARDS as usize / replicas.len();
    wait_until(&format!("{SHARDS} shards shared by {replicas:?}"), within, || async {
        let held = holders(c).await;
        held.len() == SHARDS as usize
            && replicas
                .iter()
                .all(|r| held.values().filter(|h| h.as_str() == format!("e2e-{r}")).count() == each)
    })
    .await;
    holders(c).await
}

/// Whether a controller's log shows it created `name`'s stable Deployment.
fn created_by(log: &std::path::Path, name: &str) -> bool {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let object = format!("/{name}-stable");
    text.lines()
        .any(|l| l.contains("owned object created") && l.contains(&object) && l.contains("Deployment"))
}

/// Waits until every Rollout in `names` has a status for its generation.
async fn answered(c: &Cluster, ns: &str, names: &[String]) {
    for name in names {
        wait_until(&format!("{name} has a status"), Duration::from_secs(60), || async {
            let ro = c.rollout(ns, name).await;
            ro.status.and_then(|s| s.observed_generation) == ro.metadata.generation
        })
        .await;
    }
}

#[tokio::test]
async fn scenario_19_rollouts_are_sharded_over_replicas_and_move_when_one_dies() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-shards").await;
    let mut guard = OnFailure::new(&c, &ns);
    let flags = ["--watch-namespace", &ns, "--instance", INSTANCE, "--shards", "4"];
    let a = Controller::start_with(&c, "shard-a", &flags).await;
    guard.watch(&a);
    // Alone, the first replica takes every shard; a second one appearing gets half of them.
    wait_until("the first replica holds every shard", Duration::from_secs(60), || async {
        holders(&c).await.values().filter(|h| *h == "e2e-shard-a").count() == SHARDS as usize
    })
    .await;
    let joined = Instant::now();
    let b = Controller::start_with(&c, "shard-b", &flags).await;
    guard.watch(&b);
    let held = balanced(&c, &["shard-a", "shard-b"], Duration::from_secs(60)).await;
    let rebalanced_in = joined.elapsed();

    // Each Rollout is reconciled by the replica holding its shard, and only by it.
    let names: Vec<String> = (0..12).map(|i| format!("r{i:02}")).collect();
    for name in &names {
        let (ok, out) = c.apply(&rollout(&c, &ns, name)).await;
        assert!(ok, "{out}");
    }
    answered(&c, &ns, &names).await;
    for name in &names {
        let owner = &held[&shard_of(&ns, name, SHARDS)];
        let (mine, other) = if owner == "e2e-shard-a" { (&a, &b) } else { (&b, &a) };
        let what = format!("{name}'s stable Deployment created by {owner}, its shard's holder");
        wait_until(&what, Duration::from_secs(30), || async { created_by(&mine.log, name) }).await;
        assert!(!created_by(&other.log, name), "{name}: reconciled by a replica not holding its shard");
    }

    // The first replica dies: its shards move to the survivor once their Leases expire.
    let killed = Instant::now();
    a.kill().await;
    wait_until("the survivor holds every shard", Duration::from_secs(60), || async {
        holders(&c).await.values().filter(|h| *h == "e2e-shard-b").count() == SHARDS as usize
    })
    .await;
    let failover_in = killed.elapsed();
    let later: Vec<String> = (12..20).map(|i| format!("r{i:02}")).collect();
    for name in &later {
        let (ok, out) = c.apply(&rollout(&c, &ns, name)).await;
        assert!(ok, "{out}");
    }
    answered(&c, &ns, &later).await;
    let from_dead_shards = later.iter().filter(|n| held[&shard_of(&ns, n, SHARDS)] == "e2e-shard-a").count();
    assert!(from_dead_shards > 0, "none of the later Rollouts fell in the dead replica's shards");
    for name in &later {
        let what = format!("{name}'s stable Deployment created by the survivor");
        wait_until(&what, Duration::from_secs(30), || async { created_by(&b.log, name) }).await;
    }

    // A third replica joins: it gets its share.
    let c3 = Controller::start_with(&c, "shard-c", &flags).await;
    guard.watch(&c3);
    balanced(&c, &["shard-b", "shard-c"], Duration::from_secs(60)).await;

    report(
        &c,
        "scenario-19-sharding",
        serde_json::json!({
            "shards": SHARDS,
            "second_replica_to_balanced_s": rebalanced_in.as_secs_f64(),
            "kill_to_survivor_holds_all_s": failover_in.as_secs_f64(),
            "rollouts_from_dead_shards_reconciled": from_dead_shards,
        }),
    );
    b.kill().await;
    c3.kill().await;
}
