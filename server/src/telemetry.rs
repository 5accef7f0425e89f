//! Logs and traces: JSON (or text) logs on stdout through `tracing`, and OpenTelemetry spans.
//!
//! A tracer provider is always installed, so every request has a real trace id (it shows in the
//! logs and in the `traceparent` response header); spans are exported over OTLP/HTTP only when
//! `otlp.endpoint` is set. `Telemetry::shutdown` flushes what is buffered.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Config, LogFormat};

pub struct Telemetry {
    provider: SdkTracerProvider,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("otlp.endpoint: {0}")]
    Exporter(String),
    #[error("log.level: {0}")]
    Filter(String),
    #[error("tracing subscriber: {0}")]
    Init(String),
}

impl Telemetry {
    pub fn init(config: &Config) -> Result<Self, TelemetryError> {
        let mut builder = SdkTracerProvider::builder()
            .with_resource(Resource::builder().with_service_name(config.otlp.service_name.clone()).build());
        if !config.otlp.endpoint.is_empty() {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(config.otlp.endpoint.clone())
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        let tracer = provider.tracer("refserver");
        let filter =
            EnvFilter::try_new(&config.log.level).map_err(|e| TelemetryError::Filter(e.to_string()))?;
        let otel = tracing_opentelemetry::layer().with_tracer(tracer);
        let registry = tracing_subscriber::registry().with(filter).with(otel);
        let result = match config.log.format {
            LogFormat::Json => registry
                .with(
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_current_span(true)
                        .with_span_list(false),
                )
                .try_init(),
            LogFormat::Text => registry.with(tracing_subscriber::fmt::layer()).try_init(),
        };
        result.map_err(|e| TelemetryError::Init(e.to_string()))?;
        Ok(Self { provider })
    }

    /// Flushes and stops span export.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry flush failed");
        }
    }
}
