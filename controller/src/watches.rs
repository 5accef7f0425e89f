//! The kube-runtime Controllers of one installation: one per watched namespace (one for all when
//! unscoped), each over the installation's Rollouts and what they own, and the sweep of what is
//! remembered of deleted Rollouts.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::DynamicObject;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use rollgate_crds::labels::{ADOPTED_BY, ROLLOUT};
use rollgate_crds::{ReleaseGate, Rollout};

use crate::reconcile::{Context, error_policy, reconcile};
use crate::router::gateway_api::http_route_resource;
use crate::scope::Scope;
use crate::shards::Shards;

/// Runs the Controllers until a shutdown signal.
pub async fn run(
    client: Client,
    ctx: Arc<Context>,
    scope: &Scope,
    watch_routes: bool,
    concurrency: u16,
    shards: Option<&Shards>,
) {
    if !watch_routes {
        tracing::info!("the HTTPRoute API is not served; gatewayAPI Rollouts will report it");
    }
    let mut stores = Vec::new();
    let mut loops = Vec::new();
    for namespace in scope.watched() {
        let (listed, ready) = tokio::sync::watch::channel(false);
        let mut c = controller(&client, namespace, scope, watch_routes, concurrency, shards.cloned(), listed);
        if let Some(shards) = shards {
            // A shard just acquired: its Rollouts are looked at now, not at their next event.
            c = c.reconcile_all_on(shards.changes());
        }
        stores.push((c.store(), ready));
        loops.push(c.shutdown_on_signal().run(reconcile, error_policy, ctx.clone()).for_each(
            |result| async move {
                match result {
                    Ok((obj, _)) => tracing::debug!(rollout = %obj.name, "reconciled"),
                    Err(e) => tracing::debug!(error = %e, "reconcile loop"),
                }
            },
        ));
    }
    let sweeper = tokio::spawn(sweep(stores, ctx));
    futures::future::join_all(loops).await;
    sweeper.abort();
}

/// `K` in `namespace`, or in every namespace.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The Controller of the installation's Rollouts in `namespace` (all when `None`); `listed`
/// turns true once its cache holds the first complete list.
fn controller(
    client: &Client,
    namespace: Option<&str>,
    scope: &Scope,
    watch_routes: bool,
    concurrency: u16,
    shards: Option<Shards>,
    listed: tokio::sync::watch::Sender<bool>,
) -> Controller<Rollout> {
    let owned = watcher::Config::default().labels(ROLLOUT);
    // A short debounce folds the burst of events one write causes (status, Deployment, route)
    // into one pass.
    let config = kube::runtime::controller::Config::default()
        .concurrency(concurrency)
        .debounce(Duration::from_millis(200));
    // Objects of Rollouts outside the scope map to Rollouts the store does not hold: nothing runs.
    let rollouts = api::<Rollout>(client, namespace);
    let (reader, writer) = reflector::store();
    let rollouts = reflector(
        writer,
        watcher(rollouts, watcher::Config::default().labels(&scope.rollout_selector()))
            .modify(move |r| trim(r, shards.as_ref())),
    )
    .inspect(move |event| {
        if matches!(event, Ok(watcher::Event::InitDone)) {
            listed.send_replace(true);
        }
    })
    .applied_objects();
    let mut c = Controller::for_stream(rollouts, reader)
        .with_config(config)
        .owns(api::<Deployment>(client, namespace), owned.clone())
        .owns(api::<Service>(client, namespace), owned);
    // A Rollout's pods (labelled by the Deployments rollgate writes): a canary that starts
    // crash-looping changes its pods, not its Deployment, and must be seen at once.
    c = c.watches(api::<Pod>(client, namespace), watcher::Config::default().labels(ROLLOUT), |pod| {
        let rollout = pod.labels().get(ROLLOUT).cloned();
        rollout.map(|name| ObjectRef::<Rollout>::new(&name).within(&pod.namespace().unwrap_or_default()))
    });
    // A Deployment a Rollout adopted: a change to its template starts a rollout.
    c = c.watches(api::<Deployment>(client, namespace), watcher::Config::default().labels(ADOPTED_BY), |d| {
        let rollout = d.labels().get(ADOPTED_BY).cloned();
        rollout.map(|name| ObjectRef::<Rollout>::new(&name).within(&d.namespace().unwrap_or_default()))
    });
    let store = c.store();
    c = c.watches(api::<ReleaseGate>(client, namespace), watcher::Config::default(), move |gate| {
        let (ns, name) = (gate.namespace(), gate.name_any());
        store
            .state()
            .into_iter()
            .filter(|r| r.namespace() == ns && r.spec.gate_ref.as_ref().is_some_and(|g| g.name == name))
            .map(|r| ObjectRef::from_obj(&*r))
            .collect::<Vec<_>>()
    });
    if watch_routes {
        let store = c.store();
        let ar = http_route_resource();
        let routes: Api<DynamicObject> = match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        c = c.watches_with(routes, ar, watcher::Config::default(), move |route| {
            let (ns, name) = (route.namespace(), route.name_any());
            store
                .state()
                .into_iter()
                .filter(|r| {
                    r.namespace() == ns
                        && r.spec.traffic.gateway_api.as_ref().is_some_and(|g| g.http_route == name)
                })
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        });
    }
    c
}

