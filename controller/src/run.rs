//! `rollgate controller`: the operator process.
//!
//! Serves `/metrics`, `/healthz`, `/readyz` and the verdict API (`verdict_api`; on its own
//! port with `--api-addr`) at once; takes part in leader election (a Lease,
//! through kube-lease-manager) so that of several replicas only one acts; while leader, runs the
//! kube-runtime Controllers of its scope (`watches`, `scope`). Losing the lease stops them until
//! it is won again. With `--shards N` there is no leader: every replica runs the Controllers and
//! acts on the Rollouts of the shards it holds (`shards`).
//! SIGTERM or SIGINT stops everything and releases the lease.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use kube::Client;
use kube::discovery::Discovery;
use kube::runtime::events::Reporter;
use kube_lease_manager::LeaseManagerBuilder;

use crate::connection::KubeArgs;
use crate::metrics_provider::MetricProvider;
use crate::metrics_provider::access::Access;
use crate::metrics_provider::prometheus::Prometheus;
use crate::observability::{CountRequests, Metrics, SharedMetrics};
use crate::reconcile::events::EventWriter;
use crate::reconcile::{Context, ProviderFactory};
use crate::scope::{Scope, ScopeError, set_field_manager};
use crate::shards::{Coordinator, Shards};
use crate::{verdict_api, watches};

