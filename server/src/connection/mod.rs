//! Client connections: accepting them up to a limit, the timeouts that close the ones that went
//! quiet or never finish a request head, the requests-per-connection cap, their part in the
//! drain, and why each one ended (`refserver_connections_closed_total{reason}`).
//!
//! Each connection is one task: hyper's HTTP/1 connection, and beside it a watchdog that wakes
//! only at the next deadline its phase allows (`activity`), so an idle connection costs a timer
//! and a busy one nothing per request.
//!
//! The drain (SIGTERM): from the signal on, every response carries `Connection: close`, so
//! keep-alive clients leave after their current request instead of having the connection
//! closed under them. Once the listener has closed, a connection with no request in flight is
//! closed after `shutdown.idle_close_ms` of quiet; until then a request sent on it is still
//! served.

mod activity;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

pub use self::activity::{Activity, Phase};
use self::activity::{ConnService, Watched};
use crate::app::App;
use crate::config::Config;
use crate::ids;
use crate::metrics::RejectReason;

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
    /// Closed by the drain: after a `Connection: close` response, or idle once the listener
    /// closed.
    drain,
    /// Still open when the grace period ended (or at a second signal).
    shutdown,
    /// The bytes were not an HTTP request hyper could parse; hyper answered 400, 414 or 431.
    malformed,
    /// An I/O error.
    error,
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

/// The connections a listener accepted; a permit each.
pub struct Connections {
    permits: Arc<Semaphore>,
    max: u32,
}

impl Connections {
    /// Resolves once every connection has closed.
    pub async fn closed(&self) {
        let _all = self.permits.acquire_many(self.max).await;
    }

    pub fn open(&self) -> usize {
        self.max as usize - self.permits.available_permits()
    }
}

/// Serves HTTP/1.1 connections, at most `max` at once, until `stop` leaves `Serving`; then
/// closes the listener and returns the open connections, which finish as the module says.
///
/// hyper's HTTP/1 server directly (not an auto-detecting HTTP/1+2 one): the reference server
/// speaks HTTP/1.1 to gateways and probes, and the auto builder costs about 9 % of throughput
/// (`docs/dev/benchmarks.md`). Tests serve an `App` with extra routes through it too.
pub async fn accept_until(
    listener: TcpListener,
    app: App,
    max: usize,
    mut stop: watch::Receiver<Stop>,
) -> Connections {
    let max = u32::try_from(max).unwrap_or(u32::MAX).max(1);
    let permits = Arc::new(Semaphore::new(max as usize));
    let metrics = &app.state().metrics;
    metrics.connections_max.set(i64::from(max));
    loop {
        // At the limit, wait for a connection to close before accepting: new clients wait in
        // the kernel's backlog instead of taking descriptors the open ones need.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.wait_for(|s| *s != Stop::Serving) => break,
        };
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
        tokio::spawn(serve_one(stream, app, limits, stop.clone(), permit));
    }
    drop(listener);
    Connections { permits, max }
}

/// One connection, from accept to close.
async fn serve_one(
    stream: TcpStream,
    app: App,
    limits: Limits,
    mut stop: watch::Receiver<Stop>,
    _permit: OwnedSemaphorePermit,
) {
    let metrics = &app.state().metrics;
    metrics.connections_open.inc();
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { io: stream, activity: activity.clone() });
    let service = ConnService { app, activity: activity.clone(), max_requests: limits.max_requests };
    let conn = http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    let mut draining_since = match *stop.borrow_and_update() {
        Stop::Serving => None,
        Stop::Draining | Stop::Now => Some(Instant::now()),
    };
    let reason = loop {
        let (at, reason) = limits.next_check(&activity, draining_since);
        tokio::select! {
            ended = conn.as_mut() => break ended_by(ended, &activity, app),
            changed = stop.changed() => match changed.map(|()| *stop.borrow_and_update()) {
                Ok(Stop::Serving) => {}
                Ok(Stop::Draining) => draining_since = Some(Instant::now()),
                Ok(Stop::Now) | Err(_) => break Closed::shutdown,
            },
            () = tokio::time::sleep_until(at) => {
                // Closed only if the phase that set this deadline still holds.
                let (again, still) = limits.next_check(&activity, draining_since);
                if let Some(reason) = reason
                    && still == Some(reason)
                    && again <= Instant::now()
                {
                    break reason;
                }
            }
        }
    };
    metrics.connection_closed(reason);
    metrics.connections_open.dec();
}

/// Why hyper's connection future ended.
fn ended_by(result: Result<(), hyper::Error>, activity: &Activity, app: App) -> Closed {
    match result {
        Ok(()) => activity.closing_reason().unwrap_or(Closed::client),
        Err(e) if e.is_parse() || e.is_parse_status() => {
            // hyper answered it itself (400, 414 or 431, empty body): count it and give the log
            // line an id, like every other refused request.
            let state = app.state();
            state.metrics.reject(RejectReason::malformed);
            let mut id = [0u8; 32];
            ids::write_hex(&mut id, ids::nonzero_u128());
            tracing::warn!(
                error = %e,
                request_id = std::str::from_utf8(&id).unwrap_or_default(),
                "request refused by the HTTP parser"
            );
            Closed::malformed
        }
        Err(e) if e.is_incomplete_message() || e.is_canceled() || e.is_closed() => Closed::client,
        Err(e) => {
            tracing::debug!(error = %e, "connection ended with an error");
            Closed::error
        }
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
