//! The middleware onion, in two pipelines whose steps run in this order (outermost first).
//!
//! `edge`, for every route:
//! 1. request id: honours a valid `x-request-id` (1–128 visible ASCII characters; anything else
//!    is a 400), or makes one; returned on the response.
//! 2. trace: W3C `traceparent` taken from the caller when valid (an invalid one is ignored, as
//!    the spec says) and returned with this server's span id; a `debug` span per request
//!    (method, route, request id, trace id), exported over OTLP when configured; one log line per
//!    request (`debug`, or `warn` for 5xx) carrying the ids.
//! 3. `x-refserver-version` response header.
//! 4. limits: a URI over 8 KiB is a 414, headers over 32 KiB together a 431, a declared body
//!    over `body_limit_bytes` a 413, at once; a streamed body is cut at the limit where it is
//!    read (`handlers::echo_body`). Below hyper's own limits, so these refusals get the JSON
//!    body and the ids; what hyper cannot parse at all it answers itself (`connection`).
//!
//! `api`, for the API routes and unmatched paths (probes and `/metrics` stay cheap and
//! unfaulted):
//! 5. metrics: duration histogram by method, route and status; in-flight gauge; the adaptive
//!    limiter's window. Outside everything that can answer on its own, so 429, 503, injected
//!    faults and panics are all counted.
//! 6. timeout: the live `request_timeout_ms`; 503 `timeout` when exceeded.
//! 7. admission control: 429 + `Retry-After` (see `admission`).
//! 8. faults: safepoint (stop-the-world stall), added latency, injected 500s.
//! 9. panic capture around the handler: 500 JSON, counted, and the server keeps serving.
//!
//! Each pipeline is a value with `enter` (the steps on the way in) and `finish` (on the way
//! out); `Api::run` is the one await that needs wrapping (timeout, panic capture). `app::App`
//! calls them in order. No boxed future, no state clone and no allocation per step, and a small
//! future per request: as separate layers (axum `from_fn`, one boxed future and one state clone
//! each, behind axum's router) the same steps cost a third of the server's throughput
//! (`docs/dev/benchmarks.md`).

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::Rng;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::admission::Admit;
use crate::config::{AdmissionMode, FaultConfig};
use crate::error::ApiError;
use crate::ids;
use crate::metrics::{FaultKind, RejectReason, method_label};
use crate::route::{Handled, Route};
use crate::state::AppState;
use crate::trace_context::TraceParent;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_REFSERVER_VERSION: HeaderName = HeaderName::from_static("x-refserver-version");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The longest URI (path and query) answered; longer is a 414. hyper's own limit is 64 KiB.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry; more is a 431. hyper's own
/// limit is its read buffer, about 400 KiB.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

// === edge pipeline ===

/// Steps 1–4 for one request, between `enter` and `finish`.
pub struct Edge {
    started: Instant,
    request_id: HeaderValue,
    method: Method,
    ids: TraceParent,
    /// Disabled (`Span::none()`, entered for nothing) when the log level is above `debug` and
    /// nothing exports.
    span: tracing::Span,
}

impl Edge {
    /// Steps 1 (request id; a bad one is refused here, with a 400) and 2 (trace).
    // The refusal is the response itself, returned at once; boxing it buys nothing.
    #[allow(clippy::result_large_err)]
    pub fn enter<B>(state: &AppState, route: Route, req: &Request<B>) -> Result<Self, Response> {
        let started = Instant::now();
        let request_id = match req.headers().get(&X_REQUEST_ID) {
            Some(v) => match valid_request_id(v) {
                Ok(()) => v.clone(),
                Err(reason) => {
                    state.metrics.reject(RejectReason::bad_request);
                    return Err(
                        ApiError::bad_request(format!("header x-request-id: {reason}")).into_response()
                    );
                }
            },
            None => new_request_id(),
        };
        let method = req.method().clone();
        let parent = TraceParent::from_headers(req.headers());
        let span = tracing::debug_span!(
            "request",
            http.request.method = %method,
            http.route = route.label(),
            request_id = request_id.to_str().unwrap_or_default(),
            trace_id = tracing::field::Empty,
        );
        let ids = trace_ids(&span, parent.as_ref());
        if !span.is_disabled() {
            span.record("trace_id", tracing::field::display(ids.trace_id_hex()));
        }
        Ok(Self { started, request_id, method, ids, span })
    }

