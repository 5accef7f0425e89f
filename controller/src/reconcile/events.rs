//! Kubernetes Events for a Rollout's decisions, one per decision.
//!
//! kube-runtime's `Recorder` folds events with the same reason into one series for six minutes
//! and keeps the first note: a second rollback within that time would show the first one's
//! reason. The planner already emits an event only on a transition, so each is written as its
//! own `events.k8s.io/v1` Event, with the note it was given.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::events::Reporter;
use kube::{Api, Client};

/// Writes Events as this controller instance.
#[derive(Clone)]
pub struct EventWriter {
    client: Client,
    reporter: Reporter,
}

impl EventWriter {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Creates the Event `reason` (also its `action`) with `note` about `regarding`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        warning: bool,
        reason: &str,
        note: &str,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let ns = regarding.namespace.clone().unwrap_or_default();
        let name = regarding.name.clone().unwrap_or_else(|| self.reporter.controller.clone());
        let event = K8sEvent {
            metadata: ObjectMeta {
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(now)),
            type_: Some(if warning { "Warning" } else { "Normal" }.into()),
            reason: Some(reason.into()),
            action: Some(reason.into()),
            note: Some(note.chars().take(1024).collect()),
            regarding: Some(regarding.clone()),
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter.instance.clone().unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            ..Default::default()
        };
        let api: Api<K8sEvent> = Api::namespaced(self.client.clone(), &ns);
        api.create(&PostParams::default(), &event).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::fake_api::FakeApi;

    #[tokio::test]
    async fn two_decisions_with_one_reason_are_two_events_each_with_its_own_note() {
        let fake = FakeApi::default();
        let writer =
            EventWriter::new(fake.client(), Reporter { controller: "rollgate".into(), instance: None });
        let regarding = ObjectReference {
            kind: Some("Rollout".into()),
            name: Some("web".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        };
        for note in ["rolled back: errors over budget", "rolled back: the canary cannot run"] {
            writer.publish(&regarding, true, "RolledBack", note).await.expect("published");
        }
        let posted: Vec<_> = fake.seen().into_iter().filter(|s| s.path.contains("/events")).collect();
        assert_eq!(posted.len(), 2, "{posted:?}");
        assert_eq!(posted[0].body["note"], "rolled back: errors over budget");
        assert_eq!(posted[1].body["note"], "rolled back: the canary cannot run");
        assert_ne!(posted[0].body["metadata"]["name"], posted[1].body["metadata"]["name"]);
        assert_eq!(posted[1].body["type"], "Warning");
        assert_eq!(posted[1].body["reportingController"], "rollgate");
    }
}
