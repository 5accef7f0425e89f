//! The request series of each metric source: the counter of requests, how failed ones are
//! selected, the latency histogram and the unit of its bounds, and where the series come from
//! (the app's pods, or the gateway's per-backend metrics told apart by backend Service).

use rollgate_crds::{MetricPreset, MetricSource};

/// Where a source's series come from, which decides how canary and stable are selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The app's pods, labelled by the scrape config (`namespace`, `rollout`, `role`, `revision`).
    Pods,
    /// Traefik's `service` label: `<namespace>-<service>-http-<port>@kubernetesgateway`.
    Traefik,
    /// Envoy's `envoy_cluster_name`: Istio's `outbound|<port>||<service>.<namespace>.svc…` or
    /// Contour's `<namespace>/<service>/<port>/…`.
    Envoy,
}

/// How the failed requests are counted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Errors {
    /// The requests counter, with any of these labels matching 5xx (each series counted once).
    StatusLabels(Vec<String>),
    /// A counter of its own, with one extra matcher.
    Counter { metric: String, matcher: String },
}

/// The series one source provides.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSeries {
    /// The source's name in messages (`prometheusClient`, or the custom histogram's name).
    pub name: String,
    /// The counter of all requests.
    pub requests: String,
    pub errors: Errors,
    /// The latency histogram's name without `_bucket`/`_count`.
    pub histogram: String,
    /// Seconds per unit of the histogram's `le` (1 for seconds, 0.001 for Envoy's milliseconds).
    pub le_unit_s: f64,
    pub scope: Scope,
}

impl RequestSeries {
    pub fn of(source: &MetricSource) -> Self {
        let Some(preset) = source.preset() else {
            let h = source.histogram.clone().unwrap_or_default();
            return Self {
                name: format!("histogram {h}"),
                requests: format!("{h}_count"),
                errors: Errors::StatusLabels(vec![source.status_label().to_string()]),
                histogram: h,
                le_unit_s: 1.0,
                scope: Scope::Pods,
            };
        };
        let pods = |name: &str, histogram: &str, labels: &[&str]| Self {
            name: name.to_string(),
            requests: format!("{histogram}_count"),
            errors: Errors::StatusLabels(labels.iter().map(|l| l.to_string()).collect()),
            histogram: histogram.to_string(),
            le_unit_s: 1.0,
            scope: Scope::Pods,
        };
        match preset {
            MetricPreset::Refserver => {
                pods("refserver", "http_server_request_duration_seconds", &["http_response_status_code"])
            }
            MetricPreset::Otel => {
                pods("otel", "http_server_request_duration_seconds", &["http_response_status_code"])
            }
            MetricPreset::PrometheusClient => {
                pods("prometheusClient", "http_request_duration_seconds", &["code", "status"])
            }
            MetricPreset::Micrometer => pods("micrometer", "http_server_requests_seconds", &["status"]),
            MetricPreset::Traefik => Self {
                name: "traefik".into(),
                requests: "traefik_service_requests_total".into(),
                errors: Errors::StatusLabels(vec!["code".into()]),
                histogram: "traefik_service_request_duration_seconds".into(),
                le_unit_s: 1.0,
                scope: Scope::Traefik,
            },
            MetricPreset::Envoy => Self {
                name: "envoy".into(),
                requests: "envoy_cluster_upstream_rq_total".into(),
                errors: Errors::Counter {
                    metric: "envoy_cluster_upstream_rq_xx".into(),
                    matcher: "envoy_response_code_class=\"5\"".into(),
                },
                histogram: "envoy_cluster_upstream_rq_time".into(),
                le_unit_s: 0.001,
                scope: Scope::Envoy,
            },
        }
    }
}

/// Escapes a literal for a PromQL regex inside a double-quoted string.
pub fn regex_literal(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push_str("\\\\");
        }
        out.push(c);
    }
    out
}

/// The matchers that select one backend Service's series at the gateway.
pub fn service_matchers(scope: Scope, namespace: &str, service: &str) -> Option<String> {
    let (ns, svc) = (regex_literal(namespace), regex_literal(service));
    match scope {
        Scope::Pods => None,
        Scope::Traefik => Some(format!("service=~\"{ns}-{svc}-http-[0-9]+@kubernetesgateway\"")),
        Scope::Envoy => Some(format!(
            "envoy_cluster_name=~\"outbound\\\\|[0-9]+\\\\|\\\\|{svc}\\\\.{ns}\\\\.svc.*|{ns}/{svc}/[0-9]+(/.*)?\""
        )),
    }
}
