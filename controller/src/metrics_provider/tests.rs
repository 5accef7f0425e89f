//! Queries, escaping, and the Prometheus provider against a local server that answers the
//! Prometheus HTTP query API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use rollgate_crds::gate::{Check, ErrorRateCheck, LatencyCheck, PromqlCheck};
use rollgate_crds::{MetricPreset, MetricSource};
use serde_json::{Value, json};

use super::prometheus::Prometheus;
use super::queries::{for_check, judged_boundary};
use super::selector::escape;
use super::template::validate_template;
use super::*;
use rollgate_gate::{Counts, Missing};

fn canary() -> Selector {
    Selector { namespace: "shop".into(), rollout: "web".into(), role: "canary", revision: "abc123".into() }
}

/// A window of `secs`, every query at the same instant.
fn span(secs: u64) -> Span {
    Span { window: Duration::from_secs(secs), time: Some(1_800_000_000) }
}

fn preset(p: MetricPreset) -> MetricSource {
    MetricSource { preset: Some(p), ..MetricSource::default() }
}

fn errors() -> Check {
    Check { name: "errors".into(), error_rate: Some(ErrorRateCheck::default()), ..Check::empty() }
}

fn latency(max: &str) -> Check {
    Check {
        name: "latency".into(),
        latency: Some(LatencyCheck { quantile: 0.95, max: max.parse().expect("duration") }),
        ..Check::empty()
    }
}

#[test]
fn builtin_queries_select_the_side_and_window() {
    let checks = rollgate_crds::defaults::checks(true);
    let source = MetricSource::default();
    let q = for_check(&checks[0], &source).expect("error rate");
    let c = "http_server_request_duration_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",http_response_status_code=~\"5..\"}";
    assert_eq!(
        q.bad_query(&canary(), Duration::from_secs(90), None),
        format!("clamp_min((sum({c}) or vector(0)) - (sum({c} offset 90s) or vector(0)), 0)")
    );
    assert_eq!(CheckSpec::try_from(&checks[0]).expect("a budget").budget, 0.0002);
    let q = for_check(&checks[1], &source).expect("latency");
    assert!(q.bad_query(&canary(), Duration::from_secs(60), Some("0.3")).contains("le=\"0.3\""));
    assert_eq!(
        q.boundaries(&canary(), Duration::from_secs(60)).expect("a histogram"),
        "count by (le) (http_server_request_duration_seconds_bucket{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\"})"
    );
    assert!((CheckSpec::try_from(&checks[1]).expect("a budget").budget - 0.05).abs() < 1e-12);
    let q = for_check(&checks[2], &source).expect("pause");
    assert!(
        q.total(&canary(), Duration::from_secs(60))
            .starts_with("clamp_min((sum(runtime_pause_seconds_count{")
    );
}

#[test]
fn each_preset_reads_its_own_convention() {
    let w = Duration::from_secs(60);
    let q = for_check(&errors(), &preset(MetricPreset::PrometheusClient)).expect("q");
    let bad = q.bad_query(&canary(), w, None);
    assert!(bad.contains("sum(http_request_duration_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",code=~\"5..\"} or http_request_duration_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",status=~\"5..\"})"), "{bad}");
    assert!(bad.contains("status=~\"5..\"} offset 60s)"), "{bad}");
    let q = for_check(&latency("300ms"), &preset(MetricPreset::Micrometer)).expect("q");
    assert!(q.total(&canary(), w).contains("http_server_requests_seconds_count{namespace=\"shop\""));
    let q = for_check(&errors(), &preset(MetricPreset::Traefik)).expect("q");
    let bad = q.bad_query(&canary(), w, None);
    assert!(
        bad.contains("traefik_service_requests_total{service=~\"shop-web-canary-http-[0-9]+@kubernetesgateway\",code=~\"5..\"}"),
        "{bad}"
    );
    assert!(!bad.contains("revision"), "the gateway has no revision label: {bad}");
    let q = for_check(&errors(), &preset(MetricPreset::Envoy)).expect("q");
    let bad = q.bad_query(&canary(), w, None);
    assert!(bad.contains("envoy_cluster_upstream_rq_xx{envoy_cluster_name=~\"outbound\\\\|[0-9]+\\\\|\\\\|web-canary\\\\.shop\\\\.svc.*|shop/web-canary/[0-9]+(/.*)?\",envoy_response_code_class=\"5\"}"), "{bad}");
    let custom = MetricSource {
        histogram: Some("shop_http_seconds".into()),
        status_label: Some("status_code".into()),
        ..MetricSource::default()
    };
    let q = for_check(&errors(), &custom).expect("q");
    assert!(q.bad_query(&canary(), w, None).contains("shop_http_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",status_code=~\"5..\"}"));
    let mut per_check = errors();
    per_check.metrics = Some(preset(MetricPreset::Otel));
    let gate = gate_with(vec![per_check]);
    let q = for_check(&gate.checks[0], gate.source_of(&gate.checks[0])).expect("q");
    assert_eq!(q.source, "otel: http_server_request_duration_seconds_count");
}

