//! The Rollout's own finalizers: each promises something is given back before it goes (an
//! adopted Deployment, a taken-over route). Added before anything is taken, removed once it is
//! given back.

use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;
use serde_json::json;

use crate::error::Result;
use crate::scope::field_manager;

/// Adds the finalizers in `wanted` the Rollout lacks, in one write. Returns the Rollout's new
/// resourceVersion when it was patched.
pub async fn ensure(client: &Client, ro: &Rollout, wanted: &[&str]) -> Result<Option<String>> {
    let mut finalizers = ro.finalizers().to_vec();
    let missing: Vec<String> =
        wanted.iter().filter(|w| !finalizers.iter().any(|f| f == *w)).map(|w| w.to_string()).collect();
    if missing.is_empty() {
        return Ok(None);
    }
    finalizers.extend(missing);
    Ok(Some(set(client, ro, finalizers).await?))
}

/// Removes the finalizers in `done`, where present.
pub async fn remove(client: &Client, ro: &Rollout, done: &[&str]) -> Result<()> {
    if ro.finalizers().iter().any(|f| done.contains(&f.as_str())) {
        let rest = ro.finalizers().iter().filter(|f| !done.contains(&f.as_str())).cloned().collect();
        set(client, ro, rest).await?;
    }
    Ok(())
}

/// Whether the Rollout carries `finalizer`.
pub fn has(ro: &Rollout, finalizer: &str) -> bool {
    ro.finalizers().iter().any(|f| f == finalizer)
}

/// Writes the Rollout's finalizers; the resourceVersion makes a concurrent change to them fail
/// with a conflict (and be retried) instead of being overwritten. Returns the new version.
async fn set(client: &Client, ro: &Rollout, finalizers: Vec<String>) -> Result<String> {
    let rollouts: Api<Rollout> = Api::namespaced(client.clone(), &ro.namespace().unwrap_or_default());
    let patch = json!({"metadata": {"resourceVersion": ro.resource_version(), "finalizers": finalizers}});
    let params = PatchParams { field_manager: Some(field_manager().to_string()), ..PatchParams::default() };
    let patched = rollouts.patch(&ro.name_any(), &params, &Patch::Merge(&patch)).await?;
    Ok(patched.resource_version().unwrap_or_default())
}
