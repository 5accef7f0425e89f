//! Steps 1–4, for every route, and the split between the probes and the API.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use pin_project_lite::pin_project;
use tower::Service;
use tracing::Instrument;
use tracing::instrument::Instrumented;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::future::{Answered, WithHeader};
use super::{Ctx, MAX_HEADER_BYTES, MAX_URI_BYTES, TRACEPARENT, X_REFSERVER_VERSION, X_REQUEST_ID};
use super::{ready_as_inner, step_layer};
use crate::error::ApiError;
use crate::ids;
use crate::metrics::RejectReason;
use crate::trace_context::TraceParent;

type Refused = Ready<Answered>;

fn refuse(res: Response) -> Refused {
    ready(Ok(res))
}

// === 1. request id ===

step_layer!(
    /// Step 1: the request id.
    RequestIdLayer => RequestId
);

impl<B, S> Service<Ctx<B>> for RequestId<S>
where
    S: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Refused, WithHeader<S::Future>>;

    ready_as_inner!();

    fn call(&mut self, mut ctx: Ctx<B>) -> Self::Future {
        let id = match ctx.req.headers().get(&X_REQUEST_ID) {
            Some(v) => match valid_request_id(v) {
                Ok(()) => v.clone(),
                Err(reason) => {
                    self.state.metrics.reject(RejectReason::bad_request);
                    let refused = ApiError::bad_request(format!("header x-request-id: {reason}"));
                    return Either::Left(refuse(refused.into_response()));
                }
            },
            None => new_request_id(),
        };
        ctx.request_id = id.clone();
        Either::Right(WithHeader::new(self.inner.call(ctx), &X_REQUEST_ID, id))
    }
}

pub(super) fn valid_request_id(v: &HeaderValue) -> Result<(), &'static str> {
    let bytes = v.as_bytes();
    if bytes.is_empty() || bytes.len() > 128 {
        return Err("must be 1 to 128 characters long");
    }
    if !bytes.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err("must be visible ASCII without spaces");
    }
    Ok(())
}

pub(super) fn new_request_id() -> HeaderValue {
    let mut hex = [0u8; 32];
    ids::write_hex(&mut hex, ids::nonzero_u128());
    // 32 lowercase hex digits are always a valid header value.
    HeaderValue::from_bytes(&hex).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

// === 2. trace ===

/// Step 2: the trace context, the request's span and its log line.
#[derive(Clone, Copy)]
pub struct TraceLayer;

impl<S> tower::Layer<S> for TraceLayer {
    type Service = Trace<S>;
    fn layer(&self, inner: S) -> Trace<S> {
        Trace { inner }
    }
}

#[derive(Clone, Copy)]
pub struct Trace<S> {
    inner: S,
}

impl<B, S> Service<Ctx<B>> for Trace<S>
where
    S: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Traced<S::Future>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        let parent = TraceParent::from_headers(ctx.req.headers());
        let method = ctx.req.method().clone();
        let span = tracing::debug_span!(
            "request",
            http.request.method = %method,
            http.route = ctx.route.label(),
            request_id = ctx.request_id.to_str().unwrap_or_default(),
            trace_id = tracing::field::Empty,
        );
        let ids = trace_ids(&span, parent.as_ref());
        if !span.is_disabled() {
            span.record("trace_id", tracing::field::display(ids.trace_id_hex()));
        }
        let log = RequestLog {
            started: ctx.started,
            method,
            route: ctx.route.label(),
            request_id: ctx.request_id.clone(),
            ids,
        };
        // What the inside does at once (checks, a handler that answers at once) runs in the
        // span too, not only what it does when polled.
        let inner = {
            let _entered = span.enter();
            self.inner.call(ctx)
        };
        Traced { inner: inner.instrument(span), log: Some(log) }
    }
}

/// What the log line and the `traceparent` on the way out need.
struct RequestLog {
    started: Instant,
    method: Method,
    route: &'static str,
    request_id: HeaderValue,
    ids: TraceParent,
}

pin_project! {
    /// The inside, run in the request's span; then `traceparent` and the log line.
    pub struct Traced<F> {
        #[pin]
        inner: Instrumented<F>,
        log: Option<RequestLog>,
    }
}

