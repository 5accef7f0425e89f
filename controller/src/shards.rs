//! Sharding (`--shards N`): Rollouts are split by a stable hash of `namespace/name` into N
//! shards, each held by one replica through its own Lease (`<manager>-shard-<i>`, through
//! kube-lease-manager). Every replica also holds a member Lease (`<manager>-member-<identity>`)
//! so the replicas can count each other; each one holds at most ceil(N / live replicas) shards,
//! releases what it holds beyond that, and contends only for shards no live replica holds. No
//! consensus of our own: the Leases are Kubernetes' compare-and-swap.
//!
//! A replica reconciles only the Rollouts of the shards it holds (`Shards::holds`); when it
//! acquires a shard, its Rollouts are reconciled at once (`Shards::changes`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures::Stream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Seconds a Lease is valid without renewal, and the margin before expiry it is renewed at.
const LEASE_SECONDS: u64 = 15;
const GRACE_SECONDS: u64 = 5;
/// How often a replica counts its peers and rebalances.
const TICK: Duration = Duration::from_secs(3);

/// The shard of a Rollout: FNV-1a of `namespace/name`, modulo `count`.
pub fn shard_of(namespace: &str, name: &str, count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in namespace.bytes().chain(std::iter::once(b'/')).chain(name.bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(count.max(1))) as u32
}

/// The most shards one of `live` replicas holds.
pub fn quota(count: u32, live: usize) -> usize {
    (count as usize).div_ceil(live.max(1))
}

/// Which shards to contend for: of the `free` ones, up to `room`, in an order peculiar to
/// `identity` (rendezvous hashing), so replicas starting together go for different shards.
pub fn choose(free: &BTreeSet<u32>, room: usize, identity: &str) -> Vec<u32> {
    let mut ranked: Vec<(u32, u32)> =
        free.iter().map(|&i| (shard_of(identity, &i.to_string(), u32::MAX), i)).collect();
    ranked.sort_unstable();
    ranked.into_iter().take(room).map(|(_, i)| i).collect()
}

/// The shards this replica holds, as the reconciler sees them.
#[derive(Clone)]
pub struct Shards {
    count: u32,
    held: watch::Receiver<BTreeSet<u32>>,
}

// === impl Shards ===

impl Shards {
    /// One shard, always held: no sharding.
    pub fn single() -> Self {
        let (_, held) = watch::channel(BTreeSet::from([0]));
        Self { count: 1, held }
    }

    /// `count` shards, of which this replica holds those `held` says.
    pub fn new(count: u32, held: watch::Receiver<BTreeSet<u32>>) -> Self {
        Self { count, held }
    }

    pub fn holds(&self, namespace: &str, name: &str) -> bool {
        self.count <= 1 || self.held.borrow().contains(&shard_of(namespace, name, self.count))
    }

    /// Emits whenever the held shards change (the reconciler then looks at every Rollout).
    pub fn changes(&self) -> impl Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.held.clone(), |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }
}

/// Where the Leases live and whose they are.
pub struct Coordinator {
    pub client: Client,
    pub namespace: String,
    /// The installation's field manager name: Leases are `<manager>-shard-<i>` and
    /// `<manager>-member-<identity>`.
    pub manager: String,
    pub identity: String,
    pub count: u32,
}

/// A Lease this replica holds or contends for: dropping `held` makes its task release it.
struct Claim {
    held: watch::Receiver<bool>,
    task: JoinHandle<Result<LeaseManager, LeaseManagerError>>,
}

// === impl Coordinator ===

impl Coordinator {
    fn shard_lease(&self, i: u32) -> String {
        format!("{}-shard-{i}", self.manager)
    }

    fn member_prefix(&self) -> String {
        format!("{}-member-", self.manager)
    }