/// Drops what the cache would hold of a Rollout and this replica does not read: always the
/// managedFields (a few kilobytes per writer, several writers per Rollout) and kubectl's copy of
/// the last applied object; for a Rollout of another replica's shard, also its template and
/// status (only its name, gate and route are read here: the watches map by them). With
/// thousands of Rollouts these are most of a replica's memory. A Rollout trimmed that way is
/// marked (`TRIMMED`, in memory only) and read again from the API server if this replica
/// acquires its shard before the watch brings it again.
pub fn trim(rollout: &mut Rollout, shards: Option<&Shards>) {
    rollout.metadata.managed_fields = None;
    let name = rollout.name_any();
    let namespace = rollout.metadata.namespace.as_deref().unwrap_or_default();
    let theirs = shards.is_some_and(|s| !s.holds(namespace, &name));
    let annotations = rollout.metadata.annotations.get_or_insert_with(Default::default);
    annotations.remove(LAST_APPLIED);
    if theirs {
        annotations.insert(TRIMMED.into(), "true".into());
        rollout.spec.template = Default::default();
        rollout.status = None;
    }
}

/// Whether the cached `rollout` is another shard's trimmed copy.
pub fn is_trimmed(rollout: &Rollout) -> bool {
    rollout.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(TRIMMED))
}

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Marks a cached Rollout whose template and status were dropped; never written to the API.
const TRIMMED: &str = "rollgate.dev/cache-trimmed";

