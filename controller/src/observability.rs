//! The controller's own metrics (`/metrics`) and logging setup.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rollgate_crds::RolloutStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub name: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub namespace: String,
    pub name: String,
    pub check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeRequestLabels {
    /// The HTTP method (GET also for lists and watches, PATCH for applies).
    pub method: String,
    /// The HTTP status, or `error` when no response came.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// delivered, failed (after every retry) or dropped (queue full).
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub phase: Family<PhaseLabels, Gauge>,
    pub weight: Family<RolloutLabels, Gauge>,
    pub check_value: Family<CheckLabels, Gauge<f64, AtomicU64>>,
    pub check_passing: Family<CheckLabels, Gauge>,
    pub leader: Gauge,
    pub kube_requests: Family<KubeRequestLabels, Counter>,
    pub reconciles_in_flight: Gauge,
    pub dry_run_rollbacks: Counter,
    /// The Rollouts with series, and their checks' names (to remove them when it goes).
    known: std::sync::Mutex<HashMap<RolloutLabels, Vec<String>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rollgate");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes by error kind",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            reconcile_duration.clone(),
        );
        let phase = Family::<PhaseLabels, Gauge>::default();
        registry.register("rollout_phase", "1 for the phase each Rollout is in", phase.clone());
        let weight = Family::<RolloutLabels, Gauge>::default();
        registry.register("canary_weight_percent", "Canary weight of each Rollout", weight.clone());
        let check_value = Family::<CheckLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("check_bad_ratio", "Observed share of bad events per check", check_value.clone());
        let check_passing = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "check_result",
            "Last result per check: 1 pass, 0 pending or no data, -1 fail",
            check_passing.clone(),
        );
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook notifications by result: delivered, failed after every retry, dropped (queue full)",
            webhook_deliveries.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Requests to the Kubernetes API server by method and status code",
            kube_requests.clone(),
        );
        let reconciles_in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconcile passes running now; at --concurrency, further Rollouts wait in the queue",
            reconciles_in_flight.clone(),
        );
        let dry_run_rollbacks = Counter::default();
        registry.register(
            "dry_run_rollbacks",
            "Steps the gate would have rolled back under policy.dryRun (nothing was rolled back)",
            dry_run_rollbacks.clone(),
        );
        Self {
            registry,
            webhook_deliveries,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            phase,
            weight,
            check_value,
            check_passing,
            leader,
            kube_requests,
            reconciles_in_flight,
            dry_run_rollbacks,
            known: Default::default(),
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Publishes a Rollout's status.
    pub fn observe(&self, namespace: &str, name: &str, status: &RolloutStatus) {
        let labels = RolloutLabels { namespace: namespace.into(), name: name.into() };
        // Held while the series are written, so that a sweep forgetting this Rollout at the
        // same time either runs before (and the series are known, to be swept next time) or
        // after (and removes them): never a series written after its Rollout was forgotten.
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let checks = known.entry(labels.clone()).or_default();
        for c in &status.checks {
            if !checks.contains(&c.name) {
                checks.push(c.name.clone());
            }
        }
        self.weight.get_or_create(&labels).set(i64::from(status.canary_weight));
        for phase in PHASES {
            let l = PhaseLabels { namespace: namespace.into(), name: name.into(), phase: phase.into() };
            let current = status.phase.map(|p| format!("{p:?}")).is_some_and(|p| p == phase);
            self.phase.get_or_create(&l).set(i64::from(current));
        }
        for c in &status.checks {
            let l = CheckLabels { namespace: namespace.into(), name: name.into(), check: c.name.clone() };
            if let Some(v) = c.value {
                self.check_value.get_or_create(&l).set(v);
            }
            let r = match c.result {
                rollgate_crds::rollout::CheckResult::Pass => 1,
                rollgate_crds::rollout::CheckResult::Fail => -1,
                _ => 0,
            };
            self.check_passing.get_or_create(&l).set(r);
        }
    }

    /// Forgets the series of every Rollout for which `exists` is false; returns how many
    /// Rollouts had series and how many of them were forgotten.
    pub fn retain(&self, exists: impl Fn(&str, &str) -> bool) -> (usize, usize) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<RolloutLabels> =
            known.keys().filter(|l| !exists(&l.namespace, &l.name)).cloned().collect();
        let had = known.len();
        for l in &gone {
            self.forget_locked(&mut known, l);
        }
        (had, gone.len())
    }

    /// Forgets a Rollout's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.forget_locked(&mut known, &RolloutLabels { namespace: namespace.into(), name: name.into() });
    }

    fn forget_locked(&self, known: &mut HashMap<RolloutLabels, Vec<String>>, labels: &RolloutLabels) {
        let RolloutLabels { namespace, name } = labels;
        for check in known.remove(labels).unwrap_or_default() {
            let l = CheckLabels { namespace: namespace.clone(), name: name.clone(), check };
            self.check_value.remove(&l);
            self.check_passing.remove(&l);
        }
        self.weight.remove(labels);
        for phase in PHASES {
            self.phase.remove(&PhaseLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                phase: phase.into(),
            });
        }
    }
}

