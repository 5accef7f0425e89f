//! The controller's own metrics (`/metrics`) and logging setup (`telemetry`).

mod outcomes;
mod telemetry;

pub use outcomes::{Outcomes, ResultLabels};
pub use telemetry::{CountRequests, TelemetryError, TelemetryGuard, init_telemetry};

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use rollgate_crds::RolloutStatus;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RolloutLabels {
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub namespace: String,
    pub name: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CheckLabels {
    pub namespace: String,
    pub name: String,
    pub check: String,
}

/// `rollgate_rollout_info`: which revisions a Rollout runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub namespace: String,
    pub name: String,
    pub stable_revision: String,
    pub canary_revision: String,
}

/// What the controller exported for one Rollout, to remove it when the Rollout goes.
#[derive(Default)]
struct Known {
    checks: Vec<String>,
    info: Option<InfoLabels>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeRequestLabels {
    /// The HTTP method (GET also for lists and watches, PATCH for applies).
    pub method: String,
    /// The HTTP status, or `error` when no response came.
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// delivered, failed (after every retry) or dropped (queue full).
    pub result: String,
}

pub struct Metrics {
    registry: Registry,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    pub reconciles: Counter,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Histogram,
    pub phase: Family<PhaseLabels, Gauge>,
    pub weight: Family<RolloutLabels, Gauge>,
    pub check_value: Family<CheckLabels, Gauge<f64, AtomicU64>>,
    pub check_passing: Family<CheckLabels, Gauge>,
    pub leader: Gauge,
    pub kube_requests: Family<KubeRequestLabels, Counter>,
    pub reconciles_in_flight: Gauge,
    pub dry_run_rollbacks: Counter,
    pub outcomes: Outcomes,
    pub info: Family<InfoLabels, Gauge>,
    pub check_progress: Family<CheckLabels, Gauge<f64, AtomicU64>>,
    /// The Rollouts with series, and what they export (to remove it when one goes).
    known: std::sync::Mutex<HashMap<RolloutLabels, Known>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rollgate");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconcile passes by error kind",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconcile passes",
            reconcile_duration.clone(),
        );
        let phase = Family::<PhaseLabels, Gauge>::default();
        registry.register("rollout_phase", "1 for the phase each Rollout is in", phase.clone());
        let weight = Family::<RolloutLabels, Gauge>::default();
        registry.register("canary_weight_percent", "Canary weight of each Rollout", weight.clone());
        let check_value = Family::<CheckLabels, Gauge<f64, AtomicU64>>::default();
        registry.register("check_bad_ratio", "Observed share of bad events per check", check_value.clone());
        let check_passing = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "check_result",
            "Last result per check: 1 pass, 0 pending or no data, -1 fail",
            check_passing.clone(),
        );
        let webhook_deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Webhook notifications by result: delivered, failed after every retry, dropped (queue full)",
            webhook_deliveries.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica holds the leader lease", leader.clone());
        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        registry.register(
            "kube_requests",
            "Requests to the Kubernetes API server by method and status code",
            kube_requests.clone(),
        );
        let reconciles_in_flight = Gauge::default();
        registry.register(
            "reconciles_in_flight",
            "Reconcile passes running now; at --concurrency, further Rollouts wait in the queue",
            reconciles_in_flight.clone(),
        );
        let dry_run_rollbacks = Counter::default();
        registry.register(
            "dry_run_rollbacks",
            "Steps the gate would have rolled back under policy.dryRun (nothing was rolled back)",
            dry_run_rollbacks.clone(),
        );
        let outcomes = Outcomes::register(&mut registry);
        let info = Family::<InfoLabels, Gauge>::default();
        registry.register(
            "rollout_info",
            "1 per Rollout, labelled with its stable and canary revisions",
            info.clone(),
        );
        let check_progress = Family::<CheckLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "check_evidence_progress",
            "Per check, the evidence gathered over what a decision needs (1 once decided)",
            check_progress.clone(),
        );
        Self {
            registry,
            webhook_deliveries,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            phase,
            weight,
            check_value,
            check_passing,
            leader,
            kube_requests,
            reconciles_in_flight,
            dry_run_rollbacks,
            outcomes,
            info,
            check_progress,
            known: Default::default(),
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }

    /// Publishes a Rollout's status.
    pub fn observe(&self, namespace: &str, name: &str, status: &RolloutStatus) {
        let labels = RolloutLabels { namespace: namespace.into(), name: name.into() };
        // Held while the series are written, so that a sweep forgetting this Rollout at the
        // same time either runs before (and the series are known, to be swept next time) or
        // after (and removes them): never a series written after its Rollout was forgotten.
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let exported = known.entry(labels.clone()).or_default();
        for c in &status.checks {
            if !exported.checks.contains(&c.name) {
                exported.checks.push(c.name.clone());
            }
        }
        let info = InfoLabels {
            namespace: namespace.into(),
            name: name.into(),
            stable_revision: status.stable_revision.clone().unwrap_or_default(),
            canary_revision: status.canary_revision.clone().unwrap_or_default(),
        };
        if exported.info.as_ref() != Some(&info) {
            if let Some(old) = exported.info.replace(info.clone()) {
                self.info.remove(&old);
            }
            self.info.get_or_create(&info).set(1);
        }
        self.weight.get_or_create(&labels).set(i64::from(status.canary_weight));
        for phase in PHASES {
            let l = PhaseLabels { namespace: namespace.into(), name: name.into(), phase: phase.into() };
            let current = status.phase.map(|p| format!("{p:?}")).is_some_and(|p| p == phase);
            self.phase.get_or_create(&l).set(i64::from(current));
        }
        for c in &status.checks {
            let l = CheckLabels { namespace: namespace.into(), name: name.into(), check: c.name.clone() };
            if let Some(v) = c.value {
                self.check_value.get_or_create(&l).set(v);
            }
            let r = match c.result {
                rollgate_crds::rollout::CheckResult::Pass => 1,
                rollgate_crds::rollout::CheckResult::Fail => -1,
                _ => 0,
            };
            self.check_passing.get_or_create(&l).set(r);
            let progress = match c.needed {
                Some(needed) if needed > 0 => (c.total as f64 / needed as f64).min(1.0),
                _ => 1.0,
            };
            self.check_progress.get_or_create(&l).set(progress);
        }
    }

    /// Forgets the series of every Rollout for which `exists` is false; returns how many
    /// Rollouts had series and how many of them were forgotten.
    pub fn retain(&self, exists: impl Fn(&str, &str) -> bool) -> (usize, usize) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<RolloutLabels> =
            known.keys().filter(|l| !exists(&l.namespace, &l.name)).cloned().collect();
        let had = known.len();
        for l in &gone {
            self.forget_locked(&mut known, l);
        }
        (had, gone.len())
    }

    /// Forgets a Rollout's series.
    pub fn forget(&self, namespace: &str, name: &str) {
        let mut known = self.known.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.forget_locked(&mut known, &RolloutLabels { namespace: namespace.into(), name: name.into() });
    }

    fn forget_locked(&self, known: &mut HashMap<RolloutLabels, Known>, labels: &RolloutLabels) {
        let RolloutLabels { namespace, name } = labels;
        let exported = known.remove(labels).unwrap_or_default();
        for check in exported.checks {
            let l = CheckLabels { namespace: namespace.clone(), name: name.clone(), check };
            self.check_value.remove(&l);
            self.check_passing.remove(&l);
            self.check_progress.remove(&l);
        }
        if let Some(info) = exported.info {
            self.info.remove(&info);
        }
        self.weight.remove(labels);
        for phase in PHASES {
            self.phase.remove(&PhaseLabels {
                namespace: namespace.clone(),
                name: name.clone(),
                phase: phase.into(),
            });
        }
    }
}

