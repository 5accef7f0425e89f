//! `Rollout`: the unit a user applies. A pod template and replica count (the workload), how
//! traffic is split, the steps, and the gate. The controller owns `<name>-stable` and
//! `<name>-canary` Deployments and Services; changing the template starts a rollout.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::defaults;
use crate::duration::PositiveDuration;
use crate::gate::GateSpec;

// Several print columns share `type_ = "string"`, which clippy reads as a duplicated attribute.
#[allow(clippy::duplicated_attributes)]
/// A new version shipped safely: deployed beside the stable one, stepped through traffic
/// weights, judged against SLOs at every step, promoted or rolled back.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rollgate.dev",
    version = "v1alpha1",
    kind = "Rollout",
    namespaced,
    status = "RolloutStatus",
    shortname = "rgr",
    doc = "A progressive rollout of a workload, judged by SLOs at every traffic step.",
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".status.canaryWeight"),
    printcolumn(name = "Step", type_ = "string", json_path = ".status.stepLabel"),
    printcolumn(name = "Verdict", type_ = "string", json_path = ".status.verdict"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    validation = Rule::new("!has(self.metadata.name) || size(self.metadata.name) <= 56").message("metadata.name: at most 56 characters, so that the Services <name>-stable and <name>-canary are valid names"),
    validation = Rule::new("!has(self.metadata.name) || self.metadata.name.matches('^[a-z]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name: lower-case letters, digits and '-', starting with a letter and not ending with '-' (it names Services, which must be DNS-1035 labels)"),
    validation = Rule::new("!has(self.metadata.name) || !(self.metadata.name.endsWith('-stable') || self.metadata.name.endsWith('-canary'))").message("metadata.name: must not end in -stable or -canary (the Rollout <x> owns the Services <x>-stable and <x>-canary)")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.gate) != has(self.gateRef)").message("spec: exactly one of gate and gateRef must be set"),
    validation = Rule::new("has(self.template) != has(self.workloadRef)").message("spec: exactly one of template and workloadRef must be set"),
    validation = Rule::new("!self.steps.exists(s, has(s.shadow)) || has(self.traffic.gatewayAPI)").message("steps: a shadow step needs traffic.gatewayAPI (a gateway mirrors the requests)")
)]
pub struct RolloutSpec {
    /// Pods of the workload at full weight.
    #[serde(default = "defaults::replicas")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: i32,
    /// The pods to run (a PodTemplateSpec, as in a Deployment). A change starts a rollout; the
    /// revision is a hash of this template. Validated when the controller creates the
    /// Deployments; a template Kubernetes rejects shows in the `InvalidSpec` condition.
    /// Exactly one of `template` and `workloadRef`.
    #[serde(default, skip_serializing_if = "is_unset")]
    #[schemars(schema_with = "pod_template_schema")]
    pub template: PodTemplateSpec,
    /// An existing Deployment in the Rollout's namespace whose pod template the Rollout runs
    /// instead of `template`: a change to that Deployment's template starts a rollout. Once
    /// rollgate's stable Deployment is available, the referenced Deployment is scaled to zero;
    /// deleting the Rollout scales it back and waits until it is available before rollgate's
    /// own Deployments go. Exactly one of `template` and `workloadRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,
    /// The ports of the `<name>-stable` and `<name>-canary` Services.
    #[serde(default)]
    pub service: ServiceSpec,
    /// How traffic is split between stable and canary: exactly one router.
    pub traffic: TrafficSpec,
    /// Canary weights in percent, strictly increasing, the last one 50 to 100. Default 1, 5, 100.
    /// Passing the last step promotes: stable takes the canary's template and then all traffic.
    /// A last step below 100 keeps stable serving while it is judged, so every step is compared
    /// with stable (a burst on both versions is not the canary's fault there). The first step may
    /// instead be a shadow step (`shadow: 20`): no user traffic, a share of the requests mirrored
    /// to the canary.
    #[serde(default = "defaults::steps")]
    #[schemars(length(min = 1, max = 20))]
    #[x_kube(
        validation = Rule::new("self.map(s, s.weight).isSorted() && self.all(s, self.exists_one(t, t.weight == s.weight))").message("steps: weights must be strictly increasing"),
        validation = Rule::new("self.all(s, !has(s.shadow) || s == self[0])").message("steps: only the first step may be a shadow step"),
        validation = Rule::new("self[size(self) - 1].weight >= 50").message("steps: the last step must have weight 50 to 100 (promotion then moves the rest of the traffic at once)")
    )]
    pub steps: Vec<Step>,
    /// The SLO checks, inline. Exactly one of `gate` and `gateRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSpec>,
    /// A `ReleaseGate` in the same namespace. Exactly one of `gate` and `gateRef`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_ref: Option<GateRef>,
    /// Webhooks notified of this Rollout's transitions (besides its ReleaseGate's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<crate::notifications::Notifications>,
    /// Hold at the current step: no weight change and no verdict until unpaused (a breach still
    /// rolls back).
    #[serde(default)]
    pub paused: bool,
    /// A canary that is not fully available within this time is rolled back.
    #[serde(default = "defaults::progress_deadline")]
    pub progress_deadline: PositiveDuration,
    /// After a rollback moves all traffic to stable, how long before the canary is scaled to
    /// zero (lets in-flight requests finish).
    #[serde(default = "defaults::drain_delay")]
    pub drain_delay: PositiveDuration,
}

