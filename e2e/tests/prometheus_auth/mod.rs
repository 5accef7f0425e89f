//! Scenario 14: a Prometheus that, like hosted and multi-tenant ones, wants TLS and credentials.
//! The gate names a Secret with basic-auth credentials, a ConfigMap with the CA and a tenant
//! header; a wrong password shows as `MetricsUnavailable` and holds the step, and the corrected
//! Secret is picked up without touching the Rollout.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use rollgate_crds::rollout::Phase;

use crate::common::{Cluster, Controller, Load, OnFailure, report, rollout_yaml, wait_until};

const NAME: &str = "web";
const USER: &str = "rollgate";
const PASSWORD: &str = "s3cret-e2e";

/// A second Prometheus, with the same scrape config as the suite's, behind TLS and basic auth
/// (Prometheus' own `--web.config.file`), on a loopback port.
struct SecuredPrometheus {
    _child: tokio::process::Child,
    address: String,
    ca_pem: String,
}

fn run(dir: &Path, script: &str) {
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir)
        .output()
        .expect("bash runs");
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

impl SecuredPrometheus {
    async fn start(c: &Cluster) -> SecuredPrometheus {
        let dir: PathBuf = c.state.join("secured-prometheus");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        run(
            &dir,
            "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
               -subj /CN=e2e-prometheus-ca -keyout ca.key -out ca.crt 2>/dev/null
             openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -subj /CN=127.0.0.1 -keyout tls.key -out tls.csr 2>/dev/null
             printf 'subjectAltName=IP:127.0.0.1\\n' > san.ext
             openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 \
               -extfile san.ext -out tls.crt 2>/dev/null",
        );
        let hash = bcrypt::hash(PASSWORD, 4).expect("bcrypt");
        std::fs::write(
            dir.join("web.yml"),
            format!(
                "tls_server_config:\n  cert_file: {0}/tls.crt\n  key_file: {0}/tls.key\nbasic_auth_users:\n  {USER}: {hash}\n",
                dir.display()
            ),
        )
        .expect("web config");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let log = std::fs::File::create(c.state.join("logs/secured-prometheus.log")).expect("log");
        let child = tokio::process::Command::new(c.toolchain.join("bin/prometheus"))
            .arg("--config.file")
            .arg(c.state.join("prometheus.yml"))
            .arg("--storage.tsdb.path")
            .arg(dir.join("data"))
            .arg("--web.config.file")
            .arg(dir.join("web.yml"))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus");
        let ca_pem = std::fs::read_to_string(dir.join("ca.crt")).expect("ca");
        let address = format!("https://127.0.0.1:{port}");
        let certs = reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).expect("ca pem");
        let http = reqwest::Client::builder().tls_certs_only(certs).build().expect("client");
        wait_until("the secured Prometheus is ready", Duration::from_secs(60), || async {
            let ready = http.get(format!("{address}/-/ready")).basic_auth(USER, Some(PASSWORD)).send().await;
            ready.is_ok_and(|r| r.status().is_success())
        })
        .await;
        // Without credentials it refuses: the gate cannot get in by accident.
        let anonymous = http.get(format!("{address}/api/v1/query?query=up")).send().await.expect("answer");
        assert_eq!(anonymous.status().as_u16(), 401);
        SecuredPrometheus { _child: child, address, ca_pem }
    }
}

fn credentials_yaml(ns: &str, password: &str, ca_pem: &str) -> String {
    let ca: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: prom-basic, namespace: {ns}}}\n\
         stringData: {{username: {USER}, password: {password}}}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: prom-ca, namespace: {ns}}}\ndata:\n  ca.crt: |\n{ca}"
    )
}

fn secured_rollout(ns: &str, version: &str, address: &str) -> String {
    rollout_yaml(ns, NAME, version, &[], "").replace(
        "    prometheus: {address: \"PROMETHEUS\"}\n",
        &format!(
            "    prometheus:\n      address: \"{address}\"\n      headers: [{{name: X-Scope-OrgID, value: e2e}}]\n      \
             auth: {{basic: {{name: prom-basic}}}}\n      tls: {{caConfigMap: {{name: prom-ca, key: ca.crt}}}}\n"
        ),
    )
}