#[test]
fn the_judged_boundary_is_the_largest_at_or_below_the_limit() {
    let go_defaults: Vec<String> =
        [".005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
            .map(String::from)
            .to_vec();
    assert_eq!(judged_boundary(&go_defaults, 0.3, 1.0), Some(("0.25".into(), 0.25)));
    assert_eq!(judged_boundary(&go_defaults, 0.25, 1.0), Some(("0.25".into(), 0.25)));
    assert_eq!(judged_boundary(&go_defaults, 0.001, 1.0), None);
    let envoy_ms: Vec<String> = ["100", "250", "500", "+Inf"].map(String::from).to_vec();
    assert_eq!(judged_boundary(&envoy_ms, 0.3, 0.001).map(|b| b.0), Some("250".into()));
    let printed: Vec<String> = ["0.3"].map(String::from).to_vec();
    assert!(judged_boundary(&printed, 0.3, 1.0).is_some(), "a bound equal to the limit counts");
}

#[test]
fn interpolated_values_are_escaped() {
    assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    let evil = Selector { namespace: "x\",role=~\".*".into(), ..canary() };
    let q = for_check(&errors(), &MetricSource::default()).expect("q");
    let rendered = q.total(&evil, Duration::from_secs(60));
    assert!(rendered.contains("namespace=\"x\\\",role=~\\\".*\""), "{rendered}");
}

#[test]
fn custom_queries_are_templated_and_parsed() {
    let check = Check {
        name: "checkout".into(),
        promql: Some(PromqlCheck {
            bad: "sum(increase(checkout_failed_total{namespace=\"$namespace\",role=\"$role\"}[$window]))"
                .into(),
            total: "sum(increase(checkout_total{namespace=\"$namespace\",role=\"$role\"}[$window]))".into(),
            max_ratio: 0.01,
        }),
        ..Check::empty()
    };
    let q = for_check(&check, &MetricSource::default()).expect("valid");
    assert_eq!(
        q.bad_query(&canary(), Duration::from_secs(30), None),
        "sum(increase(checkout_failed_total{namespace=\"shop\",role=\"canary\"}[30s]))"
    );
    for (bad, why) in [
        ("sum(rate(x[5m])", "not PromQL: unclosed left parenthesis"),
        ("sum(x{a=\"b}[5m])", "not PromQL: unterminated quoted string"),
        ("x{job=\"$jobname\"}", "unknown variable $jobname"),
        ("x)", "not PromQL: unexpected right parenthesis"),
        ("rate(x{a=\"$role\"})", "not PromQL: expected type matrix in call to function 'rate'"),
        ("rate(x[$window]) +", "not PromQL"),
    ] {
        let err = validate_template(bad).expect_err(bad);
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
    assert_eq!(validate_template("sum(rate(x{a=\"$namespace\"}[$window])) / 2"), Ok(()));
    let broken = Check {
        promql: Some(PromqlCheck { bad: "sum(".into(), total: "x".into(), max_ratio: 0.01 }),
        ..check
    };
    let err = for_check(&broken, &MetricSource::default()).expect_err("malformed");
    assert_eq!(err.to_string(), "check checkout: promql.bad: not PromQL: unclosed left parenthesis");
}

/// A stand-in Prometheus: answers `/api/v1/query` from a table of (substring → result
/// vector), and records the queries it was sent.
async fn fake_prometheus(answers: Vec<(&'static str, Value)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/api/v1/query",
        get(move |Query(params): Query<std::collections::HashMap<String, String>>| {
            let q = params.get("query").cloned().unwrap_or_default();
            let at = params.get("time").cloned().unwrap_or_default();
            log.lock().expect("lock").push(format!("{q} @{at}"));
            let result = answers
                .iter()
                .find(|(needle, _)| q.contains(needle))
                .map_or_else(|| json!([]), |(_, v)| v.clone());
            async move {
                axum::Json(json!({"status": "success", "data": {"resultType": "vector", "result": result}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

/// One sample with no labels.
fn value(v: f64) -> Value {
    json!([{"metric": {}, "value": [1_800_000_000.0, v.to_string()]}])
}

/// One series per value of `label`.
fn labelled(label: &str, values: &[&str]) -> Value {
    Value::Array(
        values.iter().map(|v| json!({"metric": {label: v}, "value": [1_800_000_000.0, "1"]})).collect(),
    )
}

fn gate_with(checks: Vec<Check>) -> GateSpec {
    GateSpec {
        prometheus: rollgate_crds::gate::PrometheusSource::at("http://unused"),
        metrics: MetricSource::default(),
        checks,
        policy: Default::default(),
    }
}

#[tokio::test]
async fn prometheus_counts_for_canary_and_stable() {
    let (url, seen) = fake_prometheus(vec![
        ("role=\"canary\",revision=\"abc123\",http_response_status_code", value(3.0)),
        ("role=\"canary\"", value(1000.4)),
        ("role=\"stable\",revision=\"s1\",http_response_status_code", value(1.0)),
        ("role=\"stable\"", value(5000.0)),
    ])
    .await;
    let provider = Prometheus::new(&access::Access::address(&url)).expect("client");
    let gate = gate_with(vec![errors()]);
    let stable = Selector { role: "stable", revision: "s1".into(), ..canary() };
    let ev = gather(&provider, &gate, &canary(), Some(&stable as &dyn SeriesSelector), span(120))
        .await
        .expect("gathered");
    assert_eq!(ev[0].canary, Ok(Counts { bad: 3, total: 1000 }));
    assert_eq!(ev[0].stable, Some(Counts { bad: 1, total: 5000 }));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|q| q.contains("offset 120s")));
    assert!(seen.iter().all(|q| q.ends_with(" @1800000000")), "one instant per evaluation: {seen:?}");
}

#[tokio::test]
async fn latency_is_judged_at_the_largest_boundary_the_histogram_has_under_the_limit() {
    let (url, seen) = fake_prometheus(vec![
        ("count by (le)", labelled("le", &["0.1", "0.25", "0.5", "1", "+Inf"])),
        ("le=\"0.25\"", value(90.0)),
        ("_count", value(100.0)),
    ])
    .await;
    let provider = Prometheus::new(&access::Access::address(&url)).expect("client");
    let mut gate = gate_with(vec![latency("300ms")]);
    gate.metrics = preset(MetricPreset::PrometheusClient);
    let ev = gather(&provider, &gate, &canary(), None, span(60)).await.expect("ok");
    assert_eq!(ev[0].canary, Ok(Counts { bad: 10, total: 100 }));
    assert_eq!(
        ev[0].spec.source.as_deref(),
        Some(
            "prometheusClient: http_request_duration_seconds, judged at le=\"0.25\" (250ms, the largest boundary below 300ms)"
        )
    );
    let seen = seen.lock().expect("lock").clone();
    assert!(seen.iter().any(|q| q.contains("http_request_duration_seconds_bucket{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",le=\"0.25\"}")), "{seen:?}");
}

#[tokio::test]
async fn a_limit_below_every_boundary_is_reported_with_the_boundaries_found() {
    let (url, _) = fake_prometheus(vec![
        ("count by (le)", labelled("le", &["0.5", "1", "+Inf"])),
        ("_count", value(100.0)),
    ])
    .await;
    let provider = Prometheus::new(&access::Access::address(&url)).expect("client");
    let ev =
        gather(&provider, &gate_with(vec![latency("300ms")]), &canary(), None, span(60)).await.expect("ok");
    match &ev[0].canary {
        Err(Missing::Misconfigured(why)) => {
            assert!(
                why.contains("no bucket boundary at or below 300ms (boundaries found: +Inf, 0.5, 1)"),
                "{why}"
            )
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn the_wrong_preset_is_named_with_what_the_pods_export_instead() {
    let (url, _) = fake_prometheus(vec![
        ("group by (__name__)", labelled("__name__", &["http_request_duration_seconds_count"])),
        ("clamp_min", value(0.0)),
    ])
    .await;
    let provider = Prometheus::new(&access::Access::address(&url)).expect("client");
    let mut pause = rollgate_crds::defaults::checks(true);
    pause.retain(|c| c.pause.is_some());
    let gate = gate_with([vec![errors()], pause].concat());
    let ev = gather(&provider, &gate, &canary(), None, span(60)).await.expect("ok");
    match &ev[0].canary {
        Err(Missing::Misconfigured(why)) => assert_eq!(
            why,
            "no series http_server_request_duration_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\"}; the pods export http_request_duration_seconds_count; set metrics.preset: prometheusClient"
        ),
        other => panic!("{other:?}"),
    }
    match &ev[1].canary {
        Err(Missing::Misconfigured(why)) => assert!(
            why.starts_with("no series runtime_pause_seconds_count{")
                && why.contains("remove the pause check"),
            "{why}"
        ),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_series_means_zero_events_and_an_unreachable_server_is_unavailable() {
    let (url, _) = fake_prometheus(vec![]).await;
    let provider = Prometheus::new(&access::Access::address(&url)).expect("client");
    let gate = gate_with(Vec::new());
    let ev = gather(&provider, &gate, &canary(), None, span(60)).await.expect("ok");
    assert_eq!(ev.len(), 3, "no checks: the defaults of the refserver preset");
    assert!(ev.iter().all(|e| e.canary == Ok(Counts { bad: 0, total: 0 })));

    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let provider = Prometheus::new(&access::Access::address(&dead)).expect("client");
    let ev = gather(&provider, &gate, &canary(), None, span(60)).await.expect("ok");
    assert!(ev.iter().all(|e| matches!(e.canary, Err(Missing::Unavailable(_)))));
}

#[test]
fn label_matchers_are_checked_and_rendered() {
    let m = LabelMatchers::parse(r#" job="api", version=~"v2|v3" ,code!="5.." "#).expect("valid");
    assert_eq!(m.matchers(), r#"job="api",version=~"v2|v3",code!="5..""#);
    let escaped = LabelMatchers::parse(r#"path="a\"b""#).expect("escaped quote");
    assert_eq!(escaped.matchers(), r#"path="a\"b""#);
    for (text, why) in [
        ("", "empty"),
        ("job", "expected =, !=, =~ or !~"),
        ("job=api", "double quotes"),
        (r#"job="api"#, "unterminated"),
        (r#"job="a" version="b""#, "expected a comma"),
        (r#"1job="a""#, "label name"),
        (r#"job="a"}or vector(1){x="y""#, "expected a comma"),
    ] {
        let e = LabelMatchers::parse(text).expect_err(text);
        assert!(e.to_string().contains(why), "{text:?}: {e}");
    }
}

#[test]
fn a_custom_query_with_rollout_variables_cannot_run_on_label_matchers() {
    let check = Check {
        name: "custom".into(),
        promql: Some(PromqlCheck {
            bad: "sum(increase(bad_total{ns=\"$namespace\"}[$window]))".into(),
            total: "sum(increase(all_total[$window]))".into(),
            max_ratio: 0.01,
        }),
        ..Check::empty()
    };
    let q = queries::for_check(&check, &MetricSource::default()).expect("valid");
    let labels = LabelMatchers::parse(r#"job="api""#).expect("valid");
    assert_eq!(q.unfilled(&labels), vec!["namespace"]);
    assert!(q.unfilled(&canary()).is_empty());
}

#[tokio::test]
async fn headers_and_credentials_are_sent_with_every_query() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/api/v1/query",
        get(move |headers: axum::http::HeaderMap| {
            let header =
                |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            log.lock().expect("lock").push((header("authorization"), header("x-scope-orgid")));
            async move {
                axum::Json(
                    json!({"status": "success", "data": {"resultType": "vector", "result": value(7.0)}}),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let basic = access::Access {
        address: format!("http://{addr}"),
        headers: vec![("X-Scope-OrgID".into(), "team-a".into())],
        credentials: Some(access::Credentials::Basic {
            username: "rollgate".into(),
            password: "s3cret".into(),
        }),
        ca_pem: None,
    };
    let provider = Prometheus::new(&basic).expect("client");
    assert_eq!(provider.query("up", None).await, Ok(Some(7.0)));
    let bearer = access::Access {
        credentials: Some(access::Credentials::Bearer("tok\n".into())),
        headers: Vec::new(),
        ..basic.clone()
    };
    assert_eq!(Prometheus::new(&bearer).expect("client").query("up", None).await, Ok(Some(7.0)));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![
            ("Basic cm9sbGdhdGU6czNjcmV0".to_string(), "team-a".to_string()),
            ("Bearer tok".to_string(), String::new())
        ]
    );
    let bad_header = access::Access { headers: vec![("bad header".into(), "x".into())], ..basic.clone() };
    assert!(Prometheus::new(&bad_header).is_err_and(|e| e.to_string().contains("\"bad header\"")));
    let bad_ca = access::Access { ca_pem: Some(b"not a certificate".to_vec()), ..basic };
    assert!(Prometheus::new(&bad_ca).is_err());
}

#[tokio::test]
async fn a_micrometer_app_is_judged_from_its_own_series() {
    let (url, seen) = fake_prometheus(vec![
        ("count by (le)", labelled("le", &["0.1", "0.3", "0.5", "+Inf"])),
        ("http_server_requests_seconds_bucket{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",le=\"0.3\"}", value(195.0)),
        ("http_server_requests_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",status=~\"5..\"}", value(4.0)),
        ("http_server_requests_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\"}", value(200.0)),
    ])
    .await;
    let provider = Prometheus::new(&access::Access::address(&url)).expect("client");
    let mut gate = gate_with(Vec::new());
    gate.metrics = preset(MetricPreset::Micrometer);
    let ev = gather(&provider, &gate, &canary(), None, span(60)).await.expect("ok");
    let names: Vec<&str> = ev.iter().map(|e| e.spec.name.as_str()).collect();
    assert_eq!(names, ["error-rate", "latency"], "no pause check by default for a non-refserver app");
    assert_eq!(ev[0].canary, Ok(Counts { bad: 4, total: 200 }));
    assert_eq!(ev[1].canary, Ok(Counts { bad: 5, total: 200 }));
    assert!(seen.lock().expect("lock").iter().all(|q| !q.contains("runtime_pause")));
}

#[tokio::test]
async fn an_auth_layer_refusing_the_query_is_named_by_its_status() {
    let app = Router::new()
        .route("/api/v1/query", get(|| async { (axum::http::StatusCode::UNAUTHORIZED, "Unauthorized\n") }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let provider = Prometheus::new(&access::Access::address(format!("http://{addr}"))).expect("client");
    assert_eq!(provider.query("up", None).await, Err("Prometheus answered 401 Unauthorized".to_string()));
}

/// One series per `le`, each with its value.
fn per_le(values: &[(&str, f64)]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|(le, v)| json!({"metric": {"le": le}, "value": [1_800_000_000.0, v.to_string()]}))
            .collect(),
    )
}

#[tokio::test]
async fn a_compared_latency_check_reads_both_versions_whole_histograms() {
    let (url, seen) = fake_prometheus(vec![
        ("clamp_min(sum by (le) (http_request_duration_seconds_bucket{namespace=\"shop\",rollout=\"web\",role=\"canary\"", per_le(&[("0.05", 40.0), ("0.25", 95.0), ("1", 100.0), ("+Inf", 100.0)])),
        ("clamp_min(sum by (le) (http_request_duration_seconds_bucket{namespace=\"shop\",rollout=\"web\",role=\"stable\"", per_le(&[("0.05", 1500.0), ("0.25", 1850.0), ("1", 1900.0), ("+Inf", 1900.0)])),
        ("count by (le)", labelled("le", &["0.05", "0.25", "1", "+Inf"])),
        ("role=\"canary\",revision=\"abc123\",le=\"0.25\"", value(95.0)),
        ("role=\"stable\",revision=\"s1\",le=\"0.25\"", value(1850.0)),
        ("role=\"canary\"", value(100.0)),
        ("role=\"stable\"", value(1900.0)),
    ])
    .await;
    let provider = Prometheus::new(&access::Access::address(&url)).expect("client");
    let mut gate = gate_with(vec![latency("300ms")]);
    gate.metrics = preset(MetricPreset::PrometheusClient);
    let stable = Selector { role: "stable", revision: "s1".into(), ..canary() };
    let ev = gather(&provider, &gate, &canary(), Some(&stable as &dyn SeriesSelector), span(60))
        .await
        .expect("gathered");
    assert_eq!(ev[0].canary, Ok(Counts { bad: 5, total: 100 }));
    assert_eq!(ev[0].stable, Some(Counts { bad: 50, total: 1900 }));
    // Every finite boundary both versions have (+Inf is no boundary).
    assert_eq!(
        ev[0].slower,
        vec![
            Slower { bound_s: 0.05, canary: 60, stable: 400 },
            Slower { bound_s: 0.25, canary: 5, stable: 50 },
            Slower { bound_s: 1.0, canary: 0, stable: 0 },
        ]
    );
    let queries = seen.lock().expect("lock").clone();
    let bucket = "http_request_duration_seconds_bucket{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\"}";
    let want = format!(
        "clamp_min(sum by (le) ({bucket}) - (sum by (le) ({bucket} offset 60s) or sum by (le) ({bucket}) * 0), 0) @1800000000"
    );
    assert!(queries.contains(&want), "{queries:?}");
    // Every query a check sends is PromQL (the parser Prometheus' own grammar is ported to).
    for q in &queries {
        let q = q.rsplit_once(" @").map_or(q.as_str(), |(q, _)| q);
        assert!(promql_parser::parser::parse(q).is_ok(), "not PromQL: {q}");
    }
    // Not compared: no bucket is read for the whole histogram.
    gate.policy.compare_with_stable = false;
    let before = queries.len();
    let ev = gather(&provider, &gate, &canary(), Some(&stable as &dyn SeriesSelector), span(60))
        .await
        .expect("ok");
    assert!(ev[0].slower.is_empty());
    let after = seen.lock().expect("lock").clone();
    assert!(after[before..].iter().all(|q| !q.contains("sum by (le)")), "{:?}", &after[before..]);
}

#[test]
fn bucket_counts_that_do_not_add_up_are_not_compared() {
    let samples = |v: &[(&str, f64)]| v.iter().map(|(l, n)| (l.to_string(), *n)).collect::<Vec<_>>();
    // Milliseconds (`le` in ms, as some exporters write it), out of order, +Inf ignored.
    let ok = samples(&[("250", 95.0), ("50", 40.0), ("+Inf", 100.0)]);
    assert_eq!(super::cumulative(&ok, 0.001, 100), Some(vec![(0.05, 40), (0.25, 95)]));
    // A bucket that falls as `le` rises, or holds more than the total: a pod restarted or
    // vanished inside the window.
    assert_eq!(super::cumulative(&samples(&[("0.05", 50.0), ("0.25", 45.0)]), 1.0, 100), None);
    assert_eq!(super::cumulative(&samples(&[("0.05", 50.0), ("0.25", 120.0)]), 1.0, 100), None);
}
