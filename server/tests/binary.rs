//! The real `refserver` binary, spoken to over HTTP: configuration, reload, faults, admission,
//! the worker pool, bad input and graceful shutdown.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Server, wait_for, write_atomically};

async fn version_of(server: &Server) -> String {
    let v: serde_json::Value = server.get("/version").await.json().await.expect("json");
    v["version"].as_str().expect("version string").to_string()
}

// === configuration ===

#[tokio::test]
async fn config_precedence_is_defaults_file_env_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refserver.yaml");
    std::fs::write(&file, "version: from-file\n").expect("write");
    let file = file.to_str().expect("utf-8 path");

    let s = Server::start(&[], &[]).await;
    assert_eq!(version_of(&s).await, env!("CARGO_PKG_VERSION"), "default");
    let s = Server::start(&["--config", file], &[]).await;
    assert_eq!(version_of(&s).await, "from-file");
    let s = Server::start(&["--config", file], &[("REFSERVER_VERSION", "from-env")]).await;
    assert_eq!(version_of(&s).await, "from-env");
    let s = Server::start(
        &["--config", file, "--set", "version=from-flag"],
        &[("REFSERVER_VERSION", "from-env")],
    )
    .await;
    assert_eq!(version_of(&s).await, "from-flag");
    let header = s.get("/api/v1/echo").await.headers()["x-refserver-version"].clone();
    assert_eq!(header, "from-flag", "every response carries the version");
}

#[tokio::test]
async fn toml_files_work_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refserver.toml");
    std::fs::write(&file, "version = \"toml\"\n[fault]\nerror_ratio = 0.0\n").expect("write");
    let s = Server::start(&["--config", file.to_str().expect("utf-8")], &[]).await;
    assert_eq!(version_of(&s).await, "toml");
}

#[tokio::test]
async fn invalid_configuration_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad_yaml = dir.path().join("bad.yaml");
    std::fs::write(&bad_yaml, "fault:\n  error_ratio: 3\n").expect("write");
    let unknown = dir.path().join("unknown.yaml");
    std::fs::write(&unknown, "fault:\n  eror_ratio: 0.1\n").expect("write");
    let duplicate = dir.path().join("duplicate.yaml");
    std::fs::write(&duplicate, "fault:\n  error_ratio: 0.1\n  error_ratio: 0.9\n").expect("write");
    let duplicate = duplicate.to_str().expect("utf-8").to_string();
    let bad_ext = dir.path().join("conf.ini");
    std::fs::write(&bad_ext, "x=1").expect("write");
    let (bad_yaml, unknown, bad_ext) = (
        bad_yaml.to_str().expect("utf-8").to_string(),
        unknown.to_str().expect("utf-8").to_string(),
        bad_ext.to_str().expect("utf-8").to_string(),
    );
    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (vec!["--listen", "not-an-address"], vec![], "listen:"),
        (vec![], vec![("REFSERVER_FAULT_ERROR_RATIO", "-0.1")], "fault.error_ratio: must be between 0 and 1"),
        (vec![], vec![("REFSERVER_FAULT_LATENCY_MS", "slow")], "fault.latency_ms:"),
        (vec![], vec![("REFSERVER_FAUL_LATENCY_MS", "1")], "REFSERVER_FAUL_LATENCY_MS: unknown"),
        (vec!["--set", "pool.safety_factor=0"], vec![], "pool.safety_factor: must be a positive number"),
        (vec!["--set", "no.such=1"], vec![], "no.such: unknown setting"),
        (vec!["--set", "request_timeout_ms=0"], vec![], "request_timeout_ms: must be between 1 and"),
        // Once exit 101: validation let it through and the start panicked making the header.
        (vec![], vec![("REFSERVER_VERSION", "v2-é")], "version: must be 1 to 128 visible ASCII"),
        (
            vec!["--set", "shutdown.grace_ms=18446744073709551615"],
            vec![],
            "shutdown.grace_ms: must be between",
        ),
        (vec!["--set", "admission.rate_per_sec=1e-20"], vec![], "admission.rate_per_sec: must be between"),
        (vec!["--config", &duplicate], vec![], "duplicate"),
        (vec!["--set", "admission.mode=sometimes"], vec![], "admission.mode:"),
        (vec!["--config", &bad_yaml], vec![], "fault.error_ratio: must be between 0 and 1"),
        (vec!["--config", &unknown], vec![], "fault.eror_ratio"),
        (vec!["--config", &bad_ext], vec![], "unsupported extension"),
        (vec!["--config", "/nonexistent/refserver.yaml"], vec![], "/nonexistent/refserver.yaml"),
    ];
    for (args, env, expected) in cases {
        let f = Server::fail(&args, &env).await;
        assert_eq!(f.code, Some(2), "{args:?} {env:?}: stderr {}", f.stderr);
        assert!(f.stderr.contains(expected), "{args:?} {env:?}: expected {expected:?} in {:?}", f.stderr);
    }
}

