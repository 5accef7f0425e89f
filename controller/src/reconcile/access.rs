//! The gate's Prometheus access: the headers, and the credentials and CA read from the Secrets
//! and ConfigMaps the gate names in its namespace. Each is re-read at most every
//! `REREAD_AFTER`, so a rotated credential is picked up without watching every Secret (the
//! controller may only `get` them). A missing object or key is a spec problem that names the
//! field, the object and the key.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use rollgate_crds::prometheus::{KeyRef, PrometheusSource};

use super::Context;
use crate::error::Result;
use crate::metrics_provider::MetricProvider;
use crate::metrics_provider::access::{Access, Credentials};
use crate::plan::SpecProblem;

/// How long a read Secret or ConfigMap key is used before it is read again.
pub const REREAD_AFTER: Duration = Duration::from_secs(30);

/// What a key lookup found.
enum Lookup {
    Found(Vec<u8>),
    /// The object exists without the key (`Secret "x" has no key "y"`).
    NoKey(String),
    /// The object cannot be read, in words (`Secret "x" not found`, `… forbidden`).
    Missing(String),
}

/// The provider for the gate's Prometheus, with its access resolved.
pub(super) async fn provider(
    ctx: &Context,
    ns: &str,
    source: &PrometheusSource,
) -> Result<Result<std::sync::Arc<dyn MetricProvider>, SpecProblem>> {
    let access = match resolve(ctx, ns, source).await? {
        Ok(a) => a,
        Err(p) => return Ok(Err(p)),
    };
    Ok(ctx.provider(&access).map_err(|e| SpecProblem::invalid(format!("gate.prometheus: {e}"))))
}

async fn resolve(ctx: &Context, ns: &str, source: &PrometheusSource) -> Result<Result<Access, SpecProblem>> {
    let mut access = Access::address(&source.address);
    access.headers = source.headers.iter().map(|h| (h.name.clone(), h.value.clone())).collect();
    let text = |field: &str, bytes: Vec<u8>| {
        String::from_utf8(bytes)
            .map_err(|_| SpecProblem::invalid(format!("{field}: the value is not UTF-8 text")))
    };
    if let Some(auth) = &source.auth {
        if let Some(r) = &auth.bearer {
            let field = "gate.prometheus.auth.bearer";
            match secret_key(ctx, ns, r).await? {
                Lookup::Found(b) => match text(field, b) {
                    Ok(t) => access.credentials = Some(Credentials::Bearer(t)),
                    Err(p) => return Ok(Err(p)),
                },
                Lookup::Missing(why) | Lookup::NoKey(why) => {
                    return Ok(Err(SpecProblem::invalid(format!("{field}: {why}"))));
                }
            }
        }
        if let Some(r) = &auth.basic {
            let field = "gate.prometheus.auth.basic";
            let mut parts = Vec::new();
            for key in ["username", "password"] {
                let key_ref = KeyRef { name: r.name.clone(), key: key.into() };
                match secret_key(ctx, ns, &key_ref).await? {
                    Lookup::Found(b) => match text(field, b) {
                        Ok(t) => parts.push(t),
                        Err(p) => return Ok(Err(p)),
                    },
                    Lookup::Missing(why) | Lookup::NoKey(why) => {
                        return Ok(Err(SpecProblem::invalid(format!("{field}: {why}"))));
                    }
                }
            }
            let password = parts.pop().unwrap_or_default();
            let username = parts.pop().unwrap_or_default();
            access.credentials = Some(Credentials::Basic { username, password });
        }
    }
    if let Some(tls) = &source.tls {
        let found = match (&tls.ca_config_map, &tls.ca_secret) {
            (Some(r), _) => Some(("gate.prometheus.tls.caConfigMap", config_map_key(ctx, ns, r).await?)),
            (None, Some(r)) => Some(("gate.prometheus.tls.caSecret", secret_key(ctx, ns, r).await?)),
            (None, None) => None,
        };
        match found {
            Some((_, Lookup::Found(pem))) => access.ca_pem = Some(pem),
            Some((field, Lookup::Missing(why) | Lookup::NoKey(why))) => {
                return Ok(Err(SpecProblem::invalid(format!("{field}: {why}"))));
            }
            None => {}
        }
    }
    Ok(Ok(access))
}

/// A Secret's key as text, for a webhook: `Ok(None)` when the Secret exists without the key,
/// `Err` saying why when it cannot be read or the value is not text.
pub(super) async fn secret_text(
    ctx: &Context,
    ns: &str,
    r: &KeyRef,
) -> Result<std::result::Result<Option<String>, String>> {
    Ok(match secret_key(ctx, ns, r).await? {
        Lookup::Found(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| format!("Secret {:?} key {:?}: the value is not UTF-8 text", r.name, r.key)),
        Lookup::NoKey(_) => Ok(None),
        Lookup::Missing(why) => Err(why),
    })
}

async fn secret_key(ctx: &Context, ns: &str, r: &KeyRef) -> Result<Lookup> {
    cached(ctx, ("Secret", ns, r), async {
        let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
        api.get_opt(&r.name).await.map(|s| s.map(|s| s.data.unwrap_or_default().remove(&r.key).map(|b| b.0)))
    })
    .await
}

async fn config_map_key(ctx: &Context, ns: &str, r: &KeyRef) -> Result<Lookup> {
    cached(ctx, ("ConfigMap", ns, r), async {
        let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
        api.get_opt(&r.name).await.map(|c| {
            c.map(|mut c| {
                c.data
                    .as_mut()
                    .and_then(|d| d.remove(&r.key))
                    .map(String::into_bytes)
                    .or_else(|| c.binary_data.unwrap_or_default().remove(&r.key).map(|b| b.0))
            })
        })
    })
    .await
}

/// A key read through the context's cache. `read` gives the object's key (`Ok(None)`: no such
/// object; `Ok(Some(None))`: no such key).
async fn cached(
    ctx: &Context,
    (kind, ns, r): (&str, &str, &KeyRef),
    read: impl std::future::Future<Output = kube::Result<Option<Option<Vec<u8>>>>>,
) -> Result<Lookup> {
    let key = (kind.to_string(), ns.to_string(), r.name.clone(), r.key.clone());
    if let Some(bytes) = ctx.cached_key(&key, REREAD_AFTER) {
        return Ok(Lookup::Found(bytes));
    }
    let what = format!("{kind} {:?}", r.name);
    match read.await {
        Ok(Some(Some(bytes))) => {
            ctx.remember_key(key, bytes.clone(), Instant::now());
            Ok(Lookup::Found(bytes))
        }
        Ok(Some(None)) => Ok(Lookup::NoKey(format!("{what} has no key {:?}", r.key))),
        Ok(None) => Ok(Lookup::Missing(format!("{what} not found in namespace {ns:?}"))),
        Err(kube::Error::Api(s)) if s.code == 403 => {
            Ok(Lookup::Missing(format!("the controller may not read {what}: {}", s.message)))
        }
        Err(e) => Err(e.into()),
    }
}
