//! `MetricSource`: where the request checks (`errorRate`, `latency`) read their counts. A preset
//! names a convention an app or a gateway already follows; a custom source names the histogram
//! and the label that carries the status code. Every source yields the same two counts, bad and
//! all requests, so the gate judges them all alike.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use kube::KubeSchema;

use crate::bounds::*;

/// Where request counts are read. Set `preset`, or `histogram` (with `statusLabel`) for an
/// app's own metric; neither means `preset: refserver`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.preset) && has(self.histogram))").message("set preset or histogram, not both"))]
#[x_kube(validation = Rule::new("!has(self.statusLabel) || has(self.histogram)").message("statusLabel is only for a custom histogram"))]
pub struct MetricSource {
    /// A known convention.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<MetricPreset>,
    /// A custom request-duration histogram in seconds, without its `_bucket`/`_count` suffix,
    /// read from the app's pods (e.g. `myapp_http_request_duration_seconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = METRIC_NAME_MAX_LEN), regex(pattern = METRIC_NAME_PATTERN))]
    pub histogram: Option<String>,
    /// The label of `histogram` that carries the HTTP status code (default `code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = METRIC_NAME_MAX_LEN), regex(pattern = LABEL_NAME_PATTERN))]
    pub status_label: Option<String>,
}

/// The request-metric conventions rollgate knows.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum MetricPreset {
    /// refserver's own metrics (OpenTelemetry names), and the default. The default checks
    /// include the runtime pause check only with this preset.
    #[default]
    Refserver,
    /// OpenTelemetry HTTP semantic conventions as Prometheus exports them:
    /// `http_server_request_duration_seconds` with `http_response_status_code`.
    Otel,
    /// The Prometheus Go client's `promhttp` conventions and their relatives:
    /// `http_request_duration_seconds` with `code` or `status` (podinfo, most Go services).
    PrometheusClient,
    /// Micrometer (Spring Boot): `http_server_requests_seconds` with `status`; latency needs
    /// its percentile histogram enabled.
    Micrometer,
    /// The Traefik gateway's own per-backend metrics (`traefik_service_requests_total`,
    /// `traefik_service_request_duration_seconds`): no app instrumentation needed; canary and
    /// stable are told apart by the backend Service.
    Traefik,
    /// Envoy-based gateways (Envoy Gateway, Istio, Contour): `envoy_cluster_upstream_rq_*` of
    /// the cluster that sends to the backend Service; no app instrumentation needed.
    Envoy,
}

impl MetricSource {
    /// The preset in force (`refserver` when nothing is set), or `None` for a custom histogram.
    pub fn preset(&self) -> Option<MetricPreset> {
        match (&self.preset, &self.histogram) {
            (Some(p), _) => Some(*p),
            (None, Some(_)) => None,
            (None, None) => Some(MetricPreset::Refserver),
        }
    }

    /// A custom source's status label.
    pub fn status_label(&self) -> &str {
        self.status_label.as_deref().unwrap_or("code")
    }
}