#[tokio::test]
async fn a_valid_reload_is_applied_and_an_invalid_one_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refserver.yaml");
    std::fs::write(&file, "fault:\n  error_ratio: 0.0\n").expect("write");
    let s = Server::start(&["--config", file.to_str().expect("utf-8")], &[]).await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 200);

    write_atomically(&file, "fault:\n  error_ratio: 1.0\n");
    wait_for("reload applied", || async {
        s.metric("refserver_config_reloads_total{result=\"applied\"}").await >= 1.0
    })
    .await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 500, "new config is live");

    write_atomically(&file, "fault:\n  error_ratio: 9\n");
    wait_for("reload rejected", || async {
        s.metric("refserver_config_reloads_total{result=\"rejected\"}").await >= 1.0
    })
    .await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 500, "old config stays");
    assert_eq!(s.metric("refserver_config_reloads_total{result=\"applied\"}").await, 1.0);

    write_atomically(&file, "fault:\n  error_ratio: 0.0\n");
    wait_for("second reload applied", || async {
        s.metric("refserver_config_reloads_total{result=\"applied\"}").await >= 2.0
    })
    .await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 200);
}

#[tokio::test]
async fn requests_keep_succeeding_during_reloads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refserver.yaml");
    std::fs::write(&file, "fault:\n  latency_ms: 0\n").expect("write");
    let s = Server::start(&["--config", file.to_str().expect("utf-8")], &[]).await;
    let mut ok = 0;
    for i in 0..20u32 {
        write_atomically(&file, &format!("fault:\n  latency_ms: {}\n", i % 2));
        for _ in 0..10 {
            let r = s.get("/api/v1/echo").await;
            assert_eq!(r.status(), 200);
            ok += 1;
        }
    }
    assert_eq!(ok, 200);
}

// === faults ===

#[tokio::test]
async fn error_fault_answers_500_and_is_counted() {
    let s = Server::start(&[], &[("REFSERVER_FAULT_ERROR_RATIO", "1")]).await;
    for _ in 0..5 {
        let r = s.get("/api/v1/echo").await;
        assert_eq!(r.status(), 500);
        let body: serde_json::Value = r.json().await.expect("json");
        assert_eq!(body["error"], "injected_fault");
    }
    assert_eq!(s.metric("refserver_faults_injected_total{kind=\"error\"}").await, 5.0);
    assert_eq!(
        s.metric("http_server_request_duration_seconds_count{http_request_method=\"GET\",http_route=\"/api/v1/echo\",http_response_status_code=\"500\"}")
            .await,
        5.0
    );
    // Operational endpoints are never faulted.
    assert_eq!(s.get("/healthz").await.status(), 200);
}

