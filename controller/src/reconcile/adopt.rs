//! Adopting a Deployment a user already runs (`spec.workloadRef`). Its pod template becomes the
//! Rollout's; it is claimed with a label (a second Rollout referencing it is refused, naming the
//! first) and a finalizer on the Rollout; it is scaled to zero once rollgate's stable
//! Deployment is available; and when the Rollout is deleted it is scaled back and awaited
//! before the finalizer lets rollgate's own Deployments go. The user's Service keeps selecting
//! stable pods (they carry the template's labels); canary pods lose the labels the adopted
//! Deployment selects on, so that Service never sends them traffic.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use rollgate_crds::Rollout;
use rollgate_crds::conditions::EventReason;
use rollgate_crds::labels::{ADOPTED_BY, REPLICAS_BEFORE_ADOPTION};
use serde_json::json;

use crate::error::Result;
use crate::plan::SpecProblem;
use crate::scope::field_manager;
use crate::workload;

/// Writes under this installation's field manager, as every other write.
fn params() -> PatchParams {
    PatchParams { field_manager: Some(field_manager().to_string()), ..PatchParams::default() }
}

/// The Deployment `spec.workloadRef` names (`None` without one), or why it cannot be adopted.
pub async fn resolve(client: &Client, ro: &Rollout) -> Result<Option<Result<Deployment, SpecProblem>>> {
    let Some(reference) = &ro.spec.workload_ref else {
        return Ok(None);
    };
    let ns = ro.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let Some(d) = api.get_opt(&reference.name).await? else {
        return Ok(Some(Err(SpecProblem::with_reason(
            EventReason::WorkloadNotFound,
            format!(
                "spec.workloadRef: Deployment {:?} not found in namespace {ns:?}; nothing is created until it exists",
                reference.name
            ),
        ))));
    };
    Ok(Some(adoptable(ro, d)))
}

/// `d` if this Rollout may adopt it: not claimed by another Rollout, not run by a controller.
fn adoptable(ro: &Rollout, d: Deployment) -> Result<Deployment, SpecProblem> {
    let name = d.name_any();
    if let Some(other) = d.labels().get(ADOPTED_BY).filter(|o| **o != ro.name_any()) {
        return Err(SpecProblem::with_reason(
            EventReason::NameConflict,
            format!("spec.workloadRef: Deployment {name:?} is adopted by Rollout {other:?}"),
        ));
    }
    if let Some(owner) = d.owner_references().iter().find(|o| o.controller == Some(true)) {
        return Err(SpecProblem::with_reason(
            EventReason::NameConflict,
            format!(
                "spec.workloadRef: Deployment {name:?} is managed by {} {:?}; only a Deployment nothing else controls can be adopted",
                owner.kind, owner.name
            ),
        ));
    }
    Ok(d)
}

/// The Rollout as if its template were the adopted Deployment's.
pub fn with_template(ro: &Rollout, d: &Deployment) -> Rollout {
    let mut ro = ro.clone();
    ro.spec.template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    ro
}

/// The pod labels the adopted Deployment selects on: canary pods must not carry them.
pub fn selected_labels(d: &Deployment) -> Vec<String> {
    let Some(selector) = d.spec.as_ref().map(|s| &s.selector) else {
        return Vec::new();
    };
    let equal = selector.match_labels.iter().flatten().map(|(k, _)| k.clone());
    let expressions = selector.match_expressions.iter().flatten().map(|e| e.key.clone());
    equal.chain(expressions).collect()
}

/// `template` without the labels in `hidden`.
pub fn without_labels(template: &PodTemplateSpec, hidden: &[String]) -> PodTemplateSpec {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.retain(|k, _| !hidden.contains(k));
    }
    t
}

/// Adds the claim label, where missing (the finalizer is added with the others first).
pub async fn claim(client: &Client, ro: &Rollout, d: &Deployment) -> Result<()> {
    if d.labels().get(ADOPTED_BY).is_none() {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ro.namespace().unwrap_or_default());
        // Two Rollouts claiming at once: the resourceVersion lets only one label win; the
        // other's retry finds the label and is refused.
        let patch = json!({"metadata": {"resourceVersion": d.resource_version(), "labels": {ADOPTED_BY: ro.name_any()}}});
        api.patch(&d.name_any(), &params(), &Patch::Merge(&patch)).await?;
        tracing::info!(deployment = %d.name_any(), "adopted");
    }
    Ok(())
}

