//! The middleware onion. Outermost first, for every route:
//!
//! 1. `request_id`: honours a valid `x-request-id` (1–128 visible ASCII characters; anything
//!    else is a 400), or makes one; returns it on the response.
//! 2. `trace`: one span per request (method, route, request id, trace id) whose parent is the
//!    caller's W3C `traceparent` when valid (an invalid one is ignored, as the W3C spec says);
//!    the response carries this server's `traceparent`; one JSON log line when the request ends.
//! 3. `x-refserver-version` response header.
//! 4. `body_limit`: a declared body over `body_limit_bytes` is a 413 at once; a streamed one is
//!    cut at the limit by the extractors (`DefaultBodyLimit`).
//!
//! Then, for the API routes only (probes and `/metrics` stay cheap and unfaulted):
//!
//! 5. `record_metrics`: duration histogram by method, route and status; in-flight gauge; the
//!    adaptive limiter's window. It sits outside everything that can answer on its own, so 429,
//!    503 and panics are all counted.
//! 6. panic capture (`CatchPanicLayer`, see `app`): 500 JSON, counted, the server keeps serving.
//! 7. `timeout`: the live `request_timeout_ms`; 503 `timeout` when exceeded.
//! 8. `admit`: the admission controller (429 + `Retry-After`).
//! 9. `inject_faults`: safepoint (stop-the-world stall), added latency, injected 500s.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use rand::Rng;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::admission::Admit;
use crate::error::ApiError;
use crate::metrics::{FaultKind, RejectReason, RequestLabels};
use crate::state::{AppState, admission_gauge};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_REFSERVER_VERSION: HeaderName = HeaderName::from_static("x-refserver-version");

/// The request id of the request being served.
#[derive(Debug, Clone)]
pub struct RequestId(pub HeaderValue);

// === request id ===

pub async fn request_id(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = match req.headers().get(&X_REQUEST_ID) {
        Some(v) => match valid_request_id(v) {
            Ok(()) => v.clone(),
            Err(reason) => {
                state.metrics.reject(RejectReason::bad_request);
                return ApiError::bad_request(format!("header x-request-id: {reason}")).into_response();
            }
        },
        None => new_request_id(),
    };
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = next.run(req).await;
    res.headers_mut().insert(X_REQUEST_ID.clone(), id);
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

// === trace ===

struct HeaderExtract<'a>(&'a HeaderMap);

impl Extractor for HeaderExtract<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInject<'a>(&'a mut HeaderMap);

impl Injector for HeaderInject<'_> {
    fn set(&mut self, key: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(k, v);
        }
    }
}

pub async fn trace(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_of(&req);
    let request_id = req
        .extensions()
        .get::<RequestId>()
        .and_then(|r| r.0.to_str().ok().map(str::to_owned))
        .unwrap_or_default();
    let span = tracing::info_span!(
        "request",
        http.request.method = %req.method(),
        http.route = %route,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
    );
    let propagator = TraceContextPropagator::new();
    let parent = propagator.extract(&HeaderExtract(req.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
    }
    let mut res = next.run(req).instrument(span.clone()).await;
    if span_context.is_valid() {
        propagator.inject_context(&cx, &mut HeaderInject(res.headers_mut()));
    }
    let status = res.status().as_u16();
    let elapsed_ms = started.elapsed().as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request finished");
        } else {
            tracing::info!(status, elapsed_ms, "request finished");
        }
    });
    res
}

fn route_of(req: &Request) -> String {
    req.extensions().get::<MatchedPath>().map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string())
}

// === body limit ===

pub async fn body_limit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.load().body_limit_bytes;
    if let Some(len) = req.headers().get(header::CONTENT_LENGTH) {
        let declared = len.to_str().ok().and_then(|s| s.parse::<u64>().ok());
        match declared {
            None => {
                state.metrics.reject(RejectReason::bad_request);
                return ApiError::bad_request("header content-length: not a number").into_response();
            }
            Some(n) if n > limit as u64 => {
                state.metrics.reject(RejectReason::body_too_large);
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!("request body of {n} bytes is over the limit of {limit} bytes"),
                )
                .into_response();
            }
            Some(_) => {}
        }
    }
    next.run(req).await
}

// === metrics ===

pub async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = route_of(&req);
    state.metrics.in_flight.inc();
    let res = next.run(req).await;
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
    if let Ok(mut w) = state.window.lock() {
        w.record(elapsed, status >= 500);
    }
    res
}

// === timeout ===

pub async fn timeout(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = Duration::from_millis(state.config.load().request_timeout_ms);
    match tokio::time::timeout(limit, next.run(req)).await {
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
    }
}

// === admission ===

pub async fn admit(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let decision = match state.admission.lock() {
        Ok(mut a) => a.admit(Instant::now()),
        Err(_) => Admit::Now,
    };
    match decision {
        Admit::Now => next.run(req).await,
        Admit::After(wait) => {
            tokio::time::sleep(wait).await;
            next.run(req).await
        }
        Admit::Reject { retry_after, shaped } => {
            let reason = if shaped { RejectReason::shaper_full } else { RejectReason::rate_limited };
            state.metrics.reject(reason);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "over the admitted request rate; retry later",
            )
            .retry_after(retry_after)
            .into_response()
        }
    }
}

/// The adaptive limiter's control loop: one adjustment per interval.
pub async fn adapt_loop(state: AppState) {
    loop {
        let interval = Duration::from_millis(state.config.load().admission.adjust_interval_ms);
        tokio::time::sleep(interval).await;
        let window = match state.window.lock() {
            Ok(mut w) => w.take(),
            Err(_) => continue,
        };
        let cfg = state.config.load();
        if let Ok(mut a) = state.admission.lock() {
            let before = a.rate();
            a.adapt(&cfg.admission, &window);
            if a.rate() != before {
                tracing::info!(
                    before,
                    after = a.rate(),
                    p99_ms = window.p99_ms,
                    error_ratio = window.error_ratio(),
                    "adaptive admission rate changed"
                );
            }
            state.metrics.admission_rate.set(admission_gauge(&a));
        }
    }
}

// === faults ===

pub async fn inject_faults(State(state): State<AppState>, req: Request, next: Next) -> Response {
    // Pass the safepoint: an injected stop-the-world stall holds requests here.
    drop(state.safepoint.read().await);
    let fault = state.config.load().fault.clone();
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