#[tokio::test]
async fn latency_fault_delays_responses_and_shows_in_the_histogram() {
    let s = Server::start(&[], &[("REFSERVER_FAULT_LATENCY_MS", "350")]).await;
    let t = Instant::now();
    assert_eq!(s.get("/api/v1/echo").await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(350), "{:?}", t.elapsed());
    let route = "http_route=\"/api/v1/echo\",http_response_status_code=\"200\"";
    let under_300 = s
        .metric(&format!(
            "http_server_request_duration_seconds_bucket{{le=\"0.3\",http_request_method=\"GET\",{route}}}"
        ))
        .await;
    let total = s
        .metric(&format!("http_server_request_duration_seconds_count{{http_request_method=\"GET\",{route}}}"))
        .await;
    assert_eq!((under_300, total), (0.0, 1.0), "the slow request is above the 300 ms bucket");
}

#[tokio::test]
async fn pause_fault_stalls_requests_and_shows_in_runtime_pause() {
    let s =
        Server::start(&[], &[("REFSERVER_FAULT_PAUSE_MS", "120"), ("REFSERVER_FAULT_PAUSE_EVERY_MS", "200")])
            .await;
    wait_for("two stalls injected", || async {
        s.metric("refserver_faults_injected_total{kind=\"pause\"}").await >= 2.0
    })
    .await;
    // At least the first 120 ms stall is over, and it swallowed the ticks due during it: each
    // counts, as late as work ready at its time waited (six or more past 50 ms).
    let total = s.metric("runtime_pause_seconds_count").await;
    let fast = s.metric("runtime_pause_seconds_bucket{le=\"0.05\"}").await;
    assert!(total - fast >= 5.0, "{} of {total} observations past 50 ms", total - fast);
}

#[tokio::test]
async fn without_faults_the_runtime_pause_stays_small() {
    let s = Server::start(&["--set", "probe.interval_ms=5"], &[]).await;
    wait_for("probe ticks", || async { s.metric("runtime_pause_seconds_count").await >= 50.0 }).await;
    let total = s.metric("runtime_pause_seconds_count").await;
    let under_50ms = s.metric("runtime_pause_seconds_bucket{le=\"0.05\"}").await;
    // An idle runtime wakes on time; allow a stray scheduling hiccup on a loaded CI machine.
    assert!(under_50ms >= total - 2.0, "{under_50ms} of {total} under 50 ms");
}

// === admission control and the pool ===

#[tokio::test]
async fn the_limiter_answers_429_with_retry_after() {
    let s = Server::start(
        &[
            "--set",
            "admission.mode=limit",
            "--set",
            "admission.rate_per_sec=0.5",
            "--set",
            "admission.burst=2",
        ],
        &[],
    )
    .await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 200);
    assert_eq!(s.get("/api/v1/echo").await.status(), 200);
    let r = s.get("/api/v1/echo").await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert_eq!(s.metric("refserver_rejected_requests_total{reason=\"rate_limited\"}").await, 1.0);
    assert_eq!(s.get("/metrics").await.status(), 200, "probes and metrics are not limited");
}

#[tokio::test]
async fn the_shaper_delays_then_rejects() {
    let s = Server::start(
        &[
            "--set",
            "admission.mode=shape",
            "--set",
            "admission.rate_per_sec=2",
            "--set",
            "admission.max_delay_ms=600",
        ],
        &[],
    )
    .await;
    let futures: Vec<_> = (0..5).map(|_| s.get("/api/v1/echo")).collect();
    let statuses: Vec<u16> =
        futures::future::join_all(futures).await.iter().map(|r| r.status().as_u16()).collect();
    // Slots at 0 and 500 ms (within 600 ms); the rest would wait 1 s or more → 429.
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 2, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 3, "{statuses:?}");
    assert_eq!(s.metric("refserver_rejected_requests_total{reason=\"shaper_full\"}").await, 3.0);
}

