//! Reconcile against a mocked API server (tower-test, as in kube-rs `controller-rs`): a
//! scripted one where the exact requests matter, and the stateful `FakeApi` for whole passes,
//! ownership and crash points (`owned_objects`, `crash_points`).

mod adoption;
mod crash_points;
mod owned_objects;
mod shadow;
mod takeover;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::events::Reporter;
use kube::{Client, Resource};
use rollgate_crds::rollout::{Phase, Verdict};
use rollgate_crds::{Rollout, RolloutSpec, RolloutStatus};
use serde_json::{Value, json};

use super::*;
use crate::fixtures::RolloutSpecExt;
use crate::metrics_provider::MetricProvider;
use crate::metrics_provider::access::Access;
use crate::observability::Metrics;
use crate::plan::revision_of;
use crate::workload::{self, Role};

const NOW: i64 = 1_800_000_000;

fn now() -> Timestamp {
    Timestamp::from_second(NOW).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Answers counts: for the canary `bad` 5xx of `total`; stable is always clean. Histogram
/// buckets hold every event (nothing slow, no pauses).
struct FakePrometheus {
    bad: f64,
    total: f64,
}

impl MetricProvider for FakePrometheus {
    fn query<'a>(
        &'a self,
        promql: &'a str,
        _time: Option<i64>,
    ) -> BoxFuture<'a, Result<Option<f64>, String>> {
        let canary = promql.contains("role=\"canary\"");
        let v = if promql.contains("5..") { if canary { self.bad } else { 0.0 } } else { self.total };
        Box::pin(async move { Ok(Some(v)) })
    }

    fn samples_by<'a>(
        &'a self,
        _promql: &'a str,
        _label: &'a str,
        _time: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<(String, f64)>, String>> {
        // Every event within every boundary: nothing slow.
        let all = self.total;
        Box::pin(async move { Ok(vec![("0.05".into(), all), ("0.3".into(), all), ("+Inf".into(), all)]) })
    }

    fn label_values<'a>(
        &'a self,
        _promql: &'a str,
        label: &'a str,
        _time: Option<i64>,
    ) -> BoxFuture<'a, Result<Vec<String>, String>> {
        let les = if label == "le" { vec!["0.05".into(), "0.3".into(), "+Inf".into()] } else { Vec::new() };
        Box::pin(async move { Ok(les) })
    }
}

/// One expected request and the answer to give.
struct Expect {
    method: Method,
    path: &'static str,
    status: StatusCode,
    body: Value,
}

fn expect(method: Method, path: &'static str, status: StatusCode, body: Value) -> Expect {
    Expect { method, path, status, body }
}

/// Serves `script` in order; returns the bodies of the requests it received.
fn api_server(script: Vec<Expect>) -> (Client, tokio::task::JoinHandle<Vec<(String, Value)>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let task = tokio::spawn(async move {
        let mut seen = Vec::new();
        for e in script {
            let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
            let Ok(Some((request, send))) = next else {
                panic!("expected {} {} but no request came", e.method, e.path);
            };
            let path = request.uri().path().to_string();
            assert_eq!(
                (request.method().clone(), path.as_str()),
                (e.method.clone(), e.path),
                "request {} out of order",
                seen.len() + 1
            );
            let bytes = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            seen.push((path, body));
            let response = Response::builder()
                .status(e.status)
                .body(Body::from(serde_json::to_vec(&e.body).unwrap_or_default()))
                .unwrap_or_else(|_| Response::new(Body::empty()));
            send.send_response(response);
        }
        seen
    });
    (Client::new(service, "shop"), task)
}

fn context(client: Client, prom: FakePrometheus) -> Arc<Context> {
    let prom: Arc<dyn MetricProvider> = Arc::new(prom);
    let providers: ProviderFactory = Arc::new(move |_: &Access| Ok(prom.clone()));
    let reporter = Reporter { controller: "rollgate".into(), instance: None };
    Arc::new(Context::new(client, reporter, Arc::new(Metrics::default()), providers).with_clock(now))
}

fn rollout(spec: RolloutSpec, status: Option<RolloutStatus>) -> Rollout {
    let mut ro = Rollout::new("web", spec);
    ro.metadata.namespace = Some("shop".into());
    ro.metadata.uid = Some("uid-1".into());
    ro.metadata.generation = Some(1);
    ro.status = status;
    ro
}