    async fn claim(&self, lease: String) -> Result<Claim, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(self.client.clone(), lease)
            .with_namespace(self.namespace.clone())
            .with_identity(self.identity.clone())
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .build()
            .await?;
        let (held, task) = manager.watch().await;
        Ok(Claim { held, task })
    }

    /// Holds this replica's share of the shards until `stop` resolves, publishing them to
    /// `publish` (read through `Shards::new`); then releases every Lease it holds.
    pub async fn run(
        self,
        publish: watch::Sender<BTreeSet<u32>>,
        stop: impl Future<Output = ()>,
    ) -> Result<(), LeaseManagerError> {
        let member = self.claim(format!("{}{}", self.member_prefix(), self.identity)).await?;
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), &self.namespace);
        let mut claims: BTreeMap<u32, Claim> = BTreeMap::new();
        let mut tick = tokio::time::interval(TICK);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => {}
            }
            let listed = match leases.list(&ListParams::default()).await {
                Ok(l) => l.items,
                Err(e) => {
                    tracing::warn!(error = %e, "listing Leases to rebalance shards");
                    continue;
                }
            };
            let now = Timestamp::now();
            let live = listed
                .iter()
                .filter(|l| l.name_any().starts_with(&self.member_prefix()) && fresh(l, now).is_some())
                .count();
            let quota = quota(self.count, live);
            let mut held: BTreeSet<u32> =
                claims.iter().filter(|(_, c)| *c.held.borrow()).map(|(i, _)| *i).collect();
            // Beyond the quota (a replica joined): give back the last ones.
            while held.len() > quota {
                let Some(extra) = held.pop_last() else { break };
                claims.remove(&extra);
                tracing::info!(shard = extra, quota, live, "shard released to rebalance");
            }
            let holder = |i: u32| {
                listed.iter().find(|l| l.name_any() == self.shard_lease(i)).and_then(|l| fresh(l, now))
            };
            // A contention another replica won: stop contending.
            claims.retain(|i, c| *c.held.borrow() || holder(*i).is_none_or(|h| h == self.identity));
            let free: BTreeSet<u32> =
                (0..self.count).filter(|i| !claims.contains_key(i) && holder(*i).is_none()).collect();
            for i in choose(&free, quota.saturating_sub(claims.len()), &self.identity) {
                match self.claim(self.shard_lease(i)).await {
                    Ok(c) => {
                        claims.insert(i, c);
                    }
                    Err(e) => tracing::warn!(error = %e, shard = i, "contending for a shard"),
                }
            }
            let held: BTreeSet<u32> =
                claims.iter().filter(|(_, c)| *c.held.borrow()).map(|(i, _)| *i).collect();
            publish.send_if_modified(|current| {
                if *current == held {
                    return false;
                }
                tracing::info!(held = ?held, quota, live, "shards held");
                *current = held.clone();
                true
            });
        }
        publish.send_replace(BTreeSet::new());
        for claim in claims.into_values().chain(std::iter::once(member)) {
            drop(claim.held);
            match claim.task.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "releasing a Lease"),
                Err(e) => tracing::warn!(error = %e, "a Lease task"),
            }
        }
        Ok(())
    }
}

/// The holder of a Lease that has not expired.
fn fresh(lease: &Lease, now: Timestamp) -> Option<String> {
    let spec = lease.spec.as_ref()?;
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty())?;
    let renewed = spec.renew_time.as_ref().or(spec.acquire_time.as_ref())?.0;
    let valid = i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS as i32));
    (now.as_second() < renewed.as_second() + valid).then_some(holder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rollout_always_falls_in_the_same_shard_and_shards_are_even() {
        assert_eq!(shard_of("shop", "web", 8), shard_of("shop", "web", 8));
        assert_ne!(shard_of("shop", "web", 1 << 30), shard_of("web", "shop", 1 << 30), "order matters");
        let mut per_shard = [0u32; 4];
        for i in 0..10_000 {
            per_shard[shard_of("bench", &format!("r{i:05}"), 4) as usize] += 1;
        }
        assert!(per_shard.iter().all(|&n| (2_300..2_700).contains(&n)), "{per_shard:?}");
    }

    #[test]
    fn each_replica_holds_at_most_its_share() {
        assert_eq!(quota(8, 3), 3);
        assert_eq!(quota(8, 1), 8);
        assert_eq!(quota(8, 0), 8, "itself, before its member Lease is listed");
        assert_eq!(quota(2, 3), 1);
    }

    #[test]
    fn replicas_prefer_different_shards() {
        let free: BTreeSet<u32> = (0..12).collect();
        let a = choose(&free, 4, "rollgate-0");
        let b = choose(&free, 4, "rollgate-1");
        assert_eq!(a.len(), 4);
        assert_ne!(a, b);
        assert_eq!(choose(&free, 0, "x"), Vec::<u32>::new());
        assert_eq!(choose(&BTreeSet::from([3]), 4, "x"), [3]);
    }

    #[test]
    fn an_expired_lease_has_no_holder() {
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "rollgate-shard-0"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "renewTime": "2027-01-15T08:00:00.000000Z"},
        }))
        .expect("a Lease");
        let at = |s: i64| Timestamp::from_second(s).unwrap_or(Timestamp::UNIX_EPOCH);
        let renewed = 1_800_000_000;
        assert_eq!(fresh(&lease, at(renewed + 14)).as_deref(), Some("a"));
        assert_eq!(fresh(&lease, at(renewed + 15)), None);
    }
}
