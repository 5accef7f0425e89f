//! What one connection is doing, seen by the three parts that share it: its reader (bytes of a
//! new request arrived), its service (a request began, its response is ready) and its watchdog
//! (how long has it been in this phase). The phase and its start are one atomic word, so the
//! watchdog never pairs a phase with another phase's start time.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Request, header};
use axum::response::Response;
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use super::Closed;
use crate::app::App;
use crate::state::Lifecycle;

/// Where a connection is between two requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request; nothing of it has arrived.
    Idle,
    /// The first bytes of a request arrived; its head is not complete.
    Head,
    /// A request is being served.
    Busy,
}

const PHASE_SHIFT: u32 = 62;
const MS_MASK: u64 = (1 << PHASE_SHIFT) - 1;

/// A connection's phase, when it began, and how it is going to end.
///
/// On a multiplexed (HTTP/2) connection the phase is `Busy` while any stream is open and `Idle`
/// from when the last one answered; bytes arriving (pings, settings) do not start a `Head`.
#[derive(Debug)]
pub struct Activity {
    opened: Instant,
    /// The phase in the top two bits, its start in ms since `opened` below.
    word: AtomicU64,
    requests: AtomicU64,
    closing: AtomicU8,
    multiplexed: bool,
    /// Streams being answered (multiplexed connections only).
    streams: AtomicU64,
    /// Wakes the watchdog of a multiplexed connection when a response asked it to close.
    close_requested: Notify,
}

// === impl Activity ===

impl Activity {
    pub fn new() -> Self {
        Self::with_multiplexing(false)
    }

    /// The activity of an HTTP/2 connection.
    pub fn multiplexed() -> Self {
        Self::with_multiplexing(true)
    }

    fn with_multiplexing(multiplexed: bool) -> Self {
        Self {
            opened: Instant::now(),
            word: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            closing: AtomicU8::new(0),
            multiplexed,
            streams: AtomicU64::new(0),
            close_requested: Notify::new(),
        }
    }

    fn pack(&self, phase: Phase, at: Instant) -> u64 {
        let ms = u64::try_from(at.saturating_duration_since(self.opened).as_millis()).unwrap_or(MS_MASK);
        ((phase as u64) << PHASE_SHIFT) | (ms & MS_MASK)
    }

    /// The current phase and when it began.
    pub fn phase(&self) -> (Phase, Instant) {
        let word = self.word.load(Ordering::Acquire);
        let phase = match word >> PHASE_SHIFT {
            0 => Phase::Idle,
            1 => Phase::Head,
            _ => Phase::Busy,
        };
        (phase, self.opened + Duration::from_millis(word & MS_MASK))
    }

