//! The router: operational routes, the API routes, and the middleware onion around them (the
//! order is documented in `middleware`).

use std::any::Any;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

use crate::error::ApiError;
use crate::handlers;
use crate::metrics::Metrics;
use crate::middleware as mw;
use crate::state::AppState;

/// The whole application.
pub fn router(state: AppState) -> Router {
    router_with_api(state, Router::new())
}

/// The application with extra API routes that get the full API middleware (tests use it to add a
/// handler that panics).
pub fn router_with_api(state: AppState, extra_api: Router<AppState>) -> Router {
    let body_limit = state.config.load().body_limit_bytes;
    let metrics = state.metrics.clone();

    let api = Router::new()
        .route("/api/v1/echo", get(handlers::echo).post(handlers::echo_body))
        .route("/api/v1/work", get(handlers::work))
        .merge(extra_api)
        .fallback(handlers::not_found)
        .method_not_allowed_fallback(handlers::method_not_allowed)
        .layer(ServiceBuilder::new().layer(from_fn_with_state(state.clone(), mw::api)).layer(
            CatchPanicLayer::custom(move |p: Box<dyn Any + Send>| panic_response(&metrics, p.as_ref())),
        ));

    let ops = Router::new()
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics))
        .route("/version", get(handlers::version));

    ops.merge(api)
        .layer(
            ServiceBuilder::new()
                .layer(from_fn_with_state(state.clone(), mw::edge))
                .layer(DefaultBodyLimit::max(body_limit)),
        )
        .with_state(state)
}

fn panic_response(metrics: &Metrics, payload: &(dyn Any + Send)) -> Response {
    metrics.panics.inc();
    let detail = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    tracing::error!(panic = %detail, "handler panicked");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error").into_response()
}
