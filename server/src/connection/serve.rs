//! One connection from accept to close: the TLS handshake, the protocol (HTTP/1.1, h2c, or what
//! ALPN chose), and the watchdog that closes it when its phase's deadline passes or the server
//! drains.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderValue;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::time::Instant;

use super::activity::{Activity, ConnService, Phase, Watched};
use super::{Closed, Limits, Stop, Transport};
use crate::app::App;
use crate::ids;
use crate::metrics::{Protocol, RejectReason};

/// One connection, from accept to close.
pub(super) async fn serve_one(
    stream: TcpStream,
    transport: Transport,
    app: App,
    limits: Limits,
    stop: watch::Receiver<Stop>,
    _permit: OwnedSemaphorePermit,
) {
    let metrics = &app.state().metrics;
    metrics.connections_open.inc();
    let _ = stream.set_nodelay(true);
    let reason = match transport {
        Transport::Plain => {
            let h2c = app.state().config.load().http2.h2c;
            if h2c && sends_h2_preface(&stream, limits.header_read).await {
                serve_h2(stream, Protocol::h2c, None, app, limits, stop).await
            } else {
                serve_h1(stream, Protocol::http1, None, app, limits, stop).await
            }
        }
        Transport::Tls(tls) => {
            let acceptor =
                if app.state().config.load().http2.enabled { &tls.with_h2 } else { &tls.http1_only };
            match tokio::time::timeout(limits.header_read, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let alt_svc = tls.alt_svc.clone();
                    if stream.get_ref().1.alpn_protocol() == Some(crate::tls::ALPN_H2) {
                        serve_h2(stream, Protocol::h2, alt_svc, app, limits, stop).await
                    } else {
                        serve_h1(stream, Protocol::https1, alt_svc, app, limits, stop).await
                    }
                }
                Ok(Err(e)) => {
                    metrics.tls_handshake_failures.inc();
                    tracing::debug!(error = %e, "TLS handshake failed");
                    Closed::handshake
                }
                Err(_) => {
                    metrics.tls_handshake_failures.inc();
                    Closed::header_timeout
                }
            }
        }
    };
    metrics.connection_closed(reason);
    metrics.connections_open.dec();
}

/// The client preface of HTTP/2 with prior knowledge (RFC 9113, 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether the connection's first bytes are the HTTP/2 preface; looks without reading them.
/// Gives up (HTTP/1.1) once the bytes differ, the client closes, or `within` passes.
async fn sends_h2_preface(stream: &TcpStream, within: Duration) -> bool {
    let look = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if buf[..n] != H2_PREFACE[..n] {
                return false;
            }
            if n == H2_PREFACE.len() {
                return true;
            }
            // Part of the preface: the socket stays readable, so wait a moment for the rest.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    };
    tokio::time::timeout(within, look).await.unwrap_or(false)
}

async fn serve_h1<I>(
    io: I,
    protocol: Protocol,
    alt_svc: Option<HeaderValue>,
    app: App,
    limits: Limits,
    stop: watch::Receiver<Stop>,
) -> Closed
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    app.state().metrics.connection_opened(protocol);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched { io, activity: activity.clone() });
    let service = ConnService { app, activity: activity.clone(), max_requests: limits.max_requests, alt_svc };
    let conn = http1::Builder::new().serve_connection(io, service);
    drive(conn, &activity, app, limits, stop).await
}

async fn serve_h2<I>(
    io: I,
    protocol: Protocol,
    alt_svc: Option<HeaderValue>,
    app: App,
    limits: Limits,
    stop: watch::Receiver<Stop>,
) -> Closed
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    app.state().metrics.connection_opened(protocol);
    let activity = Arc::new(Activity::multiplexed());
    let service = ConnService { app, activity: activity.clone(), max_requests: limits.max_requests, alt_svc };
    let streams = app.state().config.load().http2.max_concurrent_streams;
    let conn = http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(streams)
        .serve_connection(TokioIo::new(io), service);
    drive(conn, &activity, app, limits, stop).await
}

