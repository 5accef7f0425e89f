//! Scenario 15: the local cluster scripts never break a running cluster. A second `up` from
//! another state directory is refused, saying which cluster runs and how to stop it, and its
//! `down` leaves the running cluster's links, pods and node alone.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use super::common::{Cluster, wait_until};

fn script() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/cluster.sh")
}

/// `cluster.sh ARGS`: (success, stdout and stderr).
fn cluster_sh(args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new("bash").arg(script()).args(args).output().expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// The pod network namespaces the CNI plugin made (`ip netns` names them `cni-…`).
fn pod_namespaces() -> Vec<String> {
    let out = std::process::Command::new("ip").args(["netns", "list"]).output().expect("ip runs");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("cni-"))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Whether kube-proxy's Service rules are in place.
fn service_rules() -> bool {
    std::process::Command::new("iptables")
        .args(["-t", "nat", "-S", "KUBE-SERVICES"])
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}

#[tokio::test]
async fn scenario_15_a_second_cluster_is_refused_and_its_cleanup_spares_the_running_one() {
    let c = Cluster::connect().await;
    let other = c.state.join("other-cluster");
    let other_dir = other.display().to_string();
    assert!(link_exists("rg0") && link_exists("rgc0"), "the running cluster's links");
    let pods_before = pod_namespaces();
    assert!(!pods_before.is_empty(), "CoreDNS at least runs in a pod network namespace");
    assert!(service_rules(), "kube-proxy's rules");

    let (ok, out) = cluster_sh(&["up", &other_dir]);
    assert!(!ok, "a second cluster started beside the running one: {out}");
    let running = c.state.display().to_string();
    assert!(
        out.contains(&format!("a local cluster is already running from {running}"))
            && out.contains(&format!("cluster.sh down {running}")),
        "the refusal names the running cluster and how to stop it: {out}"
    );

    // What make demo's or the suite's exit trap runs after a failed `up`.
    let (ok, out) = cluster_sh(&["down", &other_dir]);
    assert!(ok, "{out}");
    assert!(link_exists("rg0") && link_exists("rgc0"), "the running cluster's links were removed: {out}");
    assert_eq!(pod_namespaces(), pods_before, "pod network namespaces were removed: {out}");
    assert!(service_rules(), "kube-proxy's rules were removed: {out}");
    let nodes: Api<Node> = Api::all(c.client.clone());
    wait_until("the node still Ready", Duration::from_secs(30), || async {
        nodes
            .get("rollgate-real")
            .await
            .ok()
            .and_then(|n| n.status)
            .and_then(|s| s.conditions)
            .is_some_and(|conds| conds.iter().any(|x| x.type_ == "Ready" && x.status == "True"))
    })
    .await;
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.client.clone(), "kube-system");
    let dns = deployments.get("coredns").await.expect("coredns");
    assert_eq!(dns.status.and_then(|s| s.ready_replicas), Some(1), "CoreDNS still ready");
    let _ = std::fs::remove_dir_all(&other);
}