impl<F: Future<Output = Answered>> Future for Traced<F> {
    type Output = Answered;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answered> {
        let mut this = self.project();
        let mut res = std::task::ready!(this.inner.as_mut().poll(cx))?;
        if let Some(log) = this.log.take() {
            res.headers_mut().insert(TRACEPARENT.clone(), log.ids.header_value());
            let _entered = this.inner.as_ref().get_ref().span().enter();
            log.write(&res);
        }
        Poll::Ready(Ok(res))
    }
}

impl RequestLog {
    fn write(&self, res: &Response) {
        // The fields are computed only when the line is logged (at `info`, one per failure).
        let status = res.status().as_u16();
        let elapsed_ms = || self.started.elapsed().as_secs_f64() * 1000.0;
        let (method, route) = (&self.method, self.route);
        let request_id = self.request_id.to_str().unwrap_or_default();
        let trace_id = self.ids.trace_id_hex();
        if status >= 500 {
            tracing::warn!(status, elapsed_ms = elapsed_ms(), %method, route, request_id, trace_id = %trace_id, "request finished");
        } else {
            tracing::debug!(status, elapsed_ms = elapsed_ms(), %method, route, request_id, trace_id = %trace_id, "request finished");
        }
    }
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

// === 3. version ===

step_layer!(
    /// Step 3: `x-refserver-version`.
    VersionLayer => Version
);

impl<B, S> Service<Ctx<B>> for Version<S>
where
    S: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = WithHeader<S::Future>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        WithHeader::new(self.inner.call(ctx), &X_REFSERVER_VERSION, self.state.version_header.clone())
    }
}

// === 4. limits ===

step_layer!(
    /// Step 4: the URI, header and declared body limits.
    LimitsLayer => Limits
);

impl<B, S> Service<Ctx<B>> for Limits<S>
where
    S: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<Refused, S::Future>;

    ready_as_inner!();

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        match over_limits(&ctx) {
            Some((reason, error)) => {
                self.state.metrics.reject(reason);
                Either::Left(refuse(error.into_response()))
            }
            None => Either::Right(self.inner.call(ctx)),
        }
    }
}

fn over_limits<B>(ctx: &Ctx<B>) -> Option<(RejectReason, ApiError)> {
    let req = &ctx.req;
    let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if uri_len > MAX_URI_BYTES {
        let why = format!("the URI is {uri_len} bytes, over the limit of {MAX_URI_BYTES}");
        return Some((
            RejectReason::uri_too_long,
            ApiError::new(StatusCode::URI_TOO_LONG, "uri_too_long", why),
        ));
    }
    let header_bytes: usize = req.headers().iter().map(|(n, v)| n.as_str().len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        let why =
            format!("the headers are {header_bytes} bytes together, over the limit of {MAX_HEADER_BYTES}");
        let error = ApiError::new(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large", why);
        return Some((RejectReason::headers_too_large, error));
    }
    let len = req.headers().get(header::CONTENT_LENGTH)?;
    let limit = ctx.settings.body_limit;
    match len.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
        None => {
            Some((RejectReason::bad_request, ApiError::bad_request("header content-length: not a number")))
        }
        Some(n) if n > limit as u64 => {
            let why = format!("request body of {n} bytes is over the limit of {limit} bytes");
            Some((
                RejectReason::body_too_large,
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", why),
            ))
        }
        Some(_) => None,
    }
}

// === the split ===

/// The probes and `/metrics` to `ops`, the API routes and unmatched paths to `api`.
#[derive(Clone, Copy)]
pub struct Split<O, A> {
    pub ops: O,
    pub api: A,
}

impl<B, O, A> Service<Ctx<B>> for Split<O, A>
where
    O: Service<Ctx<B>, Response = Response, Error = Infallible>,
    A: Service<Ctx<B>, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<O::Future, A::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.ops.poll_ready(cx) {
            Poll::Ready(Ok(())) => self.api.poll_ready(cx),
            other => other,
        }
    }

    fn call(&mut self, ctx: Ctx<B>) -> Self::Future {
        if ctx.route.is_api() { Either::Right(self.api.call(ctx)) } else { Either::Left(self.ops.call(ctx)) }
    }
}