/// A Deployment a Rollout adopts (`spec.workloadRef`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// The Deployment's name (apps/v1, in the Rollout's namespace).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

fn is_unset(template: &PodTemplateSpec) -> bool {
    *template == PodTemplateSpec::default()
}

/// The longest Rollout name: `<name>-canary` must still be a Service name (63 characters).
pub const MAX_NAME_LEN: usize = 56;

/// Why `name` cannot name a Rollout: the same rules as the CRD's CEL rules on `metadata.name`,
/// for the controller (a CRD installed before the rules) and the CLI.
pub fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NAME_LEN {
        return Some(format!(
            "metadata.name: at most {MAX_NAME_LEN} characters, so that the Services <name>-stable and <name>-canary are valid names ({} given)",
            name.len()
        ));
    }
    let b = name.as_bytes();
    let dns1035 = b.first().is_some_and(u8::is_ascii_lowercase)
        && b.last().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !dns1035 {
        return Some(format!(
            "metadata.name: lower-case letters, digits and '-', starting with a letter and not ending with '-' (it names Services, which must be DNS-1035 labels); {name:?} is not"
        ));
    }
    if name.ends_with("-stable") || name.ends_with("-canary") {
        return Some(
            "metadata.name: must not end in -stable or -canary (the Rollout <x> owns the Services <x>-stable and <x>-canary)"
                .into(),
        );
    }
    None
}

/// The template is kept as an open object in the CRD schema: the full PodTemplateSpec schema
/// would make the CRD over 500 kB (too large for `kubectl apply` without `--server-side`), and
/// the API server validates the template anyway when the Deployments are written.
fn pod_template_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// One traffic step: a weight, or (first step only) a shadow step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.shadow) ? self.weight == 0 : self.weight >= 1").message("steps[].weight: 1 to 100, or 0 (and omitted) on a shadow step"))]
pub struct Step {
    /// Percent of traffic to the canary; 0 on a shadow step.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub weight: i32,
    /// A shadow step: no user request reaches the canary; this percent of the requests is
    /// copied to it and its answers discarded, so its own metrics are judged without anyone
    /// seeing them. Rolled back here, no user saw the version. See `traffic.gatewayAPI.mirror`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub shadow: Option<i32>,
    /// How long this step must stay healthy before weight is raised; overrides the gate's
    /// `policy.minHealthy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_healthy: Option<PositiveDuration>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// Port the Services expose.
    #[serde(default = "defaults::service_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// Container port the Services send to.
    #[serde(default = "defaults::target_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: i32,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self { port: defaults::SERVICE_PORT, target_port: defaults::TARGET_PORT }
    }
}

