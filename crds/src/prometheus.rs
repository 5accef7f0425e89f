//! `PrometheusSource`: where the gate reads its metrics, and how it is let in: extra headers
//! (a Mimir, Cortex or Thanos tenant), a bearer token or basic-auth credentials from a Secret,
//! and the CA that signs an https:// server's certificate. Secrets and ConfigMaps are read from
//! the namespace of the object that holds the gate (the Rollout, or the ReleaseGate).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

use crate::bounds::*;

/// A Prometheus HTTP API endpoint.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// Base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    #[x_kube(validation = Rule::new("self.startsWith('http://') || self.startsWith('https://')").message("must be an http:// or https:// URL"))]
    #[schemars(length(min = 1, max = ADDRESS_MAX_LEN))]
    pub address: String,
    /// Headers sent with every query, e.g. `X-Scope-OrgID` for a Mimir, Cortex or Thanos tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = HEADERS_MAX))]
    pub headers: Vec<HttpHeader>,
    /// Credentials, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<PrometheusAuth>,
    /// How an https:// server's certificate is verified (default: the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<PrometheusTls>,
}

impl PrometheusSource {
    /// A source with only an address.
    pub fn at(address: impl Into<String>) -> Self {
        Self { address: address.into(), headers: Vec::new(), auth: None, tls: None }
    }
}

/// One HTTP header.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HttpHeader {
    /// The header's name, e.g. `X-Scope-OrgID` (`Authorization` is set with `auth`).
    #[x_kube(validation = Rule::new("self.lowerAscii() != 'authorization'").message("set credentials with auth, not a header"))]
    #[schemars(length(min = 1, max = HEADER_NAME_MAX_LEN), regex(pattern = HEADER_NAME_PATTERN))]
    pub name: String,
    /// Its value (visible to anyone who can read the Rollout: put secrets in `auth`).
    #[schemars(length(max = HEADER_VALUE_MAX_LEN), regex(pattern = HEADER_VALUE_PATTERN))]
    pub value: String,
}

/// Credentials for Prometheus. Exactly one is set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.bearer) != has(self.basic)").message("set exactly one of bearer and basic"))]
pub struct PrometheusAuth {
    /// `Authorization: Bearer <token>`, the token from a Secret's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<KeyRef>,
    /// HTTP basic auth, from a Secret with the keys `username` and `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<SecretRef>,
}

/// How the server's certificate is verified.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!(has(self.caConfigMap) && has(self.caSecret))").message("set caConfigMap or caSecret, not both"))]
pub struct PrometheusTls {
    /// PEM CA certificates, from a ConfigMap's key, that sign the server's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_config_map: Option<KeyRef>,
    /// The same, from a Secret's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<KeyRef>,
}

/// A key of a Secret or ConfigMap in the gate's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct KeyRef {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in its data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Secret in the gate's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}
