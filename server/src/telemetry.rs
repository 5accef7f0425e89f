//! Logs and traces: JSON (or text) logs on stdout through `tracing`, and OpenTelemetry spans.
//!
//! A tracer provider is always installed, so every request has a real trace id (it shows in the
//! logs and in the `traceparent` response header); spans are exported over OTLP/HTTP only when
//! `otlp.endpoint` is set. `Telemetry::shutdown` flushes what is buffered.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::Targets;
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
        let exporting = !config.otlp.endpoint.is_empty();
        if exporting {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(config.otlp.endpoint.clone())
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
            builder = builder.with_batch_exporter(exporter);
        }
        let provider = builder.build();
        // Spans reach OpenTelemetry only when they are exported, with their own filter: the
        // per-request spans are `debug`, so the log level does not decide what is traced.
        let otel = exporting.then(|| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("refserver"))
                .with_filter(Targets::new().with_target("refserver", Level::DEBUG).with_default(Level::INFO))
        });
        let filter =
            EnvFilter::try_new(&config.log.level).map_err(|e| TelemetryError::Filter(e.to_string()))?;
        let fmt = match config.log.format {
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(filter)
                .boxed(),
            LogFormat::Text => tracing_subscriber::fmt::layer().with_filter(filter).boxed(),
        };
        tracing_subscriber::registry()
            .with(otel)
            .with(fmt)
            .try_init()
            .map_err(|e| TelemetryError::Init(e.to_string()))?;
        Ok(Self { provider })
    }

    /// Flushes and stops span export.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "telemetry flush failed");
        }
    }
}
