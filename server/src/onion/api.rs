//! Steps 5–9, for the API routes and unmatched paths.

use std::any::Any;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::future::{BoxFuture, Either};
use pin_project_lite::pin_project;
use rand::Rng;
use tower::Service;

use super::future::Answered;
use super::{Ctx, ready_as_inner, step_layer};
use crate::admission::Admit;
use crate::config::{AdmissionMode, FaultConfig};
use crate::error::ApiError;
use crate::metrics::{FaultKind, RejectReason, method_label};
use crate::route::Route;
use crate::state::AppState;

/// An answer at once, or the inside's future, or a boxed wait (only when configured to wait).
type MayWait<F> = Either<F, Either<Ready<Answered>, BoxFuture<'static, Answered>>>;

// === 5. metrics ===

step_layer!(
    /// Step 5: the duration histogram, the in-flight gauge and the adaptive limiter's window.
    MetricsLayer => Metrics
);

impl<B, S> Service<Ctx<B>> for Metrics<S>
where
    S: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Measured<S::Future>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        let state = self.state;
        state.metrics.in_flight.inc();
        let (route, method, started, adaptive) =
            (ctx.route, method_label(ctx.req.method()), ctx.started, ctx.settings.adaptive);
        Measured { inner: self.inner.call(ctx), in_flight: InFlight(state), route, method, started, adaptive }
    }
}

/// Takes the request out of the in-flight gauge however it ends (also when the client goes).
struct InFlight(&'static AppState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.in_flight.dec();
    }
}

pin_project! {
    pub struct Measured<F> {
        #[pin]
        inner: F,
        in_flight: InFlight,
        route: Route,
        method: &'static str,
        started: Instant,
        adaptive: bool,
    }
}

impl<F: Future<Output = Answered>> Future for Measured<F> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx))?;
        let elapsed = this.started.elapsed();
        let status = res.status().as_u16();
        let state = this.in_flight.0;
        state.metrics.observe_request(this.method, this.route.label(), status, elapsed);
        // Only the adaptive limiter reads the window; skip the lock otherwise.
        if *this.adaptive {
            state.window.lock().record(elapsed, status >= 500);
        }
        Poll::Ready(Ok(res))
    }
}

// === 6. panic capture ===

step_layer!(
    /// Step 6: a panic anywhere inside is a 500, counted, and the server keeps serving.
    CatchPanicLayer => CatchPanic
);

impl<B, S> Service<Ctx<B>> for CatchPanic<S>
where
    S: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Ready<Answered>, Caught<S::Future>>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        let inner = &mut self.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.call(ctx))) {
            Ok(fut) => Either::Right(Caught { inner: fut, state: self.state }),
            Err(payload) => Either::Left(ready(Ok(panic_response(self.state, payload.as_ref())))),
        }
    }
}

pin_project! {
    pub struct Caught<F> {
        #[pin]
        inner: F,
        state: &'static AppState,
    }
}

impl<F: Future<Output = Answered>> Future for Caught<F> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let mut this = self.project();
        // After a panic the inside is answered for and never polled again.
        match catch_unwind(AssertUnwindSafe(|| this.inner.as_mut().poll(cx))) {
            Ok(polled) => polled,
            Err(payload) => Poll::Ready(Ok(panic_response(this.state, payload.as_ref()))),
        }
    }
}

fn panic_response(state: &AppState, payload: &(dyn Any + Send)) -> Response {
    state.metrics.panics.inc();
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error").into_response()
}

// === 7. timeout ===

step_layer!(
    /// Step 7: the request timeout.
    TimeoutLayer => Timeout
);

impl<B, S> Service<Ctx<B>> for Timeout<S>
where
    S: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = TimedOut<S::Future>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        let limit = ctx.settings.timeout;
        let deadline = tokio::time::Instant::from_std(ctx.started + limit);
        TimedOut { inner: self.inner.call(ctx), sleep: None, deadline, limit, state: self.state }
    }
}

