//! How many of a Service's endpoints a gateway would route to: the ready ones in its
//! EndpointSlices. Read only just before traffic moves to a Deployment (see
//! `plan::endpoints_wanted`), so a weight never reaches a Service the data plane has no server
//! for yet.

use std::collections::HashSet;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, Client};

use crate::error::Result;

/// The label the EndpointSlice controller puts on every slice of a Service.
const SERVICE_NAME: &str = "kubernetes.io/service-name";

/// Ready endpoint addresses of `service`; `None` when this controller may not read
/// EndpointSlices (an installation whose RBAC predates the rule): traffic then moves as soon as
/// the Deployment is available, as before, and a warning says why.
pub async fn ready(client: &Client, ns: &str, service: &str) -> Result<Option<i32>> {
    let api: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    match api.list(&ListParams::default().labels(&format!("{SERVICE_NAME}={service}"))).await {
        Ok(list) => Ok(Some(count_ready(&list.items))),
        Err(kube::Error::Api(e)) if e.code == 403 => {
            tracing::warn!(
                service,
                "may not list EndpointSlices (RBAC): traffic moves without checking the gateway's endpoints"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// Distinct addresses of endpoints marked ready. An endpoint without the condition counts as
/// not ready, as gateways that read EndpointSlices (Traefik among them) treat it.
pub fn count_ready(slices: &[EndpointSlice]) -> i32 {
    let ready: HashSet<&str> = slices
        .iter()
        .flat_map(|s| &s.endpoints)
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) == Some(true))
        .flat_map(|e| e.addresses.iter().map(String::as_str))
        .collect();
    i32::try_from(ready.len()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn slice(endpoints: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(json!({
            "metadata": {"name": "web-canary-abc"},
            "addressType": "IPv4",
            "endpoints": endpoints,
        }))
        .expect("an EndpointSlice")
    }

    #[test]
    fn only_ready_addresses_count_once_each() {
        let slices = [
            slice(json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["10.0.0.3"], "conditions": {}},
            ])),
            // The same pod in a second slice (slices overlap while they are rebalanced).
            slice(json!([{"addresses": ["10.0.0.1"], "conditions": {"ready": true}}])),
            slice(json!([{"addresses": ["10.0.0.4"], "conditions": {"ready": true}}])),
        ];
        assert_eq!(count_ready(&slices), 2);
        assert_eq!(count_ready(&[]), 0);
    }
}
