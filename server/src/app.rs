//! The application as one hyper service: a static route table, the middleware onion (the order
//! is documented in `middleware`) and the handlers.
//!
//! The routes are a `match`, not axum's `Router`: with six fixed routes a table lookup costs
//! nothing, while the router and its per-route layers cost more than the whole 10 % budget the
//! reference server has against a bare hyper server (`docs/dev/benchmarks.md`). axum is still used
//! for what it is good at here: extractors (`Query`), `Json` and `IntoResponse`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::http::{Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use hyper::body::Incoming;
use tracing::Instrument;

use crate::error::ApiError;
use crate::handlers;
use crate::middleware::{Api, Edge};
pub use crate::route::{BoxResponse, Handled, Route};
use crate::state::AppState;

/// What the application reads a request body as.
pub trait RequestBody:
    http_body::Body<Data = bytes::Bytes, Error: Into<axum::BoxError>> + Send + Unpin + 'static
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = bytes::Bytes, Error: Into<axum::BoxError>> + Send + Unpin + 'static
{
}

/// A handler for an extra API route (tests use it to add a handler that panics).
pub type ExtraHandler = Arc<dyn Fn(Request<axum::body::Body>) -> BoxResponse + Send + Sync>;

/// The whole application. Made once per server and never freed (it lives as long as the
/// process): a request's future borrows it without touching a reference count, which would
/// otherwise be a cache line every core writes on every request.
#[derive(Clone, Copy)]
pub struct App(&'static AppInner);

struct AppInner {
    state: AppState,
    extra: Vec<(&'static str, ExtraHandler)>,
}

// === impl App ===

impl App {
    pub fn new(state: AppState) -> Self {
        Self::with_api_routes(state, Vec::new())
    }

    /// The application with extra API routes that get the full API middleware.
    pub fn with_api_routes(state: AppState, extra: Vec<(&'static str, ExtraHandler)>) -> Self {
        Self(Box::leak(Box::new(AppInner { state, extra })))
    }

    pub fn state(self) -> &'static AppState {
        &self.0.state
    }

    pub fn route(&self, path: &str) -> Route {
        match path {
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/version" => Route::Version,
            "/api/v1/echo" => Route::Echo,
            "/api/v1/work" => Route::Work,
            other => self
                .0
                .extra
                .iter()
                .position(|(p, _)| *p == other)
                .map_or(Route::Unmatched, |i| Route::Extra(i, self.0.extra[i].0)),
        }
    }

    /// Serves one request: the edge pipeline for every route, the API pipeline for the API
    /// routes and unmatched paths, then the handler.
    ///
    /// The pipelines' steps are plain functions on the way in (`enter`) and on the way out
    /// (`finish`) around the one await that needs wrapping (timeout, panic capture): a request's
    /// future stays small, and futures are moved several times before they are polled.
    ///
    /// Generic over the request body, so HTTP/1.1 and HTTP/2 (hyper's `Incoming`) and HTTP/3
    /// (`http3::RequestBody`) share every step without boxing the body.
    pub async fn serve<B: RequestBody>(self, req: Request<B>) -> Response {
        let state = self.state();
        let route = self.route(req.uri().path());
        let edge = match Edge::enter(state, route, &req) {
            Ok(edge) => edge,
            Err(refused) => return refused,
        };
        let res = if let Err(refused) = edge.check_limits(state, &req) {
            refused
        } else if route.is_api() {
            let api = Api::enter(state, route, &req, edge.started());
            let res = api.run(|| self.api_handler(route, req)).instrument(edge.span().clone()).await;
            api.finish(res)
        } else {
            let _entered = edge.span().enter();
            ops_handler(state, route, &req)
        };
        edge.finish(state, route, res)
    }

    fn api_handler<B: RequestBody>(self, route: Route, req: Request<B>) -> Handled {
        let state = self.state();
        match (route, req.method()) {
            (Route::Echo, &Method::GET | &Method::HEAD) => Handled::Now(handlers::echo(state, req.uri())),
            (Route::Echo, &Method::POST) => Handled::Later(Box::pin(handlers::echo_body(state, req))),
            (Route::Work, &Method::GET | &Method::HEAD) => {
                Handled::Later(Box::pin(async move { handlers::work(state, req.uri()).await }))
            }
            (Route::Extra(i, _), _) => match self.0.extra.get(i) {
                Some((_, handler)) => Handled::Later(handler(req.map(axum::body::Body::new))),
                None => Handled::Now(handlers::not_found(req.uri())),
            },
            (Route::Unmatched, _) => Handled::Now(handlers::not_found(req.uri())),
            _ => Handled::Now(method_not_allowed()),
        }
    }
}

fn ops_handler<B>(state: &AppState, route: Route, req: &Request<B>) -> Response {
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        return method_not_allowed();
    }
    match route {
        Route::Healthz => handlers::healthz(state),
        Route::Readyz => handlers::readyz(state),
        Route::Metrics => handlers::metrics(state),
        Route::Version => handlers::version(state),
        _ => handlers::not_found(req.uri()),
    }
}

fn method_not_allowed() -> Response {
    ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "method not allowed on this route")
        .into_response()
}

impl hyper::service::Service<Request<Incoming>> for App {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        Box::pin(self.serve(req).map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;

    #[test]
    fn paths_resolve_to_routes() {
        let config = Config::default();
        let state = AppState::new(config.clone(), Metrics::new(&config.version)).expect("state");
        let noop: ExtraHandler = Arc::new(|_| Box::pin(async { StatusCode::OK.into_response() }));
        let app = App::with_api_routes(state, vec![("/api/v1/extra", noop)]);
        assert_eq!(app.route("/healthz"), Route::Healthz);
        assert_eq!(app.route("/api/v1/echo"), Route::Echo);
        assert_eq!(app.route("/api/v1/echo/"), Route::Unmatched);
        assert_eq!(app.route("/api/v1/extra"), Route::Extra(0, "/api/v1/extra"));
        assert_eq!(app.route("/api/v1/extra").label(), "/api/v1/extra");
        assert!(!Route::Metrics.is_api());
        assert!(Route::Unmatched.is_api());
    }
}