pin_project! {
    /// The inside, or a 503 at the deadline. The timer is made on the first `Pending` only:
    /// making one reaches the runtime's shared timer, and most requests answer at once.
    pub struct TimedOut<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        deadline: tokio::time::Instant,
        limit: Duration,
        state: &'static AppState,
    }
}

impl<F: Future<Output = Answered>> Future for TimedOut<F> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let mut this = self.project();
        if let Poll::Ready(res) = this.inner.poll(cx) {
            return Poll::Ready(res);
        }
        if this.sleep.is_none() {
            this.sleep.set(Some(tokio::time::sleep_until(*this.deadline)));
        }
        match this.sleep.as_pin_mut().map(|sleep| sleep.poll(cx)) {
            Some(Poll::Ready(())) => {
                this.state.metrics.reject(RejectReason::timeout);
                let why = format!("request took longer than {} ms", this.limit.as_millis());
                Poll::Ready(
                    Ok(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", why).into_response()),
                )
            }
            _ => Poll::Pending,
        }
    }
}

// === 8. admission ===

step_layer!(
    /// Step 8: admission control.
    AdmissionLayer => Admission
);

impl<B, S> Service<Ctx<B>> for Admission<S>
where
    B: Send + 'static,
    S: Service<Ctx<B>, Response = Response, Error = Infallible, Future: Send> + Copy + Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MayWait<S::Future>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        if ctx.settings.admission == AdmissionMode::Off {
            return Either::Left(self.inner.call(ctx));
        }
        let decision = self.state.admission.lock().admit(Instant::now());
        match decision {
            Admit::Now => Either::Left(self.inner.call(ctx)),
            Admit::After(wait) => {
                let mut inner = self.inner;
                Either::Right(Either::Right(Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    inner.call(ctx).await
                })))
            }
            Admit::Reject { retry_after, shaped } => {
                let reason = if shaped { RejectReason::shaper_full } else { RejectReason::rate_limited };
                self.state.metrics.reject(reason);
                let refused = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "over the admitted request rate; retry later",
                )
                .retry_after(retry_after);
                Either::Right(Either::Left(ready(Ok(refused.into_response()))))
            }
        }
    }
}

// === 9. faults ===

step_layer!(
    /// Step 9: injected faults.
    FaultsLayer => Faults
);

impl<B, S> Service<Ctx<B>> for Faults<S>
where
    B: Send + 'static,
    S: Service<Ctx<B>, Response = Response, Error = Infallible, Future: Send> + Copy + Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MayWait<S::Future>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        let fault = &ctx.settings.fault;
        if fault.pause_ms > 0 || fault.latency_ms > 0 || fault.latency_jitter_ms > 0 {
            let (state, mut inner, fault) = (self.state, self.inner, fault.clone());
            return Either::Right(Either::Right(Box::pin(async move {
                delay(state, &fault).await;
                match injected_error(state, fault.error_ratio) {
                    Some(res) => Ok(res),
                    None => inner.call(ctx).await,
                }
            })));
        }
        match injected_error(self.state, fault.error_ratio) {
            Some(res) => Either::Right(Either::Left(ready(Ok(res)))),
            None => Either::Left(self.inner.call(ctx)),
        }
    }
}

/// The waiting faults: the safepoint (an injected stop-the-world stall holds requests here) and
/// added latency.
async fn delay(state: &AppState, fault: &FaultConfig) {
    if fault.pause_ms > 0 {
        drop(state.safepoint.read().await);
    }
    if fault.latency_ms > 0 || fault.latency_jitter_ms > 0 {
        let jitter = if fault.latency_jitter_ms > 0 {
            rand::rng().random_range(0..=fault.latency_jitter_ms)
        } else {
            0
        };
        state.metrics.fault(FaultKind::latency);
        tokio::time::sleep(Duration::from_millis(fault.latency_ms + jitter)).await;
    }
}

fn injected_error(state: &AppState, ratio: f64) -> Option<Response> {
    if ratio > 0.0 && rand::rng().random_bool(ratio) {
        state.metrics.fault(FaultKind::error);
        let error =
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "injected_fault", "fault injected on purpose");
        return Some(error.into_response());
    }
    None
}
