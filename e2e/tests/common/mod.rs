//! The end-to-end harness: the local control plane from `e2e/scripts/cluster.sh`, the rollgate
//! controller as a process, a load generator through the gateway, and diagnostics on failure.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use rollgate_crds::{Rollout, RolloutStatus};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

pub struct Cluster {
    pub client: Client,
    pub state: PathBuf,
    pub toolchain: PathBuf,
    pub gateway: String,
    pub prometheus: String,
    pub bin_dir: PathBuf,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run the suite with `make e2e`"))
}

impl Cluster {
    pub async fn connect() -> Cluster {
        let client = Client::try_default().await.expect("kube client from KUBECONFIG");
        let bin_dir =
            PathBuf::from(env!("CARGO_BIN_EXE_rollgate-load")).parent().expect("bin dir").to_path_buf();
        Cluster {
            client,
            state: PathBuf::from(env("ROLLGATE_E2E_STATE")),
            toolchain: PathBuf::from(env("ROLLGATE_E2E_TOOLCHAIN")),
            gateway: env("ROLLGATE_E2E_GATEWAY"),
            prometheus: env("ROLLGATE_E2E_PROMETHEUS"),
            bin_dir,
        }
    }

    /// A fresh namespace for one scenario.
    pub async fn namespace(&self, name: &str) -> String {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        wait_until(&format!("namespace {name} gone"), Duration::from_secs(60), || async {
            api.get_opt(name).await.ok().flatten().is_none()
        })
        .await;
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
        api.create(&PostParams::default(), &ns).await.expect("create namespace");
        wait_until("default service account", Duration::from_secs(60), || async {
            let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
                Api::namespaced(self.client.clone(), name);
            sa.get_opt("default").await.ok().flatten().is_some()
        })
        .await;
        name.to_string()
    }

    pub fn kubectl(&self) -> PathBuf {
        self.toolchain.join("bin/kubectl")
    }

