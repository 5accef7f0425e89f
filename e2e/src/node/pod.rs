//! One pod's supervisor: network, process, readiness, status, termination.

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::json;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use super::net::{self, PodNet};
use super::{Agent, AgentError};

struct Running {
    child: Child,
    started_at: String,
}

pub async fn supervise(
    agent: Arc<Agent>,
    pod: Pod,
    mut updates: watch::Receiver<Option<Pod>>,
) -> Result<(), AgentError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(agent.client.clone(), &ns);
    let Some(container) = pod.spec.as_ref().and_then(|s| s.containers.first()).cloned() else {
        return Ok(());
    };
    let image = container.image.clone().unwrap_or_default();
    let Some((binary, tag)) = resolve_image(&agent, &image) else {
        tracing::warn!(pod = %name, %image, "no binary for this image");
        report_waiting(
            &api,
            &name,
            &container,
            "ErrImageNotMapped",
            &format!("no binary is mapped to {image}"),
        )
        .await;
        let _ =
            updates.wait_for(|p| p.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some())).await;
        let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
        return Ok(());
    };
    let ip = agent.allocate_ip().await;
    let n = u32::from(ip) & 0xffff;
    let pod_net = net::create(
        &agent.config.net_prefix,
        n,
        &agent.config.bridge,
        ip,
        agent.config.prefix_len,
        agent.config.node_ip,
    )
    .await?;
    let pod_start = Timestamp::now().to_string();
    let log = agent.config.log_dir.join(format!("{ns}_{name}.log"));
    let mut restarts = 0u32;
    let mut running = Some(start(&pod_net, &binary, &tag, &container, &log, &ns, &name)?);
    let mut ready = false;
    report(&api, &name, &agent, &pod_net, &container, &pod_start, running.as_ref(), ready, restarts).await;
    let period = Duration::from_secs(
        container.readiness_probe.as_ref().and_then(|p| p.period_seconds).unwrap_or(10).clamp(1, 300) as u64,
    );
    let mut probe = tokio::time::interval(period);
    let grace =
        pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30).max(0) as u64;
    let mut grace = Duration::from_secs(grace);
    // When the process died: when to start it again (backoff); pod updates in between (our
    // own status reports among them) must not cancel the restart.
    let mut restart_at: Option<tokio::time::Instant> = None;
    loop {
        let exited = async {
            match running.as_mut() {
                Some(r) => r.child.wait().await.ok(),
                None => std::future::pending().await,
            }
        };
        let restart_due = async {
            match restart_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = updates.changed() => {
                let deleting = match (changed, updates.borrow().as_ref()) {
                    (Err(_), _) | (Ok(()), None) => true,
                    (Ok(()), Some(p)) => {
                        if let Some(g) = p.metadata.deletion_grace_period_seconds {
                            grace = Duration::from_secs(g.max(0) as u64);
                        }
                        p.metadata.deletion_timestamp.is_some()
                    }
                };
                if deleting {
                    if let Some(r) = running.take() {
                        terminate(r, grace).await;
                    }
                    net::remove(&pod_net).await;
                    let _ = api.delete(&name, &DeleteParams::default().grace_period(0)).await;
                    return Ok(());
                }
            }
            status = exited => {
                restarts += 1;
                ready = false;
                tracing::warn!(pod = %name, ?status, restarts, "container exited; restarting");
                running = None;
                report(&api, &name, &agent, &pod_net, &container, &pod_start, None, false, restarts).await;
                let backoff = Duration::from_secs(u64::from(restarts.min(5)) * 2);
                restart_at = Some(tokio::time::Instant::now() + backoff);
            }
            () = restart_due => {
                restart_at = None;
                running = Some(start(&pod_net, &binary, &tag, &container, &log, &ns, &name)?);
                report(&api, &name, &agent, &pod_net, &container, &pod_start, running.as_ref(), false, restarts).await;
            }
            _ = probe.tick() => {
                let now_ready = running.is_some() && probe_ready(&container, pod_net.ip).await;
                if now_ready != ready {
                    ready = now_ready;
                    report(&api, &name, &agent, &pod_net, &container, &pod_start, running.as_ref(), ready, restarts).await;
                }
            }
        }
    }
}