/// How traffic is split. Exactly one router.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.gatewayAPI), has(self.replicaRatio)].filter(x, x).size() == 1").message("traffic: exactly one router (gatewayAPI or replicaRatio) must be set"))]
pub struct TrafficSpec {
    /// Set the weights of the stable and canary backendRefs of a Gateway API HTTPRoute.
    #[serde(rename = "gatewayAPI", default, skip_serializing_if = "Option::is_none")]
    pub gateway_api: Option<GatewayApiTraffic>,
    /// No gateway: approximate the weight by replica counts behind one Service selecting both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_ratio: Option<ReplicaRatioTraffic>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayApiTraffic {
    /// The HTTPRoute (same namespace) whose rules reference `<name>-stable` and `<name>-canary`,
    /// or, with `service`, whose rules send to that Service.
    #[schemars(length(min = 1, max = 253))]
    pub http_route: String,
    /// Take over the route's rules whose only backend is this Service (same namespace): once
    /// rollgate's stable serves, each such backendRef becomes `<name>-stable` and
    /// `<name>-canary` (on `service.port`), and the original comes back when the Rollout is
    /// deleted. Without it the route must already reference the two Services.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub service: Option<String>,
    /// How a shadow step copies requests to the canary: the Gateway API `RequestMirror` filter
    /// (default), or a Traefik `TraefikService` of kind mirroring, for Traefik, whose Gateway
    /// API provider has no `RequestMirror`.
    #[serde(default, skip_serializing_if = "is_default")]
    pub mirror: Mirror,
}

/// How requests are copied to the canary in a shadow step.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mirror {
    /// A `RequestMirror` filter (with `percent`) on each rule that references the two Services.
    #[default]
    RequestMirror,
    /// The stable backendRef becomes the TraefikService `<name>-shadow` (kind mirroring, owned
    /// by the Rollout), which sends to `<name>-stable` and copies `shadow` percent to
    /// `<name>-canary`. Needs Traefik's `kubernetesCRD` provider.
    TraefikService,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ReplicaRatioTraffic {}

/// A reference to a `ReleaseGate` in the Rollout's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct GateRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

// === status ===

/// Where the rollout is.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// A canary is being stepped through the weights.
    Progressing,
    /// Held by `spec.paused` or by the inconclusive policy, waiting for a person.
    Paused,
    /// The current template is stable and takes all traffic.
    Promoted,
    /// The canary breached a check (or missed its deadline) and was rolled back.
    RolledBack,
    /// The spec cannot be acted on (see the `InvalidSpec` condition).
    Failed,
}

/// The outcome pipelines wait for.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `spec.replicas` as the controller last applied it: the `scale` subresource's current
    /// replicas, for a HorizontalPodAutoscaler that targets the Rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The label selector of the stable pods, as text: the pods whose load an autoscaler
    /// measures (their share of traffic follows their share of replicas under either router).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Pass when the current template was promoted, Fail when it was rolled back; absent while
    /// undecided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// Revision (template hash) of the stable Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,
    /// Revision under evaluation, or the last one evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,
    /// Index into `spec.steps` of the current step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,
    /// `2/3`-style label of the current step, for printing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_label: Option<String>,
    /// Percent of traffic the router currently sends to the canary.
    #[serde(default)]
    pub canary_weight: i32,
    /// When the current step began; its evidence is counted from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,
    /// Since when the canary has been waiting to become available (`progressDeadline` is
    /// counted from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_waiting_since: Option<Time>,
    /// Since when the first version has been waiting to become available as stable
    /// (`progressDeadline` is counted from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_waiting_since: Option<Time>,
    /// When the gate was last evaluated (it is evaluated once per `policy.interval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluated_at: Option<Time>,
    /// During promotion, since when all traffic is back on stable (the canary is removed after
    /// `drainDelay`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic_returned_at: Option<Time>,
    /// When the rollback began (drain delay is counted from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_started_at: Option<Time>,
    /// The last evaluation of every check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    /// The canary's events at the steps it has passed, per check: a later step's pass test
    /// pools them with its own, so it does not start from zero.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried: Vec<CarriedEvidence>,
    /// What the current step was forecast to need when the step before it passed: shown until
    /// the step's own evaluations estimate it (`checks[].estimatedSeconds`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<StepForecast>,
    /// Recent decisions, newest last (bounded).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Decision>,
    /// Human-readable summary of the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Tokens of the one-shot actions (annotations) already carried out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_actions: Option<HandledActions>,
    /// `Progressing`, `Promoted`, `RolledBack`, `Paused`, `MetricsUnavailable`, `InvalidSpec`,
    /// `StableBreaching`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The result of one check at the last evaluation.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    pub name: String,
    /// Pass, Fail, Pending (not enough evidence yet) or NoData.
    pub result: CheckResult,
    /// Observed share of bad events in the canary over the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// The budget: the largest acceptable share of bad events.
    pub threshold: f64,
    /// Bad events counted.
    pub bad: u64,
    /// All events counted.
    pub total: u64,
    /// About how many events in all a decision needs at the current rate (absent once decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<u64>,
    /// About how many seconds until a decision, at the step's rate of events so far (absent
    /// once decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds: Option<u64>,
    /// The sequential test's statistic and boundaries, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub statistic: Option<String>,
    /// Why, in words.
    pub reason: String,
    /// What the counts are read from: the series and, for a histogram, the boundary judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What is counted: `requests`, `pauses` or `events`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// What a check counted of the canary at the steps it passed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CarriedEvidence {
    /// The check's name.
    pub check: String,
    /// The budget the events were judged against: a check whose budget changed starts over.
    pub threshold: f64,
    /// Bad events counted.
    pub bad: u64,
    /// All events counted.
    pub total: u64,
}

