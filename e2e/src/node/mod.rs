//! A node agent for a control plane without a container runtime.
//!
//! It registers a Node and keeps it alive (status heartbeat and a Lease in `kube-node-lease`),
//! and runs every Pod bound to it as local processes: the image `…/<name>:<tag>` maps to a
//! binary given with `--image name=/path`, the container's args and env are passed (plus
//! `REFSERVER_VERSION=<tag>` and `REFSERVER_LISTEN=0.0.0.0:<first containerPort>` unless set).
//! Each Pod gets its own network namespace with a veth into the host bridge and an address from
//! the pod range (pod IPs must not be loopback: EndpointSlices reject 127.0.0.0/8). The readiness
//! probe (HTTP GET) runs for real; Pod status reports podIP(s), conditions, container state and
//! restarts. A Pod being deleted gets SIGTERM, its grace period, then SIGKILL, and is removed.

pub mod net;
pub mod pod;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::{Mutex, watch};
use tokio::task::JoinSet;

#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    /// The host's address on the pod bridge (the node's InternalIP).
    pub node_ip: Ipv4Addr,
    pub bridge: String,
    /// First pod address; later pods count up from it.
    pub first_pod_ip: Ipv4Addr,
    pub prefix_len: u8,
    /// Image name (last path segment, without tag) → binary.
    pub images: HashMap<String, PathBuf>,
    /// Where pod logs go.
    pub log_dir: PathBuf,
    /// Names of network namespaces and host veths start with this.
    pub net_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("watch: {0}")]
    Watch(#[from] watcher::Error),
    #[error("network setup: {0}")]
    Net(String),
}

/// State shared by the agent's tasks.
pub struct Agent {
    pub client: Client,
    pub config: Config,
    next_ip: Mutex<u32>,
    /// Pods being run, by uid: a channel that tells the pod's supervisor it is being deleted.
    pods: Mutex<HashMap<String, watch::Sender<Option<Pod>>>>,
}

impl Agent {
    pub fn new(client: Client, config: Config) -> Arc<Self> {
        let first = u32::from(config.first_pod_ip);
        Arc::new(Self { client, config, next_ip: Mutex::new(first), pods: Mutex::default() })
    }

    pub async fn allocate_ip(&self) -> Ipv4Addr {
        let mut n = self.next_ip.lock().await;
        let ip = Ipv4Addr::from(*n);
        *n += 1;
        ip
    }

    /// Registers the Node, then runs the heartbeat, the lease and the pod watch until one of
    /// them fails or `stop` resolves; then stops every pod.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) -> Result<(), AgentError> {
        net::cleanup_prefix(&self.config.net_prefix).await;
        self.register().await?;
        let mut supervisors: JoinSet<()> = JoinSet::new();
        let heartbeat = self.clone().heartbeat();
        let pods = self.clone().watch_pods(&mut supervisors);
        let result = tokio::select! {
            r = heartbeat => r,
            r = pods => r,
            () = stop => Ok(()),
        };
        // Stop every pod: dropping the senders tells each supervisor to terminate.
        self.pods.lock().await.clear();
        while let Some(joined) = supervisors.join_next().await {
            if let Err(e) = joined {
                tracing::error!(error = %e, "pod supervisor failed");
            }
        }
        net::cleanup_prefix(&self.config.net_prefix).await;
        result
    }

    async fn register(&self) -> Result<(), AgentError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.config.node_name, "labels": {
                "kubernetes.io/hostname": self.config.node_name, "kubernetes.io/os": "linux"}},
            "spec": {}
        }))
        .map_err(|e| AgentError::Net(e.to_string()))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        self.patch_node_status().await
    }

    async fn patch_node_status(&self) -> Result<(), AgentError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let now = Timestamp::now().to_string();
        let status = json!({"status": {
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "rollgate node agent is ready",
                 "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "MemoryPressure", "status": "False", "reason": "KubeletHasSufficientMemory", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "DiskPressure", "status": "False", "reason": "KubeletHasNoDiskPressure", "lastHeartbeatTime": now, "lastTransitionTime": now},
                {"type": "PIDPressure", "status": "False", "reason": "KubeletHasSufficientPID", "lastHeartbeatTime": now, "lastTransitionTime": now}
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.config.node_ip.to_string()},
                {"type": "Hostname", "address": self.config.node_name}
            ],
            "capacity": {"cpu": "32", "memory": "64Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "64Gi", "pods": "110"},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "v1.35.4",
                "kubeProxyVersion": "", "osImage": "rollgate node agent", "kernelVersion": "", "containerRuntimeVersion": "process://",
                "machineID": "", "systemUUID": "", "bootID": ""}
        }});
        nodes.patch_status(&self.config.node_name, &PatchParams::default(), &Patch::Merge(&status)).await?;
        Ok(())
    }

    /// Node status every 10 s and the node Lease, so the node lifecycle controller never
    /// taints the node.
    async fn heartbeat(self: Arc<Self>) -> Result<(), AgentError> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        loop {
            // A Lease's renewTime is a MicroTime: exactly six fractional digits.
            let now = Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string();
            let lease = json!({
                "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": self.config.node_name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": self.config.node_name, "leaseDurationSeconds": 40, "renewTime": now}
            });
            // A failed heartbeat is retried soon; the node only goes NotReady after 40 s of them.
            let renewed = leases
                .patch(
                    &self.config.node_name,
                    &PatchParams::apply("rollgate-node").force(),
                    &Patch::Apply(&lease),
                )
                .await
                .map_err(AgentError::from);
            let result = match renewed {
                Ok(_) => self.patch_node_status().await,
                Err(e) => Err(e),
            };
            let pause = match result {
                Ok(()) => Duration::from_secs(10),
                Err(e) => {
                    tracing::warn!(error = %e, "node heartbeat failed; retrying");
                    Duration::from_secs(2)
                }
            };
            tokio::time::sleep(pause).await;
        }
    }

    async fn watch_pods(self: Arc<Self>, supervisors: &mut JoinSet<()>) -> Result<(), AgentError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let cfg = watcher::Config::default().fields(&format!("spec.nodeName={}", self.config.node_name));
        let mut events = watcher(pods, cfg).default_backoff().applied_objects().boxed();
        loop {
            tokio::select! {
                next = events.try_next() => {
                    match next? {
                        Some(pod) => self.clone().observe(pod, supervisors).await,
                        None => return Ok(()),
                    }
                }
                Some(joined) = supervisors.join_next(), if !supervisors.is_empty() => {
                    if let Err(e) = joined {
                        tracing::error!(error = %e, "pod supervisor failed");
                    }
                }
            }
        }
    }

    async fn observe(self: Arc<Self>, pod: Pod, supervisors: &mut JoinSet<()>) {
        let Some(uid) = pod.uid() else { return };
        let mut pods = self.pods.lock().await;
        if let Some(tx) = pods.get(&uid) {
            let _ = tx.send(Some(pod));
            return;
        }
        if pod.metadata.deletion_timestamp.is_some() {
            // Never started here (e.g. after an agent restart): just remove it.
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let _ = api.delete(&pod.name_any(), &kube::api::DeleteParams::default().grace_period(0)).await;
            return;
        }
        let (tx, rx) = watch::channel(Some(pod.clone()));
        pods.insert(uid.clone(), tx);
        drop(pods);
        let agent = self.clone();
        supervisors.spawn(async move {
            if let Err(e) = pod::supervise(agent.clone(), pod, rx).await {
                tracing::error!(error = %e, "pod supervisor");
            }
            agent.pods.lock().await.remove(&uid);
        });
    }
}
