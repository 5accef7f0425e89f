//! The Prometheus metric provider (HTTP API via `prometheus-http-query`). Every query has a
//! timeout, so a Prometheus that hangs (not just one that refuses connections) shows as
//! `MetricsUnavailable` instead of stalling the reconcile.

use futures::future::BoxFuture;
use std::time::Duration;

use prometheus_http_query::Client;

/// Longest a query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

use super::MetricProvider;

/// A Prometheus client that cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("HTTP client: {0}")]
    Http(#[source] reqwest::Error),
    #[error("prometheus address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: prometheus_http_query::Error,
    },
}

pub struct Prometheus {
    client: Client,
}

impl Prometheus {
    pub fn new(address: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(ClientError::Http)?;
        let client = Client::from(http, address)
            .map_err(|source| ClientError::Address { address: address.to_string(), source })?;
        Ok(Self { client })
    }
}

impl Prometheus {
    /// The same queries, evaluated at `time` (Unix seconds) instead of now.
    pub fn at(&self, time: i64) -> At<'_> {
        At { prometheus: self, time: Some(time) }
    }

    async fn instant(&self, promql: String, time: Option<i64>) -> Result<Option<f64>, String> {
        let mut query = self.client.query(promql.as_str());
        if let Some(t) = time {
            query = query.at(t);
        }
        let response = query.get().await.map_err(|e| e.to_string())?;
        let Some(vector) = response.data().as_vector() else {
            return Err(format!("query {promql:?} did not return an instant vector"));
        };
        if vector.is_empty() {
            return Ok(None);
        }
        Ok(Some(vector.iter().map(|s| s.sample().value()).sum()))
    }
}

/// A Prometheus whose queries are evaluated at a fixed time (`rollgate gate record`).
pub struct At<'a> {
    prometheus: &'a Prometheus,
    time: Option<i64>,
}

impl MetricProvider for At<'_> {
    fn query(&self, promql: &str) -> BoxFuture<'_, Result<Option<f64>, String>> {
        Box::pin(self.prometheus.instant(promql.to_string(), self.time))
    }
}

impl MetricProvider for Prometheus {
    fn query(&self, promql: &str) -> BoxFuture<'_, Result<Option<f64>, String>> {
        Box::pin(self.instant(promql.to_string(), None))
    }
}
