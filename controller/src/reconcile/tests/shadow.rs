//! A shadow step with `mirror: TraefikService` against the stateful fake: the Rollout's own
//! TraefikService is written first and the route refers to it only on a later pass; the copies
//! stop before the first weight, or with a rollback; someone else's TraefikService of that name
//! is refused and left as it was.

use rollgate_crds::rollout::Mirror;

use super::*;

const SHADOW: &str = "/apis/traefik.io/v1alpha1/namespaces/shop/traefikservices/web-shadow";

/// v2 rolling out, at its shadow step (50 %), the canary available, nothing copied yet.
fn at_the_shadow_step(bad: f64, total: f64) -> Harness {
    let (mut ro, s, c) = mid_rollout(0, 0);
    ro.spec = ro.spec.with_shadow(50, Mirror::TraefikService);
    if let Some(st) = ro.status.as_mut() {
        st.canary_weight = 0;
        st.step_started_at = None;
    }
    Harness::with_objects_of((ro, s, c), bad, total).0
}

fn stable_ref(h: &Harness) -> Value {
    h.fake.get(ROUTE).unwrap_or_default()["spec"]["rules"][0]["backendRefs"][0].clone()
}

#[tokio::test]
async fn the_traefik_service_comes_first_then_the_route_then_the_first_weight_without_copies() {
    let h = at_the_shadow_step(0.0, 50_000.0);
    let ctl = h.controller();
    h.pass(&ctl, 2).await.expect("pass");
    let shadow = h.fake.get(SHADOW).expect("the TraefikService is created");
    assert_eq!(shadow["metadata"]["ownerReferences"][0]["uid"], "uid-1");
    assert_eq!(
        shadow["spec"]["mirroring"],
        json!({"name": "web-stable", "port": 80, "mirrors": [{"name": "web-canary", "port": 80, "percent": 50}]})
    );
    assert_eq!(stable_ref(&h)["name"], "web-stable", "the route waits a pass for Traefik to have it");
    h.pass(&ctl, 2).await.expect("pass");
    assert_eq!(
        stable_ref(&h),
        json!({"group": "traefik.io", "kind": "TraefikService", "name": "web-shadow", "weight": 100})
    );
    assert!(h.status().step_started_at.is_none(), "the clock starts once the copies are seen");
    h.pass(&ctl, 2).await.expect("pass");
    assert!(h.status().step_started_at.is_some());
    for _ in 0..40 {
        if h.status().current_step == Some(1) && h.route_weights().last() == Some(&1) {
            break;
        }
        h.pass(&ctl, 20).await.expect("pass");
    }
    assert_eq!(h.status().current_step, Some(1), "{:#?}", h.status());
    assert_eq!(stable_ref(&h), json!({"name": "web-stable", "port": 80, "weight": 99}));
}

#[tokio::test]
async fn a_faulty_canary_is_rolled_back_in_the_shadow_step_and_the_route_goes_straight_to_stable() {
    let h = at_the_shadow_step(25_000.0, 50_000.0);
    let ctl = h.controller();
    for _ in 0..20 {
        if h.status().phase == Some(Phase::RolledBack) && stable_ref(&h)["name"] == "web-stable" {
            break;
        }
        h.pass(&ctl, 20).await.expect("pass");
    }
    assert_eq!(h.status().phase, Some(Phase::RolledBack), "{:#?}", h.status());
    assert_eq!(stable_ref(&h)["name"], "web-stable", "copies stop with the rollback");
    assert!(h.route_weights().iter().all(|w| *w == 0), "no user request went to it: {:?}", h.route_weights());
}

#[tokio::test]
async fn someone_elses_traefik_service_of_that_name_is_refused_and_left_alone() {
    let h = at_the_shadow_step(0.0, 50_000.0);
    let theirs = json!({
        "apiVersion": "traefik.io/v1alpha1", "kind": "TraefikService",
        "metadata": {"name": "web-shadow", "namespace": "shop", "uid": "theirs"},
        "spec": {"weighted": {"services": [{"name": "a", "port": 80}]}},
    });
    h.fake.put(SHADOW, theirs.clone());
    let ctl = h.controller();
    for _ in 0..3 {
        let _ = h.pass(&ctl, 2).await;
    }
    assert_eq!(h.fake.get(SHADOW).map(|o| o["spec"].clone()), Some(theirs["spec"].clone()));
    assert_eq!(stable_ref(&h)["name"], "web-stable");
    let invalid = h.status().conditions.into_iter().find(|c| c.type_ == "InvalidSpec").expect("condition");
    assert_eq!((invalid.status.as_str(), invalid.reason.as_str()), ("True", "NameConflict"));
    assert!(invalid.message.contains("TraefikService \"web-shadow\""), "{}", invalid.message);
}