/// The values of the `phase` label: one series each per Rollout.
const PHASES: [&str; 5] = ["Progressing", "Paused", "Promoted", "RolledBack", "Failed"];

pub type SharedMetrics = Arc<Metrics>;

/// Logging and optional trace export. Logs: JSON (or text) on stderr, `RUST_LOG`-style
/// filtering (default `info`). Traces: with an OTLP/HTTP endpoint, the reconcile and evaluation
/// spans are exported; the returned guard flushes them on drop.
pub fn init_telemetry(json: bool, otlp_endpoint: Option<&str>) -> Result<TelemetryGuard, TelemetryError> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let provider = match otlp_endpoint {
        Some(endpoint) => {
            let exporter =
                opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(endpoint).build()?;
            Some(
                opentelemetry_sdk::trace::SdkTracerProvider::builder()
                    .with_resource(
                        opentelemetry_sdk::Resource::builder().with_service_name("rollgate").build(),
                    )
                    .with_batch_exporter(exporter)
                    .build(),
            )
        }
        None => None,
    };
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("rollgate")));
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().flatten_event(true).with_writer(std::io::stderr).boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed()
    };
    tracing_subscriber::registry().with(filter).with(otel).with(fmt).try_init()?;
    Ok(TelemetryGuard { provider })
}

/// Logging or trace export that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("--otlp-endpoint: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    #[error("logging: {0}")]
    Logging(#[from] tracing_subscriber::util::TryInitError),
}

/// Flushes exported spans when dropped.
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("rollgate: flushing traces: {e}");
        }
    }
}

// === impl CountRequests ===

/// A tower layer for the kube client that counts every request by method and status code
/// (`rollgate_kube_requests_total`).
#[derive(Clone)]
pub struct CountRequests {
    family: Family<KubeRequestLabels, Counter>,
}

impl CountRequests {
    pub fn new(family: Family<KubeRequestLabels, Counter>) -> Self {
        Self { family }
    }
}

impl<S> tower::Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted { inner, family: self.family.clone() }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    family: Family<KubeRequestLabels, Counter>,
}

impl<S, B, RB> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request.method().to_string();
        let family = self.family.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(r) => r.status().as_u16().to_string(),
                Err(_) => "error".to_string(),
            };
            family.get_or_create(&KubeRequestLabels { method, code }).inc();
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rollgate_crds::rollout::{CheckResult, CheckStatus, Phase};

    fn status() -> RolloutStatus {
        RolloutStatus {
            phase: Some(Phase::Progressing),
            canary_weight: 5,
            checks: vec![CheckStatus {
                name: "error-rate".into(),
                result: CheckResult::Pass,
                value: Some(0.0),
                threshold: 0.01,
                bad: 0,
                total: 10,
                needed: None,
                estimated_seconds: None,
                statistic: None,
                reason: String::new(),
                source: None,
                unit: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_series_of_a_deleted_rollout_are_dropped() {
        let m = Metrics::default();
        m.observe("shop", "web", &status());
        m.observe("shop", "gone", &status());
        let before = m.encode().expect("encode");
        assert!(before.contains("name=\"gone\""), "{before}");
        m.retain(|_, name| name == "web");
        let after = m.encode().expect("encode");
        assert!(!after.contains("name=\"gone\""), "{after}");
        assert!(
            after.contains("rollgate_check_result{namespace=\"shop\",name=\"web\",check=\"error-rate\"} 1"),
            "{after}"
        );
    }

    #[test]
    fn kube_requests_are_counted_by_method_and_code() {
        use tower::{Layer, Service, ServiceExt};
        let m = Metrics::default();
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(404).body(()).unwrap_or_default(),
            )
        });
        let mut svc = CountRequests::new(m.kube_requests.clone()).layer(inner);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let req = http::Request::builder().method("PATCH").body(()).unwrap_or_default();
            let _ = svc.ready().await.expect("ready").call(req).await;
        });
        let text = m.encode().expect("encode");
        assert!(text.contains("rollgate_kube_requests_total{method=\"PATCH\",code=\"404\"} 1"), "{text}");
    }
}
