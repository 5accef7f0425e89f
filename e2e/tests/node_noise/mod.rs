//! Node noise on the real node: both versions' pods are frozen together (SIGSTOP, then SIGCONT
//! 150 ms later, every 1.5 s), as a busy node stalls everything on it. Each version's pause check
//! is then far over its budget, but the canary is no worse than stable, so the step holds
//! instead of rolling back; once the node is quiet again the healthy canary is promoted. A
//! canary that stalls on its own is rolled back in scenario 3.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::{Api, Client};
use rollgate_crds::rollout::{Phase, Verdict};

use super::{NAME, Stage, apply_version, stage};
use crate::common::{report, wait_until};

/// How long each freeze lasts, and how often one comes.
const FREEZE: Duration = Duration::from_millis(150);
const EVERY: Duration = Duration::from_millis(1500);

/// The host processes of the containers of `ns`'s pods, found by pod UID in their cgroup.
async fn pod_processes(client: &Client, ns: &str) -> Vec<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let uids: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .map(|l| l.items.into_iter().filter_map(|p| p.metadata.uid).collect())
        .unwrap_or_default();
    // The systemd cgroup driver writes the UID with underscores, cgroupfs with dashes.
    let marks: Vec<String> = uids.iter().flat_map(|u| [u.clone(), u.replace('-', "_")]).collect();
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("cgroup"))
                .is_ok_and(|cg| marks.iter().any(|m| cg.contains(m.as_str())))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Sends `sig` to `pids`; how many were signalled (kill fails as a whole if any is gone, so
/// each is signalled on its own).
fn signal(sig: &str, pids: &[String]) -> usize {
    pids.iter()
        .filter(|pid| {
            std::process::Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(pid.as_str())
                .status()
                .is_ok_and(|s| s.success())
        })
        .count()
}

/// Freezes every pod of `ns` together until stopped or dropped; counts the freezes. Whatever
/// happens to the test, nothing is left stopped: the processes of a freeze in progress are
/// continued on drop.
struct Noise {
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<(usize, usize)>>,
    frozen: Arc<Mutex<Vec<String>>>,
}

impl Noise {
    fn start(client: Client, ns: String) -> Self {
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let frozen = Arc::new(Mutex::new(Vec::new()));
        let now_frozen = frozen.clone();
        let task = tokio::spawn(async move {
            let (mut freezes, mut most) = (0, 0);
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stopped.changed() => break,
                }
                let pids = pod_processes(&client, &ns).await;
                if let Ok(mut f) = now_frozen.lock() {
                    f.clone_from(&pids);
                }
                let stopped_now = signal("STOP", &pids);
                tokio::time::sleep(FREEZE).await;
                signal("CONT", &pids);
                if let Ok(mut f) = now_frozen.lock() {
                    f.clear();
                }
                freezes += 1;
                most = most.max(stopped_now);
            }
            (freezes, most)
        });
        Self { stop, task: Some(task), frozen }
    }

    /// Stops the noise; how many freezes there were, and the most processes stopped at once.
    async fn stop(mut self) -> (usize, usize) {
        let _ = self.stop.send(true);
        match self.task.take() {
            Some(task) => task.await.unwrap_or_default(),
            None => (0, 0),
        }
    }
}

impl Drop for Noise {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        if let Ok(pids) = self.frozen.lock() {
            signal("CONT", &pids);
        }
    }
}

#[tokio::test]
async fn scenario_23_node_noise_stalls_both_versions_and_the_canary_is_not_blamed() {
    let Stage { c, ns, guard: _guard, ctl, load } = stage("e2e-noise", 8).await;
    let noise = Noise::start(c.client.clone(), ns.clone());
    apply_version(&c, &ns, "v2", &[]).await;
    // Both versions' pause checks breach; the canary's share of the stalls is its share of the
    // probe time, so the step holds with StableBreaching instead of rolling back.
    wait_until("the step held with stable breaching too", Duration::from_secs(120), || async {
        let st = c.status(&ns, NAME).await;
        assert_ne!(st.phase, Some(Phase::RolledBack), "rolled back for the node's stalls: {:?}", st.message);
        st.conditions.iter().any(|x| x.type_ == "StableBreaching" && x.status == "True")
    })
    .await;
    let held = c.status(&ns, NAME).await;
    let pause = held.checks.iter().find(|x| x.name == "pause").cloned().expect("the pause check");
    let (freezes, frozen) = noise.stop().await;
    assert!(frozen >= 2, "both versions' containers were stopped: {frozen}");
    // The node is quiet again: the stalls stay in the step's counts, clean probe time comes to
    // outweigh them, and the healthy canary goes on.
    wait_until("v2 promoted", Duration::from_secs(300), || async {
        let st = c.status(&ns, NAME).await;
        assert_ne!(st.phase, Some(Phase::RolledBack), "rolled back after the noise: {:?}", st.message);
        st.phase == Some(Phase::Promoted) && st.stable_revision == st.canary_revision
    })
    .await;
    let st = c.status(&ns, NAME).await;
    assert_eq!(st.verdict, Some(Verdict::Pass));
    assert!(st.history.iter().all(|d| d.action != "Rollback"), "{:?}", st.history);
    report(
        &c,
        "scenario-23-node-noise",
        serde_json::json!({
            "freezes": freezes,
            "processes_frozen": frozen,
            "pause_check_when_held": {"bad": pause.bad, "total": pause.total, "reason": pause.reason},
        }),
    );
    load.stop().await;
    ctl.kill().await;
}
