//! The generated CRDs: what `kubectl` and the API server see. (The CEL rules themselves are
//! exercised against a real API server by the end-to-end suite.)

use kube::CustomResourceExt;
use rollgate_crds::{ReleaseGate, Rollout};
use serde_json::Value;

fn schema_of<K: CustomResourceExt>() -> Value {
    let crd = serde_json::to_value(K::crd()).expect("crd serialises");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn rollout_has_status_short_name_and_printer_columns() {
    let crd = serde_json::to_value(Rollout::crd()).expect("crd");
    assert_eq!(crd["spec"]["group"], "rollgate.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"][0], "rgr");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert!(version["subresources"]["status"].is_object());
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|c| c["name"].as_str().expect("name"))
        .collect();
    assert_eq!(columns, ["Phase", "Weight", "Step", "Verdict", "Age"]);
}

#[test]
fn every_spec_field_is_described_for_kubectl_explain() {
    fn walk(path: &str, node: &Value, missing: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            for (name, child) in props {
                let p = format!("{path}.{name}");
                if child.get("description").is_none() {
                    missing.push(p.clone());
                }
                walk(&p, child, missing);
            }
        }
        if let Some(items) = node.get("items") {
            walk(&format!("{path}[]"), items, missing);
        }
    }
    for (kind, schema) in [("rollout", schema_of::<Rollout>()), ("releasegate", schema_of::<ReleaseGate>())] {
        let mut missing = Vec::new();
        walk(kind, &schema["properties"]["spec"], &mut missing);
        // Names of checks and of referenced objects explain themselves in their parent's text.
        missing.retain(|p| !p.ends_with(".name") && !p.ends_with("replicaRatio"));
        assert!(missing.is_empty(), "fields without a description: {missing:?}");
    }
}

#[test]
fn validation_rules_are_in_the_schema() {
    let text = serde_json::to_string(&schema_of::<Rollout>()).expect("json");
    for needle in [
        "weights must be strictly increasing",
        "the last step must have weight 50 to 100",
        "exactly one of gate and gateRef must be set",
        "exactly one router (gatewayAPI or replicaRatio) must be set",
        "exactly one of errorRate, latency, pause, promql must be set",
        "must be a positive duration",
        "only the first step may be a shadow step",
        "1 to 100, or 0 (and omitted) on a shadow step",
        "a shadow step needs traffic.gatewayAPI",
    ] {
        assert!(text.contains(needle), "missing rule: {needle}");
    }
    let steps = &schema_of::<Rollout>()["properties"]["spec"]["properties"]["steps"];
    // 0 only on a shadow step (the CEL rule above); 1 to 100 otherwise.
    assert_eq!(steps["items"]["properties"]["weight"]["minimum"].as_f64(), Some(0.0));
    assert_eq!(steps["items"]["properties"]["shadow"]["minimum"].as_f64(), Some(1.0));
    assert_eq!(steps["items"]["properties"]["weight"]["maximum"].as_f64(), Some(100.0));
}

#[test]
fn a_minimal_rollout_gets_the_playbook_defaults() {
    let r: Rollout = serde_yaml::from_str(
        r#"
apiVersion: rollgate.dev/v1alpha1
kind: Rollout
metadata: {name: web, namespace: default}
spec:
  template: {spec: {containers: [{name: app, image: "registry.local/refserver:v1"}]}}
  traffic: {replicaRatio: {}}
  gate: {prometheus: {address: "http://prometheus:9090"}}
"#,
    )
    .expect("parses");
    let weights: Vec<i32> = r.spec.steps.iter().map(|s| s.weight).collect();
    assert_eq!(weights, [1, 5, 100]);
    let gate = r.spec.gate.expect("inline gate");
    assert_eq!(gate.policy.min_healthy.to_string(), "3m");
    assert!(gate.checks.is_empty(), "no checks written: the metric source's defaults apply");
    let checks = gate.effective_checks();
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["error-rate", "latency", "pause"]);
    let gate = rollgate_crds::GateSpec { checks: checks.into_owned(), ..gate };
    assert_eq!(gate.checks[0].error_rate.as_ref().map(|e| e.max_ratio), Some(0.0002));
    assert_eq!(
        gate.checks[1].latency.as_ref().map(|l| (l.quantile, l.max.to_string())),
        Some((0.95, "300ms".into()))
    );
    assert_eq!(gate.checks[2].pause.as_ref().map(|p| p.max.to_string()), Some("50ms".into()));
    let mut other = gate.clone();
    other.checks.clear();
    other.metrics.preset = Some(rollgate_crds::MetricPreset::PrometheusClient);
    let names: Vec<String> = other.effective_checks().iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, ["error-rate", "latency"], "pause is opt-in for an app that is not refserver");
}

#[test]
fn a_bad_duration_names_the_problem() {
    let err =
        serde_yaml::from_str::<rollgate_crds::gate::GatePolicy>("interval: soon").expect_err("rejected");
    assert!(err.to_string().contains("\"soon\" is not a positive duration"), "{err}");
}

#[test]
fn the_generated_file_parses_as_two_crds() {
    let yaml = rollgate_crds::crds_yaml().expect("yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).expect("document"))
        .collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0]["metadata"]["name"].as_str(), Some("rollouts.rollgate.dev"));
    assert_eq!(docs[1]["metadata"]["name"].as_str(), Some("releasegates.rollgate.dev"));
}

#[test]
fn rollout_names_that_would_make_invalid_or_colliding_service_names_are_refused() {
    use rollgate_crds::rollout::name_problem;
    assert_eq!(name_problem("web"), None);
    assert_eq!(name_problem(&"a".repeat(56)), None);
    assert!(name_problem(&"a".repeat(57)).is_some_and(|p| p.contains("at most 56 characters")));
    for bad in ["web.v2", "Web", "9web", "web-", "we_b"] {
        assert!(name_problem(bad).is_some_and(|p| p.starts_with("metadata.name: lower-case")), "{bad}");
    }
    for taken in ["web-stable", "web-canary"] {
        assert!(
            name_problem(taken).is_some_and(|p| p.contains("must not end in -stable or -canary")),
            "{taken}"
        );
    }
    let text = serde_json::to_string(&serde_json::to_value(Rollout::crd()).expect("crd")).expect("json");
    assert!(text.contains("self.metadata.name.endsWith('-stable')"), "the same rule is in the CRD");
}