/// `registry/path/name:tag` → (binary for `name`, `tag`).
fn resolve_image(agent: &Agent, image: &str) -> Option<(std::path::PathBuf, String)> {
    let last = image.rsplit('/').next()?;
    let (name, tag) = last.split_once(':').unwrap_or((last, "latest"));
    agent.config.images.get(name).map(|b| (b.clone(), tag.to_string()))
}

fn first_port(c: &Container) -> Option<i32> {
    c.ports.as_ref()?.first().map(|p| p.container_port)
}

#[allow(clippy::too_many_arguments)]
fn start(
    net: &PodNet,
    binary: &std::path::Path,
    tag: &str,
    c: &Container,
    log: &std::path::Path,
    ns: &str,
    name: &str,
) -> Result<Running, AgentError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| AgentError::Net(format!("log {}: {e}", log.display())))?;
    let err = out.try_clone().map_err(|e| AgentError::Net(e.to_string()))?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.netns]).arg(binary);
    if let Some(args) = &c.args {
        cmd.args(args);
    }
    cmd.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("REFSERVER_VERSION", tag);
    if let Some(port) = first_port(c) {
        cmd.env("REFSERVER_LISTEN", format!("0.0.0.0:{port}"));
    }
    for e in c.env.iter().flatten() {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => name.to_string(),
                Some("metadata.namespace") => ns.to_string(),
                Some("status.podIP") => net.ip.to_string(),
                _ => continue,
            },
            _ => String::new(),
        };
        cmd.env(&e.name, value);
    }
    cmd.stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
    let child = cmd.spawn().map_err(|e| AgentError::Net(format!("starting {}: {e}", binary.display())))?;
    Ok(Running { child, started_at: Timestamp::now().to_string() })
}

async fn terminate(mut r: Running, grace: Duration) {
    if let Some(pid) = r.child.id() {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, r.child.wait()).await.is_err() {
        let _ = r.child.kill().await;
    }
}

async fn probe_ready(c: &Container, ip: Ipv4Addr) -> bool {
    let Some(get) = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref()) else {
        return true;
    };
    let port = match &get.port {
        IntOrString::Int(p) => Some(*p),
        IntOrString::String(named) => c
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(named.as_str()))
            .map(|p| p.container_port),
    };
    let Some(port) = port else { return false };
    let url = format!("http://{ip}:{port}{}", get.path.as_deref().unwrap_or("/"));
    let Ok(client) = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(1)).build() else {
        return false;
    };
    client.get(url).send().await.is_ok_and(|r| r.status().is_success() || r.status().is_redirection())
}

#[allow(clippy::too_many_arguments)]
async fn report(
    api: &Api<Pod>,
    name: &str,
    agent: &Agent,
    net: &PodNet,
    c: &Container,
    pod_start: &str,
    running: Option<&Running>,
    ready: bool,
    restarts: u32,
) {
    let now = Timestamp::now().to_string();
    let b = |v: bool| if v { "True" } else { "False" };
    let state = match running {
        Some(r) => json!({"running": {"startedAt": r.started_at}}),
        None => json!({"waiting": {"reason": "CrashLoopBackOff", "message": "restarting"}}),
    };
    let status = json!({"status": {
        "phase": "Running",
        "hostIP": agent.config.node_ip.to_string(),
        "hostIPs": [{"ip": agent.config.node_ip.to_string()}],
        "podIP": net.ip.to_string(),
        "podIPs": [{"ip": net.ip.to_string()}],
        "startTime": pod_start,
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": pod_start},
            {"type": "Initialized", "status": "True", "lastTransitionTime": pod_start},
            {"type": "ContainersReady", "status": b(ready), "lastTransitionTime": now},
            {"type": "Ready", "status": b(ready), "lastTransitionTime": now}
        ],
        "containerStatuses": [{
            "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
            "containerID": format!("process://{}", running.and_then(|r| r.child.id()).unwrap_or(0)),
            "ready": ready, "started": running.is_some(), "restartCount": restarts, "state": state
        }]
    }});
    if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await {
        tracing::warn!(pod = %name, error = %e, "reporting pod status");
    }
}

async fn report_waiting(api: &Api<Pod>, name: &str, c: &Container, reason: &str, message: &str) {
    let status = json!({"status": {"phase": "Pending", "containerStatuses": [{
        "name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}
    }]}});
    if let Err(e) = api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await {
        tracing::warn!(pod = %name, error = %e, "reporting pod status");
    }
}