/// The values of the `phase` label: one series each per Rollout.
const PHASES: [&str; 5] = ["Progressing", "Paused", "Promoted", "RolledBack", "Failed"];

pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;
    use rollgate_crds::rollout::{CheckResult, CheckStatus, Phase};

    fn status() -> RolloutStatus {
        RolloutStatus {
            phase: Some(Phase::Progressing),
            canary_weight: 5,
            checks: vec![CheckStatus {
                name: "error-rate".into(),
                result: CheckResult::Pass,
                value: Some(0.0),
                threshold: 0.01,
                bad: 0,
                total: 10,
                needed: None,
                estimated_seconds: None,
                statistic: None,
                reason: String::new(),
                source: None,
                unit: None,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_series_of_a_deleted_rollout_are_dropped() {
        let m = Metrics::default();
        m.observe("shop", "web", &status());
        m.observe("shop", "gone", &status());
        let before = m.encode().expect("encode");
        assert!(before.contains("name=\"gone\""), "{before}");
        m.retain(|_, name| name == "web");
        let after = m.encode().expect("encode");
        assert!(!after.contains("name=\"gone\""), "{after}");
        assert!(
            after.contains("rollgate_check_result{namespace=\"shop\",name=\"web\",check=\"error-rate\"} 1"),
            "{after}"
        );
    }

    #[test]
    fn kube_requests_are_counted_by_method_and_code() {
        use tower::{Layer, Service, ServiceExt};
        let m = Metrics::default();
        let inner = tower::service_fn(|_: http::Request<()>| async {
            Ok::<_, std::convert::Infallible>(
                http::Response::builder().status(404).body(()).unwrap_or_default(),
            )
        });
        let mut svc = CountRequests::new(m.kube_requests.clone()).layer(inner);
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(async {
            let req = http::Request::builder().method("PATCH").body(()).unwrap_or_default();
            let _ = svc.ready().await.expect("ready").call(req).await;
        });
        let text = m.encode().expect("encode");
        assert!(text.contains("rollgate_kube_requests_total{method=\"PATCH\",code=\"404\"} 1"), "{text}");
    }

    #[test]
    fn every_dashboard_query_parses_and_reads_only_metrics_the_controller_exports() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../../manifests/grafana/rollgate.json")).expect("JSON");
        let m = Metrics::default();
        // Families without a series are not in the exposition: give each Rollout one.
        m.observe("shop", "web", &status());
        m.outcomes.record(None, Some(std::time::Duration::from_secs(30)));
        m.outcomes.query(std::time::Duration::from_millis(5), true);
        let exported = m.encode().expect("encode");
        let mut queries = 0;
        for panel in dashboard["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr").replace("$__range", "1h");
                promql_parser::parser::parse(&expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
                for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                    if !word.starts_with("rollgate_") {
                        continue;
                    }
                    let base = ["_bucket", "_total", "_count", "_sum"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        exported.contains(&format!("# TYPE {base} ")),
                        "{expr}: the controller exports no {base}"
                    );
                }
                queries += 1;
            }
        }
        assert!(queries >= 10, "{queries}");
    }
}