fn deployment_json(ro: &Rollout, role: Role, revision: &str, image: &str, available: bool) -> Value {
    let template = RolloutSpec::test().with_image(image).template;
    let mut d: Deployment = workload::deployment(ro, role, &template, revision, ro.spec.replicas);
    d.metadata.generation = Some(1);
    let n = if available { ro.spec.replicas } else { 0 };
    d.status = Some(DeploymentStatus {
        observed_generation: Some(1),
        replicas: Some(ro.spec.replicas),
        updated_replicas: Some(ro.spec.replicas),
        available_replicas: Some(n),
        ..Default::default()
    });
    serde_json::to_value(d).unwrap_or_default()
}

fn route(stable: i64, canary: i64) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [
            {"name": "web-stable", "port": 80, "weight": stable},
            {"name": "web-canary", "port": 80, "weight": canary}
        ]}]}
    })
}

const DEPLOY_STABLE: &str = "/apis/apps/v1/namespaces/shop/deployments/web-stable";
const DEPLOY_CANARY: &str = "/apis/apps/v1/namespaces/shop/deployments/web-canary";
const SVC_STABLE: &str = "/api/v1/namespaces/shop/services/web-stable";
const SVC_CANARY: &str = "/api/v1/namespaces/shop/services/web-canary";
const SVC_SHARED: &str = "/api/v1/namespaces/shop/services/web";
const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/web";
const STATUS: &str = "/apis/rollgate.dev/v1alpha1/namespaces/shop/rollouts/web/status";

fn mid_rollout(step: i32, started_secs_ago: i64) -> (Rollout, String, String) {
    let spec = RolloutSpec::test().with_image("v2");
    let stable_rev = revision_of(&RolloutSpec::test().template);
    let canary_rev = revision_of(&spec.template);
    let status = RolloutStatus {
        phase: Some(Phase::Progressing),
        stable_revision: Some(stable_rev.clone()),
        canary_revision: Some(canary_rev.clone()),
        current_step: Some(step),
        canary_weight: spec.steps.get(step as usize).map_or(100, |s| s.weight),
        step_started_at: Some(Time(
            Timestamp::from_second(NOW - started_secs_ago).unwrap_or(Timestamp::UNIX_EPOCH),
        )),
        ..Default::default()
    };
    (rollout(spec, Some(status)), stable_rev, canary_rev)
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let delays: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
}

#[test]
fn actions_are_read_once() {
    let mut ro = rollout(RolloutSpec::test(), None);
    ro.meta_mut().annotations = Some(
        [
            ("rollgate.dev/promote".to_string(), "full:1".to_string()),
            ("rollgate.dev/abort".to_string(), "a1".to_string()),
        ]
        .into(),
    );
    let a = actions_from(&ro, &RolloutStatus::default());
    assert_eq!(a.promote, Some(("full:1".into(), true)));
    assert_eq!(a.abort, Some("a1".into()));
    let handled = RolloutStatus {
        handled_actions: Some(rollgate_crds::rollout::HandledActions {
            promote: Some("full:1".into()),
            abort: None,
            retry: None,
        }),
        ..Default::default()
    };
    assert_eq!(actions_from(&ro, &handled).promote, None);
}

const ROLLOUT: &str = "/apis/rollgate.dev/v1alpha1/namespaces/shop/rollouts/web";

#[tokio::test]
async fn a_cached_copy_older_than_our_status_write_is_read_again() {
    let (mut cached, _, _) = mid_rollout(0, 30);
    cached.metadata.resource_version = Some("6".into());
    let (mut latest, _, _) = mid_rollout(1, 0);
    latest.metadata.resource_version = Some("7".into());
    let (client, server) = api_server(vec![expect(
        Method::GET,
        ROLLOUT,
        StatusCode::OK,
        serde_json::to_value(&latest).unwrap_or_default(),
    )]);
    let ctx = context(client, FakePrometheus { bad: 0.0, total: 0.0 });
    // Nothing written yet: the cache is all there is.
    let first = fresh(Arc::new(cached.clone()), &ctx, "shop", "web").await.expect("fresh");
    assert_eq!(first.metadata.resource_version.as_deref(), Some("6"));
    // Our status write produced version 7; the cache still shows 6 (step 1 of 3).
    ctx.remember_version("shop", "web", Some("7".into()));
    let planned_from = fresh(Arc::new(cached), &ctx, "shop", "web").await.expect("fresh");
    assert_eq!(planned_from.status.as_ref().and_then(|s| s.current_step), Some(1), "the written step");
    // Once the cache has caught up, no request is made (the mock would fail it).
    let again = fresh(Arc::new(latest), &ctx, "shop", "web").await.expect("fresh");
    assert_eq!(again.metadata.resource_version.as_deref(), Some("7"));
    let seen = server.await.expect("server");
    assert_eq!(seen.len(), 1);
}