#[tokio::test]
async fn a_full_pool_answers_503_at_once() {
    let s = Server::start(&["--set", "pool.workers=1", "--set", "pool.queue_capacity=1"], &[]).await;
    let running = tokio::spawn({
        let c = s.client.clone();
        let u = s.url("/api/v1/work?cost_ms=1500");
        async move { c.get(u).send().await.map(|r| r.status().as_u16()) }
    });
    wait_for("one worker busy", || async { s.metric("refserver_pool_busy_workers").await == 1.0 }).await;
    let queued = tokio::spawn({
        let c = s.client.clone();
        let u = s.url("/api/v1/work?cost_ms=10");
        async move { c.get(u).send().await.map(|r| r.status().as_u16()) }
    });
    wait_for("one job queued", || async { s.metric("refserver_pool_queue_depth").await == 1.0 }).await;
    let t = Instant::now();
    let r = s.get("/api/v1/work?cost_ms=10").await;
    assert_eq!(r.status(), 503);
    assert!(t.elapsed() < Duration::from_millis(1000), "rejected without waiting: {:?}", t.elapsed());
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "pool_full");
    assert_eq!(running.await.expect("join").expect("ok"), 200);
    assert_eq!(queued.await.expect("join").expect("ok"), 200);
    assert_eq!(s.metric("refserver_rejected_requests_total{reason=\"pool_full\"}").await, 1.0);
}

#[tokio::test]
async fn the_derived_queue_capacity_is_exposed() {
    let s = Server::start(
        &[
            "--set",
            "pool.target_qps=100",
            "--set",
            "pool.mean_service_ms=20",
            "--set",
            "pool.safety_factor=3",
        ],
        &[],
    )
    .await;
    assert_eq!(s.metric("refserver_pool_queue_capacity").await, 6.0);
}

// === timeouts, tracing, bad input ===

#[tokio::test]
async fn slow_requests_time_out_with_503() {
    let s =
        Server::start(&["--set", "request_timeout_ms=100"], &[("REFSERVER_FAULT_LATENCY_MS", "2000")]).await;
    let t = Instant::now();
    let r = s.get("/api/v1/echo").await;
    assert_eq!(r.status(), 503);
    assert!(t.elapsed() < Duration::from_millis(1500));
    assert_eq!(s.metric("refserver_rejected_requests_total{reason=\"timeout\"}").await, 1.0);
}