    /// Bytes arrived: while idle, they are the start of a request's head.
    fn bytes_read(&self) {
        if self.multiplexed {
            return;
        }
        let word = self.word.load(Ordering::Relaxed);
        if word >> PHASE_SHIFT == Phase::Idle as u64 {
            let head = self.pack(Phase::Head, Instant::now());
            // Lost only to the service starting the request, which is the later phase anyway.
            let _ = self.word.compare_exchange(word, head, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    /// A request reached the service; returns its number on this connection (from 1).
    fn request_began(&self) -> u64 {
        if self.multiplexed {
            self.streams.fetch_add(1, Ordering::AcqRel);
        }
        self.word.store(self.pack(Phase::Busy, Instant::now()), Ordering::Release);
        self.requests.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn response_ready(&self) {
        // A stream that begins between the count reaching 0 and the store below leaves the
        // phase `Idle` while it runs; an idle close of a multiplexed connection is a GOAWAY,
        // which lets that stream finish.
        if self.multiplexed && self.streams.fetch_sub(1, Ordering::AcqRel) > 1 {
            return;
        }
        self.word.store(self.pack(Phase::Idle, Instant::now()), Ordering::Release);
    }

    /// The connection was told to close after its response, and why.
    fn closing(&self, reason: Closed) {
        self.closing.store(reason as u8, Ordering::Relaxed);
        if self.multiplexed {
            self.close_requested.notify_one();
        }
    }

    /// Resolves once a response asked this (multiplexed) connection to close.
    pub async fn close_requested(&self) {
        self.close_requested.notified().await;
    }

    /// Why the server asked this connection to close, if it did.
    pub fn closing_reason(&self) -> Option<Closed> {
        Closed::from_u8(self.closing.load(Ordering::Relaxed))
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

// === impl Watched ===

/// The connection's socket, telling the activity when bytes arrive.
pub struct Watched<T> {
    pub io: T,
    pub activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.bytes_read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

// === impl ConnService ===

/// The application as one connection's service: marks the activity, and asks the client to
/// close on the connection's last allowed request and on every response once the server is
/// draining: `Connection: close` on HTTP/1.1 (hyper honours it after the response); on HTTP/2
/// the watchdog sends GOAWAY, which lets open streams finish.
#[derive(Clone)]
pub struct ConnService {
    pub app: App,
    pub activity: Arc<Activity>,
    /// 0 = no limit.
    pub max_requests: u64,
    /// `Alt-Svc` advertising HTTP/3, on the TLS listener when it runs.
    pub alt_svc: Option<HeaderValue>,
}

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        let number = self.activity.request_began();
        let (app, activity, max) = (self.app, self.activity.clone(), self.max_requests);
        let alt_svc = self.alt_svc.clone();
        // Marks the response ready however the future ends: an HTTP/2 stream the client resets
        // drops it unfinished, and must not leave the connection counted busy for ever.
        let answering = Answering(activity.clone());
        Box::pin(async move {
            let _answering = answering;
            let mut res = app.serve(req).await;
            if let Some(alt_svc) = alt_svc {
                res.headers_mut().insert(header::ALT_SVC, alt_svc);
            }
            let close = if app.state().lifecycle() == Lifecycle::Draining {
                Some(Closed::drain)
            } else if max > 0 && number >= max {
                Some(Closed::max_requests)
            } else {
                None
            };
            if let Some(reason) = close {
                // A connection-specific header is malformed in HTTP/2.
                if !activity.multiplexed {
                    res.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                activity.closing(reason);
            }
            Ok(res)
        })
    }
}

/// One request being answered on a connection; its end (or its cancellation) is the response
/// being ready.
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.response_ready();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_phase_moves_idle_head_busy_idle_and_keeps_its_start() {
        let a = Activity::new();
        assert_eq!(a.phase().0, Phase::Idle);
        a.bytes_read();
        let (phase, head_at) = a.phase();
        assert_eq!(phase, Phase::Head);
        // More bytes of the same head do not restart its clock.
        a.bytes_read();
        assert_eq!(a.phase(), (Phase::Head, head_at));
        assert_eq!(a.request_began(), 1);
        assert_eq!(a.phase().0, Phase::Busy);
        // A body's bytes do not make a busy connection look like a new head.
        a.bytes_read();
        assert_eq!(a.phase().0, Phase::Busy);
        a.response_ready();
        assert_eq!(a.phase().0, Phase::Idle);
        assert_eq!(a.request_began(), 2);
        assert_eq!(a.closing_reason(), None);
        a.closing(Closed::max_requests);
        assert_eq!(a.closing_reason(), Some(Closed::max_requests));
    }

    #[test]
    fn a_stream_dropped_unfinished_is_no_longer_counted_busy() {
        let a = Arc::new(Activity::multiplexed());
        a.request_began();
        let answering = Answering(a.clone());
        assert_eq!(a.phase().0, Phase::Busy);
        drop(answering);
        assert_eq!(a.phase().0, Phase::Idle);
    }

    #[test]
    fn a_multiplexed_connection_is_busy_while_any_stream_is_open() {
        let a = Activity::multiplexed();
        // A ping or settings frame is not the start of a request.
        a.bytes_read();
        assert_eq!(a.phase().0, Phase::Idle);
        a.request_began();
        a.request_began();
        a.response_ready();
        assert_eq!(a.phase().0, Phase::Busy, "one stream still open");
        a.response_ready();
        assert_eq!(a.phase().0, Phase::Idle);
    }
}
