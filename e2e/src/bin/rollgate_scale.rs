//! `rollgate-scale`: the controller at many Rollouts, on the local control plane (`make
//! bench-scale`). Creates N Rollouts whose pods can never be scheduled (they wait for their first
//! deploy, as a large cluster's quiet Rollouts do), measures spec → status latency of the burst,
//! then the controller's and the API server's CPU and the controller's memory at steady state,
//! then the latency of single changes made one at a time among them, deletes them all and
//! measures the memory again. Prints a JSON report; a report, not a test.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Rollouts to create.
    #[arg(long, default_value_t = 1000)]
    rollouts: usize,
    /// Namespace to create them in (made fresh).
    #[arg(long, default_value = "scale")]
    namespace: String,
    /// Each controller replica's pid (CPU and memory are read from /proc); repeatable.
    #[arg(long, required = true)]
    controller_pid: Vec<u32>,
    /// The API server's pid.
    #[arg(long)]
    apiserver_pid: u32,
    /// Each replica's metrics URL (`rollgate_kube_requests_total` before and after); repeatable.
    #[arg(long, required = true)]
    metrics_url: Vec<String>,
    /// The controllers' shards (> 1: wait until the replicas hold every shard between them
    /// before creating anything).
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Longest wait for the burst's aftermath (the passes the Rollouts' own writes and the
    /// Deployments' first status changes trigger) to end before the steady state is measured:
    /// it ends when the controller sends fewer than `quiet_rps` requests a second over 10 s.
    #[arg(long, default_value_t = 600)]
    settle: u64,
    /// Requests a second per replica.
    #[arg(long, default_value_t = 2.0)]
    quiet_rps: f64,
    /// Seconds the steady state is measured over.
    #[arg(long, default_value_t = 120)]
    measure: u64,
}

