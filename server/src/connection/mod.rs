//! Client connections: accepting them up to a limit, the timeouts that close the ones that went
//! quiet or never finish a request head, the requests-per-connection cap, their part in the
//! drain, and why each one ended (`refserver_connections_closed_total{reason}`).
//!
//! A listener is plain (HTTP/1.1, and h2c when it is on) or TLS 1.3 (HTTP/2 or HTTP/1.1, as
//! ALPN chose); HTTP/3 has its own listener (`http3`). Each connection is one task: hyper's
//! connection, and beside it a watchdog that wakes
//! only at the next deadline its phase allows (`activity`), so an idle connection costs a timer
//! and a busy one nothing per request.
//!
//! The drain (SIGTERM): from the signal on, every response carries `Connection: close`, so
//! keep-alive clients leave after their current request instead of having the connection
//! closed under them. Once the listener has closed, a connection with no request in flight is
//! closed after `shutdown.idle_close_ms` of quiet; until then a request sent on it is still
//! served.

mod activity;
mod serve;

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub use self::activity::{Activity, Phase};
use crate::app::App;
use crate::config::Config;

/// Where the server is in stopping; connections watch it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    Serving,
    /// The listener has closed; connections finish and close.
    Draining,
    /// The grace period is over, or a second signal came: drop every connection now.
    Now,
}

/// Why a connection ended: the `reason` label of `refserver_connections_closed_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
#[repr(u8)]
pub enum Closed {
    /// The client closed it (or went away mid-request).
    client = 1,
    /// Nothing arrived for `connections.idle_timeout_ms`.
    idle,
    /// A request head took longer than `connections.header_read_timeout_ms`.
    header_timeout,
    /// It served `connections.max_requests`.
    max_requests,
    /// Closed by the drain: after a `Connection: close` response (GOAWAY on HTTP/2), or idle
    /// once the listener closed.
    drain,
    /// Still open when the grace period ended (or at a second signal).
    shutdown,
    /// The bytes were not an HTTP request hyper could parse; hyper answered 400, 414 or 431.
    malformed,
    /// An I/O error.
    error,
    /// The TLS handshake failed (no common protocol version or ALPN, a client that does not
    /// trust the certificate, bytes that are not TLS).
    handshake,
}

impl Closed {
    fn from_u8(v: u8) -> Option<Self> {
        [
            Self::client,
            Self::idle,
            Self::header_timeout,
            Self::max_requests,
            Self::drain,
            Self::shutdown,
            Self::malformed,
            Self::error,
            Self::handshake,
        ]
        .into_iter()
        .find(|c| *c as u8 == v)
    }
}

/// The per-connection limits, read from the live configuration when a connection is accepted
/// (a reload applies to the connections accepted after it).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub idle: Duration,
    pub header_read: Duration,
    pub max_requests: u64,
    pub idle_close: Duration,
}

impl Limits {
    pub fn from_config(c: &Config) -> Self {
        Self {
            idle: Duration::from_millis(c.connections.idle_timeout_ms),
            header_read: Duration::from_millis(c.connections.header_read_timeout_ms),
            max_requests: c.connections.max_requests,
            idle_close: Duration::from_millis(c.shutdown.idle_close_ms),
        }
    }

    /// When the watchdog must look next, and the reason to close if the phase is unchanged then.
    fn next_check(&self, activity: &Activity, draining_since: Option<Instant>) -> (Instant, Option<Closed>) {
        let (phase, since) = activity.phase();
        let since = Instant::from_std(since);
        match (phase, draining_since) {
            (Phase::Idle, Some(drain)) => (since.max(drain) + self.idle_close, Some(Closed::drain)),
            (Phase::Idle, None) => (since + self.idle, Some(Closed::idle)),
            (Phase::Head, _) => (since + self.header_read, Some(Closed::header_timeout)),
            // A request's own time limit is the request timeout's business; look again later.
            (Phase::Busy, _) => (Instant::now() + self.idle.min(self.header_read), None),
        }
    }
}

/// The most connections the process can hold: the configured figure, or the open-file limit
/// less 64 descriptors kept for the listener, the configuration file, logs and telemetry.
pub fn max_connections(config: &Config) -> usize {
    if config.connections.max > 0 {
        return config.connections.max;
    }
    open_file_limit().map_or(1024, |limit| limit.saturating_sub(64).max(16))
}