#[test]
fn transitions_map_to_webhook_kinds_and_the_payload_names_the_rollout() {
    use rollgate_crds::conditions::EventReason;
    use rollgate_crds::notifications::NotificationEvent;
    assert_eq!(notification_kind(EventReason::WeightApplied), Some(NotificationEvent::Step));
    assert_eq!(notification_kind(EventReason::Promoted), Some(NotificationEvent::Promotion));
    assert_eq!(notification_kind(EventReason::RolledBack), Some(NotificationEvent::Rollback));
    assert_eq!(notification_kind(EventReason::Held), None);
    let (ro, s, c) = mid_rollout(1, 30);
    let status = ro.status.clone().unwrap_or_default();
    assert_eq!(notification_kind(EventReason::WouldRollBack), Some(NotificationEvent::Rollback));
    let p = notification_payload(&ro, &status, NotificationEvent::Step, "canary weight 5%", false, now());
    assert_eq!(p["dryRun"], false);
    assert_eq!(p["kind"], "Step");
    assert_eq!(p["rollout"], json!({"namespace": "shop", "name": "web"}));
    assert_eq!(
        (p["step"].clone(), p["steps"].clone(), p["canaryWeight"].clone()),
        (json!(2), json!(3), json!(5))
    );
    assert_eq!((p["canaryRevision"].clone(), p["stableRevision"].clone()), (json!(c), json!(s)));
    assert_eq!(p["reason"], "canary weight 5%");
}

// === a whole cluster in a FakeApi ===

/// A Rollout in a `FakeApi`, a moving clock, and Prometheus answering fixed counts.
struct Harness {
    fake: super::fake_api::FakeApi,
    clock: Arc<std::sync::atomic::AtomicI64>,
    bad: f64,
    total: f64,
}

impl Harness {
    fn new(ro: &Rollout, bad: f64, total: f64) -> Self {
        let fake = super::fake_api::FakeApi::default();
        fake.put(ROLLOUT, serde_json::to_value(ro).unwrap_or_default());
        Self { fake, clock: Arc::new(std::sync::atomic::AtomicI64::new(NOW)), bad, total }
    }

    /// A rollout under way at `step`: stable on v1, the canary on v2, the route at the step's
    /// weight, every object owned by the Rollout.
    fn mid_rollout(step: i32, started_secs_ago: i64, bad: f64, total: f64) -> (Self, String, String) {
        Self::with_objects_of(mid_rollout(step, started_secs_ago), bad, total)
    }

    /// `ro` (stable on revision `s`, the canary on `c`) with every object it owns.
    fn with_objects_of(
        (ro, s, c): (Rollout, String, String),
        bad: f64,
        total: f64,
    ) -> (Self, String, String) {
        let h = Self::new(&ro, bad, total);
        h.fake.put(DEPLOY_STABLE, deployment_json(&ro, Role::Stable, &s, "v1", true));
        h.fake.put(DEPLOY_CANARY, deployment_json(&ro, Role::Canary, &c, "v2", true));
        for role in [Role::Stable, Role::Canary] {
            let path = if role == Role::Stable { SVC_STABLE } else { SVC_CANARY };
            h.fake.put(path, serde_json::to_value(workload::service(&ro, Some(role))).unwrap_or_default());
        }
        let w = i64::from(ro.status.as_ref().map_or(0, |s| s.canary_weight));
        h.fake.put(ROUTE, route(100 - w, w));
        (h, s, c)
    }

    /// A new controller: nothing remembered from an earlier one.
    fn controller(&self) -> Arc<Context> {
        self.controller_of(crate::shards::Shards::single())
    }