    /// Applies YAML with kubectl (as a user would); returns (success, output).
    pub async fn apply(&self, yaml: &str) -> (bool, String) {
        let mut child = Command::new(self.kubectl())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        if let Some(mut stdin) = child.stdin.take() {
            use tokio::io::AsyncWriteExt;
            stdin.write_all(yaml.as_bytes()).await.expect("write yaml");
        }
        let out = child.wait_with_output().await.expect("kubectl output");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    pub async fn rollout(&self, ns: &str, name: &str) -> Rollout {
        let api: Api<Rollout> = Api::namespaced(self.client.clone(), ns);
        api.get(name).await.expect("get rollout")
    }

    pub async fn status(&self, ns: &str, name: &str) -> RolloutStatus {
        self.rollout(ns, name).await.status.unwrap_or_default()
    }

    /// Runs the `rollgate` CLI as a pipeline would; returns (exit code, stdout and stderr).
    pub async fn rollgate(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(self.bin_dir.join("rollgate"))
            .args(args)
            .env("KUBECONFIG", env("KUBECONFIG"))
            .output()
            .await
            .expect("rollgate runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// Runs `kubectl rollgate ARGS`: the same binary installed as a kubectl plugin
    /// (`kubectl-rollgate` on PATH); returns (exit code, stdout and stderr).
    pub async fn kubectl_plugin(&self, args: &[&str]) -> (i32, String) {
        let plugins = self.state.join("kubectl-plugins");
        std::fs::create_dir_all(&plugins).expect("plugin dir");
        let plugin = plugins.join("kubectl-rollgate");
        if !plugin.exists() {
            std::os::unix::fs::symlink(self.bin_dir.join("rollgate"), &plugin).expect("plugin link");
        }
        let path = format!("{}:{}", plugins.display(), std::env::var("PATH").unwrap_or_default());
        let out = Command::new(self.kubectl())
            .arg("rollgate")
            .args(args)
            .env("KUBECONFIG", env("KUBECONFIG"))
            .env("PATH", path)
            .output()
            .await
            .expect("kubectl runs");
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        (out.status.code().unwrap_or(-1), text)
    }

    /// Starts the `rollgate` CLI and leaves it running (stdout and stderr captured).
    pub fn rollgate_spawn(&self, args: &[&str]) -> Child {
        Command::new(self.bin_dir.join("rollgate"))
            .args(args)
            .env("KUBECONFIG", env("KUBECONFIG"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("rollgate runs")
    }

    /// The admin's bearer token, and one of a user with no RBAC bindings.
    pub fn tokens(&self) -> (String, String) {
        let read = |f: &str| std::fs::read_to_string(self.state.join("pki").join(f)).expect("token file");
        (read("token").trim().to_string(), read("viewer-token").trim().to_string())
    }

    /// Writes `text` to a file in the suite's state directory; returns its path.
    pub fn write_file(&self, name: &str, text: &str) -> String {
        let dir = self.state.join("files");
        std::fs::create_dir_all(&dir).expect("files dir");
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write file");
        path.display().to_string()
    }

    /// The namespace's Events, as `kubectl get events -o yaml` prints them.
    pub fn events(&self, ns: &str) -> String {
        kubectl_yaml(&self.kubectl(), ns, "events")
    }
}

/// `kubectl -n NS get KIND -o yaml` (synchronous: also used while unwinding from a panic).
fn kubectl_yaml(kubectl: &std::path::Path, ns: &str, kind: &str) -> String {
    std::process::Command::new(kubectl)
        .args(["-n", ns, "get", kind, "-o", "yaml"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn tail(s: &str, lines: usize) -> String {
    let v: Vec<&str> = s.lines().collect();
    v[v.len().saturating_sub(lines)..].join("\n")
}

/// Prints the scenario's Rollout, Deployments, Pods, HTTPRoute, Events and the controller's log
/// tail when the scenario panics (whatever assertion failed). Hold it for the whole scenario.
pub struct OnFailure {
    kubectl: PathBuf,
    namespace: String,
    logs: Vec<PathBuf>,
}

impl OnFailure {
    pub fn new(cluster: &Cluster, namespace: &str) -> OnFailure {
        OnFailure { kubectl: cluster.kubectl(), namespace: namespace.to_string(), logs: Vec::new() }
    }

    /// Adds a controller whose log tail is printed.
    pub fn watch(&mut self, controller: &Controller) {
        self.logs.push(controller.log.clone());
    }
}

impl Drop for OnFailure {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        eprintln!("\n===== diagnostics of namespace {} =====", self.namespace);
        for kind in ["rollouts.rollgate.dev", "deployments", "pods", "httproutes", "events"] {
            eprintln!(
                "----- {kind} -----\n{}",
                tail(&kubectl_yaml(&self.kubectl, &self.namespace, kind), 150)
            );
        }
        for log in &self.logs {
            eprintln!(
                "----- {} (tail) -----\n{}",
                log.display(),
                tail(&std::fs::read_to_string(log).unwrap_or_default(), 40)
            );
        }
    }
}

/// Polls `cond` every 200 ms until it holds; panics after `limit`.
pub async fn wait_until<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The rollgate controller, as a process.
pub struct Controller {
    child: Child,
    pub log: PathBuf,
    /// Base URL of its verdict API.
    pub api: String,
}

impl Controller {
    pub async fn start(cluster: &Cluster, tag: &str) -> Controller {
        Controller::start_with(cluster, tag, &[]).await
    }

    /// Starts one with extra flags (a scope: `--watch-namespace`, `--instance`).
    pub async fn start_with(cluster: &Cluster, tag: &str, extra: &[&str]) -> Controller {
        let log = cluster.state.join("logs").join(format!("controller-{tag}.log"));
        let file = std::fs::File::create(&log).expect("controller log");
        // A free loopback port for the verdict API (its own port, as `--api-addr` documents).
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free loopback port")
        };
        let (api_addr, metrics_addr) = (free(), free());
        // The suite's Prometheus scrapes every controller it starts (file-based discovery), as
        // a ServiceMonitor would in a cluster: the dashboard's queries are checked against it.
        let targets = cluster.state.join("prometheus-targets");
        let target = serde_json::json!([{"targets": [metrics_addr.to_string()], "labels": {"e2e": tag}}]);
        std::fs::create_dir_all(&targets)
            .and_then(|()| std::fs::write(targets.join(format!("controller-{tag}.json")), target.to_string()))
            .expect("prometheus target file");
        let child = Command::new(cluster.bin_dir.join("rollgate"))
            .args(["controller", "--lease-namespace", "default"])
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .arg("--api-addr")
            .arg(api_addr.to_string())
            .arg("--identity")
            .arg(format!("e2e-{tag}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start the controller (is it built? `make e2e` builds it)");
        Controller { child, log, api: format!("http://{api_addr}") }
    }

    /// Peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGKILL: the harshest restart.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

/// One response seen by the load generator.
#[derive(Debug, Clone)]
pub struct Seen {
    pub at: Instant,
    pub status: u16,
    pub version: String,
}

/// Steady traffic through the gateway, recording every response's status and version.
pub struct Load {
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<()>,
}

impl Load {
    /// `rps` requests per second over `workers` connections to `url`, with `Host: host`.
    pub fn start(url: &str, host: &str, rps: u32, workers: u32) -> Load {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop, rx) = tokio::sync::watch::channel(false);
        let mut tasks = tokio::task::JoinSet::new();
        let period = Duration::from_secs_f64(f64::from(workers) / f64::from(rps));
        for _ in 0..workers {
            let client = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client");
            let url = url.to_string();
            let host = host.to_string();
            let seen = seen.clone();
            let rx = rx.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                while !*rx.borrow() {
                    tick.tick().await;
                    let (status, version) = match client.get(&url).header("host", &host).send().await {
                        Ok(r) => (
                            r.status().as_u16(),
                            r.headers()
                                .get("x-refserver-version")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string(),
                        ),
                        Err(_) => (0, String::new()),
                    };
                    if let Ok(mut s) = seen.lock() {
                        s.push(Seen { at: Instant::now(), status, version });
                    }
                }
            });
        }
        Load { seen, stop, tasks }
    }

    pub fn snapshot(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub async fn stop(mut self) -> Vec<Seen> {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
        self.snapshot()
    }
}

/// Share of responses per version among `seen` (status 200 only).
pub fn shares(seen: &[Seen]) -> BTreeMap<String, f64> {
    let ok: Vec<&Seen> = seen.iter().filter(|s| s.status == 200).collect();
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for s in &ok {
        *counts.entry(s.version.clone()).or_default() += 1.0;
    }
    let n = ok.len().max(1) as f64;
    counts.values_mut().for_each(|v| *v /= n);
    counts
}

/// The refserver image `make images` builds (its tag is the workspace's version); each scenario's
/// "versions" of refserver are this image with `REFSERVER_VERSION` set.
pub fn refserver_image() -> String {
    format!("ghcr.io/rollgate/refserver:{}", env!("CARGO_PKG_VERSION"))
}

/// rollgate's HTTPRoute `name`: host `<name>.<ns>.e2e`, all traffic to `<name>-stable`.
pub fn route_yaml(ns: &str, name: &str) -> String {
    format!(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: {name}, namespace: {ns}}}
spec:
  parentRefs: [{{name: rollgate-demo, namespace: default}}]
  hostnames: ["{name}.{ns}.e2e"]
  rules:
    - backendRefs:
        - {{name: {name}-stable, port: 80, weight: 100}}
        - {{name: {name}-canary, port: 80, weight: 0}}
"#
    )
}

pub fn rollout_yaml(ns: &str, name: &str, version: &str, env: &[(&str, &str)], gate_extra: &str) -> String {
    let image = refserver_image();
    let env_yaml: String =
        env.iter().map(|(k, v)| format!("\n            - {{name: {k}, value: \"{v}\"}}")).collect();
    let route = route_yaml(ns, name);
    format!(
        r#"{route}---
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {{name: {name}, namespace: {ns}}}
spec:
  replicas: 1
  drainDelay: 2s
  template:
    spec:
      terminationGracePeriodSeconds: 10
      containers:
        - name: refserver
          image: {image}
          env:
            - {{name: REFSERVER_VERSION, value: "{version}"}}
            - {{name: REFSERVER_SHUTDOWN_DRAIN_DELAY_MS, value: "3000"}}{env_yaml}
          ports: [{{name: http, containerPort: 8080}}]
          readinessProbe: {{httpGet: {{path: /readyz, port: http}}, periodSeconds: 1}}
  traffic: {{gatewayAPI: {{httpRoute: {name}}}}}
  gate:
    prometheus: {{address: "PROMETHEUS"}}
    checks:
      - {{name: error-rate, errorRate: {{maxRatio: 0.01}}}}
      - {{name: latency, latency: {{quantile: 0.95, max: 300ms}}}}
      - {{name: pause, pause: {{preset: refserver, quantile: 0.99, max: 50ms}}}}
    policy: {{interval: 2s, minHealthy: 10s, maxHold: 5m{gate_extra}}}
"#
    )
}

/// Sets the template's version (and env) with a server-side apply of the same manifest.
pub async fn patch_version(cluster: &Cluster, ns: &str, name: &str, yaml: &str) {
    let (ok, out) = cluster.apply(&yaml.replace("PROMETHEUS", &cluster.prometheus)).await;
    assert!(ok, "apply {ns}/{name}: {out}");
}

pub fn value(v: &Value, path: &str) -> Value {
    v.pointer(path).cloned().unwrap_or(Value::Null)
}

pub async fn patch_merge<K>(api: &Api<K>, name: &str, patch: Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.expect("patch");
}

/// Writes one scenario's figures to `$ROLLGATE_E2E_STATE/reports/<name>.json`; `run-e2e.sh`
/// gathers them into `e2e-report.json`.
pub fn report(cluster: &Cluster, name: &str, figures: Value) {
    let dir = cluster.state.join("reports");
    let _ = std::fs::create_dir_all(&dir);
    let text =
        serde_json::to_string_pretty(&json!({"scenario": name, "figures": figures})).unwrap_or_default();
    if let Err(e) = std::fs::write(dir.join(format!("{name}.json")), text) {
        eprintln!("writing the report of {name}: {e}");
    }
}

/// One webhook request as received: its headers and raw body.
pub type Received = (axum::http::HeaderMap, Vec<u8>);

/// Receives webhook POSTs on loopback and keeps them in arrival order.
pub struct Hooks {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hooks {
    pub async fn start() -> Hooks {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind loopback");
        let addr = listener.local_addr().expect("addr");
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    if let Ok(mut r) = kept.lock() {
                        r.push((headers, body.to_vec()));
                    }
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Hooks { url: format!("http://{addr}/hook"), received, task }
    }

    /// The JSON bodies, in arrival order.
    pub fn bodies(&self) -> Vec<Value> {
        self.received().iter().map(|(_, b)| serde_json::from_slice(b).unwrap_or(Value::Null)).collect()
    }

    /// Every request: its headers and raw body.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for Hooks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Server-Sent Events stream being read: (event, data) in arrival order.
pub struct EventStream {
    events: Arc<Mutex<Vec<(String, Value)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    pub async fn connect(url: &str, token: &str) -> EventStream {
        use futures::StreamExt;
        let response = reqwest::Client::new().get(url).bearer_auth(token).send().await.expect("SSE request");
        assert_eq!(response.status(), 200, "SSE {url}");
        let events: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
        let kept = events.clone();
        let task = tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = body.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let block: String = buffer.drain(..end + 2).collect();
                    let mut event = String::from("message");
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(e) = line.strip_prefix("event:") {
                            event = e.trim().to_string();
                        } else if let Some(d) = line.strip_prefix("data:") {
                            data.push_str(d.trim_start());
                        }
                    }
                    if data.is_empty() {
                        continue;
                    }
                    let value = serde_json::from_str(&data).unwrap_or(Value::String(data));
                    if let Ok(mut e) = kept.lock() {
                        e.push((event, value));
                    }
                }
            }
        });
        EventStream { events, task }
    }

    pub fn events(&self) -> Vec<(String, Value)> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The HTTPRoute kind, read without the controller's router code (the suite checks the
/// controller's writes with its own reading of them).
pub fn http_route_resource() -> kube::core::ApiResource {
    kube::core::ApiResource::from_gvk_with_plural(
        &kube::core::GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "HTTPRoute"),
        "httproutes",
    )
}

/// The weight of the backendRef to Service `service` in an HTTPRoute (1 when unset, as the
/// Gateway API defines it); `None` when no rule references it.
pub fn backend_weight(route: &serde_json::Value, service: &str) -> Option<i64> {
    let rules = route.pointer("/spec/rules")?.as_array()?;
    rules.iter().filter_map(|r| r.get("backendRefs")?.as_array()).flatten().find_map(|b| {
        (b.get("name")?.as_str()? == service)
            .then(|| b.get("weight").and_then(serde_json::Value::as_i64).unwrap_or(1))
    })
}
