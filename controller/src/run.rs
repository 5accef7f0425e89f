//! `rollgate controller`: the operator process.
//!
//! Serves `/metrics`, `/healthz`, `/readyz` and the verdict API (`verdict_api`; on its own
//! port with `--api-addr`) at once; takes part in leader election (a Lease,
//! through kube-lease-manager) so that of several replicas only one acts; while leader, runs the
//! kube-runtime `Controller` over Rollouts, owning their Deployments and Services and watching
//! ReleaseGates and HTTPRoutes. Losing the lease stops the controller until it is won again.
//! SIGTERM or SIGINT stops everything and releases the lease.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::DynamicObject;
use kube::discovery::Discovery;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::LeaseManagerBuilder;
use rollgate_crds::labels::ROLLOUT;
use rollgate_crds::{ReleaseGate, Rollout};

use crate::connection::KubeArgs;
use crate::metrics_provider::MetricProvider;
use crate::metrics_provider::access::Access;
use crate::metrics_provider::prometheus::Prometheus;
use crate::observability::{CountRequests, Metrics, SharedMetrics};
use crate::reconcile::{Context, ProviderFactory, error_policy, reconcile};
use crate::router::gateway_api::http_route_resource;
use crate::verdict_api;

#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Address of the metrics and health endpoints.
    #[arg(long, default_value = "0.0.0.0:9464", env = "ROLLGATE_METRICS_ADDR")]
    pub metrics_addr: SocketAddr,
    /// Serve the verdict API (`/api/v1/...`) on this address instead of beside the metrics.
    #[arg(long, env = "ROLLGATE_API_ADDR")]
    pub api_addr: Option<SocketAddr>,
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
    #[error("--namespace: the controller watches every namespace (scoping is not supported yet)")]
    Namespace,
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
    if kube.namespace.is_some() {
        return Err(RunError::Namespace);
    }
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
    let manager = LeaseManagerBuilder::new(client.clone(), "rollgate-controller")
        .with_namespace(lease_ns)
        .with_identity(identity.clone())
        .with_duration(15)
        .with_grace(5)
        .build()
        .await
        .map_err(RunError::Lease)?;
    let (mut leader, lease_task) = manager.watch().await;
    ready.store(true, Ordering::Release);
    tracing::info!(%identity, metrics = %metrics_addr, "rollgate controller started; waiting for leadership");

    let providers: ProviderFactory =
        Arc::new(|access: &Access| Prometheus::new(access).map(|p| Arc::new(p) as Arc<dyn MetricProvider>));
    let reporter = Reporter { controller: "rollgate".into(), instance: Some(identity.clone()) };
    let (notifier, deliveries) = crate::notify::channel(metrics.clone()).map_err(RunError::Notifier)?;
    let ctx =
        Arc::new(Context::new(client.clone(), reporter, metrics.clone(), providers).with_notifier(notifier));
    let has_routes = http_routes_served(&client).await;

    let work = async {
        loop {
            if leader.wait_for(|l| *l).await.is_err() {
                tracing::error!("leader election stopped");
                return;
            }
            metrics.leader.set(1);
            tracing::info!("leadership acquired; reconciling");
            let controller = controller(client.clone(), ctx.clone(), has_routes, args.concurrency);
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

/// Runs the kube-runtime Controller until a shutdown signal.
async fn controller(client: Client, ctx: Arc<Context>, watch_routes: bool, concurrency: u16) {
    let rollouts: Api<Rollout> = Api::all(client.clone());
    let owned = watcher::Config::default().labels(ROLLOUT);
    // A short debounce folds the burst of events one write causes (status, Deployment, route)
    // into one pass.
    let config = kube::runtime::controller::Config::default()
        .concurrency(concurrency)
        .debounce(std::time::Duration::from_millis(200));
    let mut c = Controller::new(rollouts, watcher::Config::default())
        .with_config(config)
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<Service>::all(client.clone()), owned);
    // A Rollout's pods (labelled by the Deployments rollgate writes): a canary that starts
    // crash-looping changes its pods, not its Deployment, and must be seen at once.
    c = c.watches(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(ROLLOUT), |pod| {
        let rollout = pod.labels().get(ROLLOUT).cloned();
        rollout.map(|name| ObjectRef::<Rollout>::new(&name).within(&pod.namespace().unwrap_or_default()))
    });
    let store = c.store();
    c = c.watches(Api::<ReleaseGate>::all(client.clone()), watcher::Config::default(), move |gate| {
        let (ns, name) = (gate.namespace(), gate.name_any());
        store
            .state()
            .into_iter()
            .filter(|r| r.namespace() == ns && r.spec.gate_ref.as_ref().is_some_and(|g| g.name == name))
            .map(|r| ObjectRef::from_obj(&*r))
            .collect::<Vec<_>>()
    });
    if watch_routes {
        let store = c.store();
        let ar = http_route_resource();
        c = c.watches_with(
            Api::<DynamicObject>::all_with(client.clone(), &ar),
            ar,
            watcher::Config::default(),
            move |route| {
                let (ns, name) = (route.namespace(), route.name_any());
                store
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.namespace() == ns
                            && r.spec.traffic.gateway_api.as_ref().is_some_and(|g| g.http_route == name)
                    })
                    .map(|r| ObjectRef::from_obj(&*r))
                    .collect::<Vec<_>>()
            },
        );
    } else {
        tracing::info!("the HTTPRoute API is not served; gatewayAPI Rollouts will report it");
    }
    // Deleted Rollouts are not reconciled again: sweep what is remembered of them.
    let store = c.store();
    let swept = ctx.clone();
    let sweeper = tokio::spawn(async move {
        if store.wait_until_ready().await.is_err() {
            return;
        }
        let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
        loop {
            every.tick().await;
            let live: std::collections::HashSet<(String, String)> =
                store.state().iter().map(|r| (r.namespace().unwrap_or_default(), r.name_any())).collect();
            swept.retain(|ns, name| live.contains(&(ns.to_string(), name.to_string())));
        }
    });
    c.shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(rollout = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile loop"),
            }
        })
        .await;
    sweeper.abort();
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