/// Deleted Rollouts are not reconciled again: forgets what is remembered of them, every minute,
/// once every cache holds its first list.
///
/// Readiness comes from the watch, not `Store::wait_until_ready`: the Controller waits on that
/// too, and its one-shot channel wakes only the last task that polled it, so a second waiter
/// may never wake.
async fn sweep(stores: Vec<(Store<Rollout>, tokio::sync::watch::Receiver<bool>)>, ctx: Arc<Context>) {
    for (_, listed) in &stores {
        if listed.clone().wait_for(|l| *l).await.is_err() {
            return;
        }
    }
    let mut every = tokio::time::interval(Duration::from_secs(60));
    loop {
        every.tick().await;
        let live: HashSet<(String, String)> = stores
            .iter()
            .flat_map(|(store, _)| store.state())
            .map(|r| (r.namespace().unwrap_or_default(), r.name_any()))
            .collect();
        let (exported, forgotten) = ctx.retain(|ns, name| live.contains(&(ns.to_string(), name.to_string())));
        if forgotten > 0 {
            tracing::info!(cached = live.len(), exported, forgotten, "forgot deleted Rollouts");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rollgate_crds::RolloutSpec;

    use super::*;
    use crate::fixtures::RolloutSpecExt;
    use crate::shards::shard_of;

    fn cached(name: &str) -> Rollout {
        let mut r = Rollout::new(name, RolloutSpec::test());
        r.metadata.namespace = Some("shop".into());
        r.metadata.managed_fields = Some(vec![Default::default()]);
        r.metadata.annotations = Some([(LAST_APPLIED.to_string(), "{}".to_string())].into());
        r.status = Some(Default::default());
        r
    }

    #[test]
    fn the_cache_keeps_all_of_a_held_rollout_but_its_write_history() {
        let mut r = cached("web");
        trim(&mut r, None);
        assert!(r.metadata.managed_fields.is_none());
        assert!(r.metadata.annotations.as_ref().is_some_and(|a| !a.contains_key(LAST_APPLIED)));
        assert!(!is_trimmed(&r) && r.status.is_some() && r.spec.template.spec.is_some());
    }

    #[test]
    fn another_shards_rollout_keeps_only_what_the_watches_map_by() {
        let mut mine = cached("web");
        let held = BTreeSet::from([shard_of("shop", "web", 8)]);
        let (_publish, rx) = tokio::sync::watch::channel(held);
        let shards = Shards::new(8, rx);
        trim(&mut mine, Some(&shards));
        assert!(!is_trimmed(&mine) && mine.status.is_some());
        let other = (0..100).map(|i| format!("r{i}")).find(|n| !shards.holds("shop", n)).expect("a name");
        let mut theirs = cached(&other);
        let gate_ref = theirs.spec.gate_ref.clone();
        trim(&mut theirs, Some(&shards));
        assert!(is_trimmed(&theirs));
        assert!(theirs.status.is_none() && theirs.spec.template.spec.is_none());
        assert_eq!(theirs.spec.gate_ref, gate_ref);
    }

    fn context(metrics: Arc<crate::observability::Metrics>) -> Arc<Context> {
        let (service, _handle) =
            tower_test::mock::pair::<http::Request<kube::client::Body>, http::Response<kube::client::Body>>();
        let client = Client::new(service, "shop");
        let providers: crate::reconcile::ProviderFactory =
            Arc::new(|access: &crate::metrics_provider::access::Access| {
                crate::metrics_provider::prometheus::Prometheus::new(access)
                    .map(|p| Arc::new(p) as Arc<dyn crate::metrics_provider::MetricProvider>)
            });
        let reporter = kube::runtime::events::Reporter { controller: "rollgate".into(), instance: None };
        Arc::new(Context::new(client, reporter, metrics, providers))
    }

    #[tokio::test(start_paused = true)]
    async fn a_deleted_rollout_is_forgotten_even_while_the_controller_waits_for_the_same_cache() {
        let metrics = Arc::new(crate::observability::Metrics::default());
        metrics.observe("shop", "gone", &Default::default());
        let (reader, mut writer) = reflector::store::<Rollout>();
        let (listed, ready) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(sweep(vec![(reader.clone(), ready)], context(metrics.clone())));
        tokio::task::yield_now().await;
        // The Controller waits on the cache's readiness too; that must not starve the sweep.
        let controller = tokio::spawn(async move { reader.wait_until_ready().await.is_ok() });
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        listed.send_replace(true);
        let named = |m: &crate::observability::Metrics| m.encode().is_ok_and(|t| t.contains("name=\"gone\""));
        assert!(named(&metrics));
        let forgotten = tokio::time::timeout(Duration::from_secs(300), async {
            while named(&metrics) {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        assert!(forgotten.await.is_ok(), "still exported five minutes after its cache was listed");
        assert!(controller.await.is_ok_and(|ready| ready));
        sweeper.abort();
    }
}