#[tokio::test]
async fn scenario_14_a_prometheus_behind_tls_and_basic_auth_is_read_with_credentials_from_a_secret() {
    let c = Cluster::connect().await;
    let ns = c.namespace("e2e-prom-auth").await;
    let mut guard = OnFailure::new(&c, &ns);
    let secured = SecuredPrometheus::start(&c).await;
    let (ok, out) = c.apply(&credentials_yaml(&ns, "wrong-password", &secured.ca_pem)).await;
    assert!(ok, "{out}");
    let ctl = Controller::start(&c, &ns).await;
    guard.watch(&ctl);
    let (ok, out) = c.apply(&secured_rollout(&ns, "v1", &secured.address)).await;
    assert!(ok, "{out}");
    let kept = c.rollout(&ns, NAME).await.spec.gate.and_then(|g| g.prometheus.auth);
    assert!(kept.is_some(), "the API server kept prometheus.auth");
    wait_until("v1 promoted as stable", Duration::from_secs(120), || async {
        c.status(&ns, NAME).await.phase == Some(Phase::Promoted)
    })
    .await;
    let load = Load::start(&format!("{}/api/v1/echo", c.gateway), &format!("{NAME}.{ns}.e2e"), 50, 4);
    // The gateway serves the route a moment after it is written: judged from steady traffic on.
    wait_until("steady traffic on v1", Duration::from_secs(60), || async {
        let s = load.snapshot();
        s.len() >= 50 && s[s.len() - 50..].iter().all(|x| x.status == 200 && x.version == "v1")
    })
    .await;
    let steady = Instant::now();

    // A wrong password: the step holds, saying the metrics could not be read.
    let (ok, out) = c.apply(&secured_rollout(&ns, "v2", &secured.address)).await;
    assert!(ok, "{out}");
    let unavailable = |st: &rollgate_crds::RolloutStatus| {
        st.conditions
            .iter()
            .find(|k| k.type_ == "MetricsUnavailable" && k.status == "True")
            .map(|k| k.message.clone())
    };
    wait_until("MetricsUnavailable with the wrong password", Duration::from_secs(120), || async {
        unavailable(&c.status(&ns, NAME).await).is_some()
    })
    .await;
    let st = c.status(&ns, NAME).await;
    let refused = unavailable(&st).unwrap_or_default();
    assert!(refused.contains("401") || refused.to_lowercase().contains("unauthorized"), "{refused}");
    assert_eq!(st.phase, Some(Phase::Progressing), "held, not rolled back: {st:?}");

    // The corrected Secret is read again within 30 s; the rollout goes on to promotion.
    let fixed = Instant::now();
    let (ok, out) = c.apply(&credentials_yaml(&ns, PASSWORD, &secured.ca_pem)).await;
    assert!(ok, "{out}");
    let v2 = rollgate_crds::revision::revision_of(&c.rollout(&ns, NAME).await.spec.template);
    wait_until("v2 promoted once the Secret is right", Duration::from_secs(240), || async {
        let st = c.status(&ns, NAME).await;
        st.phase == Some(Phase::Promoted) && st.stable_revision.as_deref() == Some(v2.as_str())
    })
    .await;
    let promoted_after_fix = fixed.elapsed();
    let seen = load.stop().await;
    let failures: Vec<(u16, f64)> = seen
        .iter()
        .filter(|s| s.at >= steady && (s.status >= 500 || s.status == 0))
        .map(|s| (s.status, s.at.duration_since(steady).as_secs_f64()))
        .collect();
    let failed = failures.len();
    assert_eq!(failed, 0, "requests failed while the gate was held and then passed: {failures:?}");
    report(
        &c,
        "scenario-14-prometheus-auth",
        serde_json::json!({
            "refused_message": refused,
            "secret_fixed_to_promoted_s": promoted_after_fix.as_secs_f64(),
            "requests": seen.len(),
            "failed": failed,
        }),
    );
    drop(guard);
}