    /// The request's span, to run the rest in.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// When the request arrived.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Step 4: a URI, headers or declared body over their limits are refused (answered through
    /// `finish`, so the refusal carries the ids and is logged).
    #[allow(clippy::result_large_err)]
    pub fn check_limits<B>(&self, state: &AppState, req: &Request<B>) -> Result<(), Response> {
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > MAX_URI_BYTES {
            let _entered = self.span.enter();
            state.metrics.reject(RejectReason::uri_too_long);
            return Err(ApiError::new(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("the URI is {uri_len} bytes, over the limit of {MAX_URI_BYTES}"),
            )
            .into_response());
        }
        let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
        if header_bytes > MAX_HEADER_BYTES {
            let _entered = self.span.enter();
            state.metrics.reject(RejectReason::headers_too_large);
            return Err(ApiError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!(
                    "the headers are {header_bytes} bytes together, over the limit of {MAX_HEADER_BYTES}"
                ),
            )
            .into_response());
        }
        let Some(len) = req.headers().get(header::CONTENT_LENGTH) else { return Ok(()) };
        let limit = state.config.load().body_limit_bytes;
        let _entered = self.span.enter();
        match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            None => {
                state.metrics.reject(RejectReason::bad_request);
                Err(ApiError::bad_request("header content-length: not a number").into_response())
            }
            Some(n) if n > limit as u64 => {
                state.metrics.reject(RejectReason::body_too_large);
                Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body of {n} bytes is over the limit of {limit} bytes"),
                )
                .into_response())
            }
            Some(_) => Ok(()),
        }
    }

    /// Steps 1–3 on the way out: the ids and the version on the response, and the log line.
    pub fn finish(self, state: &AppState, route: Route, mut res: Response) -> Response {
        let headers = res.headers_mut();
        headers.insert(X_REQUEST_ID.clone(), self.request_id.clone());
        headers.insert(TRACEPARENT.clone(), self.ids.header_value());
        headers.insert(X_REFSERVER_VERSION.clone(), state.version_header.clone());
        let _entered = self.span.enter();
        log_request(&res, self.started, &self.method, route.label(), &self.request_id, &self.ids);
        res
    }
}

fn valid_request_id(v: &HeaderValue) -> Result<(), &'static str> {
    let bytes = v.as_bytes();
    if bytes.is_empty() || bytes.len() > 128 {
        return Err("must be 1 to 128 characters long");
    }
    if !bytes.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err("must be visible ASCII without spaces");
    }
    Ok(())
}

fn new_request_id() -> HeaderValue {
    let mut hex = [0u8; 32];
    ids::write_hex(&mut hex, ids::nonzero_u128());
    // 32 lowercase hex digits are always a valid header value.
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// This request's trace context. When the span is exported (OTLP on), the exported span's ids
/// are the ones propagated; otherwise they are made here.
fn trace_ids(span: &tracing::Span, parent: Option<&TraceParent>) -> TraceParent {
    if span.is_disabled() {
        return TraceParent::child_of(parent);
    }
    if let Some(p) = parent {
        let remote = SpanContext::new(
            TraceId::from(p.trace_id),
            SpanId::from(p.span_id),
            if p.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() },
            true,
            TraceState::default(),
        );
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        TraceParent {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
        }
    } else {
        TraceParent::child_of(parent)
    }
}

fn log_request(
    res: &Response,
    started: Instant,
    method: &Method,
    route: &str,
    request_id: &HeaderValue,
    ids: &TraceParent,
) {
    // The fields are computed only when the line is logged (at `info`, one per failure).
    let status = res.status().as_u16();
    let elapsed_ms = || started.elapsed().as_secs_f64() * 1000.0;
    let request_id = request_id.to_str().unwrap_or_default();
    if status >= 500 {
        tracing::warn!(status, elapsed_ms = elapsed_ms(), %method, route, request_id, trace_id = %ids.trace_id_hex(), "request finished");
    } else {
        tracing::debug!(status, elapsed_ms = elapsed_ms(), %method, route, request_id, trace_id = %ids.trace_id_hex(), "request finished");
    }
}

// === api pipeline ===

/// Steps 5–9 for one request, between `enter` and `finish`. Dropping it (the client went away)
/// still takes the request out of the in-flight gauge.
pub struct Api<'a> {
    state: &'a AppState,
    route: Route,
    started: Instant,
    /// The `http_request_method` label, worked out once.
    method: &'static str,
    limit: Duration,
    admission: AdmissionMode,
    adaptive: bool,
    fault: FaultConfig,
}

