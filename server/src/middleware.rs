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
//! 4. body limit: a declared body over `body_limit_bytes` is a 413 at once; a streamed one is cut
//!    at the limit by the extractors (`DefaultBodyLimit`, see `app`).
//!
//! `api`, for the API routes only (probes and `/metrics` stay cheap and unfaulted):
//! 5. metrics: duration histogram by method, route and status; in-flight gauge; the adaptive
//!    limiter's window. Outside everything that can answer on its own, so 429, 503, injected
//!    faults and panics are all counted.
//! 6. timeout: the live `request_timeout_ms`; 503 `timeout` when exceeded.
//! 7. admission control: 429 + `Retry-After` (see `admission`).
//! 8. faults: safepoint (stop-the-world stall), added latency, injected 500s.
//! 9. panic capture (`CatchPanicLayer` around the handler, see `app`): 500 JSON, counted, and
//!    the server keeps serving.
//!
//! Each pipeline is one middleware function calling its steps in order: one boxed future and one
//! state clone per pipeline instead of per step, which is most of the onion's cost at high rates
//! (see `docs/benchmarks.md`).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use rand::Rng;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::admission::Admit;
use crate::config::{AdmissionMode, FaultConfig};
use crate::error::ApiError;
use crate::metrics::{FaultKind, RejectReason, RequestLabels};
use crate::state::AppState;
use crate::trace_context::TraceParent;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_REFSERVER_VERSION: HeaderName = HeaderName::from_static("x-refserver-version");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

// === edge pipeline ===

pub async fn edge(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    // 1. request id
    let request_id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) => match valid_request_id(v) {
            Ok(()) => v.clone(),
            Err(reason) => {
                state.metrics.reject(RejectReason::bad_request);
                return ApiError::bad_request(format!("header x-request-id: {reason}")).into_response();
            }
        },
        None => new_request_id(),
    };
    // 2. trace
    let route = route_of(&req);
    let method = req.method().clone();
    let parent = TraceParent::from_headers(req.headers());
    let span = tracing::debug_span!(
        "request",
        http.request.method = %method,
        http.route = %route,
        request_id = request_id.to_str().unwrap_or_default(),
        trace_id = tracing::field::Empty,
    );
    let ids = trace_ids(&span, parent.as_ref());
    if !span.is_disabled() {
        span.record("trace_id", tracing::field::display(ids.trace_id_hex()));
    }
    // 4. body limit (inside the span, so a 413 is logged with the ids)
    let mut res = match check_body_limit(&state, &req) {
        Ok(()) => next.run(req).instrument(span).await,
        Err(rejected) => rejected.into_response(),
    };
    // 1–3 on the way out.
    let headers = res.headers_mut();
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
    headers.insert(TRACEPARENT.clone(), ids.header_value());
    headers.insert(X_REFSERVER_VERSION.clone(), state.version_header.clone());
    log_request(&res, started, &method, &route, &request_id, &ids);
    res
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
    let n: u128 = rand::rng().random();
    // 32 lowercase hex digits are always a valid header value.
    HeaderValue::from_str(&format!("{n:032x}")).unwrap_or_else(|_| HeaderValue::from_static("0"))
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
    method: &axum::http::Method,
    route: &str,
    request_id: &HeaderValue,
    ids: &TraceParent,
) {
    let status = res.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    let request_id = request_id.to_str().unwrap_or_default();
    if status >= 500 {
        tracing::warn!(status, elapsed_ms, %method, route, request_id, trace_id = %ids.trace_id_hex(), "request finished");
    } else {
        tracing::debug!(status, elapsed_ms, %method, route, request_id, trace_id = %ids.trace_id_hex(), "request finished");
    }
}

fn route_of(req: &Request) -> String {
    req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string())
}

fn check_body_limit(state: &AppState, req: &Request) -> Result<(), ApiError> {
    let Some(len) = req.headers().get(header::CONTENT_LENGTH) else { return Ok(()) };
    let limit = state.config.load().body_limit_bytes;
    match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
        None => {
            state.metrics.reject(RejectReason::bad_request);
            Err(ApiError::bad_request("header content-length: not a number"))
        }
        Some(n) if n > limit as u64 => {
            state.metrics.reject(RejectReason::body_too_large);
            Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body of {n} bytes is over the limit of {limit} bytes"),
            ))
        }
        Some(_) => Ok(()),
    }
}

// === api pipeline ===

pub async fn api(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // 5. metrics
    let started = Instant::now();
    let method = req.method().to_string();
    let route = route_of(&req);
    state.metrics.in_flight.inc();
    // The settings this request uses, copied out of the live configuration (cheaper than
    // holding a reference-counted snapshot across awaits).
    let (limit, admission, adaptive, fault) = {
        let config = state.config.load();
        (
            Duration::from_millis(config.request_timeout_ms),
            config.admission.mode,
            config.admission.adaptive,
            config.fault.clone(),
        )
    };
    // 6. timeout
    let res = match tokio::time::timeout(limit, admit_then_serve(&state, admission, &fault, req, next)).await
    {
        Ok(res) => res,
        Err(_) => {
            state.metrics.reject(RejectReason::timeout);
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("request took longer than {} ms", limit.as_millis()),
            )
            .into_response()
        }
    };
    state.metrics.in_flight.dec();
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            http_request_method: method,
            http_route: route,
            http_response_status_code: status,
        })
        .observe(elapsed.as_secs_f64());
    // Only the adaptive limiter reads the window; skip the lock otherwise.
    if adaptive && let Ok(mut w) = state.window.lock() {
        w.record(elapsed, status >= 500);
    }
    res
}

/// 7. admission control, then 8. faults, then the handler.
async fn admit_then_serve(
    state: &AppState,
    admission: AdmissionMode,
    fault: &FaultConfig,
    req: Request,
    next: Next,
) -> Response {
    if admission != AdmissionMode::Off {
        let decision = match state.admission.lock() {
            Ok(mut a) => a.admit(Instant::now()),
            Err(_) => Admit::Now,
        };
        match decision {
            Admit::Now => {}
            Admit::After(wait) => tokio::time::sleep(wait).await,
            Admit::Reject { retry_after, shaped } => {
                let reason = if shaped { RejectReason::shaper_full } else { RejectReason::rate_limited };
                state.metrics.reject(reason);
                return ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "over the admitted request rate; retry later",
                )
                .retry_after(retry_after)
                .into_response();
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
    if fault.error_ratio > 0.0 && rand::rng().random_bool(fault.error_ratio) {
        state.metrics.fault(FaultKind::error);
        return ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "injected_fault",
            "fault injected on purpose",
        )
        .into_response();
    }
    next.run(req).await
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
