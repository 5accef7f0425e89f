//! Logging and trace export, and the count of the controller's requests to the API server.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::KubeRequestLabels;

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