impl<'a> Api<'a> {
    /// Step 5 on the way in, and the settings this request uses, copied out of the live
    /// configuration (cheaper than holding a reference-counted snapshot across awaits).
    pub fn enter<B>(state: &'a AppState, route: Route, req: &Request<B>, started: Instant) -> Self {
        state.metrics.in_flight.inc();
        let config = state.config.load();
        Self {
            state,
            route,
            started,
            method: method_label(req.method()),
            limit: Duration::from_millis(config.request_timeout_ms),
            admission: config.admission.mode,
            adaptive: config.admission.adaptive,
            fault: config.fault.clone(),
        }
    }

    /// Step 6 (timeout) around 7 (admission), 8 (faults) and 9 (the handler, panics caught).
    ///
    /// The handler answers at once or hands back the future of a handler that waits; only
    /// what waits gets a timer (making one reaches the runtime's shared handle) and a place in
    /// this future (kept small: a request's future is moved several times before it runs).
    pub async fn run<F>(&self, handler: F) -> Response
    where
        F: FnOnce() -> Handled,
    {
        let (state, admission, fault) = (self.state, self.admission, &self.fault);
        let deadline = tokio::time::Instant::from_std(self.started + self.limit);
        // The steps that can wait are boxed and taken only when configured.
        let may_wait = admission != AdmissionMode::Off
            || fault.pause_ms > 0
            || fault.latency_ms > 0
            || fault.latency_jitter_ms > 0;
        if may_wait {
            // A panic here is answered and counted like one in the handler, not left to kill the
            // connection.
            let waiting = AssertUnwindSafe(Box::pin(admit_and_delay(state, admission, fault))).catch_unwind();
            match tokio::time::timeout_at(deadline, waiting).await {
                Ok(Ok(None)) => {}
                Ok(Ok(Some(rejected))) => return rejected,
                Ok(Err(payload)) => return panic_response(state, payload.as_ref()),
                Err(_) => return self.timed_out(),
            }
        }
        if fault.error_ratio > 0.0 && rand::rng().random_bool(fault.error_ratio) {
            state.metrics.fault(FaultKind::error);
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "injected_fault",
                "fault injected on purpose",
            )
            .into_response();
        }
        // The handler is the last step: a panic in it cannot leave the state above half-changed.
        match std::panic::catch_unwind(AssertUnwindSafe(handler)) {
            Err(payload) => panic_response(state, payload.as_ref()),
            Ok(Handled::Now(res)) => res,
            Ok(Handled::Later(waiting)) => {
                match tokio::time::timeout_at(deadline, AssertUnwindSafe(waiting).catch_unwind()).await {
                    Ok(Ok(res)) => res,
                    Ok(Err(payload)) => panic_response(state, payload.as_ref()),
                    Err(_) => self.timed_out(),
                }
            }
        }
    }

    fn timed_out(&self) -> Response {
        self.state.metrics.reject(RejectReason::timeout);
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("request took longer than {} ms", self.limit.as_millis()),
        )
        .into_response()
    }

    /// Step 5 on the way out.
    pub fn finish(self, res: Response) -> Response {
        let elapsed = self.started.elapsed();
        let status = res.status().as_u16();
        self.state.metrics.observe_request(self.method, self.route.label(), status, elapsed);
        // Only the adaptive limiter reads the window; skip the lock otherwise.
        if self.adaptive {
            self.state.window.lock().record(elapsed, status >= 500);
        }
        res
    }
}

impl Drop for Api<'_> {
    fn drop(&mut self) {
        self.state.metrics.in_flight.dec();
    }
}

/// Step 7 (admission control) and the waiting faults of step 8 (safepoint, added latency):
/// `Some` when the request is turned away.
async fn admit_and_delay(
    state: &AppState,
    admission: AdmissionMode,
    fault: &FaultConfig,
) -> Option<Response> {
    if admission != AdmissionMode::Off {
        let decision = state.admission.lock().admit(Instant::now());
        match decision {
            Admit::Now => {}
            Admit::After(wait) => tokio::time::sleep(wait).await,
            Admit::Reject { retry_after, shaped } => {
                let reason = if shaped { RejectReason::shaper_full } else { RejectReason::rate_limited };
                state.metrics.reject(reason);
                return Some(
                    ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        "over the admitted request rate; retry later",
                    )
                    .retry_after(retry_after)
                    .into_response(),
                );
            }
        }
    }
    // Pass the safepoint: an injected stop-the-world stall holds requests here. Without a
    // configured stall there is nothing to wait for, and the shared lock is not touched.
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
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id(&HeaderValue::from_static("abc-123")).is_ok());
        assert!(valid_request_id(&HeaderValue::from_static("has space")).is_err());
        let long = "x".repeat(129);
        assert!(valid_request_id(&HeaderValue::from_str(&long).expect("ascii")).is_err());
        assert!(valid_request_id(&new_request_id()).is_ok());
    }
}