/// A step's needs, forecast at the end of the step before it: the evidence its pass test needs
/// beyond what the canary has shown, at the rate of the step before scaled by weight.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepForecast {
    /// Index into `spec.steps` of the step forecast.
    pub step: i32,
    /// About how many seconds the step takes to pass (at least its `minHealthy`); absent when
    /// no rate was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds: Option<u64>,
    /// Per check: the events needed, and the time at the forecast rate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckForecast>,
    /// The forecast in words: `at 5 %: error-rate needs about 2650 more requests, ≈ 9 min at
    /// 5.0 requests/s`.
    pub message: String,
}

/// One check's needs at a forecast step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckForecast {
    pub name: String,
    /// About how many more of the canary's events its pass test needs; absent when, at the
    /// share of bad events seen so far, it would reach neither bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<u64>,
    /// About how many seconds those take at the forecast rate (at least `minHealthy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_seconds: Option<u64>,
}

/// A check's state after an evaluation (the gate's type).
pub use rollgate_gate::CheckResult;

/// One decision of the controller.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub time: Time,
    /// What was decided.
    pub action: HistoryAction,
    /// The canary weight after the decision.
    pub weight: i32,
    pub reason: String,
}

/// The kinds of decision the history records (stored as their names).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum HistoryAction {
    /// A first canary revision started.
    Start,
    /// A new revision replaced the canary in flight.
    Supersede,
    /// A step's weight was applied.
    StepUp,
    /// The last step passed: promotion began.
    PromoteStart,
    /// The canary became stable.
    Promote,
    /// The canary was rolled back.
    Rollback,
    /// No verdict within `maxHold`: waiting for a person.
    Pause,
    /// A first version never became available.
    Fail,
    /// Dry run (`policy.dryRun`): the gate would have rolled the canary back here; the plan
    /// went on.
    WouldRollBack,
}

impl HistoryAction {
    pub const fn as_str(self) -> &'static str {
        match self {
            HistoryAction::Start => "Start",
            HistoryAction::Supersede => "Supersede",
            HistoryAction::StepUp => "StepUp",
            HistoryAction::PromoteStart => "PromoteStart",
            HistoryAction::Promote => "Promote",
            HistoryAction::Rollback => "Rollback",
            HistoryAction::Pause => "Pause",
            HistoryAction::Fail => "Fail",
            HistoryAction::WouldRollBack => "WouldRollBack",
        }
    }
}

str_named!(HistoryAction);

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct HandledActions {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
}
