//! Regression tests for what an independent abuse test found: each one failed before its fix.

mod common;

use std::time::Duration;

use common::{Server, wait_for, write_atomically};

#[tokio::test]
async fn the_slowest_rate_refuses_and_keeps_refusing_instead_of_failing_open() {
    let s = Server::start(
        &[
            "--set",
            "admission.mode=limit",
            "--set",
            "admission.rate_per_sec=0.001",
            "--set",
            "admission.burst=1",
        ],
        &[],
    )
    .await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 200, "the burst");
    for _ in 0..3 {
        let r = s.get("/api/v1/echo").await;
        assert_eq!(r.status(), 429);
        let after: u64 = r.headers()["retry-after"].to_str().expect("ascii").parse().expect("seconds");
        assert!(after > 900, "one token per 1000 s: {after}");
    }
    assert_eq!(s.metric("refserver_panics_total").await, 0.0);
}

#[tokio::test]
async fn work_whose_client_went_away_stops_and_does_not_hold_up_the_next_request() {
    let s = Server::start(&["--set", "pool.workers=1", "--set", "pool.queue_capacity=1"], &[]).await;
    // Ten seconds of work on the only worker; the client gives up at once.
    let gave_up =
        s.client.get(s.url("/api/v1/work?cost_ms=10000")).timeout(Duration::from_millis(200)).send().await;
    assert!(gave_up.is_err_and(|e| e.is_timeout()));
    wait_for("the abandoned job counted", || async {
        s.metric("refserver_pool_jobs_abandoned_total").await >= 1.0
    })
    .await;
    let r = s.get("/api/v1/work?cost_ms=1").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["queued_ms"].as_f64().is_some_and(|q| q < 5_000.0), "{body}");
}

#[tokio::test]
async fn a_reload_reads_the_file_once_per_change_not_forever() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refserver.yaml");
    std::fs::write(&file, "fault:\n  error_ratio: 0.0\n").expect("write");
    let mut s = Server::start(&["--config", file.to_str().expect("utf-8")], &[]).await;
    write_atomically(&file, "fault:\n  error_ratio: 9\n");
    // One rejection for the write; then each SIGHUP is one more. Had the reload's own read of
    // the file counted as a change, rejections caused by the file would keep coming between
    // the signals.
    let mut by_file = 0;
    let mut by_signal = 0;
    while by_signal < 3 {
        let line = s.wait_log("configuration reload rejected").await;
        if line.contains("SIGHUP") {
            by_signal += 1;
        } else {
            by_file += 1;
        }
        s.signal("HUP");
    }
    assert_eq!(by_file, 1, "one change of the file, one reload for it");
}

#[tokio::test]
async fn a_truncated_file_does_not_reset_the_configuration() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refserver.yaml");
    std::fs::write(&file, "fault:\n  error_ratio: 1.0\n").expect("write");
    let s = Server::start(&["--config", file.to_str().expect("utf-8")], &[]).await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 500);
    // What a non-atomic writer leaves between truncating and writing.
    std::fs::write(&file, "").expect("truncate");
    wait_for("the empty file rejected", || async {
        s.metric("refserver_config_reloads_total{result=\"rejected\"}").await >= 1.0
    })
    .await;
    assert_eq!(s.get("/api/v1/echo").await.status(), 500, "the faults stay configured");
}

#[tokio::test]
async fn the_version_header_and_the_version_endpoint_agree_after_a_reload() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("refserver.yaml");
    std::fs::write(&file, "version: v1\n").expect("write");
    let mut s = Server::start(&["--config", file.to_str().expect("utf-8")], &[]).await;
    write_atomically(&file, "version: v2\n");
    let warning = s.wait_log("change only on restart").await;
    assert!(warning.contains("version"), "{warning}");
    let r = s.get("/version").await;
    assert_eq!(r.headers()["x-refserver-version"], "v1");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["version"], "v1");
}

#[tokio::test]
async fn a_bad_percent_encoding_is_a_400_naming_the_parameter() {
    let s = Server::start(&[], &[]).await;
    let r = s.get("/api/v1/echo?message=%ZZ").await;
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["message"].as_str().is_some_and(|m| m.starts_with("message:")), "{body}");
}
