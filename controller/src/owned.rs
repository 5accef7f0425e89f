//! Writing the objects a Rollout owns, and only those.
//!
//! rollgate never adopts: an object it did not create (no controller ownerReference naming this
//! Rollout's uid) is refused as a name conflict, whoever owns it. An object that does not exist
//! is created with a create request, which the API server refuses when someone else's object
//! appeared meanwhile; an object that is ours is changed only when what rollgate wants differs
//! from what is there, and deleted only with the uid it was observed with as a precondition.
//!
//! Changes are strategic-merge patches (field manager `rollgate`, like the create) that carry the
//! observed uid (immutable: a replaced object refuses the patch) and *replace* the parts rollgate
//! owns (`Owned::replaced`): a Deployment's template, a Service's selector and ports. A merge
//! would keep what an older template had (an env var the new version dropped), and a server-side
//! apply after a create splits ownership between an Update and an Apply entry of the same
//! manager, which keeps such fields too.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::scope::field_manager;

/// Why an owned object could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The name is taken by an object this Rollout does not own.
    #[error(
        "{object} exists and is not owned by this Rollout (controller: {owner}); rename the Rollout or remove the object"
    )]
    Conflict { object: String, owner: String },
    /// The API server refused the object itself (400, 422): retrying will not help.
    #[error("{object} was rejected by the API server: {message}")]
    Rejected { object: String, message: String },
    /// Anything else (connection, 5xx, 429, 403…): worth retrying.
    #[error("writing {object}: {source}")]
    Failed {
        object: String,
        #[source]
        source: kube::Error,
    },
}

impl WriteError {
    pub fn object(&self) -> &str {
        match self {
            WriteError::Conflict { object, .. }
            | WriteError::Rejected { object, .. }
            | WriteError::Failed { object, .. } => object,
        }
    }
}

/// An object kind rollgate owns: which of its parts a change replaces wholesale.
pub trait Owned: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + std::fmt::Debug {
    /// JSON pointers (below the object) whose value rollgate sets whole; the rest of the desired
    /// object is merged.
    fn replaced() -> &'static [&'static str];
}

impl Owned for Deployment {
    fn replaced() -> &'static [&'static str] {
        &["/spec/template"]
    }
}

impl Owned for Service {
    fn replaced() -> &'static [&'static str] {
        &["/spec/selector", "/spec/ports"]
    }
}

/// The strategic-merge patch that makes `observed` hold `desired`: `desired` itself, with the
/// observed uid and a `$patch: replace` directive on each of `replaced`.
pub fn change_patch(desired: &Value, uid: Option<&str>, replaced: &[&str]) -> Value {
    let mut patch = desired.clone();
    if let Some(obj) = patch.as_object_mut() {
        obj.remove("status");
    }
    if let Some(uid) = uid {
        patch["metadata"]["uid"] = Value::String(uid.to_string());
    }
    for pointer in replaced {
        match patch.pointer_mut(pointer) {
            Some(Value::Object(map)) => {
                map.insert("$patch".into(), Value::String("replace".into()));
            }
            Some(Value::Array(items)) => items.insert(0, serde_json::json!({"$patch": "replace"})),
            _ => {}
        }
    }
    patch
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Unchanged,
    Created,
    Updated,
    Deleted,
}

