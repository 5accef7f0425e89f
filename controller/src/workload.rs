//! The Deployments and Services a Rollout owns, built from its spec and a plan's intents.
//!
//! `<name>-stable` and `<name>-canary` Deployments select their pods by `rollgate.dev/rollout`
//! and `rollgate.dev/role` (a Deployment's selector is immutable, so the revision is a label on
//! the pods, not part of the selector). Services of the same names select the same labels;
//! with `replicaRatio` a third Service `<name>` selects both roles.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use rollgate_crds::Rollout;
use rollgate_crds::labels::{REVISION, ROLE, ROLLOUT};

use crate::plan::DeploymentState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Stable,
    Canary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Stable => "stable",
            Role::Canary => "canary",
        }
    }
}

pub fn name(rollout: &str, role: Role) -> String {
    format!("{rollout}-{}", role.as_str())
}

fn owner(ro: &Rollout) -> Option<OwnerReference> {
    ro.controller_owner_ref(&())
}

fn selector(rollout: &str, role: Option<Role>) -> BTreeMap<String, String> {
    let mut m = BTreeMap::from([(ROLLOUT.to_string(), rollout.to_string())]);
    if let Some(role) = role {
        m.insert(ROLE.to_string(), role.as_str().to_string());
    }
    m
}

/// The stable pods' label selector as text (`status.selector`, for the scale subresource).
pub fn stable_selector(rollout: &str) -> String {
    selector(rollout, Some(Role::Stable))
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A Deployment for `role` running `template` (labelled with `revision`).
pub fn deployment(
    ro: &Rollout,
    role: Role,
    template: &PodTemplateSpec,
    revision: &str,
    replicas: i32,
) -> Deployment {
    let rollout = ro.metadata.name.clone().unwrap_or_default();
    let mut template = template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    let labels = meta.labels.get_or_insert_with(Default::default);
    labels.extend(selector(&rollout, Some(role)));
    labels.insert(REVISION.to_string(), revision.to_string());
    let mut labels = selector(&rollout, Some(role));
    labels.insert(REVISION.to_string(), revision.to_string());
    Deployment {
        metadata: ObjectMeta {
            name: Some(name(&rollout, role)),
            namespace: ro.metadata.namespace.clone(),
            labels: Some(labels),
            owner_references: owner(ro).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some(selector(&rollout, Some(role))),
                ..Default::default()
            },
            template,
            ..Default::default()
        }),
        status: None,
    }
}

/// The template of an existing Deployment, without the labels this module adds, with its
/// revision: what `Keep` re-applies.
pub fn existing_template(d: &Deployment) -> Option<(PodTemplateSpec, String)> {
    let spec = d.spec.as_ref()?;
    let revision = spec.template.metadata.as_ref()?.labels.as_ref()?.get(REVISION)?.clone();
    let mut template = spec.template.clone();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(ROLLOUT);
        labels.remove(ROLE);
        labels.remove(REVISION);
    }
    Some((template, revision))
}

/// What the planner needs to know of a Deployment.
pub fn state(d: &Deployment) -> DeploymentState {
    let revision = existing_template(d).map(|(_, r)| r);
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let generation = d.metadata.generation.unwrap_or(0);
    let available = d.status.as_ref().is_some_and(|s| {
        s.observed_generation.unwrap_or(0) >= generation
            && s.updated_replicas.unwrap_or(0) == want
            && s.available_replicas.unwrap_or(0) == want
            && s.replicas.unwrap_or(0) == want
    });
    let problem = d.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|conditions| {
        conditions
            .iter()
            .find(|c| {
                (c.type_ == "ReplicaFailure" && c.status == "True")
                    || (c.type_ == "Progressing" && c.status == "False")
            })
            .map(|c| c.message.clone().unwrap_or_else(|| c.reason.clone().unwrap_or_default()))
    });
    DeploymentState { revision, replicas: want, available, problem, stuck: None, ready_endpoints: None }
}

/// Container states that waiting does not cure: the kubelet keeps failing the same way.
const STUCK_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Restarts after which a crash loop is not a slow start.
const CRASH_RESTARTS: i32 = 2;

/// The first of `pods` (those of `revision`) whose container cannot run, in words:
/// `pod web-canary-7d9-x2: container web: CrashLoopBackOff (3 restarts, last exit code 1: …)`.
pub fn stuck_pod(pods: &[Pod], revision: &str) -> Option<String> {
    pods.iter().filter(|p| p.labels().get(REVISION).map(String::as_str) == Some(revision)).find_map(|p| {
        let statuses = p.status.as_ref()?;
        let all = statuses
            .init_container_statuses
            .iter()
            .flatten()
            .chain(statuses.container_statuses.iter().flatten());
        all.into_iter().find_map(|c| {
            let waiting = c.state.as_ref()?.waiting.as_ref()?;
            let reason = waiting.reason.as_deref()?;
            let crash = reason == "CrashLoopBackOff";
            if !STUCK_REASONS.contains(&reason) || (crash && c.restart_count < CRASH_RESTARTS) {
                return None;
            }
            let last = c.last_state.as_ref().and_then(|s| s.terminated.as_ref()).map(|t| {
                let why = t.message.as_deref().or(t.reason.as_deref()).unwrap_or("").trim().to_string();
                if why.is_empty() {
                    format!(", last exit code {}", t.exit_code)
                } else {
                    format!(", last exit code {}: {why}", t.exit_code)
                }
            });
            let detail = if crash {
                format!(" ({} restarts{})", c.restart_count, last.unwrap_or_default())
            } else {
                waiting.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
            };
            Some(format!("pod {}: container {}: {reason}{detail}", p.name_any(), c.name))
        })
    })
}

