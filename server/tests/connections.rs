//! Connections against the real binary: the timeouts that close quiet and slow ones, the
//! requests-per-connection cap, the connection limit, what hyper refuses on its own, and a drain
//! that loses no request sent on a keep-alive connection.

mod common;

use common::raw::Conn;
use common::{Server, wait_for};

const CLOSED: &str = "refserver_connections_closed_total";

async fn closed(s: &Server, reason: &str) -> f64 {
    s.metric(&format!("{CLOSED}{{reason=\"{reason}\"}}")).await
}

#[tokio::test]
async fn a_quiet_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let s = Server::start(&["--set", "connections.idle_timeout_ms=300"], &[]).await;
    let mut c = Conn::open(s.addr).await;
    let r = c.get("/api/v1/echo?message=hi").await.expect("response");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), None, "kept alive");
    c.closed_by_server().await;
    wait_for("counted as idle", || async { closed(&s, "idle").await >= 1.0 }).await;
}

#[tokio::test]
async fn a_head_that_never_ends_is_cut_and_silent_connections_do_not_lock_out_probes() {
    let s = Server::start(
        &[
            "--set",
            "connections.header_read_timeout_ms=300",
            "--set",
            "connections.idle_timeout_ms=300",
            "--set",
            "connections.max=20",
        ],
        &[],
    )
    .await;
    // Slowloris: a head that starts and never finishes.
    let mut slow = Conn::open(s.addr).await;
    slow.send_raw(b"GET /api/v1/echo HTTP/1.1\r\nhost: test\r\nx-slow: ").await;
    // Twice the connection limit of clients that connect and say nothing.
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(Conn::open(s.addr).await);
    }
    slow.closed_by_server().await;
    for c in &mut silent {
        c.closed_by_server().await;
    }
    wait_for("readiness answers again", || async {
        matches!(s.client.get(s.url("/readyz")).send().await, Ok(r) if r.status() == 200)
    })
    .await;
    assert!(closed(&s, "header_timeout").await >= 1.0);
    assert!(closed(&s, "idle").await >= 40.0);
    assert_eq!(s.metric("refserver_connections_max").await, 20.0);
}

#[tokio::test]
async fn a_connection_closes_after_its_last_allowed_request() {
    let s = Server::start(&["--set", "connections.max_requests=3"], &[]).await;
    let mut c = Conn::open(s.addr).await;
    for i in 1..=3 {
        let r = c.get("/api/v1/echo").await.expect("response");
        assert_eq!(r.status, 200);
        let expected = if i == 3 { Some("close") } else { None };
        assert_eq!(r.header("connection"), expected, "request {i}");
    }
    c.closed_by_server().await;
    wait_for("counted", || async { closed(&s, "max_requests").await == 1.0 }).await;
}

#[tokio::test]
async fn what_hyper_cannot_parse_is_counted_and_long_heads_get_json_errors() {
    let s = Server::start(&[], &[]).await;
    let mut c = Conn::open(s.addr).await;
    c.send_raw(b"NOT HTTP AT ALL\r\n\r\n").await;
    let r = c.response().await.expect("hyper answers");
    assert_eq!(r.status, 400);
    wait_for("counted", || async {
        s.metric("refserver_rejected_requests_total{reason=\"malformed\"}").await == 1.0
    })
    .await;
    assert_eq!(closed(&s, "malformed").await, 1.0);

    let long_uri = format!("/api/v1/echo?message={}", "a".repeat(9000));
    let mut c = Conn::open(s.addr).await;
    let r = c.get(&long_uri).await.expect("response");
    assert_eq!(r.status, 414);
    assert!(r.body.contains("\"uri_too_long\""), "{}", r.body);
    assert!(r.header("x-request-id").is_some());

    let r = s
        .client
        .get(s.url("/api/v1/echo"))
        .header("x-big", "b".repeat(40 * 1024))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 431);
    assert!(r.headers().contains_key("x-request-id"));
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"], "headers_too_large");
    assert_eq!(s.metric("refserver_rejected_requests_total{reason=\"uri_too_long\"}").await, 1.0);
}

#[tokio::test]
async fn a_request_on_a_kept_alive_connection_after_sigterm_is_served_then_the_connection_closes() {
    let mut s = Server::start(&["--set", "shutdown.idle_close_ms=30000"], &[]).await;
    let mut c = Conn::open(s.addr).await;
    assert_eq!(c.get("/api/v1/echo").await.expect("first").status, 200);
    s.signal("TERM");
    s.wait_log("shutdown requested").await;
    // The listener is closed by now (no drain delay), but this connection is open: the request
    // sent on it is answered, and the answer tells the client to go.
    let r = c.get("/api/v1/echo?message=after-sigterm").await.expect("served during the drain");
    assert_eq!(r.status, 200);
    assert!(r.body.contains("after-sigterm"));
    assert_eq!(r.header("connection"), Some("close"));
    c.closed_by_server().await;
    assert_eq!(s.wait_exit().await, Some(0));
}

#[tokio::test]
async fn an_idle_connection_is_closed_once_the_drain_has_waited_for_it() {
    let mut s = Server::start(&["--set", "shutdown.idle_close_ms=200"], &[]).await;
    let mut c = Conn::open(s.addr).await;
    assert_eq!(c.get("/api/v1/echo").await.expect("first").status, 200);
    s.signal("TERM");
    c.closed_by_server().await;
    assert_eq!(s.wait_exit().await, Some(0));
}

#[tokio::test]
async fn a_second_sigterm_ends_the_drain_at_once() {
    // A drain delay far longer than the test's deadline: only the second signal can end it.
    let mut s = Server::start(&["--set", "shutdown.drain_delay_ms=3600000"], &[]).await;
    s.signal("TERM");
    s.wait_log("shutdown requested").await;
    s.signal("TERM");
    assert_eq!(s.wait_exit().await, Some(0));
}