/// `Kind namespace/name`, for messages.
pub fn describe<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!("{} {}/{}", K::kind(&()), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// The controller ownerReference of `obj`, in words (`none` when it has none).
pub fn controller_of<K: Resource>(obj: &K) -> String {
    obj.meta()
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map_or_else(|| "none".to_string(), |o| format!("{} {} (uid {})", o.kind, o.name, o.uid))
}

/// Whether `obj` is controlled by the object with `uid`.
pub fn is_ours<K: Resource>(obj: &K, uid: &str) -> bool {
    obj.meta().owner_references.iter().flatten().any(|o| o.controller == Some(true) && o.uid == uid)
}

/// Refuses an observed object this Rollout does not own.
pub fn check_owned<K: Resource<DynamicType = ()>>(obj: &K, uid: &str) -> Result<(), WriteError> {
    if is_ours(obj, uid) {
        Ok(())
    } else {
        Err(WriteError::Conflict { object: describe(obj), owner: controller_of(obj) })
    }
}

/// Whether `observed` already holds every field `desired` sets, with the same value: objects
/// are compared as maps (extra keys in `observed`, such as defaults, do not count), lists
/// element by element and of the same length.
pub fn contains(observed: &Value, desired: &Value) -> bool {
    first_difference(observed, desired).is_none()
}

/// The path of the first field `desired` sets that `observed` does not hold (see `contains`).
pub fn first_difference(observed: &Value, desired: &Value) -> Option<String> {
    fn walk(path: &mut String, observed: Option<&Value>, desired: &Value) -> bool {
        match (observed, desired) {
            (_, Value::Null) => true,
            // An empty map or list is what the API server drops: absent is the same.
            (None, Value::Object(d)) if d.is_empty() => true,
            (None, Value::Array(d)) if d.is_empty() => true,
            (Some(Value::Object(o)), Value::Object(d)) => d.iter().all(|(k, dv)| {
                let len = path.len();
                path.push('.');
                path.push_str(k);
                let same = walk(path, o.get(k), dv);
                if same {
                    path.truncate(len);
                }
                same
            }),
            (Some(Value::Array(o)), Value::Array(d)) if o.len() == d.len() => {
                o.iter().zip(d).enumerate().all(|(i, (a, b))| {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    let same = walk(path, Some(a), b);
                    if same {
                        path.truncate(len);
                    }
                    same
                })
            }
            (Some(Value::Number(a)), Value::Number(b)) => a.as_f64() == b.as_f64(),
            (Some(a), b) => a == b,
            (None, _) => false,
        }
    }
    let mut path = String::new();
    if walk(&mut path, Some(observed), desired) { None } else { Some(path) }
}

fn classify(object: String, e: kube::Error) -> WriteError {
    match e {
        kube::Error::Api(s) if s.code == 400 || s.code == 422 => {
            WriteError::Rejected { object, message: s.message }
        }
        source => WriteError::Failed { object, source },
    }
}

/// Makes `desired` exist as this Rollout's object: created when absent, changed when it
/// differs, refused when the name belongs to someone else. `observed` is what was read this
/// pass (`None`: absent).
pub async fn ensure<K: Owned>(
    api: &Api<K>,
    uid: &str,
    observed: Option<&K>,
    desired: &K,
) -> Result<Written, WriteError> {
    let name = desired.name_any();
    let object = describe(desired);
    let fetched;
    let observed = match observed {
        Some(o) => o,
        None => {
            let pp = PostParams { field_manager: Some(field_manager().into()), ..Default::default() };
            match api.create(&pp, desired).await {
                Ok(_) => {
                    tracing::info!(object = %object, "owned object created");
                    return Ok(Written::Created);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    // Created meanwhile: by us in a pass not yet seen, or by someone else.
                    fetched = match api.get_opt(&name).await.map_err(|e| classify(object.clone(), e))? {
                        Some(o) => o,
                        None => return Err(WriteError::Failed { object, source: kube::Error::Api(s) }),
                    };
                    &fetched
                }
                Err(e) => return Err(classify(object, e)),
            }
        }
    };
    check_owned(observed, uid)?;
    let (have, want) = (to_json(observed, &object)?, to_json(desired, &object)?);
    let Some(path) = first_difference(&have, &want) else {
        return Ok(Written::Unchanged);
    };
    tracing::info!(object = %object, differs_at = %path, "updating an owned object");
    let patch = change_patch(&want, observed.meta().uid.as_deref(), K::replaced());
    let pp = PatchParams { field_manager: Some(field_manager().into()), ..Default::default() };
    api.patch(&name, &pp, &Patch::Strategic(&patch)).await.map_err(|e| classify(object, e))?;
    Ok(Written::Updated)
}

fn to_json<K: Serialize>(obj: &K, object: &str) -> Result<Value, WriteError> {
    serde_json::to_value(obj)
        .map_err(|e| WriteError::Rejected { object: object.to_string(), message: format!("encoding: {e}") })
}

/// Deletes `observed` if this Rollout owns it, with its uid as a precondition (an object of
/// the same name made since is left alone).
pub async fn delete_owned<K>(api: &Api<K>, uid: &str, observed: &K) -> Result<Written, WriteError>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    check_owned(observed, uid)?;
    let dp = DeleteParams {
        preconditions: Some(Preconditions { uid: observed.meta().uid.clone(), resource_version: None }),
        ..DeleteParams::background()
    };
    match api.delete(&observed.name_any(), &dp).await {
        Ok(_) => {
            tracing::info!(object = %describe(observed), "owned object deleted");
            Ok(Written::Deleted)
        }
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(Written::Unchanged),
        Err(e) => Err(classify(describe(observed), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use serde_json::json;

    #[test]
    fn a_change_replaces_the_owned_parts_and_carries_the_observed_uid() {
        let desired = json!({
            "metadata": {"name": "web-canary", "labels": {"a": "b"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "app", "env": [{"name": "X"}]}]}}},
            "status": {"replicas": 9}
        });
        let p = change_patch(&desired, Some("uid-7"), Deployment::replaced());
        assert_eq!(p["metadata"]["uid"], "uid-7");
        assert_eq!(p["spec"]["template"]["$patch"], "replace", "an env var the old template had goes");
        assert_eq!(p["spec"]["template"]["spec"]["containers"][0]["env"][0]["name"], "X");
        assert_eq!(p["spec"]["replicas"], 2);
        assert!(p.get("status").is_none());
        let svc = json!({"spec": {"selector": {"r": "web"}, "ports": [{"port": 80}]}});
        let p = change_patch(&svc, None, Service::replaced());
        assert_eq!(p["spec"]["selector"]["$patch"], "replace");
        assert_eq!(p["spec"]["ports"], json!([{"$patch": "replace"}, {"port": 80}]));
    }

    #[test]
    fn defaults_added_by_the_api_server_do_not_count_as_a_difference() {
        let desired = json!({"spec": {"ports": [{"name": "http", "port": 80}], "selector": {"a": "b"}}});
        let observed = json!({"spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            "selector": {"a": "b"}, "clusterIP": "10.0.0.1", "type": "ClusterIP"}});
        assert!(contains(&observed, &desired));
    }

    #[test]
    fn a_changed_value_or_a_list_of_another_length_is_a_difference() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        assert!(!contains(&json!({"spec": {"replicas": 3, "ports": [{"port": 80}]}}), &desired));
        assert!(!contains(
            &json!({"spec": {"replicas": 2, "ports": [{"port": 80}, {"port": 81}]}}),
            &desired
        ));
        assert!(!contains(&json!({"spec": {"ports": [{"port": 80}]}}), &desired), "a missing field");
        assert!(contains(&json!({"spec": {"replicas": 2.0, "ports": [{"port": 80}]}}), &desired));
        assert_eq!(
            first_difference(&json!({"spec": {"replicas": 2, "ports": [{"port": 81}]}}), &desired).as_deref(),
            Some(".spec.ports[0].port")
        );
        assert!(
            contains(
                &json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}}),
                &json!({"spec": {"replicas": 2, "ports": [{"port": 80}], "meta": {}, "env": []}})
            ),
            "empty maps and lists the server drops"
        );
    }

    fn service(owner_uid: Option<&str>) -> Service {
        let mut s = Service::default();
        s.metadata.name = Some("web-stable".into());
        s.metadata.namespace = Some("shop".into());
        s.metadata.owner_references = owner_uid.map(|uid| {
            vec![OwnerReference {
                api_version: "rollgate.dev/v1alpha1".into(),
                kind: "Rollout".into(),
                name: "other".into(),
                uid: uid.into(),
                controller: Some(true),
                ..Default::default()
            }]
        });
        s
    }

    #[test]
    fn only_an_object_controlled_by_this_uid_is_ours() {
        assert!(check_owned(&service(Some("uid-1")), "uid-1").is_ok());
        let e = check_owned(&service(None), "uid-1").expect_err("a user's Service");
        assert_eq!(
            e.to_string(),
            "Service shop/web-stable exists and is not owned by this Rollout (controller: none); rename the Rollout or remove the object"
        );
        let e = check_owned(&service(Some("uid-2")), "uid-1").expect_err("another Rollout's");
        assert!(e.to_string().contains("controller: Rollout other (uid uid-2)"), "{e}");
    }
}
