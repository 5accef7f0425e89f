//! Whole passes against the stateful fake: what is written, in which order, and never an
//! object the Rollout does not own.

use super::*;

fn user_service(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "shop", "labels": {"team": "theirs"}},
        "spec": {"selector": {"app": "theirs"}, "ports": [{"port": 8080}]}
    })
}

fn condition(st: &RolloutStatus, type_: &str) -> Option<(String, String, String)> {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[tokio::test]
async fn a_first_deploy_creates_owned_objects_and_a_steady_pass_writes_nothing() {
    let ro = rollout(RolloutSpec::test().with_replica_ratio(), None);
    let h = Harness::new(&ro, 0.0, 0.0);
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("first pass");
    let writes = h.writes_since(0);
    assert_eq!(writes[0].path, STATUS, "the status is written before anything is acted on");
    assert_eq!(h.status().phase, Some(Phase::Progressing));
    for path in [SVC_STABLE, SVC_CANARY, SVC_SHARED, DEPLOY_STABLE] {
        let o = h.fake.get(path).unwrap_or_else(|| panic!("{path} created"));
        assert_eq!(o["metadata"]["ownerReferences"][0]["uid"], "uid-1", "{path}");
        assert_eq!(o["metadata"]["ownerReferences"][0]["controller"], true, "{path}");
    }
    let stable = h.fake.get(DEPLOY_STABLE).unwrap_or_default();
    assert_eq!(stable["spec"]["replicas"], 2);
    assert_eq!(
        stable["spec"]["template"]["metadata"]["labels"]["rollgate.dev/revision"],
        revision_of(&ro.spec.template)
    );
    assert!(
        writes
            .iter()
            .filter(|w| w.path.contains("/deployments") || w.path.contains("/services"))
            .all(|w| w.method == Method::POST)
    );

    h.pass(&ctl, 5).await.expect("second pass");
    assert_eq!(h.status().phase, Some(Phase::Promoted));
    let before = h.fake.seen().len();
    h.pass(&ctl, 5).await.expect("steady pass");
    assert!(
        h.writes_since(before).is_empty(),
        "nothing changed, nothing written: {:?}",
        h.writes_since(before)
    );
}

#[tokio::test]
async fn a_users_services_are_refused_as_a_name_conflict_and_never_changed() {
    let ro = rollout(RolloutSpec::test().with_replica_ratio(), None);
    let h = Harness::new(&ro, 0.0, 0.0);
    h.fake.put(SVC_SHARED, user_service("web"));
    h.fake.put(SVC_CANARY, user_service("web-canary"));
    let theirs = (h.fake.get(SVC_SHARED), h.fake.get(SVC_CANARY));
    let ctl = h.controller();
    let action = h.pass(&ctl, 5).await.expect("a conflict is not an error");
    assert_eq!(action, Action::requeue(crate::plan::CONFLICT_RECHECK));
    let st = h.status();
    assert_eq!(st.phase, Some(Phase::Failed));
    let (on, reason, message) = condition(&st, "InvalidSpec").expect("InvalidSpec");
    assert_eq!((on.as_str(), reason.as_str()), ("True", "NameConflict"));
    assert!(
        message
            .contains("Service shop/web-canary exists and is not owned by this Rollout (controller: none)"),
        "{message}"
    );
    let writes = h.writes_since(0);
    assert!(
        writes.iter().all(|w| w.path == STATUS || w.path.contains("/events")),
        "only status and events: {writes:?}"
    );
    let event = writes.iter().find(|w| w.path.contains("/events")).expect("an Event");
    assert_eq!(
        (event.body["reason"].clone(), event.body["type"].clone()),
        (json!("NameConflict"), json!("Warning"))
    );
    assert!(event.body["note"].as_str().is_some_and(|n| n.contains("Service shop/web-canary")));
    assert_eq!((h.fake.get(SVC_SHARED), h.fake.get(SVC_CANARY)), theirs, "the user's Services are untouched");

    // Passes while the conflict lasts write nothing more (no Event storm).
    let before = h.fake.seen().len();
    h.pass(&ctl, 30).await.expect("again");
    assert!(h.writes_since(before).is_empty(), "{:?}", h.writes_since(before));

    // The user removes their Services: the Rollout proceeds.
    h.fake.remove(SVC_SHARED);
    h.fake.remove(SVC_CANARY);
    h.pass(&ctl, 5).await.expect("proceeds");
    assert_eq!(condition(&h.status(), "InvalidSpec").map(|c| c.0), Some("False".into()));
    assert_eq!(
        h.fake.get(SVC_SHARED).map(|s| s["metadata"]["ownerReferences"][0]["uid"].clone()),
        Some(json!("uid-1"))
    );
}

#[tokio::test]
async fn an_object_someone_else_creates_meanwhile_is_not_taken_over() {
    let ro = rollout(RolloutSpec::test().with_replica_ratio(), None);
    let h = Harness::new(&ro, 0.0, 0.0);
    h.fake.appear_on_create(SVC_STABLE, user_service("web-stable"));
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("a conflict is not an error");
    let (on, reason, message) = condition(&h.status(), "InvalidSpec").expect("InvalidSpec");
    assert_eq!((on.as_str(), reason.as_str()), ("True", "NameConflict"), "{message}");
    let theirs = h.fake.get(SVC_STABLE).unwrap_or_default();
    assert_eq!(theirs["spec"]["selector"], json!({"app": "theirs"}));
    assert!(theirs["metadata"]["ownerReferences"].is_null());
}

#[tokio::test]
async fn an_object_the_api_server_rejects_is_invalid_spec_naming_it_and_not_retried_until_the_spec_changes() {
    let ro = rollout(RolloutSpec::test(), None);
    let h = Harness::new(&ro, 0.0, 0.0);
    h.fake.put(ROUTE, route(100, 0));
    let message = "Deployment.apps \"web-stable\" is invalid: spec.template.spec.containers[0].name: Invalid value: \"Bad_Name\"";
    h.fake.reject_writes(DEPLOY_STABLE, message);
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("a rejection is not an error");
    let st = h.status();
    assert_eq!(st.phase, Some(Phase::Failed));
    let (on, reason, text) = condition(&st, "InvalidSpec").expect("InvalidSpec");
    assert_eq!((on.as_str(), reason.as_str()), ("True", "RejectedByAPI"));
    assert!(
        text.starts_with("Deployment shop/web-stable was rejected by the API server: ")
            && text.contains("Bad_Name"),
        "{text}"
    );
    let events: Vec<_> = h.writes_since(0).into_iter().filter(|w| w.path.contains("/events")).collect();
    assert!(events.iter().any(|e| e.body["reason"] == "RejectedByAPI"), "{events:?}");

    let creates = |h: &Harness| {
        h.fake.seen().iter().filter(|s| s.method == Method::POST && s.path.ends_with("/deployments")).count()
    };
    assert_eq!(creates(&h), 1);
    h.pass(&ctl, 60).await.expect("again");
    assert_eq!(creates(&h), 1, "the same generation is not written again");

    // The user fixes the template: a new generation is tried.
    h.fake.forget_rejections();
    let mut fixed = h.rollout();
    fixed.metadata.generation = Some(2);
    h.fake.put(ROLLOUT, serde_json::to_value(&fixed).unwrap_or_default());
    h.pass(&ctl, 5).await.expect("retried");
    assert_eq!(creates(&h), 2);
    assert!(h.fake.get(DEPLOY_STABLE).is_some());
}

#[tokio::test]
async fn a_passing_step_is_recorded_then_the_weight_raised_and_nothing_else_written() {
    let (h, s, _) = Harness::mid_rollout(0, 600, 0.0, 50_000.0);
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("ok");
    let writes = h.writes_since(0);
    let paths: Vec<&str> =
        writes.iter().map(|w| w.path.as_str()).filter(|p| !p.contains("/events")).collect();
    assert_eq!(
        paths,
        [STATUS, ROUTE],
        "status first, then the route; the unchanged Deployments and Services are not written"
    );
    let route_patch = &writes.iter().find(|w| w.path == ROUTE).expect("route").body;
    assert_eq!(route_patch["spec"]["rules"][0]["backendRefs"][0]["weight"], 95);
    assert_eq!(route_patch["spec"]["rules"][0]["backendRefs"][1]["weight"], 5);
    assert_eq!(route_patch["spec"]["parentRefs"], Value::Null, "only the rules are applied");
    let st = h.status();
    assert_eq!((st.current_step, st.canary_weight), (Some(1), 5));
    assert!(
        st.checks.iter().all(|c| c.result == rollgate_crds::rollout::CheckResult::Pass),
        "{:?}",
        st.checks
    );
    let stable = h.fake.get(DEPLOY_STABLE).unwrap_or_default();
    assert_eq!(
        stable["spec"]["template"]["metadata"]["labels"]["rollgate.dev/revision"],
        json!(s),
        "stable kept"
    );
}

#[tokio::test]
async fn a_breach_is_recorded_then_traffic_taken_off_the_canary() {
    let (h, _, _) = Harness::mid_rollout(0, 60, 60.0, 600.0);
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("ok");
    let writes = h.writes_since(0);
    assert_eq!(writes[0].path, STATUS);
    assert_eq!(writes[0].body["status"]["phase"], "RolledBack");
    assert_eq!(writes[1].path, ROUTE);
    assert_eq!(writes[1].body["spec"]["rules"][0]["backendRefs"][1]["weight"], 0);
    let st = h.status();
    assert_eq!(st.verdict, Some(Verdict::Fail));
    let msg = st.message.clone().unwrap_or_default();
    assert!(msg.contains("error-rate") && msg.contains("60 of 600"), "{msg}");
    let event = writes.iter().find(|w| w.path.contains("/events")).expect("event");
    assert_eq!(
        (event.body["reason"].clone(), event.body["type"].clone()),
        (json!("RolledBack"), json!("Warning"))
    );
    assert!(event.body["note"].as_str().is_some_and(|n| n.contains("error-rate")));
    assert_eq!(
        h.fake.get(DEPLOY_CANARY).map(|d| d["spec"]["replicas"].clone()),
        Some(json!(2)),
        "kept while it drains"
    );
}

#[tokio::test]
async fn promotion_removes_the_canary_it_owns_with_its_uid_as_a_precondition() {
    let (mut ro, _s, c) = mid_rollout(3, 60);
    if let Some(st) = ro.status.as_mut() {
        st.traffic_returned_at =
            Some(Time(Timestamp::from_second(NOW - 60).unwrap_or(Timestamp::UNIX_EPOCH)));
    }
    let h = Harness::new(&ro, 0.0, 0.0);
    h.fake.put(DEPLOY_STABLE, deployment_json(&ro, Role::Stable, &c, "v2", true));
    h.fake.put(DEPLOY_CANARY, deployment_json(&ro, Role::Canary, &c, "v2", true));
    for (path, role) in [(SVC_STABLE, Role::Stable), (SVC_CANARY, Role::Canary)] {
        h.fake.put(path, serde_json::to_value(workload::service(&ro, Some(role))).unwrap_or_default());
    }
    h.fake.put(ROUTE, route(100, 0));
    let canary_uid = h.fake.get(DEPLOY_CANARY).map(|d| d["metadata"]["uid"].clone());
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("ok");
    let delete = h.writes_since(0).into_iter().find(|w| w.method == Method::DELETE).expect("a delete");
    assert_eq!(delete.path, DEPLOY_CANARY);
    assert_eq!(Some(delete.body["preconditions"]["uid"].clone()), canary_uid);
    assert!(h.fake.get(DEPLOY_CANARY).is_none());
    let st = h.status();
    assert_eq!(
        (st.phase, st.verdict, st.stable_revision),
        (Some(Phase::Promoted), Some(Verdict::Pass), Some(c))
    );
    assert!(h.writes_since(0).iter().any(|w| w.path.contains("/events") && w.body["reason"] == "Promoted"));
}

#[tokio::test]
async fn a_missing_release_gate_is_an_invalid_spec_not_an_error() {
    let mut spec = RolloutSpec::test();
    spec.gate = None;
    spec.gate_ref = Some(rollgate_crds::rollout::GateRef { name: "slo".into() });
    let h = Harness::new(&rollout(spec, None), 0.0, 0.0);
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect("ok");
    let st = h.status();
    assert_eq!(st.phase, Some(Phase::Failed));
    let (on, _, message) = condition(&st, "InvalidSpec").expect("InvalidSpec");
    assert!(on == "True" && message.contains("gateRef"), "{message}");
    assert!(h.writes_since(0).iter().all(|w| w.path == STATUS || w.path.contains("/events")));
}

#[tokio::test]
async fn a_rollout_name_that_would_collide_or_be_invalid_is_refused_before_anything_is_written() {
    for name in ["web-stable", "web.v2", &"a".repeat(57)] {
        let mut ro = rollout(RolloutSpec::test(), None);
        ro.metadata.name = Some(name.to_string());
        let h = Harness::new(&ro, 0.0, 0.0);
        let path = format!("/apis/rollgate.dev/v1alpha1/namespaces/shop/rollouts/{name}");
        h.fake.put(&path, serde_json::to_value(&ro).unwrap_or_default());
        let ctl = h.controller();
        reconcile(Arc::new(ro), ctl).await.expect("ok");
        let writes = h.writes_since(0);
        assert!(
            writes.iter().all(|w| w.path.ends_with("/status") || w.path.contains("/events")),
            "{name}: {writes:?}"
        );
        let stored: Rollout = serde_json::from_value(h.fake.get(&path).unwrap_or_default()).expect("rollout");
        let (on, _, message) =
            condition(&stored.status.unwrap_or_default(), "InvalidSpec").expect("InvalidSpec");
        assert!(on == "True" && message.starts_with("metadata.name: "), "{name}: {message}");
    }
}

#[tokio::test]
async fn a_write_that_fails_for_a_passing_reason_is_an_event_naming_the_object_and_a_retry() {
    let ro = rollout(RolloutSpec::test().with_replica_ratio(), None);
    let h = Harness::new(&ro, 0.0, 0.0);
    h.fake.fail_writes(SVC_STABLE, 503, "etcdserver: request timed out");
    let ctl = h.controller();
    let err = h.pass(&ctl, 5).await.expect_err("retried with backoff");
    assert_eq!(err.metric_label(), "write");
    let event = h.writes_since(0).into_iter().find(|w| w.path.contains("/events")).expect("an Event");
    assert_eq!(event.body["reason"], "WriteFailed");
    let note = event.body["note"].as_str().unwrap_or_default().to_string();
    assert!(note.contains("Service shop/web-stable") && note.contains("request timed out"), "{note}");
    assert_eq!(h.status().phase, Some(Phase::Progressing), "not an invalid spec");

    let (h, _, _) = Harness::mid_rollout(0, 600, 0.0, 50_000.0);
    h.fake.fail_writes(ROUTE, 500, "the route store is down");
    let ctl = h.controller();
    h.pass(&ctl, 5).await.expect_err("retried with backoff");
    let event = h
        .writes_since(0)
        .into_iter()
        .find(|w| w.path.contains("/events") && w.body["reason"] == "WriteFailed");
    assert!(event.is_some_and(|e| e.body["note"].as_str().is_some_and(|n| n.starts_with("traffic router:"))));
}
