//! Scenario 13: on the real node (kubelet, containerd, runc, CNI, kube-proxy), rollgate installed
//! in-cluster from `manifests/` with its own ServiceAccount and RBAC rolls out podinfo, an app
//! nobody here wrote, judged from podinfo's own metrics: a healthy version is promoted, a version
//! answering errors is rolled back, and the controller is never denied by RBAC. The controller
//! reaches Prometheus by its Service name, resolved by the cluster's DNS.

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use rollgate_crds::RolloutStatus;
use rollgate_crds::rollout::{Phase, Verdict};
use tokio::process::Command;

use super::common::{Cluster, Load, OnFailure, report, wait_until};

const NAME: &str = "podinfo";
const RPS: u32 = 40;

fn manifests() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kubectl ARGS`; returns (success, output).
async fn kubectl(c: &Cluster, args: &[&str]) -> (bool, String) {
    let out = Command::new(c.kubectl()).args(args).stdin(Stdio::null()).output().await.expect("kubectl runs");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

/// Removes the in-cluster controller (not the CRDs: other scenarios' Rollouts stay), also when
/// the scenario fails, so that no later scenario shares the cluster with it.
struct Installed {
    kubectl: std::path::PathBuf,
    helm: std::path::PathBuf,
}

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.helm)
            .args(["uninstall", "rollgate", "--namespace", "rollgate-system", "--wait", "--ignore-not-found"])
            .output();
        let dir = manifests().join("manifests/controller");
        let _ = std::process::Command::new(&self.kubectl)
            .args(["delete", "--ignore-not-found", "--wait=true", "-f"])
            .arg(dir)
            .output();
    }
}

/// The image `make images` built for podinfo (its tag is the module's version).
fn podinfo_image() -> String {
    let go_mod = std::fs::read_to_string(manifests().join("e2e/toolchain/podinfo/go.mod")).expect("go.mod");
    let version = go_mod
        .lines()
        .find_map(|l| l.strip_prefix("require github.com/stefanprodan/podinfo "))
        .expect("podinfo version in go.mod");
    format!("localhost/podinfo:{}", version.trim())
}

/// podinfo's Rollout, judged from the metric source `metrics` (a preset: `prometheusClient` reads
/// podinfo's own metrics, `traefik` the gateway's), with no hand-written PromQL.
fn rollout_yaml(ns: &str, prometheus: &str, version: &str, args: &str, metrics: &str) -> String {
    let image = podinfo_image();
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {NAME}, namespace: {ns}}}
spec:
  parentRefs: [{{name: rollgate-demo, namespace: default}}]
  hostnames: ["{NAME}.{ns}.e2e"]
  rules:
    - backendRefs:
        - {{name: {NAME}-stable, port: 80, weight: 100}}
        - {{name: {NAME}-canary, port: 80, weight: 0}}
---
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {{name: {NAME}, namespace: {ns}}}
spec:
  replicas: 1
  drainDelay: 2s
  service: {{port: 80, targetPort: 9898}}
  steps: [{{weight: 20}}, {{weight: 50}}]
  template:
    metadata:
      annotations: {{e2e/version: "{version}"}}
    spec:
      terminationGracePeriodSeconds: 15
      securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
      containers:
        - name: podinfo
          image: {image}
          imagePullPolicy: Never
          args: [--port=9898, --level=warn, --data-path=/tmp, --ui-path=/tmp{args}]
          ports: [{{name: http, containerPort: 9898}}]
          readinessProbe: {{httpGet: {{path: /readyz, port: http}}, periodSeconds: 1}}
          # podinfo stops accepting connections at once on SIGTERM: keep serving while the
          # endpoints and the gateway catch up, as a user running it behind a gateway would.
          lifecycle: {{preStop: {{sleep: {{seconds: 5}}}}}}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {{drop: [ALL]}}
          volumeMounts: [{{name: tmp, mountPath: /tmp}}]
      volumes: [{{name: tmp, emptyDir: {{}}}}]
  traffic: {{gatewayAPI: {{httpRoute: {NAME}}}}}
  gate:
    prometheus: {{address: "{prometheus}"}}
    metrics: {{preset: {metrics}}}
    checks:
      - name: errors
        tolerance: 10
        errorRate: {{maxRatio: 0.01}}
      - name: latency
        latency: {{quantile: 0.95, max: 300ms}}
    policy: {{interval: 2s, minHealthy: 10s, maxHold: 5m}}
"#
    )
}

/// The pod holding the controller's Lease, if any.
async fn leader_opt(c: &Cluster) -> Option<String> {
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(c.client.clone(), "rollgate-system");
    leases.get_opt("rollgate-controller").await.ok().flatten()?.spec?.holder_identity
}

async fn leader(c: &Cluster) -> String {
    wait_until("a leader", Duration::from_secs(60), || async { leader_opt(c).await.is_some() }).await;
    leader_opt(c).await.unwrap_or_default()
}

/// The `/proc/<pid>` directories of the controller processes running in containers on this host
/// (their command line is the image's `/rollgate controller`).
fn in_cluster_controllers() -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| std::fs::read(p.join("cmdline")).is_ok_and(|c| c.starts_with(b"/rollgate\0controller")))
        .collect()
}

/// Resident memory (KiB) of the in-cluster controller processes, largest first.
fn in_cluster_controller_rss_kib() -> Vec<u64> {
    let mut out: Vec<u64> = in_cluster_controllers()
        .iter()
        .filter_map(|p| {
            let status = std::fs::read_to_string(p.join("status")).ok()?;
            status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
        })
        .collect();
    out.sort_unstable_by(|a, b| b.cmp(a));
    out
}

/// What the kernel says of an in-cluster controller process that the manifests' securityContext
/// does not allow, if anything: its user, seccomp mode, capabilities, privilege escalation and
/// root filesystem, read from `/proc`.
fn unconfined(proc_dir: &std::path::Path) -> Vec<String> {
    let status = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let mut wrong = Vec::new();
    for (name, want) in [
        ("Uid:", "65532 65532 65532 65532"),
        ("Seccomp:", "2"),
        ("NoNewPrivs:", "1"),
        ("CapEff:", "0000000000000000"),
        ("CapPrm:", "0000000000000000"),
    ] {
        let got = field(name);
        if got.as_deref() != Some(want) {
            wrong.push(format!("{name} {got:?}, want {want}"));
        }
    }
    // The root mount of its mount namespace: mountinfo's fifth field is the mount point, the
    // sixth its options.
    let mountinfo = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap_or_default();
    let root_ro = mountinfo.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(4) == Some(&"/") && f.get(5).is_some_and(|o| o.split(',').any(|x| x == "ro"))
    });
    if !root_ro {
        wrong.push("the root filesystem is not mounted read-only".into());
    }
    wrong
}

/// Waits until both replicas of the controller are Ready.
async fn controllers_ready(deployments: &Api<Deployment>, what: &str) {
    wait_until(what, Duration::from_secs(180), || async {
        deployments
            .get_opt("rollgate-controller")
            .await
            .ok()
            .flatten()
            .and_then(|d| d.status)
            .is_some_and(|s| s.ready_replicas == Some(2))
    })
    .await;
}

/// Applies podinfo's Rollout `yaml` and waits until its revision reaches `until` (as the canary
/// for `RolledBack`, as stable for `Promoted`): the status then, and the time since the apply.
async fn roll(c: &Cluster, ns: &str, yaml: &str, until: Phase, what: &str) -> (RolloutStatus, Duration) {
    let applied = std::time::Instant::now();
    let (ok, out) = c.apply(yaml).await;
    assert!(ok, "{out}");
    let rev = revision(c, ns).await;
    wait_until(what, Duration::from_secs(300), || async {
        let st = c.status(ns, NAME).await;
        let side = if until == Phase::Promoted { &st.stable_revision } else { &st.canary_revision };
        st.phase == Some(until) && side.as_deref() == Some(rev.as_str())
    })
    .await;
    (c.status(ns, NAME).await, applied.elapsed())
}

/// The revision of the template as applied.
async fn revision(c: &Cluster, ns: &str) -> String {
    rollgate_crds::revision::revision_of(&c.rollout(ns, NAME).await.spec.template)
}

#[tokio::test]
async fn scenario_13_rollgate_installed_in_cluster_rolls_out_podinfo_on_a_real_node() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-podinfo").await;
    let guard = OnFailure::new(&c, &ns);

    // Installed as users install it: kustomize, its own ServiceAccount and RBAC, two replicas.
    let _installed = Installed { kubectl: c.kubectl(), helm: c.toolchain.join("bin/helm") };
    let (ok, out) = kubectl(
        &c,
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            &manifests().join("manifests").display().to_string(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    let deployments: Api<Deployment> = Api::namespaced(c.client.clone(), "rollgate-system");
    controllers_ready(&deployments, "both controller pods ready").await;
    // Both controller pods run on the real node.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), "rollgate-system");
    let listed =
        pods.list(&ListParams::default().labels("app.kubernetes.io/name=rollgate")).await.expect("pods");
    for p in &listed.items {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        assert_eq!(node, "rollgate-real", "controller pod on the real node");
    }

    let rss_idle = in_cluster_controller_rss_kib();
    assert_eq!(rss_idle.len(), 2, "two controller processes in containers on this host: {rss_idle:?}");
    // The runtime enforces the securityContext, as the kernel reports it for each process.
    for p in in_cluster_controllers() {
        let wrong = unconfined(&p);
        assert!(wrong.is_empty(), "{}: {wrong:?}", p.display());
    }
    // The address a user writes: the Service's `name.namespace`, resolved in the controller's pod
    // by CoreDNS and routed by kube-proxy to the Prometheus behind it.
    let prometheus =
        std::env::var("ROLLGATE_E2E_PROMETHEUS_IN_CLUSTER").expect("ROLLGATE_E2E_PROMETHEUS_IN_CLUSTER");
    let (ok, out) = c.apply(&rollout_yaml(&ns, &prometheus, "v1", "", "prometheusClient")).await;
    assert!(ok, "{out}");
    wait_until("podinfo v1 promoted as stable", Duration::from_secs(180), || async {
        c.status(&ns, NAME).await.phase == Some(Phase::Promoted)
    })
    .await;

    let load = Load::start(&format!("{}/", c.gateway), &format!("{NAME}.{ns}.e2e"), RPS, 4);
    // The gateway serves the route a moment after it is written: the rollout is judged from the
    // first answered request on.
    wait_until("traffic reaches podinfo", Duration::from_secs(60), || async {
        load.snapshot().iter().any(|s| s.status == 200)
    })
    .await;
    let started = std::time::Instant::now();

    // A healthy new version: every step passes on podinfo's own metrics.
    let (ok, out) = c.apply(&rollout_yaml(&ns, &prometheus, "v2", "", "prometheusClient")).await;
    assert!(ok, "{out}");
    let v2 = revision(&c, &ns).await;
    // The leader pod is force-deleted mid-step: the standby takes the Lease and finishes.
    wait_until("v2 at its first step", Duration::from_secs(120), || async {
        c.status(&ns, NAME).await.history.iter().any(|d| d.action == "StepUp")
    })
    .await;
    let leader = leader(&c).await;
    let (ok, out) =
        kubectl(&c, &["delete", "pod", "-n", "rollgate-system", &leader, "--grace-period=0", "--force"])
            .await;
    assert!(ok, "{out}");
    wait_until("another pod leads", Duration::from_secs(90), || async {
        let now = leader_opt(&c).await;
        now.is_some_and(|l| l != leader)
    })
    .await;
    wait_until("podinfo v2 promoted", Duration::from_secs(300), || async {
        let st = c.status(&ns, NAME).await;
        st.phase == Some(Phase::Promoted) && st.stable_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    let promoted_after = started.elapsed();
    let st = c.status(&ns, NAME).await;
    assert_eq!(st.verdict, Some(Verdict::Pass));
    let step_ups: Vec<i32> = st.history.iter().filter(|d| d.action == "StepUp").map(|d| d.weight).collect();
    // The last step is 50 %: stable takes v2 while serving the other half, then all traffic.
    assert_eq!(step_ups, vec![20, 50], "each step taken once: {:?}", st.history);
    // podinfo's histogram has the Go client's default buckets: 300 ms is judged at 250 ms.
    let latency_source = st.checks.iter().find(|c| c.name == "latency").and_then(|c| c.source.clone());
    assert_eq!(
        latency_source.as_deref(),
        Some(
            "prometheusClient: http_request_duration_seconds, judged at le=\"0.25\" (250ms, the largest boundary below 300ms)"
        ),
        "{:?}",
        st.checks
    );
    let healthy = load.snapshot();
    let failures: Vec<(u16, f64)> = healthy
        .iter()
        .filter(|s| s.at >= started && (s.status >= 500 || s.status == 0))
        .map(|s| (s.status, s.at.duration_since(started).as_secs_f64()))
        .collect();
    let failed_healthy = failures.len();

    // podinfo's own fault option: a third of the requests fail (500, 400 or 409).
    let v3 = rollout_yaml(&ns, &prometheus, "v3", ", --random-error", "prometheusClient");
    let (st, rolled_back_after) = roll(&c, &ns, &v3, Phase::RolledBack, "podinfo v3 rolled back").await;
    assert_eq!(st.verdict, Some(Verdict::Fail));
    let reason = st.message.clone().unwrap_or_default();
    assert!(reason.contains("errors"), "the reason names the check: {reason}");
    // v3 answers errors by design until its last pod is gone (the gateway applies the rollback's
    // route a moment after it is written): stable's record below starts after that.
    let pods: Api<Pod> = Api::namespaced(c.client.clone(), &ns);
    wait_until("the rolled-back v3 canary's pods are gone", Duration::from_secs(120), || async {
        let canary = ListParams::default().labels("rollgate.dev/role=canary");
        pods.list(&canary).await.is_ok_and(|l| l.items.is_empty())
    })
    .await;

    // A canary whose container cannot start (a flag podinfo does not know) is rolled back as soon
    // as its pod crash-loops, saying so; stable keeps serving every request.
    let crash_applied = std::time::Instant::now();
    let v4 = rollout_yaml(&ns, &prometheus, "v4", ", --no-such-flag", "prometheusClient");
    let (st, crash_rolled_back_after) =
        roll(&c, &ns, &v4, Phase::RolledBack, "the crash-looping v4 rolled back").await;
    let crash_reason = st.message.unwrap_or_default();
    assert!(
        crash_reason.contains("the canary cannot run") && crash_reason.contains("CrashLoopBackOff"),
        "the reason says the canary crash-loops: {crash_reason}"
    );
    let events = c.events(&ns);
    assert!(events.contains("CrashLoopBackOff"), "a Warning Event names it:\n{events}");
    // An image the node does not have (and may not pull) is rolled back naming it.
    let missing_image_applied = std::time::Instant::now();
    let v4c = rollout_yaml(&ns, &prometheus, "v4c", "", "prometheusClient")
        .replace(&podinfo_image(), "localhost/podinfo:not-loaded");
    let (st, missing_image_after) =
        roll(&c, &ns, &v4c, Phase::RolledBack, "v4c rolled back: its image is not on the node").await;
    let missing_image_reason = st.message.unwrap_or_default();
    assert!(
        missing_image_reason.contains("ErrImageNeverPull") && missing_image_reason.contains("not-loaded"),
        "the reason names the image: {missing_image_reason}"
    );
    // The gate left on refserver's metric names (the default source): podinfo does not export
    // them, and the reason says what it exports instead and which preset reads it.
    let wrong_source_applied = std::time::Instant::now();
    let v4b = rollout_yaml(&ns, &prometheus, "v4b", "", "refserver");
    let (st, wrong_source_after) =
        roll(&c, &ns, &v4b, Phase::RolledBack, "v4b rolled back: the wrong metric source").await;
    let wrong_source_reason = st.message.unwrap_or_default();
    assert!(
        wrong_source_reason.contains("no series http_server_request_duration_seconds_count{")
            && wrong_source_reason.contains("the pods export http_request_duration_seconds_count")
            && wrong_source_reason.contains("set metrics.preset: prometheusClient"),
        "{wrong_source_reason}"
    );
    let rss_after_rollouts = in_cluster_controller_rss_kib();
    let seen = load.stop().await;
    let failed_during_crash: Vec<String> = seen
        .iter()
        .filter(|s| s.at >= crash_applied && (s.status >= 500 || s.status == 0))
        .map(|s| {
            let (stage, start) = if s.at >= wrong_source_applied {
                ("v4b (wrong metric source)", wrong_source_applied)
            } else if s.at >= missing_image_applied {
                ("v4c (missing image)", missing_image_applied)
            } else {
                ("v4 (crash loop)", crash_applied)
            };
            let from = if s.version.is_empty() { "the gateway" } else { s.version.as_str() };
            format!("{} from {from} {:.1}s into {stage}", s.status, s.at.duration_since(start).as_secs_f64())
        })
        .collect();
    assert!(
        failed_during_crash.is_empty(),
        "stable stopped serving while a canary could not run: {failed_during_crash:?}"
    );

    // The controller did all of it under its own ServiceAccount: never denied.
    let (ok, logs) =
        kubectl(&c, &["logs", "-n", "rollgate-system", "-l", "app.kubernetes.io/name=rollgate", "--tail=-1"])
            .await;
    assert!(ok, "{logs}");
    assert!(logs.contains("leadership acquired"), "one of the pods leads:\n{logs}");
    assert!(!logs.contains("forbidden"), "an RBAC denial in the controller's log:\n{logs}");
    // The latency check is compared with stable over the whole histogram: Prometheus answered
    // the bucket query (a refused one is logged and falls back to the limit).
    assert!(!logs.contains("histogram buckets unreadable"), "the bucket query failed:\n{logs}");

    assert_eq!(
        failed_healthy,
        0,
        "requests failed while a healthy podinfo was rolled out (status, seconds after v2 was applied): {failures:?}; history: {:?}",
        c.status(&ns, NAME).await.history
    );
    // Uninstalled, then installed again from the Helm chart: the next version is promoted by it.
    let helm_started = std::time::Instant::now();
    let controller_dir = manifests().join("manifests/controller").display().to_string();
    let (ok, out) = kubectl(&c, &["delete", "--wait=true", "-f", &controller_dir]).await;
    assert!(ok, "{out}");
    let out = Command::new(c.toolchain.join("bin/helm"))
        .args(["install", "rollgate", &manifests().join("charts/rollgate").display().to_string()])
        .args(["--namespace", "rollgate-system", "--create-namespace", "--wait", "--timeout", "3m"])
        .output()
        .await
        .expect("helm runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "helm install: {text}");
    controllers_ready(&deployments, "both pods of the chart ready").await;
    let load = Load::start(&format!("{}/", c.gateway), &format!("{NAME}.{ns}.e2e"), RPS, 4);
    let v5 = rollout_yaml(&ns, &prometheus, "v5", "", "traefik");
    let (st, _) =
        roll(&c, &ns, &v5, Phase::Promoted, "podinfo v5 promoted by the Helm-installed controller").await;
    let helm_promoted_after = helm_started.elapsed();
    let latency_source = st.checks.iter().find(|c| c.name == "latency").and_then(|c| c.source.clone());
    assert_eq!(
        latency_source.as_deref(),
        Some("traefik: traefik_service_request_duration_seconds, judged at le=\"0.3\" (300ms)"),
        "judged from the gateway's histogram: {:?}",
        st.checks
    );

    // Errors seen only by the gateway (no app metrics read at all) roll back too.
    let gateway_errors_applied = std::time::Instant::now();
    let v6 = rollout_yaml(&ns, &prometheus, "v6", ", --random-error", "traefik");
    let (st, gateway_rolled_back_after) =
        roll(&c, &ns, &v6, Phase::RolledBack, "podinfo v6 rolled back on the gateway's metrics").await;
    let gateway_reason = st.message.unwrap_or_default();
    assert!(gateway_reason.contains("errors over budget"), "{gateway_reason}");
    let seen_helm = load.stop().await;
    let failed_helm = seen_helm
        .iter()
        .filter(|s| s.at < gateway_errors_applied && (s.status >= 500 || s.status == 0))
        .count();
    assert_eq!(failed_helm, 0, "requests failed while the Helm-installed controller promoted v5");
    let (ok, logs) =
        kubectl(&c, &["logs", "-n", "rollgate-system", "-l", "app.kubernetes.io/name=rollgate", "--tail=-1"])
            .await;
    assert!(ok, "{logs}");
    assert!(!logs.contains("forbidden"), "an RBAC denial in the Helm-installed controller's log:\n{logs}");

    report(
        &c,
        "scenario-13-real-node-podinfo",
        serde_json::json!({
            "requests": seen.len(),
            "failed_during_healthy_rollout": failed_healthy,
            "prometheus_address": prometheus,
            "v2_applied_to_promoted_s": promoted_after.as_secs_f64(),
            "v3_applied_to_rolled_back_s": rolled_back_after.as_secs_f64(),
            "rollback_reason": reason,
            "crash_loop_rolled_back_after_s": crash_rolled_back_after.as_secs_f64(),
            "crash_loop_reason": crash_reason,
            "failed_during_crash_loop": failed_during_crash,
            "missing_image_rolled_back_after_s": missing_image_after.as_secs_f64(),
            "missing_image_reason": missing_image_reason,
            "wrong_metric_source_rolled_back_after_s": wrong_source_after.as_secs_f64(),
            "wrong_metric_source_reason": wrong_source_reason,
            "helm_reinstall_to_promoted_s": helm_promoted_after.as_secs_f64(),
            "v6_gateway_metrics_applied_to_rolled_back_s": gateway_rolled_back_after.as_secs_f64(),
            "v6_rollback_reason": gateway_reason,
            "controller_rss_kib_idle": rss_idle,
            "controller_rss_kib_after_rollouts": rss_after_rollouts,
        }),
    );
    drop(guard);
}