#[tokio::test]
async fn request_id_and_traceparent_are_propagated() {
    let s = Server::start(&[], &[]).await;
    let r = s
        .client
        .get(s.url("/api/v1/echo"))
        .header("x-request-id", "abc-123")
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .expect("request");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let tp = r.headers()["traceparent"].to_str().expect("ascii").to_string();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{tp}");
    assert!(!tp.contains("00f067aa0ba902b7"), "the server's own span id: {tp}");
    let r = s.get("/api/v1/echo").await;
    assert_eq!(r.headers()["x-request-id"].len(), 32, "generated when absent");
    // An invalid traceparent is ignored (W3C), not an error.
    let r =
        s.client.get(s.url("/api/v1/echo")).header("traceparent", "garbage").send().await.expect("request");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn request_logs_are_json_with_the_ids() {
    let mut s = Server::start(&["--set", "log.level=debug"], &[]).await;
    let r = s
        .client
        .get(s.url("/api/v1/echo"))
        .header("x-request-id", "log-me-1")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let line = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = s.logs.recv().await {
            if line.contains("log-me-1") {
                return line;
            }
        }
        panic!("log closed");
    })
    .await
    .expect("log line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json log");
    assert_eq!(v["message"], "request finished");
    assert_eq!(v["status"], 200);
    assert_eq!(v["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(v["request_id"], "log-me-1");
    assert_eq!(v["route"], "/api/v1/echo");
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error() {
    let s = Server::start(&["--set", "body_limit_bytes=16"], &[]).await;
    let check = |status: u16, code: &'static str, needle: &'static str| (status, code, needle);
    let cases = vec![
        (s.get("/api/v1/work?cost_ms=abc").await, check(400, "bad_request", "cost_ms")),
        (s.get("/api/v1/work").await, check(400, "bad_request", "cost_ms")),
        (s.get("/api/v1/work?cost_ms=99999").await, check(400, "bad_request", "cost_ms")),
        (s.get("/api/v1/work?cost_ms=1&x=2").await, check(400, "bad_request", "x")),
        (
            s.get(&format!("/api/v1/echo?message={}", "a".repeat(2000))).await,
            check(400, "bad_request", "message"),
        ),
        (s.get("/no/such/route").await, check(404, "not_found", "/no/such/route")),
        (
            s.client.delete(s.url("/api/v1/echo")).send().await.expect("request"),
            check(405, "method_not_allowed", "method"),
        ),
        (
            s.client.post(s.url("/api/v1/echo")).body("x".repeat(100)).send().await.expect("request"),
            check(413, "body_too_large", "100 bytes"),
        ),
        (
            s.client
                .get(s.url("/api/v1/echo"))
                .header("x-request-id", "has spaces in it")
                .send()
                .await
                .expect("request"),
            check(400, "bad_request", "x-request-id"),
        ),
    ];
    for (r, (status, code, needle)) in cases {
        assert_eq!(r.status().as_u16(), status, "{}", r.url());
        let url = r.url().to_string();
        let body: serde_json::Value =
            r.json().await.unwrap_or_else(|e| panic!("{url}: body is not JSON: {e}"));
        assert_eq!(body["error"], code, "{url}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains(needle)), "{url}: {body}");
    }
    // A streamed (chunked) body over the limit is cut by the extractor.
    let chunks: Vec<Result<&'static str, std::io::Error>> = vec![Ok("0123456789"), Ok("0123456789")];
    let r = s
        .client
        .post(s.url("/api/v1/echo"))
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 413);
    // A small body is echoed back, and the server is still serving.
    let r = s.client.post(s.url("/api/v1/echo")).body("hello").send().await.expect("request");
    assert_eq!(r.text().await.expect("body"), "hello");
    assert_eq!(s.get("/healthz").await.status(), 200);
}

// === graceful shutdown ===

#[tokio::test]
async fn sigterm_drains_in_flight_requests_then_exits_0() {
    let mut s =
        Server::start(&["--set", "shutdown.drain_delay_ms=300"], &[("REFSERVER_FAULT_LATENCY_MS", "1200")])
            .await;
    let in_flight = tokio::spawn({
        let c = s.client.clone();
        let u = s.url("/api/v1/echo?message=finish-me");
        async move {
            let r = c.get(u).send().await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            Ok::<_, reqwest::Error>((status, body))
        }
    });
    wait_for("request in flight", || async { s.metric("refserver_requests_in_flight").await == 1.0 }).await;
    s.signal("TERM");
    wait_for("readiness 503 while draining", || async {
        match s.client.get(s.url("/readyz")).send().await {
            Ok(r) => r.status() == 503,
            Err(_) => false,
        }
    })
    .await;
    let (status, body) = in_flight.await.expect("join").expect("in-flight request completes");
    assert_eq!(status, 200);
    assert!(body.contains("finish-me"));
    assert_eq!(s.wait_exit().await, Some(0));
}

#[tokio::test]
async fn sigint_with_nothing_in_flight_exits_0() {
    let mut s = Server::start(&[], &[]).await;
    s.signal("INT");
    assert_eq!(s.wait_exit().await, Some(0));
}

#[tokio::test]
async fn spans_are_exported_over_otlp_and_flushed_at_shutdown() {
    // A stand-in OTLP/HTTP collector: hands over the protobuf bodies it receives.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<axum::body::Bytes>();
    let collector = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}/v1/traces", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let mut s = Server::start(&["--set", &format!("otlp.endpoint={endpoint}")], &[]).await;
    let r = s
        .client
        .get(s.url("/api/v1/echo"))
        .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        .send()
        .await
        .expect("request");
    let tp = r.headers()["traceparent"].to_str().expect("ascii").to_string();
    assert!(tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{tp}");
    s.signal("TERM");
    assert_eq!(s.wait_exit().await, Some(0));
    let body = tokio::time::timeout(DEADLINE, rx.recv()).await.expect("an export arrives").expect("open");
    // The span's trace id (16 raw bytes in the protobuf) is the caller's.
    let trace_id: [u8; 16] = 0x4bf92f3577b34da6a3ce929d0e0e4736u128.to_be_bytes();
    assert!(body.windows(16).any(|w| w == trace_id), "exported span continues the caller's trace");
}
