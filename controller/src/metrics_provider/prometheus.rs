//! The Prometheus metric provider (HTTP API via `prometheus-http-query`). Every query has a
//! timeout, so a Prometheus that hangs (not just one that refuses connections) shows as
//! `MetricsUnavailable` instead of stalling the reconcile.

use futures::future::BoxFuture;
use std::time::Duration;

use base64::prelude::{BASE64_STANDARD, Engine as _};
use prometheus_http_query::Client;
use reqwest::Certificate;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};

use super::access::{Access, Credentials};
use crate::observability::SharedMetrics;

/// Longest a query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

use super::MetricProvider;

/// A Prometheus client that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("header {name:?}: not a valid HTTP header")]
    Header { name: String },
    #[error("tls: the CA is not PEM certificates: {0}")]
    Ca(#[source] reqwest::Error),
    #[error("tls: the CA holds no PEM certificate")]
    NoCa,
    #[error("prometheus address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: prometheus_http_query::Error,
    },
}

pub struct Prometheus {
    client: Client,
    /// Where each query's duration and failure are counted, if anywhere.
    metrics: Option<SharedMetrics>,
}

impl Prometheus {
    pub fn new(access: &Access) -> Result<Self, ClientError> {
        let mut headers = HeaderMap::new();
        for (name, value) in &access.headers {
            let bad = || ClientError::Header { name: name.clone() };
            headers.insert(
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?,
                HeaderValue::from_str(value).map_err(|_| bad())?,
            );
        }
        if let Some(credentials) = &access.credentials {
            let text = match credentials {
                Credentials::Bearer(token) => format!("Bearer {}", token.trim()),
                Credentials::Basic { username, password } => {
                    format!("Basic {}", BASE64_STANDARD.encode(format!("{username}:{password}")))
                }
            };
            let mut value = HeaderValue::from_str(&text)
                .map_err(|_| ClientError::Header { name: "Authorization".into() })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let mut builder = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .default_headers(headers);
        if let Some(pem) = &access.ca_pem {
            let certs = Certificate::from_pem_bundle(pem).map_err(ClientError::Ca)?;
            if certs.is_empty() {
                return Err(ClientError::NoCa);
            }
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(ClientError::Http)?;
        let client = Client::from(http, &access.address)
            .map_err(|source| ClientError::Address { address: access.address.clone(), source })?;
        Ok(Self { client, metrics: None })
    }

    /// The same client, timing its queries in `rollgate_prometheus_query_*`.
    pub fn with_metrics(mut self, metrics: SharedMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

impl Prometheus {
    async fn vector(
        &self,
        promql: &str,
        time: Option<i64>,
    ) -> Result<Vec<prometheus_http_query::response::InstantVector>, String> {
        let mut query = self.client.query(promql);
        if let Some(t) = time {
            query = query.at(t);
        }
        let started = std::time::Instant::now();
        let result = match query.get().await.map_err(describe) {
            Ok(response) => match response.into_inner().0.into_vector() {
                Ok(v) => Ok(v),
                Err(_) => Err(format!("query {promql:?} did not return an instant vector")),
            },
            Err(e) => Err(e),
        };
        if let Some(m) = &self.metrics {
            m.outcomes.query(started.elapsed(), result.is_ok());
        }
        result
    }

    async fn instant(&self, promql: String, time: Option<i64>) -> Result<Option<f64>, String> {
        let vector = self.vector(&promql, time).await?;
        if vector.is_empty() {
            return Ok(None);
        }
        Ok(Some(vector.iter().map(|s| s.sample().value()).sum()))
    }

    async fn samples(
        &self,
        promql: &str,
        label: &str,
        time: Option<i64>,
    ) -> Result<Vec<(String, f64)>, String> {
        Ok(self
            .vector(promql, time)
            .await?
            .iter()
            .filter_map(|s| Some((s.metric().get(label)?.clone(), s.sample().value())))
            .collect())
    }

    async fn labels(&self, promql: &str, label: &str, time: Option<i64>) -> Result<Vec<String>, String> {
        let mut values: Vec<String> =
            self.vector(promql, time).await?.iter().filter_map(|s| s.metric().get(label).cloned()).collect();
        values.sort();
        values.dedup();
        Ok(values)
    }
}

/// A failed query in words; an HTTP error status (a proxy's or an auth layer's answer, which is
/// not Prometheus' JSON) is named as such, e.g. `Prometheus answered 401 Unauthorized`.
fn describe(e: prometheus_http_query::Error) -> String {
    let status = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<reqwest::Error>())
        .and_then(reqwest::Error::status)
        .filter(|s| !s.is_success());
    match status {
        Some(s) => format!("Prometheus answered {s}"),
        None => e.to_string(),
    }
}

impl MetricProvider for Prometheus {
    fn query<'a>(&'a self, promql: &'a str, time: Option<i64>) -> BoxFuture<'a, Result<Option<f64>, String>> {
        Box::pin(self.instant(promql.to_string(), time))
    }

    fn samples_by<'a>(
        &'a self,
        promql: &'a str,
        label: &'a str,
        time: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<(String, f64)>, String>> {
        Box::pin(self.samples(promql, label, time))
    }

    fn label_values<'a>(
        &'a self,
        promql: &'a str,
        label: &'a str,
        time: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        Box::pin(self.labels(promql, label, time))
    }
}
