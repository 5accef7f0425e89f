//! What every reconcile pass shares: the client, the event recorder, the metrics, the metric
//! providers (one per Prometheus address), and what this controller remembers of each Rollout
//! (its failures for backoff, the resourceVersion it last wrote).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::runtime::events::Reporter;

use super::events::EventWriter;

use crate::metrics_provider::MetricProvider;
use crate::metrics_provider::access::Access;
use crate::metrics_provider::prometheus::ClientError;
use crate::notify::Notifier;
use crate::observability::SharedMetrics;
use crate::shards::Shards;

/// Makes a metric provider for a Prometheus and the access to it.
pub type ProviderFactory = Arc<dyn Fn(&Access) -> Result<Arc<dyn MetricProvider>, ClientError> + Send + Sync>;

/// Most providers kept; rotated credentials add one each, so the cache is emptied past this.
const PROVIDERS_MAX: usize = 256;

/// A Secret's or ConfigMap's key: (kind, namespace, name, key).
pub(super) type KeyId = (String, String, String, String);

/// What time it is (a parameter so tests can move it).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

pub struct Context {
    pub client: Client,
    pub events: EventWriter,
    pub metrics: SharedMetrics,
    providers: ProviderFactory,
    provider_cache: Mutex<HashMap<Access, Arc<dyn MetricProvider>>>,
    /// Keys of Secrets and ConfigMaps read for Prometheus access, and when.
    key_cache: Mutex<HashMap<KeyId, (Instant, Vec<u8>)>>,
    pub(super) failures: Mutex<HashMap<(String, String), u32>>,
    /// The resourceVersion of each Rollout as this controller last wrote or read it fresh: a
    /// cached copy with another version may predate our own status write (see `fresh`).
    written: Mutex<HashMap<(String, String), String>>,
    pub(super) notifier: Option<Notifier>,
    pub(super) clock: Clock,
    /// The shards this replica reconciles (all, unsharded).
    pub(super) shards: Shards,
}

impl Context {
    pub fn new(
        client: Client,
        reporter: Reporter,
        metrics: SharedMetrics,
        providers: ProviderFactory,
    ) -> Self {
        Self {
            events: EventWriter::new(client.clone(), reporter),
            client,
            metrics,
            providers,
            provider_cache: Mutex::default(),
            key_cache: Mutex::default(),
            failures: Mutex::default(),
            written: Mutex::default(),
            notifier: None,
            clock: Arc::new(Timestamp::now),
            shards: Shards::single(),
        }
    }

    /// The same context, sending webhook notifications through `notifier`.
    pub fn with_notifier(mut self, notifier: Notifier) -> Self {
        self.notifier = Some(notifier);
        self
    }

    pub fn with_shards(mut self, shards: Shards) -> Self {
        self.shards = shards;
        self
    }

    /// The same context with another clock (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> Timestamp + Send + Sync + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub(super) fn provider(&self, access: &Access) -> Result<Arc<dyn MetricProvider>, ClientError> {
        // A panic while the lock was held cannot leave a half-made entry: the cache stays usable.
        let mut cache = self.provider_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = cache.get(access) {
            return Ok(p.clone());
        }
        let p = (self.providers)(access)?;
        if cache.len() >= PROVIDERS_MAX {
            cache.clear();
        }
        cache.insert(access.clone(), p.clone());
        Ok(p)
    }

    /// A key read less than `fresh_for` ago.
    pub(super) fn cached_key(&self, id: &KeyId, fresh_for: Duration) -> Option<Vec<u8>> {
        let cache = self.key_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.get(id).filter(|(at, _)| at.elapsed() < fresh_for).map(|(_, v)| v.clone())
    }

    pub(super) fn remember_key(&self, id: KeyId, value: Vec<u8>, at: Instant) {
        let mut cache = self.key_cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        cache.insert(id, (at, value));
    }

    pub(super) fn remember_version(&self, ns: &str, name: &str, version: Option<String>) {
        if let (Some(v), Ok(mut w)) = (version, self.written.lock()) {
            w.insert((ns.to_string(), name.to_string()), v);
        }
    }

    pub(super) fn is_current(&self, ns: &str, name: &str, version: Option<&str>) -> bool {
        match self.written.lock() {
            Ok(w) => match w.get(&(ns.to_string(), name.to_string())) {
                Some(known) => version == Some(known.as_str()),
                None => true,
            },
            Err(_) => false,
        }
    }

    /// Drops what is remembered of Rollouts that no longer exist (a deleted Rollout without a
    /// finalizer is never reconciled again, so nothing else would); returns how many Rollouts
    /// had series and how many of them were forgotten.
    pub fn retain(&self, exists: impl Fn(&str, &str) -> bool) -> (usize, usize) {
        let mut gone = Vec::new();
        if let Ok(w) = self.written.lock() {
            gone.extend(w.keys().filter(|(ns, n)| !exists(ns, n)).cloned());
        }
        if let Ok(f) = self.failures.lock() {
            gone.extend(f.keys().filter(|(ns, n)| !exists(ns, n)).cloned());
        }
        for (ns, name) in gone {
            self.forget(&ns, &name);
        }
        self.metrics.retain(exists)
    }

    pub(super) fn forget(&self, ns: &str, name: &str) {
        let key = (ns.to_string(), name.to_string());
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&key);
        }
        if let Ok(mut w) = self.written.lock() {
            w.remove(&key);
        }
    }
}
