//! The Prometheus metric provider (HTTP API via `prometheus-http-query`).

use futures::future::BoxFuture;
use prometheus_http_query::Client;

use super::MetricProvider;

pub struct Prometheus {
    client: Client,
}

impl Prometheus {
    pub fn new(address: &str) -> Result<Self, String> {
        let client = Client::try_from(address).map_err(|e| format!("prometheus address {address:?}: {e}"))?;
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
