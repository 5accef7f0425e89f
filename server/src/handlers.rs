//! Route handlers: operational endpoints and the small API.

use std::time::Instant;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
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

pub async fn healthz(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": state.config.load().version }))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.lifecycle() {
        Lifecycle::Ready => (StatusCode::OK, Json(json!({ "status": "ready" }))).into_response(),
        Lifecycle::Starting => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "starting" }))).into_response()
        }
        Lifecycle::Draining => {
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" }))).into_response()
        }
    }
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.metrics.encode() {
        Ok(text) => {
            ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
                .into_response()
        }
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "metrics", e.to_string()).into_response(),
    }
}

pub async fn version(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({ "name": "refserver", "version": state.config.load().version }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EchoParams {
    #[serde(default)]
    message: String,
}

#[derive(Debug, Serialize)]
struct EchoReply {
    message: String,
    version: String,
}

pub async fn echo(
    State(state): State<AppState>,
    params: Result<Query<EchoParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return query_error(&state, &e),
    };
    if params.message.len() > MAX_MESSAGE_LEN {
        state.metrics.reject(RejectReason::bad_request);
        return ApiError::bad_request(format!("message: must be at most {MAX_MESSAGE_LEN} bytes"))
            .into_response();
    }
    Json(EchoReply { message: params.message, version: state.config.load().version.clone() }).into_response()
}

/// `POST /api/v1/echo`: the body back, with its content type.
pub async fn echo_body(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match body {
        Ok(bytes) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or_else(|| header::HeaderValue::from_static("application/octet-stream"));
            ([(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(e) => {
            let status = e.status();
            let (reason, code) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                (RejectReason::body_too_large, "body_too_large")
            } else {
                (RejectReason::bad_request, "bad_request")
            };
            state.metrics.reject(reason);
            ApiError::new(status, code, e.body_text()).into_response()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkParams {
    cost_ms: u64,
}

pub async fn work(
    State(state): State<AppState>,
    params: Result<Query<WorkParams>, QueryRejection>,
) -> Response {
    let Query(params) = match params {
        Ok(p) => p,
        Err(e) => return query_error(&state, &e),
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

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
}