/// Scales the adopted Deployment to zero, remembering its replicas (once).
pub async fn scale_down(client: &Client, ro: &Rollout, d: &Deployment) -> Result<()> {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    if replicas == 0 {
        return Ok(());
    }
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ro.namespace().unwrap_or_default());
    let before =
        d.annotations().get(REPLICAS_BEFORE_ADOPTION).cloned().unwrap_or_else(|| replicas.to_string());
    let patch = json!({
        "metadata": {"annotations": {REPLICAS_BEFORE_ADOPTION: before}},
        "spec": {"replicas": 0},
    });
    api.patch(&d.name_any(), &params(), &Patch::Merge(&patch)).await?;
    tracing::info!(deployment = %d.name_any(), replicas, "adopted Deployment scaled to zero; rollgate's stable serves");
    Ok(())
}

/// On deletion: scales every Deployment this Rollout adopted back to its replicas and, once
/// each is available again, removes the claim. True when nothing is left to wait for.
pub async fn release(client: &Client, ro: &Rollout) -> Result<bool> {
    let ns = ro.namespace().unwrap_or_default();
    let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let claimed = api.list(&ListParams::default().labels(&format!("{ADOPTED_BY}={}", ro.name_any()))).await?;
    let mut done = true;
    for d in claimed.items {
        let name = d.name_any();
        let want =
            d.annotations().get(REPLICAS_BEFORE_ADOPTION).and_then(|r| r.parse::<i32>().ok()).unwrap_or_else(
                || d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(ro.spec.replicas),
            );
        if d.spec.as_ref().and_then(|s| s.replicas) != Some(want) {
            let patch = json!({"spec": {"replicas": want}});
            api.patch(&name, &params(), &Patch::Merge(&patch)).await?;
            tracing::info!(deployment = %name, replicas = want, "adopted Deployment scaled back");
            done = false;
        } else if workload::state(&d).available {
            let patch = json!({"metadata": {
                "labels": {ADOPTED_BY: null},
                "annotations": {REPLICAS_BEFORE_ADOPTION: null},
            }});
            api.patch(&name, &params(), &Patch::Merge(&patch)).await?;
            tracing::info!(deployment = %name, "adopted Deployment released");
        } else {
            done = false;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::RolloutSpecExt;
    use rollgate_crds::RolloutSpec;

    fn deployment(labels: serde_json::Value, owners: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "shop", "namespace": "ns", "labels": labels, "ownerReferences": owners},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "shop"}, "matchExpressions": [{"key": "tier", "operator": "Exists"}]},
                "template": {"metadata": {"labels": {"app": "shop", "tier": "web", "team": "a"}}, "spec": {"containers": [{"name": "shop", "image": "shop:1"}]}},
            },
        }))
        .expect("a Deployment")
    }

    fn rollout(name: &str) -> Rollout {
        let mut ro = Rollout::new(name, RolloutSpec::test());
        ro.metadata.namespace = Some("ns".into());
        ro
    }

    #[test]
    fn a_deployment_claimed_or_controlled_by_another_is_refused_naming_it() {
        let free = deployment(json!({}), json!([]));
        assert!(adoptable(&rollout("web"), free).is_ok());
        let mine = deployment(json!({ADOPTED_BY: "web"}), json!([]));
        assert!(adoptable(&rollout("web"), mine).is_ok());
        let theirs = deployment(json!({ADOPTED_BY: "other"}), json!([]));
        let p = adoptable(&rollout("web"), theirs).expect_err("claimed");
        assert_eq!(p.reason, EventReason::NameConflict);
        assert!(p.message.contains("is adopted by Rollout \"other\""), "{}", p.message);
        let owned = deployment(
            json!({}),
            json!([{"apiVersion": "rollgate.dev/v1alpha1", "kind": "Rollout", "name": "api", "uid": "u", "controller": true}]),
        );
        let p = adoptable(&rollout("web"), owned).expect_err("controlled");
        assert!(p.message.contains("is managed by Rollout \"api\""), "{}", p.message);
    }

    #[test]
    fn canary_pods_lose_the_labels_the_adopted_deployment_selects_on() {
        let d = deployment(json!({}), json!([]));
        let hidden = selected_labels(&d);
        assert_eq!(hidden, ["app", "tier"]);
        let ro = with_template(&rollout("web"), &d);
        let canary = without_labels(&ro.spec.template, &hidden);
        let labels = canary.metadata.and_then(|m| m.labels).unwrap_or_default();
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["team"]);
        // Stable keeps them: the user's Service goes on selecting stable pods.
        let stable = ro.spec.template.metadata.and_then(|m| m.labels).unwrap_or_default();
        assert!(stable.contains_key("app") && stable.contains_key("tier"));
    }
}
