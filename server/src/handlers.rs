//! Route handlers: operational endpoints and the small API. Each takes what it reads (the state,
//! the URI, the request) and answers; routing and the middleware are in `app` and `middleware`.

use std::time::Instant;

use axum::Json;
use axum::extract::Query;
use axum::extract::rejection::QueryRejection;
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, Limited};
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
    let params: EchoParams = match parse_query(state, uri) {
        Ok(p) => p,
        Err(refused) => return refused,
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
pub async fn echo_body<B: crate::app::RequestBody>(state: &AppState, req: Request<B>) -> Response {
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
    let params: WorkParams = match parse_query(state, uri) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    if params.cost_ms > MAX_COST_MS {
        state.metrics.reject(RejectReason::bad_request);
        return ApiError::bad_request(format!("cost_ms: must be at most {MAX_COST_MS}")).into_response();
    }
    let submitted = Instant::now();
    let cost = params.cost_ms;
    match state.pool.run(move |cancel| (Instant::now(), spin_for(cost, cancel))).await {
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

/// The query's parameters, or the 400 that names the one that is wrong. A `%` must start a
/// percent-encoded byte: the decoder would otherwise keep `%ZZ` as it is, and the handler
/// would answer a request the client did not mean.
// The refusal is the response itself, returned at once; boxing it buys nothing.
#[allow(clippy::result_large_err)]
fn parse_query<T: serde::de::DeserializeOwned>(state: &AppState, uri: &Uri) -> Result<T, Response> {
    if let Some(param) = uri.query().and_then(badly_encoded_param) {
        state.metrics.reject(RejectReason::bad_request);
        return Err(ApiError::bad_request(format!(
            "{param}: invalid percent-encoding (a % must be followed by two hex digits)"
        ))
        .into_response());
    }
    match Query::<T>::try_from_uri(uri) {
        Ok(Query(p)) => Ok(p),
        Err(e) => Err(query_error(state, &e)),
    }
}

/// The name of the first parameter whose name or value has a `%` not followed by two hex digits.
fn badly_encoded_param(query: &str) -> Option<&str> {
    if !query.contains('%') {
        return None;
    }
    query
        .split('&')
        .find(|pair| {
            let b = pair.as_bytes();
            b.iter().enumerate().any(|(i, &c)| {
                c == b'%'
                    && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            })
        })
        .map(|pair| pair.split('=').next().unwrap_or(pair))
}

fn query_error(state: &AppState, e: &QueryRejection) -> Response {
    state.metrics.reject(RejectReason::bad_request);
    ApiError::bad_request(e.body_text()).into_response()
}

pub fn not_found(uri: &Uri) -> Response {
    ApiError::not_found(uri.path()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_percent_must_start_an_encoded_byte() {
        assert_eq!(badly_encoded_param("message=%ZZ"), Some("message"));
        assert_eq!(badly_encoded_param("a=1&message=ok%2"), Some("message"));
        assert_eq!(badly_encoded_param("a=1&b%G1=2"), Some("b%G1"));
        assert_eq!(badly_encoded_param("message=%41%62c"), None);
        assert_eq!(badly_encoded_param("message=plain"), None);
    }
}