/// CPU seconds (user + system) a process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat: 11 and 12 after the state field.
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The controller's metrics page (empty when it cannot be read).
async fn metrics_text(url: &str) -> String {
    match reqwest::get(url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Requests all replicas have sent to the API server.
async fn kube_requests(urls: &[String]) -> f64 {
    let mut total = 0.0;
    for url in urls {
        total += metrics_text(url)
            .await
            .lines()
            .filter(|l| l.starts_with("rollgate_kube_requests_total{"))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum::<f64>();
    }
    total
}

/// CPU seconds of all replicas.
fn cpu_all(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// The largest replica's memory.
fn rss_max(pids: &[u32]) -> f64 {
    pids.iter().map(|p| rss_mib(*p)).fold(0.0, f64::max)
}

/// Waits until every shard Lease has a holder and no replica holds more than its share.
async fn shards_balanced(
    client: &Client,
    shards: usize,
    replicas: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let started = Instant::now();
    let most = shards.div_ceil(replicas.max(1));
    loop {
        let mut held: HashMap<String, usize> = HashMap::new();
        for l in leases.list(&ListParams::default()).await?.items {
            let holder = l.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty());
            if let (true, Some(h)) =
                (l.metadata.name.unwrap_or_default().starts_with("rollgate-shard-"), holder)
            {
                *held.entry(h).or_default() += 1;
            }
        }
        if held.values().sum::<usize>() == shards
            && held.len() == replicas
            && held.values().all(|n| *n <= most)
        {
            return Ok(started.elapsed().as_secs_f64());
        }
        if started.elapsed() > Duration::from_secs(120) {
            return Err(format!("shards not balanced after 120 s: {held:?}").into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn rollout(ns: &str, i: usize) -> Rollout {
    let value = json!({
        "apiVersion": "rollgate.dev/v1alpha1", "kind": "Rollout",
        "metadata": {"name": format!("r{i:05}"), "namespace": ns},
        "spec": {
            "replicas": 1,
            "template": {"spec": {
                // No node has this label: the pods stay Pending and the Rollout waits.
                "nodeSelector": {"rollgate.dev/bench": "nowhere"},
                "containers": [{"name": "app", "image": "ghcr.io/rollgate/refserver:0.1.0"}]
            }},
            "traffic": {"replicaRatio": {}},
            "gate": {"prometheus": {"address": "http://127.0.0.1:9"}, "checks": [{"name": "error-rate", "errorRate": {"maxRatio": 0.01}}]}
        }
    });
    serde_json::from_value(value).unwrap_or_else(|e| panic!("the bench Rollout: {e}"))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let client = Client::try_default().await?;
    let pids = args.controller_pid.clone();
    let balanced_after =
        if args.shards > 1 { Some(shards_balanced(&client, args.shards, pids.len()).await?) } else { None };
    let idle_rss = rss_max(&pids);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = args.namespace.clone();
    if namespaces.get_opt(&ns).await?.is_some() {
        namespaces.delete(&ns, &DeleteParams::default()).await?;
        while namespaces.get_opt(&ns).await?.is_some() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}}))?)
        .await?;
    let api: Api<Rollout> = Api::namespaced(client.clone(), &ns);

    // When each Rollout was created, and when its status first described its generation.
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let answered: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = answered.clone();
    let watch =
        tokio::spawn(watcher(api.clone(), watcher::Config::default()).applied_objects().try_for_each(
            move |ro: Rollout| {
                let seen = seen.clone();
                async move {
                    let current =
                        ro.status.as_ref().and_then(|s| s.observed_generation) == ro.metadata.generation;
                    if current && let Ok(mut a) = seen.lock() {
                        a.entry(ro.name_any()).or_insert_with(Instant::now);
                    }
                    Ok(())
                }
            },
        ));

    let started = Instant::now();
    let cpu_ctl0 = cpu_all(&pids);
    let cpu_api0 = cpu_seconds(args.apiserver_pid);
    futures::stream::iter(0..args.rollouts)
        .for_each_concurrent(8, |i| {
            let api = api.clone();
            let ns = ns.clone();
            let created = created.clone();
            async move {
                let ro = rollout(&ns, i);
                let at = Instant::now();
                match api.create(&PostParams::default(), &ro).await {
                    Ok(_) => {
                        if let Ok(mut c) = created.lock() {
                            c.insert(ro.name_any(), at);
                        }
                    }
                    Err(e) => eprintln!("creating {}: {e}", ro.name_any()),
                }
            }
        })
        .await;
    let create_secs = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(600);
    while answered.lock().map(|a| a.len()).unwrap_or(0) < args.rollouts && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let all_answered_secs = started.elapsed().as_secs_f64();
    let cpu_ramp = (cpu_all(&pids) - cpu_ctl0, cpu_seconds(args.apiserver_pid) - cpu_api0);
    let mut latencies: Vec<f64> = {
        let c = created.lock().map(|c| c.clone()).unwrap_or_default();
        let a = answered.lock().map(|a| a.clone()).unwrap_or_default();
        c.iter()
            .filter_map(|(n, t)| a.get(n).map(|s| s.saturating_duration_since(*t).as_secs_f64()))
            .collect()
    };
    latencies.sort_by(|a, b| a.total_cmp(b));

    let settle_started = Instant::now();
    let mut last = kube_requests(&args.metrics_url).await;
    while settle_started.elapsed() < Duration::from_secs(args.settle) {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let now = kube_requests(&args.metrics_url).await;
        let rate = (now - last) / 10.0;
        last = now;
        // Each replica renews its Leases and lists them to rebalance: a floor per replica.
        if rate < args.quiet_rps * pids.len() as f64 {
            break;
        }
    }
    let settled_secs = settle_started.elapsed().as_secs_f64();
    let (ctl0, api0, req0) =
        (cpu_all(&pids), cpu_seconds(args.apiserver_pid), kube_requests(&args.metrics_url).await);
    let mut rss_peak: f64 = 0.0;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(args.measure) {
        rss_peak = rss_peak.max(rss_max(&pids));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let steady_ctl = (cpu_all(&pids) - ctl0) / secs;
    let steady_api = (cpu_seconds(args.apiserver_pid) - api0) / secs;
    let steady_requests = (kube_requests(&args.metrics_url).await - req0) / secs;
    let rss_steady = rss_max(&pids);

    // One change at a time among the many: how long until its status describes it.
    let mut change_latencies = Vec::new();
    for i in (0..args.rollouts).step_by((args.rollouts / 20).max(1)) {
        let name = format!("r{i:05}");
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "ghcr.io/rollgate/refserver:0.1.0", "env": [{"name": "CHANGE", "value": "1"}]}
        ]}}}});
        let at = Instant::now();
        let Ok(patched) =
            api.patch(&name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(&patch)).await
        else {
            continue;
        };
        let generation = patched.metadata.generation;
        let limit = Instant::now() + Duration::from_secs(60);
        while Instant::now() < limit {
            let ro = api.get(&name).await?;
            if ro.status.as_ref().and_then(|s| s.observed_generation) >= generation {
                change_latencies.push(at.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    change_latencies.sort_by(|a, b| a.total_cmp(b));

    api.delete_collection(&DeleteParams::default(), &ListParams::default()).await?;
    let deadline = Instant::now() + Duration::from_secs(300);
    while !api.list(&ListParams::default().limit(1)).await?.items.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // The controller sweeps what it remembers of deleted Rollouts once a minute: wait until its
    // metrics no longer name the namespace.
    let label = format!("namespace=\"{ns}\"");
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut swept = false;
    while Instant::now() < deadline {
        let mut clean = true;
        for url in &args.metrics_url {
            let text = metrics_text(url).await;
            clean &= !text.is_empty() && !text.contains(&label);
        }
        if clean {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if !swept {
        for url in &args.metrics_url {
            for line in metrics_text(url).await.lines().filter(|l| l.contains(&label)).take(5) {
                eprintln!("not swept ({url}): {line}");
            }
        }
    }
    let rss_after = rss_max(&pids);
    watch.abort();
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;

    let report = json!({
        "rollouts": args.rollouts,
        "replicas": pids.len(),
        "shards": args.shards,
        "shards_balanced_after_seconds": balanced_after,
        "idle_rss_mib_per_replica_max": idle_rss,
        "answered": latencies.len(),
        "create_seconds": create_secs,
        "all_answered_seconds": all_answered_secs,
        "spec_to_status_seconds": {
            "p50": percentile(&latencies, 0.5), "p90": percentile(&latencies, 0.9),
            "p99": percentile(&latencies, 0.99), "max": latencies.last().copied().unwrap_or(f64::NAN),
        },
        "ramp_cpu_seconds": {"controller": cpu_ramp.0, "apiserver": cpu_ramp.1},
        "one_change_at_steady_state_seconds": {
            "changes": change_latencies.len(),
            "p50": percentile(&change_latencies, 0.5), "p99": percentile(&change_latencies, 0.99),
            "max": change_latencies.last().copied().unwrap_or(f64::NAN),
        },
        "steady": {
            "settled_after_seconds": settled_secs,
            "seconds": secs,
            "controller_cpu_cores": steady_ctl,
            "apiserver_cpu_cores": steady_api,
            "controller_kube_requests_per_second": steady_requests,
            "controller_rss_mib_per_replica_max": rss_steady,
            "controller_rss_peak_mib_per_replica_max": rss_peak,
        },
        "controller_rss_mib_after_deleting_all": rss_after,
        "deleted_rollouts_swept": swept,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
