//! Queries, escaping, and the Prometheus provider against a local server that answers the
//! Prometheus HTTP query API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::Query;
use axum::routing::get;
use rollgate_crds::gate::{Check, LatencyCheck, PromqlCheck};
use serde_json::json;

use super::prometheus::Prometheus;
use super::queries::{escape, for_check, validate_template};
use super::*;
use rollgate_gate::{Counts, Missing};

fn canary() -> Selector {
    Selector { namespace: "shop".into(), rollout: "web".into(), role: "canary", revision: "abc123".into() }
}

#[test]
fn builtin_queries_select_the_side_and_window() {
    let checks = rollgate_crds::defaults::checks();
    let q = for_check(&checks[0]).expect("error rate");
    let c = "http_server_request_duration_seconds_count{namespace=\"shop\",rollout=\"web\",role=\"canary\",revision=\"abc123\",http_response_status_code=~\"5..\"}";
    assert_eq!(
        q.bad_query(&canary(), Duration::from_secs(90)),
        format!("clamp_min((sum({c}) or vector(0)) - (sum({c} offset 90s) or vector(0)), 0)")
    );
    assert_eq!(CheckSpec::try_from(&checks[0]).expect("a budget").budget, 0.0002);
    let q = for_check(&checks[1]).expect("latency");
    assert!(q.bad_query(&canary(), Duration::from_secs(60)).contains("le=~\"0\\\\.30*\""));
    assert!((CheckSpec::try_from(&checks[1]).expect("a budget").budget - 0.05).abs() < 1e-12);
    let q = for_check(&checks[2]).expect("pause");
    assert!(
        q.total(&canary(), Duration::from_secs(60))
            .starts_with("clamp_min((sum(runtime_pause_seconds_count{")
    );
    assert!(q.bad_query(&canary(), Duration::from_secs(60)).contains("le=~\"0\\\\.050*\""));
}

#[test]
fn interpolated_values_are_escaped() {
    assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
    let evil = Selector { namespace: "x\",role=~\".*".into(), ..canary() };
    let q = for_check(&rollgate_crds::defaults::checks()[0]).expect("q");
    let rendered = q.total(&evil, Duration::from_secs(60));
    assert!(rendered.contains("namespace=\"x\\\",role=~\\\".*\""), "{rendered}");
}

#[test]
fn custom_queries_are_templated_and_checked() {
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
    let q = for_check(&check).expect("valid");
    assert_eq!(
        q.bad_query(&canary(), Duration::from_secs(30)),
        "sum(increase(checkout_failed_total{namespace=\"shop\",role=\"canary\"}[30s]))"
    );
    for (bad, why) in [
        ("sum(rate(x[5m])", "unclosed"),
        ("sum(x{a=\"b}[5m])", "unterminated"),
        ("x{job=\"$jobname\"}", "unknown variable $jobname"),
        ("x)", "unbalanced"),
    ] {
        let err = validate_template(bad).expect_err(bad);
        assert!(err.to_string().contains(why), "{bad}: {err}");
    }
    let broken = Check {
        promql: Some(PromqlCheck { bad: "sum(".into(), total: "x".into(), max_ratio: 0.01 }),
        ..check
    };
    let err = for_check(&broken).expect_err("malformed");
    assert!(err.to_string().contains("check checkout: promql.bad: unclosed"), "{err}");
}

/// A stand-in Prometheus: answers `/api/v1/query` from a table of (substring → value), and
/// records the queries it was sent.
async fn fake_prometheus(answers: Vec<(&'static str, Option<f64>)>) -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let app = Router::new().route(
        "/api/v1/query",
        get(move |Query(params): Query<std::collections::HashMap<String, String>>| {
            let q = params.get("query").cloned().unwrap_or_default();
            log.lock().expect("lock").push(q.clone());
            let value = answers.iter().find(|(needle, _)| q.contains(needle)).and_then(|(_, v)| *v);
            let result: Vec<serde_json::Value> = value
                .map(|v| vec![json!({"metric": {}, "value": [1_800_000_000.0, v.to_string()]})])
                .unwrap_or_default();
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

fn gate_with(checks: Vec<Check>) -> GateSpec {
    GateSpec {
        prometheus: rollgate_crds::gate::PrometheusSource { address: "http://unused".into() },
        checks,
        policy: Default::default(),
    }
}

#[tokio::test]
async fn prometheus_counts_for_canary_and_stable() {
    let (url, seen) = fake_prometheus(vec![
        ("role=\"canary\",revision=\"abc123\",http_response_status_code", Some(3.0)),
        ("role=\"canary\"", Some(1000.4)),
        ("role=\"stable\",revision=\"s1\",http_response_status_code", Some(1.0)),
        ("role=\"stable\"", Some(5000.0)),
    ])
    .await;
    let provider = Prometheus::new(&url).expect("client");
    let gate = gate_with(vec![rollgate_crds::defaults::checks()[0].clone()]);
    let stable = Selector { role: "stable", revision: "s1".into(), ..canary() };
    let ev =
        gather(&provider, &gate, &canary(), Some(&stable as &dyn SeriesSelector), Duration::from_secs(120))
            .await
            .expect("gathered");
    assert_eq!(ev[0].canary, Ok(Counts { bad: 3, total: 1000 }));
    assert_eq!(ev[0].stable, Some(Counts { bad: 1, total: 5000 }));
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|q| q.contains("offset 120s")));
}

#[tokio::test]
async fn a_limit_that_is_not_a_bucket_boundary_is_reported_not_counted_as_bad() {
    let (url, _) = fake_prometheus(vec![("_count", Some(100.0)), ("_bucket", None)]).await;
    // (The fake answers "no series" for every bucket query, as Prometheus does for a bound that
    // no bucket has.)
    let provider = Prometheus::new(&url).expect("client");
    let check = Check {
        name: "latency".into(),
        latency: Some(LatencyCheck { quantile: 0.95, max: "310ms".parse().expect("duration") }),
        ..Check::empty()
    };
    let ev = gather(&provider, &gate_with(vec![check]), &canary(), None, Duration::from_secs(60))
        .await
        .expect("ok");
    match &ev[0].canary {
        Err(Missing::Misconfigured(why)) => assert!(why.contains("bucket boundary"), "{why}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn no_series_means_zero_events_and_an_unreachable_server_is_unavailable() {
    let (url, _) = fake_prometheus(vec![]).await;
    let provider = Prometheus::new(&url).expect("client");
    let gate = gate_with(rollgate_crds::defaults::checks());
    let ev = gather(&provider, &gate, &canary(), None, Duration::from_secs(60)).await.expect("ok");
    assert!(ev.iter().all(|e| e.canary == Ok(Counts { bad: 0, total: 0 })));

    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let provider = Prometheus::new(&dead).expect("client");
    let ev = gather(&provider, &gate, &canary(), None, Duration::from_secs(60)).await.expect("ok");
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
    let q = queries::for_check(&check).expect("valid");
    let labels = LabelMatchers::parse(r#"job="api""#).expect("valid");
    assert_eq!(q.unfilled(&labels), vec!["namespace"]);
    assert!(q.unfilled(&canary()).is_empty());
}