#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Address of the metrics and health endpoints.
    #[arg(long, default_value = "0.0.0.0:9464", env = "ROLLGATE_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Serve the verdict API (`/api/v1/...`) on this address instead of beside the metrics.
    #[arg(long, env = "ROLLGATE_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
    /// Act only on Rollouts in this namespace (repeatable, or comma-separated; default: every
    /// namespace). `-n NS` adds one.
    #[arg(
        long = "watch-namespace",
        value_name = "NS",
        env = "ROLLGATE_WATCH_NAMESPACES",
        value_delimiter = ','
    )]
    pub watch_namespaces: Vec<String>,
    /// Act only on Rollouts labelled `rollgate.dev/instance=<ID>` (default: only on Rollouts
    /// without that label), writing as field manager `rollgate-<ID>` and electing a leader
    /// through the Lease `rollgate-<ID>-controller`: installations with different ids never
    /// touch each other's Rollouts.
    #[arg(long, value_name = "ID", env = "ROLLGATE_INSTANCE")]
    pub instance: Option<String>,
    /// Namespace of the leader-election Lease (default: the pod's, else `default`).
    #[arg(long, env = "ROLLGATE_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Identity in the Lease (default: the host name).
    #[arg(long, env = "ROLLGATE_IDENTITY")]
    pub identity: Option<String>,
    /// Log as JSON (default) or text.
    #[arg(long, default_value = "json", value_parser = ["json", "text"])]
    pub log_format: String,
    /// Rollouts reconciled at once; the others wait in the controller's queue.
    #[arg(long, default_value_t = 16, env = "ROLLGATE_CONCURRENCY", value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Split Rollouts into this many shards, each held by one replica through a Lease
    /// (`<manager>-shard-<i>`); replicas share them evenly. 1 (the default): one leader acts on
    /// every Rollout.
    #[arg(long, default_value_t = 1, env = "ROLLGATE_SHARDS", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub shards: u32,
    /// OTLP/HTTP traces endpoint (e.g. `http://collector:4318/v1/traces`); traces are exported
    /// only when set.
    #[arg(long, env = "ROLLGATE_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("connecting to Kubernetes: {0}")]
    Client(#[source] kube::Error),
    #[error(transparent)]
    Config(#[from] crate::connection::ConfigError),
    #[error(transparent)]
    Scope(#[from] ScopeError),
    #[error("leader election: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    #[error("webhook HTTP client: {0}")]
    Notifier(#[source] reqwest::Error),
    #[error("HTTP endpoint on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
}

#[derive(Clone)]
struct Health {
    metrics: SharedMetrics,
    ready: Arc<AtomicBool>,
}

pub async fn run(args: ControllerArgs, kube: KubeArgs) -> Result<(), RunError> {
    let mut namespaces = args.watch_namespaces.clone();
    namespaces.extend(kube.namespace.clone());
    let scope = Scope::new(namespaces, args.instance.clone())?;
    set_field_manager(&scope);
    let metrics: SharedMetrics = Arc::new(Metrics::default());
    let config = kube.config().await?;
    let client = kube::client::ClientBuilder::try_from(config)
        .map_err(RunError::Client)?
        .with_layer(&CountRequests::new(metrics.kube_requests.clone()))
        .build();
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .map_err(|source| RunError::Serve { addr: args.metrics_addr, source })?;
    // With port 0 the system picks one: log the address actually bound.
    let metrics_addr = listener.local_addr().unwrap_or(args.metrics_addr);
    let health = Health { metrics: metrics.clone(), ready: ready.clone() };
    let api = verdict_api::router(verdict_api::ApiState::new(client.clone()));
    let (main_router, api_server) = match args.api_addr {
        None => (health_router(health).merge(api), None),
        Some(addr) => {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Serve { addr, source })?;
            (health_router(health), Some((addr, axum::serve(l, api))))
        }
    };
    let main_http = axum::serve(listener, main_router);
    let http = async move {
        match api_server {
            None => main_http.await.map_err(|e| (args.metrics_addr, e)),
            Some((addr, api_http)) => tokio::select! {
                r = main_http => r.map_err(|e| (args.metrics_addr, e)),
                r = api_http => r.map_err(|e| (addr, e)),
            },
        }
    };

    let identity = args.identity.clone().unwrap_or_else(hostname);
    let lease_ns = args.lease_namespace.clone().unwrap_or_else(|| client.default_namespace().to_string());
    if args.shards > 1 {
        ready.store(true, Ordering::Release);
        tracing::info!(%identity, metrics = %metrics_addr, shards = args.shards, "rollgate controller started; sharded");
        let (publish, held) = tokio::sync::watch::channel(BTreeSet::new());
        let shards = Shards::new(args.shards, held);
        let (ctx, deliveries) = context(&client, &scope, &identity, &metrics, shards.clone())?;
        let has_routes = http_routes_served(&client).await;
        let coordinator = Coordinator {
            client: client.clone(),
            namespace: lease_ns,
            manager: scope.manager(),
            identity: identity.clone(),
            count: args.shards,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let work = async {
            watches::run(client.clone(), ctx.clone(), &scope, has_routes, args.concurrency, Some(&shards))
                .await;
            tracing::info!("controller stopped");
            let _ = stop.send(());
        };
        let coordination = coordinator.run(publish, async {
            let _ = stopped.await;
        });
        tokio::pin!(coordination, work);
        tokio::select! {
            // The coordinator ends on its own only when it cannot hold Leases: say so and exit
            // rather than run without shards.
            r = &mut coordination => r.map_err(RunError::Lease)?,
            // The Controllers stopped (a signal): the coordinator then releases the Leases.
            () = &mut work => coordination.await.map_err(RunError::Lease)?,
            () = deliveries.run() => tracing::error!("the webhook worker stopped"),
            r = http => if let Err((addr, source)) = r {
                return Err(RunError::Serve { addr, source });
            },
        }
        return Ok(());
    }
    let manager = LeaseManagerBuilder::new(client.clone(), scope.lease_name())
        .with_namespace(lease_ns)
        .with_identity(identity.clone())
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(RunError::Lease)?;
    let (mut leader, lease_task) = manager.watch().await;
    ready.store(true, Ordering::Release);
    let namespaces = if scope.namespaces.is_empty() { "all".to_string() } else { scope.namespaces.join(",") };
    tracing::info!(
        %identity,
        metrics = %metrics_addr,
        %namespaces,
        instance = scope.instance.as_deref().unwrap_or(""),
        lease = %scope.lease_name(),
        "rollgate controller started; waiting for leadership"
    );

    let (ctx, deliveries) = context(&client, &scope, &identity, &metrics, Shards::single())?;
    let has_routes = http_routes_served(&client).await;

    let work = async {
        loop {
            if leader.wait_for(|l| *l).await.is_err() {
                tracing::error!("leader election stopped");
                return;
            }
            metrics.leader.set(1);
            tracing::info!("leadership acquired; reconciling");
            let controller =
                watches::run(client.clone(), ctx.clone(), &scope, has_routes, args.concurrency, None);
            tokio::select! {
                () = controller => {
                    tracing::info!("controller stopped");
                    return;
                }
                _ = leader.wait_for(|l| !*l) => {
                    metrics.leader.set(0);
                    tracing::warn!("leadership lost; standing by");
                }
            }
        }
    };
    tokio::select! {
        () = work => {}
        // Runs as long as the context holds its sender; pending deliveries end with the process.
        () = deliveries.run() => tracing::error!("the webhook worker stopped"),
        r = http => if let Err((addr, source)) = r {
            return Err(RunError::Serve { addr, source });
        },
    }
    drop(leader);
    match lease_task.await {
        Ok(Ok(manager)) => {
            if let Err(e) = manager.release().await {
                tracing::warn!(error = %e, "releasing the lease");
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "lease manager"),
        Err(e) => tracing::warn!(error = %e, "lease task"),
    }
    Ok(())
}

/// The reconciler's context and the worker that delivers its webhooks.
fn context(
    client: &Client,
    scope: &Scope,
    identity: &str,
    metrics: &SharedMetrics,
    shards: Shards,
) -> Result<(Arc<Context>, crate::notify::Worker), RunError> {
    let timed = metrics.clone();
    let providers: ProviderFactory = Arc::new(move |access: &Access| {
        Prometheus::new(access).map(|p| Arc::new(p.with_metrics(timed.clone())) as Arc<dyn MetricProvider>)
    });
    let reporter = Reporter { controller: scope.manager(), instance: Some(identity.to_string()) };
    let (notifier, deliveries) = crate::notify::channel(metrics.clone()).map_err(RunError::Notifier)?;
    let deliveries = deliveries.with_events(EventWriter::new(client.clone(), reporter.clone()));
    let ctx = Context::new(client.clone(), reporter, metrics.clone(), providers)
        .with_notifier(notifier)
        .with_shards(shards);
    Ok((Arc::new(ctx), deliveries))
}

async fn http_routes_served(client: &Client) -> bool {
    match Discovery::new(client.clone()).filter(&["gateway.networking.k8s.io"]).run().await {
        Ok(d) => d.groups().any(|g| g.recommended_resources().iter().any(|(ar, _)| ar.kind == "HTTPRoute")),
        Err(e) => {
            tracing::warn!(error = %e, "API discovery failed; not watching HTTPRoutes");
            false
        }
    }
}

fn health_router(health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

async fn metrics_handler(State(h): State<Health>) -> impl IntoResponse {
    match h.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [("content-type", "application/openmetrics-text; version=1.0.0; charset=utf-8")],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(h): State<Health>) -> impl IntoResponse {
    if h.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

fn hostname() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|s| s.trim().to_string()))
        .unwrap_or_else(|| "rollgate".into())
}