    /// A new controller holding `shards`.
    fn controller_of(&self, shards: crate::shards::Shards) -> Arc<Context> {
        let clock = self.clock.clone();
        let client = self.fake.client();
        let prom: Arc<dyn MetricProvider> = Arc::new(FakePrometheus { bad: self.bad, total: self.total });
        let providers: ProviderFactory = Arc::new(move |_: &Access| Ok(prom.clone()));
        let reporter = Reporter { controller: "rollgate".into(), instance: None };
        let now = move || {
            Timestamp::from_second(clock.load(std::sync::atomic::Ordering::SeqCst))
                .unwrap_or(Timestamp::UNIX_EPOCH)
        };
        Arc::new(
            Context::new(client, reporter, Arc::new(Metrics::default()), providers)
                .with_clock(now)
                .with_shards(shards),
        )
    }

    fn rollout(&self) -> Rollout {
        serde_json::from_value(self.fake.get(ROLLOUT).unwrap_or_default()).expect("the stored Rollout")
    }

    /// The stored Rollout as the API server shows it once deleted (finalizers still on it).
    fn mark_deleted(&self) {
        let mut ro = serde_json::to_value(self.rollout()).unwrap_or_default();
        ro["metadata"]["deletionTimestamp"] = json!("2027-01-15T08:00:00Z");
        self.fake.put(ROLLOUT, ro);
    }

    fn status(&self) -> RolloutStatus {
        self.rollout().status.unwrap_or_default()
    }

    /// One reconcile of the stored Rollout, then `secs` pass.
    async fn pass(&self, ctx: &Arc<Context>, secs: i64) -> Result<Action> {
        let result = reconcile(Arc::new(self.rollout()), ctx.clone()).await;
        self.clock.fetch_add(secs, std::sync::atomic::Ordering::SeqCst);
        result
    }

    /// Writes that reached the fake since `from` (an index into `seen`).
    fn writes_since(&self, from: usize) -> Vec<super::fake_api::Seen> {
        self.fake.seen().into_iter().skip(from).filter(|s| s.is_write()).collect()
    }

    /// The canary weights of every route write that landed, in order.
    fn route_weights(&self) -> Vec<i64> {
        self.fake
            .seen()
            .iter()
            .filter(|s| s.method == Method::PATCH && s.path == ROUTE)
            .filter_map(|s| s.body["spec"]["rules"][0]["backendRefs"][1]["weight"].as_i64())
            .collect()
    }
}

#[tokio::test]
async fn a_rollout_in_a_shard_held_elsewhere_is_left_alone_until_its_shard_is_acquired() {
    use crate::shards::{Shards, shard_of};
    let h = Harness::new(&rollout(RolloutSpec::test().with_replica_ratio(), None), 0.0, 0.0);
    let mine = shard_of("shop", "web", 4);
    let (publish, held) = tokio::sync::watch::channel((0..4).filter(|s| *s != mine).collect());
    let shards = Shards::new(4, held);
    let ctl = h.controller_of(shards.clone());
    let action = h.pass(&ctl, 1).await.expect("pass");
    assert_eq!(action, Action::await_change());
    assert!(h.fake.seen().is_empty(), "no request for another replica's Rollout: {:?}", h.fake.seen());
    // The cache holds it as another shard's: without its template and status.
    let mut cached = h.rollout();
    crate::watches::trim(&mut cached, Some(&shards));
    assert!(crate::watches::is_trimmed(&cached));
    publish.send_replace(std::collections::BTreeSet::from([mine]));
    reconcile(Arc::new(cached), ctl.clone()).await.expect("pass");
    let stable = h.fake.get(DEPLOY_STABLE).expect("reconciled once its shard is held");
    let image = h.rollout().spec.template.spec.and_then(|s| s.containers[0].image.clone());
    assert!(image.is_some());
    assert_eq!(
        stable["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        image.as_deref(),
        "from the Rollout read again, not the trimmed copy"
    );
}

#[tokio::test]
async fn a_promoted_rollout_with_nothing_pending_is_not_polled() {
    let h = Harness::new(&rollout(RolloutSpec::test().with_replica_ratio(), None), 0.0, 0.0);
    let ctl = h.controller();
    h.pass(&ctl, 1).await.expect("first deploy");
    let action = h.pass(&ctl, 1).await.expect("steady");
    assert_eq!(h.status().phase, Some(Phase::Promoted));
    assert_eq!(action, Action::await_change(), "woken by its watches only");
}
