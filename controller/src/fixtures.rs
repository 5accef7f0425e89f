//! Test fixtures as builders: `RolloutSpec::test().with_replicas(3)`.

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use rollgate_crds::gate::{GateSpec, PrometheusSource};
use rollgate_crds::rollout::{GatewayApiTraffic, ReplicaRatioTraffic, Step, TrafficSpec};
use rollgate_crds::{PositiveDuration, RolloutSpec, defaults};

pub trait RolloutSpecExt: Sized {
    /// Two replicas of `registry.local/refserver:v1` behind HTTPRoute `web`, default steps,
    /// an inline gate with the default checks and a 30 s minimum hold.
    fn test() -> Self;
    fn with_image(self, tag: &str) -> Self;
    fn with_replicas(self, n: i32) -> Self;
    fn with_replica_ratio(self) -> Self;
    fn with_steps(self, weights: &[i32]) -> Self;
    /// A shadow step of `percent` before the weighted steps.
    fn with_shadow(self, percent: i32, mirror: rollgate_crds::rollout::Mirror) -> Self;
}

impl RolloutSpecExt for RolloutSpec {
    fn test() -> Self {
        let mut gate = GateSpec {
            prometheus: PrometheusSource::at("http://127.0.0.1:9090"),
            metrics: Default::default(),
            checks: defaults::checks(true),
            policy: Default::default(),
        };
        gate.policy.min_healthy = PositiveDuration::from(std::time::Duration::from_secs(30));
        RolloutSpec {
            replicas: 2,
            template: template("v1"),
            workload_ref: None,
            service: Default::default(),
            traffic: TrafficSpec {
                gateway_api: Some(GatewayApiTraffic {
                    http_route: "web".into(),
                    service: None,
                    mirror: Default::default(),
                }),
                replica_ratio: None,
            },
            steps: defaults::steps(),
            gate: Some(gate),
            gate_ref: None,
            notifications: None,
            paused: false,
            progress_deadline: defaults::progress_deadline(),
            drain_delay: defaults::drain_delay(),
        }
    }

    fn with_image(mut self, tag: &str) -> Self {
        self.template = template(tag);
        self
    }

    fn with_replicas(mut self, n: i32) -> Self {
        self.replicas = n;
        self
    }

    fn with_replica_ratio(mut self) -> Self {
        self.traffic = TrafficSpec { gateway_api: None, replica_ratio: Some(ReplicaRatioTraffic {}) };
        self
    }

    fn with_shadow(mut self, percent: i32, mirror: rollgate_crds::rollout::Mirror) -> Self {
        self.steps.insert(0, Step { weight: 0, shadow: Some(percent), min_healthy: None });
        if let Some(gw) = &mut self.traffic.gateway_api {
            gw.mirror = mirror;
        }
        self
    }

    fn with_steps(mut self, weights: &[i32]) -> Self {
        self.steps = weights.iter().map(|w| Step { weight: *w, shadow: None, min_healthy: None }).collect();
        self
    }
}

fn template(tag: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: None,
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(format!("registry.local/refserver:{tag}")),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}
