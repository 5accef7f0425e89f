//! The Prometheus metric provider (HTTP API via `prometheus-http-query`). Every query has a
//! timeout, so a Prometheus that hangs (not just one that refuses connections) shows as
//! `MetricsUnavailable` instead of stalling the reconcile.

use futures::future::BoxFuture;
use std::time::Duration;

use prometheus_http_query::Client;

/// Longest a query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

use super::MetricProvider;

pub struct Prometheus {
    client: Client,
}

impl Prometheus {
    pub fn new(address: &str) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(QUERY_TIMEOUT)
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let client =
            Client::from(http, address).map_err(|e| format!("prometheus address {address:?}: {e}"))?;
        Ok(Self { client })
    }
}

impl MetricProvider for Prometheus {
    fn query(&self, promql: &str) -> BoxFuture<'_, Result<Option<f64>, String>> {
        let promql = promql.to_string();
        Box::pin(async move {
            let response = self.client.query(promql.as_str()).get().await.map_err(|e| e.to_string())?;
            let Some(vector) = response.data().as_vector() else {
                return Err(format!("query {promql:?} did not return an instant vector"));
            };
            if vector.is_empty() {
                return Ok(None);
            }
            Ok(Some(vector.iter().map(|s| s.sample().value()).sum()))
        })
    }
}
