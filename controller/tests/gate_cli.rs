//! `rollgate gate …` as a user runs it: the real binary, its output and its exit codes, on the
//! series in `tests/fixtures/replay/`; and `rollgate completion`, which needs no cluster either.

use std::path::PathBuf;
use std::process::{Command, Output};

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/replay").join(name).display().to_string()
}

fn rollgate(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_rollgate")).args(args).output().expect("the binary runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn replay(series: &str, extra: &[&str]) -> (i32, String, String) {
    let (file, gate) = (fixture(series), fixture("gate.yaml"));
    let mut args = vec!["gate", "replay", file.as_str(), "--gate", gate.as_str()];
    args.extend_from_slice(extra);
    rollgate(&args)
}

#[test]
fn a_healthy_release_passes_every_step_and_exits_0() {
    let (code, out, err) = replay("healthy.json", &[]);
    assert_eq!(code, 0, "{out}{err}");
    let passes: Vec<&str> = out.lines().filter(|l| l.contains(" pass ")).collect();
    assert_eq!(passes.len(), 3, "one pass per step:\n{out}");
    assert!(passes[0].contains("step 1/3") && passes[2].contains("step 3/3"), "{out}");
    assert!(!out.contains(" fail "), "{out}");
    assert_eq!(out.lines().last(), Some("result: promoted"));
}

#[test]
fn a_burst_of_errors_is_rolled_back_at_the_first_step_and_exits_1() {
    let (code, out, err) = replay("errors.json", &[]);
    assert_eq!(code, 1, "{out}{err}");
    let fail = out.lines().find(|l| l.contains(" fail ")).expect("a fail line");
    assert!(fail.contains("step 1/3") && fail.contains("error-rate over budget"), "{fail}");
    assert_eq!(out.lines().last(), Some("result: rolled back"));
}

#[test]
fn too_little_traffic_ends_undecided_with_what_is_missing_and_exits_3() {
    let (code, out, err) = replay("sparse.json", &[]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("waiting for evidence: error-rate") && out.contains("of about"), "{out}");
    assert_eq!(out.lines().last(), Some("result: undecided when the series ended"));
}

#[test]
fn json_output_has_one_object_per_evaluation() {
    let (code, out, _) = replay("errors.json", &["-o", "json"]);
    assert_eq!(code, 1);
    let lines: Vec<serde_json::Value> =
        out.lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    let fail = lines.iter().find(|l| l["decision"] == "fail").expect("fail");
    let check = &fail["checks"][0];
    assert_eq!(check["name"], "error-rate");
    assert!(check["bad"].as_u64().is_some_and(|b| b > 0), "{check}");
    assert!(check["statistic"].as_str().is_some_and(|s| s.contains("LLR")), "{check}");
    assert_eq!(lines.last().map(|l| l["result"].clone()), Some(serde_json::json!("rolled back")));
}

#[test]
fn bad_input_exits_4_naming_the_field() {
    let (code, _, err) = replay("counter-reset.json", &[]);
    assert_eq!(code, 4);
    assert!(err.contains("samples[3].checks.error-rate.canary.total: went down from"), "{err}");

    let dir = std::env::temp_dir().join(format!("rollgate-gate-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let gate = dir.join("gate.yaml");
    std::fs::write(&gate, "checks:\n- name: error-rate\n  errorRate: {maxRatio: 0.9}\n").expect("write");
    let file = fixture("healthy.json");
    let (code, _, err) = rollgate(&["gate", "replay", &file, "--gate", &gate.display().to_string()]);
    assert_eq!(code, 4);
    assert!(err.contains("checks[0].errorRate.maxRatio: 0.9 must be in"), "{err}");

    let unknown = dir.join("unknown.json");
    std::fs::write(&unknown, r#"{"samples":[{"at":0,"checks":{"errors":{"canary":{"bad":0,"total":0}}}}]}"#)
        .expect("write");
    let (code, _, err) = rollgate(&["gate", "replay", &unknown.display().to_string()]);
    assert_eq!(code, 4);
    assert!(err.contains("samples[0].checks.errors: not a check of the gate"), "{err}");

    let (code, _, err) = rollgate(&["gate", "replay"]);
    assert_eq!(code, 4, "usage errors exit 4: {err}");
    let (code, _, err) =
        rollgate(&["gate", "eval", "--gate", &fixture("gate.yaml"), "--selector", "job=api", "--for", "1m"]);
    assert_eq!(code, 4);
    assert!(err.contains("--selector: label job: the value must be in double quotes"), "{err}");
    let (code, _, err) =
        rollgate(&["gate", "eval", "--gate", &fixture("gate.yaml"), "--selector", "a=\"b\"", "--for", "0s"]);
    assert_eq!(code, 4);
    assert!(err.contains("--for"), "{err}");
    let gate = fixture("gate.yaml");
    let record = |extra: &[&str]| {
        let mut args = vec!["gate", "record", "--gate", gate.as_str(), "--selector", "job=\"api\""];
        args.extend_from_slice(extra);
        rollgate(&args)
    };
    let (code, _, err) = record(&[]);
    assert!(code == 4 && err.contains("--from or --since: one is needed"), "{err}");
    let (code, _, err) = record(&["--from", "2026-11-27T05:00:00Z", "--to", "2026-11-27T04:00:00Z"]);
    assert!(code == 4 && err.contains("is not before --to"), "{err}");
    let (code, _, err) = record(&["--from", "yesterday"]);
    assert!(code == 4 && err.contains("--from: \"yesterday\" is not an RFC 3339 time"), "{err}");
    let (code, _, err) = record(&["--since", "720h", "--every", "1s"]);
    assert!(code == 4 && err.contains("--every:"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_endless_gate_file_is_refused_at_a_bound() {
    let (code, _, err) = rollgate(&["gate", "replay", &fixture("healthy.json"), "--gate", "/dev/zero"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("/dev/zero: larger than the 1048576 bytes allowed"), "{err}");
}

#[test]
fn eval_with_prometheus_unreachable_exits_4_could_not_judge() {
    // A closed loopback port: every query fails at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port());
    let address = format!("http://127.0.0.1:{}", port.unwrap_or(9));
    let (code, out, err) = rollgate(&[
        "gate",
        "eval",
        "--gate",
        &fixture("gate.yaml"),
        "--prometheus",
        &address,
        "--selector",
        "job=\"api\"",
        "--for",
        "1s",
        "--lookback",
    ]);
    assert_eq!(code, 4, "{out}{err}");
}

#[test]
fn the_help_documents_the_exit_codes() {
    let (code, out, _) = rollgate(&["gate", "replay", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Exit codes: 0 passed/promoted, 1 failed/rolled back, 2 timeout, 3 inconclusive"),
        "{out}"
    );
}

#[test]
fn connection_flags_are_refused_where_nothing_connects() {
    let gate = fixture("gate.yaml");
    let (code, _, err) =
        rollgate(&["gate", "replay", &fixture("healthy.json"), "--gate", &gate, "-n", "shop"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("--namespace: this command does not connect to Kubernetes"), "{err}");
    let (code, _, err) = rollgate(&["--kubeconfig", "/nonexistent", "crds"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("--kubeconfig"), "{err}");
}

#[test]
fn completion_scripts_cover_the_commands_and_bash_parses_its_own() {
    let (code, bash, err) = rollgate(&["completion", "bash"]);
    assert_eq!(code, 0, "{err}");
    assert!(bash.contains("--observe-timeout") && bash.contains("promote"), "{bash}");
    let check = Command::new("bash").args(["-n", "-c", &bash]).output().expect("bash runs");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let (code, zsh, _) = rollgate(&["completion", "zsh"]);
    assert!(code == 0 && zsh.starts_with("#compdef rollgate"), "{zsh}");
    let (code, fish, _) = rollgate(&["completion", "fish"]);
    assert!(code == 0 && fish.contains("complete -c rollgate"), "{fish}");
    let (code, _, err) = rollgate(&["completion", "tcsh"]);
    assert!(code == 4 && err.contains("invalid value 'tcsh'"), "{err}");
}
