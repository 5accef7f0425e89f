//! Reading a gate for the CLI: a `ReleaseGate` manifest, a `Rollout` with an inline gate, or a
//! bare gate spec (`checks`, `policy`, optionally `prometheus`). What the API server's schema
//! would refuse is refused here too, naming the field.

use std::path::Path;

use rollgate_crds::GateSpec;
use rollgate_crds::gate::{GatePolicy, PrometheusSource};
use serde::Deserialize;
use serde_yaml::Value;

use crate::metrics_provider::queries;
use rollgate_gate::CheckSpec;

/// Stands in for `prometheus.address` when the file has none and none is needed (replay).
pub const NO_PROMETHEUS: &str = "http://prometheus.not-set.invalid";

/// The playbook's gate (error rate, p95 latency, pause), for when no file is given.
pub fn default_gate() -> GateSpec {
    GateSpec {
        prometheus: PrometheusSource::at(NO_PROMETHEUS),
        metrics: Default::default(),
        checks: Vec::new(),
        policy: GatePolicy::default(),
    }
}

pub fn load(path: &Path, prometheus: Option<&str>) -> Result<GateSpec, String> {
    let text = super::read_bounded(path, super::MAX_GATE_FILE).map_err(|e| e.to_string())?;
    parse_gate(&text, prometheus).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and validates a gate; `prometheus` overrides the file's address.
pub fn parse_gate(text: &str, prometheus: Option<&str>) -> Result<GateSpec, String> {
    let doc = pick_document(text)?;
    let (mut spec, prefix) = match doc.get("kind").and_then(Value::as_str) {
        Some("ReleaseGate") => (doc.get("spec").cloned().ok_or("spec: missing")?, "spec."),
        Some("Rollout") => {
            let gate = doc.get("spec").and_then(|s| s.get("gate")).cloned();
            (
                gate.ok_or("spec.gate: missing (a Rollout with gateRef: pass the ReleaseGate's file)")?,
                "spec.gate.",
            )
        }
        Some(other) => return Err(format!("kind: {other} is not a ReleaseGate or a Rollout")),
        None => (doc, ""),
    };
    let Some(map) = spec.as_mapping_mut() else {
        return Err(format!("{}: expected a mapping with checks and policy", prefix.trim_end_matches('.')));
    };
    if let Some(address) = prometheus {
        map.insert(
            "prometheus".into(),
            serde_yaml::to_value(serde_json::json!({ "address": address })).map_err(|e| e.to_string())?,
        );
    } else if !map.contains_key("prometheus") {
        map.insert(
            "prometheus".into(),
            serde_yaml::to_value(serde_json::json!({ "address": NO_PROMETHEUS }))
                .map_err(|e| e.to_string())?,
        );
    }
    let gate: GateSpec = serde_path_to_error::deserialize(spec).map_err(|e| {
        let path = e.path().to_string();
        if path == "." { format!("{prefix}{}", e.inner()) } else { format!("{prefix}{path}: {}", e.inner()) }
    })?;
    validate(&gate).map_err(|e| format!("{prefix}{e}"))?;
    Ok(gate)
}

/// The one document that holds a gate: of several (`---`), the ReleaseGate or Rollout, so that
/// the manifest a Rollout is applied from can be passed as it is.
fn pick_document(text: &str) -> Result<Value, String> {
    let mut docs = Vec::new();
    for (i, d) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(d).map_err(|e| format!("document {}: {e}", i + 1))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    if docs.len() <= 1 {
        return Ok(docs.pop().unwrap_or(Value::Null));
    }
    let mut gates: Vec<Value> = docs
        .into_iter()
        .filter(|d| matches!(d.get("kind").and_then(Value::as_str), Some("ReleaseGate" | "Rollout")))
        .collect();
    match gates.len() {
        1 => Ok(gates.remove(0)),
        0 => Err("none of the documents is a ReleaseGate or a Rollout".into()),
        n => Err(format!("{n} documents are ReleaseGates or Rollouts; pass a file with one")),
    }
}

/// The schema's rules that serde does not check (`GateSpec::validate`), then what the gate and
/// the query builder need: a budget and, for custom checks, templates that parse.
pub fn validate(gate: &GateSpec) -> Result<(), String> {
    gate.validate().map_err(|e| e.to_string())?;
    for (i, c) in gate.effective_checks().iter().enumerate() {
        queries::for_check(c, gate.source_of(c)).map_err(|e| format!("checks[{i}].{}", e.reason))?;
        CheckSpec::try_from(c).map_err(|e| format!("checks[{i}]: {e}"))?;
    }
    Ok(())
}

/// The gate's checks as the gate sees them.
pub fn check_specs(gate: &GateSpec) -> Result<Vec<CheckSpec>, String> {
    gate.effective_checks().iter().map(|c| CheckSpec::try_from(c).map_err(|e| e.to_string())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_gate_has_the_playbook_checks() {
        let g = default_gate();
        let names: Vec<String> = g.effective_checks().iter().map(|c| c.name.clone()).collect();
        assert_eq!(names, ["error-rate", "latency", "pause"]);
        assert_eq!(g.prometheus.address, NO_PROMETHEUS);
    }

    #[test]
    fn a_release_gate_manifest_and_a_bare_spec_are_read_alike() {
        let manifest = "apiVersion: rollgate.dev/v1alpha1\nkind: ReleaseGate\nmetadata: {name: g}\nspec:\n  prometheus: {address: http://p:9090}\n  checks:\n  - name: errors\n    errorRate: {maxRatio: 0.001}\n";
        let bare = "checks:\n- name: errors\n  errorRate: {maxRatio: 0.001}\n";
        let a = parse_gate(manifest, None).expect("manifest");
        let b = parse_gate(bare, Some("http://p:9090")).expect("bare");
        assert_eq!(a, b);
    }

    #[test]
    fn the_gate_is_found_among_several_documents() {
        let text = "kind: HTTPRoute\nspec: {}\n---\nkind: Rollout\nspec:\n  gate:\n    prometheus: {address: http://p:9090}\n    checks: [{name: e, errorRate: {}}]\n";
        let g = parse_gate(text, None).expect("found");
        assert_eq!(g.checks[0].name, "e");
        let two = format!("{text}---\n{text}");
        assert!(parse_gate(&two, None).expect_err("ambiguous").contains("pass a file with one"));
        assert!(
            parse_gate("kind: A\n---\nkind: B\n", None).expect_err("none").contains("none of the documents")
        );
    }

    #[test]
    fn bad_values_name_the_field() {
        let cases = [
            (
                "checks:\n- name: e\n  errorRate: {maxRatio: 2}\n",
                "checks[0].errorRate.maxRatio: 2 must be in",
            ),
            ("checks:\n- name: e\n  errorRate: {}\n  tolerance: 1\n", "checks[0].tolerance: 1 must be in"),
            ("checks:\n- name: E\n  errorRate: {}\n", "checks[0].name:"),
            ("checks:\n- name: e\n", "checks[0].exactly one of"),
            (
                "checks:\n- {name: e, errorRate: {}}\n- {name: e, pause: {}}\n",
                "checks[1].name: \"e\" is used twice",
            ),
            (
                "checks:\n- name: e\n  errorRate: {maxRatio: x}\n",
                "checks[0].errorRate.maxRatio: invalid type",
            ),
            (
                "kind: ReleaseGate\nspec:\n  policy: {falseRollbackRate: 0.5}\n",
                "spec.policy.falseRollbackRate: 0.5",
            ),
            ("kind: Deployment\n", "kind: Deployment is not"),
        ];
        for (text, expected) in cases {
            let e = parse_gate(text, None).expect_err(text);
            assert!(e.contains(expected), "{text:?}: {e}");
        }
        let e = parse_gate("checks: [{name: e, errorRate: {}}]", Some("ftp://x")).expect_err("scheme");
        assert!(e.starts_with("prometheus.address:"), "{e}");
    }
}