/// A served connection that can be asked to finish what it has and close.
trait Served: Future<Output = Result<(), hyper::Error>> {
    /// Multiplexed connections close by GOAWAY (open streams finish) instead of being dropped.
    const MULTIPLEXED: bool;
    fn finish_and_close(self: Pin<&mut Self>);
}

impl<I, S> Served for http1::Connection<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    const MULTIPLEXED: bool = false;
    fn finish_and_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

impl<I, S, E> Served for http2::Connection<I, S, E>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: hyper::body::Body + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    const MULTIPLEXED: bool = true;
    fn finish_and_close(self: Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

/// Polls the connection beside its watchdog until it ends, and says why it did.
///
/// An HTTP/1.1 connection past a deadline is dropped (its phase says no request is being
/// answered); an HTTP/2 one gets GOAWAY and ends once its open streams have.
async fn drive<C: Served>(
    conn: C,
    activity: &Activity,
    app: App,
    limits: Limits,
    mut stop: watch::Receiver<Stop>,
) -> Closed {
    tokio::pin!(conn);
    let mut draining_since = match *stop.borrow_and_update() {
        Stop::Serving => None,
        Stop::Draining | Stop::Now => Some(Instant::now()),
    };
    // The reason a GOAWAY was sent for, and when (multiplexed connections).
    let mut closing: Option<(Closed, Instant)> = None;
    if C::MULTIPLEXED && draining_since.is_some() {
        conn.as_mut().finish_and_close();
        closing = Some((Closed::drain, Instant::now()));
    }
    loop {
        let (at, reason) = match closing {
            // GOAWAY sent: the connection ends when its streams do. A client that neither
            // answers the GOAWAY's ping nor closes is dropped once no stream has been open for
            // `header_read` (or at `Stop::Now`); an open stream is never cut here.
            Some((why, sent)) => match activity.phase() {
                (Phase::Idle, since) => (Instant::from_std(since).max(sent) + limits.header_read, Some(why)),
                _ => (Instant::now() + limits.header_read, None),
            },
            None => limits.next_check(activity, draining_since),
        };
        tokio::select! {
            ended = conn.as_mut() => {
                return match closing {
                    Some((reason, _)) => reason,
                    None => ended_by(ended, activity, app),
                };
            }
            changed = stop.changed() => match changed.map(|()| *stop.borrow_and_update()) {
                Ok(Stop::Serving) => {}
                Ok(Stop::Draining) => {
                    draining_since = Some(Instant::now());
                    if C::MULTIPLEXED && closing.is_none() {
                        conn.as_mut().finish_and_close();
                        closing = Some((Closed::drain, Instant::now()));
                    }
                }
                Ok(Stop::Now) | Err(_) => return Closed::shutdown,
            },
            () = activity.close_requested(), if C::MULTIPLEXED && closing.is_none() => {
                conn.as_mut().finish_and_close();
                closing = Some((activity.closing_reason().unwrap_or(Closed::drain), Instant::now()));
            }
            () = tokio::time::sleep_until(at) => {
                if let Some((why, sent)) = closing {
                    // Still no stream open, long after the GOAWAY: drop it.
                    let (phase, since) = activity.phase();
                    let quiet_until = Instant::from_std(since).max(sent) + limits.header_read;
                    if phase == Phase::Idle && quiet_until <= Instant::now() {
                        return why;
                    }
                    continue;
                }
                // Closed only if the phase that set this deadline still holds.
                let (again, still) = limits.next_check(activity, draining_since);
                if let Some(reason) = reason
                    && still == Some(reason)
                    && again <= Instant::now()
                {
                    if !C::MULTIPLEXED {
                        return reason;
                    }
                    conn.as_mut().finish_and_close();
                    closing = Some((reason, Instant::now()));
                }
            }
        }
    }
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