/// The soft limit on open files, from `/proc/self/limits` (no system call binding needed).
fn open_file_limit() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line.trim_start_matches("Max open files").split_whitespace().next()?;
    soft.parse().ok()
}

/// The connections of every listener; a permit each, so `connections.max` holds for them
/// together.
#[derive(Clone)]
pub struct Connections {
    permits: Arc<Semaphore>,
    max: u32,
}

impl Connections {
    pub fn new(max: usize) -> Self {
        let max = u32::try_from(max).unwrap_or(u32::MAX).max(1);
        Self { permits: Arc::new(Semaphore::new(max as usize)), max }
    }

    /// Resolves once every connection has closed.
    pub async fn closed(&self) {
        let _all = self.permits.acquire_many(self.max).await;
    }

    pub fn open(&self) -> usize {
        self.max as usize - self.permits.available_permits()
    }

    /// A permit for one more connection, waiting while all are taken; `None` once `stop` leaves
    /// `Serving`. At the limit a listener waits here before accepting, so new clients wait in
    /// the kernel's backlog instead of taking descriptors the open ones need.
    pub async fn permit(&self, stop: &mut watch::Receiver<Stop>) -> Option<OwnedSemaphorePermit> {
        tokio::select! {
            permit = self.permits.clone().acquire_owned() => permit.ok(),
            _ = stop.wait_for(|s| *s != Stop::Serving) => None,
        }
    }
}

/// How a listener's connections begin.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP: HTTP/1.1, and HTTP/2 with prior knowledge when `http2.h2c` is on.
    Plain,
    /// TLS 1.3, then the protocol ALPN chose.
    Tls(Arc<TlsListener>),
}

/// What the TLS listener needs per connection.
pub struct TlsListener {
    /// Offers `h2` and `http/1.1`.
    pub with_h2: TlsAcceptor,
    /// Offers `http/1.1` only (`http2.enabled: false`).
    pub http1_only: TlsAcceptor,
    /// `Alt-Svc` advertising HTTP/3, when it runs.
    pub alt_svc: Option<HeaderValue>,
}

/// Serves connections from `listener`, at most `connections.max` at once across listeners,
/// until `stop` leaves `Serving`; then closes the listener. The open connections finish as the
/// module says; `Connections::closed` tells when they have.
///
/// HTTP/1.1 is hyper's HTTP/1 server directly (not an auto-detecting HTTP/1+2 one, which costs
/// about 9 % of throughput, `docs/dev/benchmarks.md`); h2c is told apart by peeking at the
/// first bytes, only when it is on. Tests serve an `App` with extra routes through it too.
pub async fn accept_until(
    listener: TcpListener,
    transport: Transport,
    app: App,
    connections: &Connections,
    mut stop: watch::Receiver<Stop>,
) {
    app.state().metrics.connections_max.set(i64::from(connections.max));
    loop {
        let Some(permit) = connections.permit(&mut stop).await else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s != Stop::Serving) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors and similar: keep serving the open connections and
                // try again shortly instead of spinning or exiting.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let limits = Limits::from_config(&app.state().config.load());
        tokio::spawn(serve::serve_one(stream, transport.clone(), app, limits, stop.clone(), permit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_survives_the_round_trip_through_the_activity() {
        for reason in [
            Closed::client,
            Closed::idle,
            Closed::header_timeout,
            Closed::max_requests,
            Closed::drain,
            Closed::shutdown,
            Closed::malformed,
            Closed::error,
            Closed::handshake,
        ] {
            assert_eq!(Closed::from_u8(reason as u8), Some(reason));
        }
        assert_eq!(Closed::from_u8(0), None);
    }

    #[test]
    fn the_open_file_limit_is_read() {
        // Linux always has the line; the limit is at least the three standard streams.
        assert!(open_file_limit().is_some_and(|n| n >= 3));
        let mut c = Config::default();
        assert!(max_connections(&c) >= 16);
        c.connections.max = 7;
        assert_eq!(max_connections(&c), 7);
    }

    #[tokio::test]
    async fn the_deadline_follows_the_phase() {
        let limits = Limits {
            idle: Duration::from_secs(60),
            header_read: Duration::from_secs(10),
            max_requests: 0,
            idle_close: Duration::from_secs(1),
        };
        let a = Activity::new();
        let (_, reason) = limits.next_check(&a, None);
        assert_eq!(reason, Some(Closed::idle));
        let (_, reason) = limits.next_check(&a, Some(Instant::now()));
        assert_eq!(reason, Some(Closed::drain));
    }
}