/// The Service for `role`, or with `None` the one selecting both roles (`replicaRatio`).
pub fn service(ro: &Rollout, role: Option<Role>) -> Service {
    let rollout = ro.metadata.name.clone().unwrap_or_default();
    let port = &ro.spec.service;
    Service {
        metadata: ObjectMeta {
            name: Some(role.map_or_else(|| rollout.clone(), |r| name(&rollout, r))),
            namespace: ro.metadata.namespace.clone(),
            labels: Some(selector(&rollout, role)),
            owner_references: owner(ro).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(selector(&rollout, role)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: port.port,
                target_port: Some(IntOrString::Int(port.target_port)),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::RolloutSpecExt;

    #[test]
    fn the_scale_selector_picks_the_stable_pods() {
        assert_eq!(stable_selector("web"), "rollgate.dev/role=stable,rollgate.dev/rollout=web");
    }
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use rollgate_crds::RolloutSpec;

    fn rollout() -> Rollout {
        let mut ro = Rollout::new("web", RolloutSpec::test());
        ro.metadata.namespace = Some("shop".into());
        ro.metadata.uid = Some("uid-1".into());
        ro
    }

    #[test]
    fn deployments_select_by_role_and_label_the_revision() {
        let ro = rollout();
        let d = deployment(&ro, Role::Canary, &ro.spec.template, "abc", 2);
        assert_eq!(d.metadata.name.as_deref(), Some("web-canary"));
        let sel = d.spec.as_ref().and_then(|s| s.selector.match_labels.clone()).expect("selector");
        assert_eq!(sel.get(ROLE).map(String::as_str), Some("canary"));
        assert!(!sel.contains_key(REVISION), "the revision is not in the immutable selector");
        let owner = d.metadata.owner_references.as_ref().and_then(|o| o.first()).expect("owner");
        assert_eq!((owner.kind.as_str(), owner.controller), ("Rollout", Some(true)));
        let (template, rev) = existing_template(&d).expect("template");
        assert_eq!(rev, "abc");
        assert_eq!(template, {
            let mut t = ro.spec.template.clone();
            t.metadata = Some(ObjectMeta { labels: Some(BTreeMap::new()), ..Default::default() });
            t
        });
    }

    #[test]
    fn availability_needs_every_replica_updated_and_ready() {
        let ro = rollout();
        let mut d = deployment(&ro, Role::Stable, &ro.spec.template, "abc", 2);
        d.metadata.generation = Some(3);
        assert!(!state(&d).available);
        d.status = Some(DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(1),
            ..Default::default()
        });
        assert!(!state(&d).available);
        d.status.as_mut().expect("status").available_replicas = Some(2);
        assert!(state(&d).available);
        assert_eq!(state(&d).revision.as_deref(), Some("abc"));
    }

    #[test]
    fn services_point_at_the_target_port() {
        let ro = rollout();
        let s = service(&ro, Some(Role::Stable));
        assert_eq!(s.metadata.name.as_deref(), Some("web-stable"));
        let port = &s.spec.as_ref().and_then(|s| s.ports.clone()).expect("ports")[0];
        assert_eq!((port.port, port.target_port.clone()), (80, Some(IntOrString::Int(8080))));
        let both = service(&ro, None);
        assert_eq!(both.metadata.name.as_deref(), Some("web"));
        assert!(!both.spec.and_then(|s| s.selector).expect("selector").contains_key(ROLE));
    }
}

#[cfg(test)]
mod stuck_tests {
    use super::*;

    fn pod(name: &str, revision: &str, container: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {REVISION: revision}},
            "status": {"containerStatuses": [container]},
        }))
        .expect("pod")
    }

    fn crash_looping(restarts: i32) -> serde_json::Value {
        serde_json::json!({
            "name": "web", "image": "web:v2", "imageID": "", "ready": false, "restartCount": restarts,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 20s restarting failed container"}},
            "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": "unknown flag: --bogus"}},
        })
    }

    #[test]
    fn a_crash_loop_names_the_pod_the_restarts_and_the_last_exit() {
        let pods = [pod("web-canary-1", "r2", crash_looping(3))];
        assert_eq!(
            stuck_pod(&pods, "r2").as_deref(),
            Some(
                "pod web-canary-1: container web: CrashLoopBackOff (3 restarts, last exit code 2: unknown flag: --bogus)"
            )
        );
        assert_eq!(stuck_pod(&pods, "r1"), None, "another revision's pods do not count");
    }

    #[test]
    fn a_slow_start_is_not_stuck_but_an_image_that_cannot_be_had_is() {
        assert_eq!(stuck_pod(&[pod("p", "r", crash_looping(1))], "r"), None, "one restart is a slow start");
        let never = serde_json::json!({
            "name": "web", "image": "web:v9", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image \"web:v9\" is not present"}},
        });
        let msg = stuck_pod(&[pod("p", "r", never)], "r").expect("stuck");
        assert_eq!(msg, "pod p: container web: ErrImageNeverPull: image \"web:v9\" is not present");
        let creating = serde_json::json!({
            "name": "web", "image": "web:v2", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ContainerCreating"}},
        });
        assert_eq!(stuck_pod(&[pod("p", "r", creating)], "r"), None);
    }
}
