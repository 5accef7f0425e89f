//! Route handlers: operational endpoints and the small API. Each takes what it reads (the state,
//! the URI, the request) and answers; routing and the middleware are in `app` and `middleware`.

use std::time::Instant;

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::ApiError;
use crate::metrics::RejectReason;
use crate::pool::{PoolError, spin_for};
use crate::state::{AppState, Lifecycle};

/// Largest `cost_ms` accepted by `/api/v1/work`.
pub const MAX_COST_MS: u64 = 10_000;
/// Largest `message` accepted by `/api/v1/echo`.
pub const MAX_MESSAGE_LEN: usize = 1024;

pub fn healthz(state: &AppState) -> Response {
    Json(json!({ "status": "ok", "version": state.config.load().version })).into_response()
}

pub fn readyz(state: &AppState) -> Response {
    let (status, text) = match state.lifecycle() {
        Lifecycle::Ready => (StatusCode::OK, "ready"),
        Lifecycle::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        Lifecycle::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
    };
    (status, Json(json!({ "status": text }))).into_response()
}

pub fn metrics(state: &AppState) -> Response {
    match state.metrics.encode() {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string()).into_response(),
    }
}

pub fn version(state: &AppState) -> Response {
    Json(json!({ "name": "refserver", "version": state.config.load().version })).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoParams {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Serialize)]
struct EchoReply<'a> {
    message: &'a str,
    version: &'a str,
}

/// `GET /api/v1/echo?message=…`: the message back, with the server's version.
pub fn echo(state: &AppState, uri: &Uri) -> Response {
    let params = match Query::<EchoParams>::try_from_uri(uri) {
        Ok(Query(p)) => p,
        Err(e) => return query_error(state, &e),
    };
    if params.message.len() > MAX_MESSAGE_LEN {
        state.metrics.reject(RejectReason::bad_request);
        return ApiError::bad_request(format!("message: must be at most {MAX_MESSAGE_LEN} bytes"))
            .into_response();
    }
    Json(EchoReply { message: &params.message, version: &state.config.load().version }).into_response()
}

/// `POST /api/v1/echo`: the body back, with its content type. A body over `body_limit_bytes`
/// (declared or streamed) is a 413.
pub async fn echo_body(state: &AppState, req: Request<Incoming>) -> Response {
    let limit = state.config.load().body_limit_bytes;
    let (parts, body) = req.into_parts();
    match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let ct = parts
                .headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or_else(|| HeaderValue::from_static("application/octet-stream"));
            ([(header::CONTENT_TYPE, ct)], collected.to_bytes()).into_response()
        }
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            state.metrics.reject(RejectReason::body_too_large);
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!("request body is over the limit of {limit} bytes"),
            )
            .into_response()
        }
        Err(e) => {
            state.metrics.reject(RejectReason::bad_request);
            ApiError::bad_request(format!("reading the request body: {e}")).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkParams {
    cost_ms: u64,
}

/// `GET /api/v1/work?cost_ms=N`: N ms of CPU work on the worker pool.
pub async fn work(state: &AppState, uri: &Uri) -> Response {
    let params = match Query::<WorkParams>::try_from_uri(uri) {
        Ok(Query(p)) => p,
        Err(e) => return query_error(state, &e),
    };
    if params.cost_ms > MAX_COST_MS {
        state.metrics.reject(RejectReason::bad_request);
        return ApiError::bad_request(format!("cost_ms: must be at most {MAX_COST_MS}")).into_response();
    }
    let submitted = Instant::now();
    let cost = params.cost_ms;
    match state.pool.run(move || (Instant::now(), spin_for(cost))).await {
        Ok((started, _)) => Json(json!({
            "cost_ms": cost,
            "queued_ms": started.duration_since(submitted).as_secs_f64() * 1000.0,
            "total_ms": submitted.elapsed().as_secs_f64() * 1000.0,
        }))
        .into_response(),
        Err(e @ PoolError::Full { .. }) => {
            state.metrics.reject(RejectReason::pool_full);
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "pool_full", e.to_string())
                .retry_after(std::time::Duration::from_secs(1))
                .into_response()
        }
        Err(e @ PoolError::Closed) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "pool_closed", e.to_string()).into_response()
        }
    }
}

fn query_error(state: &AppState, e: &QueryRejection) -> Response {
    state.metrics.reject(RejectReason::bad_request);
    ApiError::bad_request(e.body_text()).into_response()
}

pub fn not_found(uri: &Uri) -> Response {
    ApiError::not_found(uri.path()).into_response()
}
