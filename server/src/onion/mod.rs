//! The middleware onion: each step a `tower::Layer` and its `Service` with a concrete future (no
//! boxed future and no state clone per step), composed in `stack` in this order, outermost first.
//!
//! For every route (`edge`):
//! 1. request id: honours a valid `x-request-id` (1–128 visible ASCII characters; anything else
//!    is a 400), or makes one; returned on the response.
//! 2. trace: W3C `traceparent` taken from the caller when valid (an invalid one is ignored, as
//!    the spec says) and returned with this server's span id; a `debug` span per request
//!    (method, route, request id, trace id) that everything inside runs in, exported over OTLP
//!    when configured; one log line per request (`debug`, or `warn` for 5xx) with the ids.
//! 3. `x-refserver-version` response header.
//! 4. limits: a URI over 8 KiB is a 414, headers over 32 KiB together a 431, a declared body
//!    over `body_limit_bytes` a 413, at once; a streamed body is cut at the limit where it is
//!    read (`handlers::echo_body`). Below hyper's own limits, so these refusals get the JSON
//!    body and the ids; what hyper cannot parse at all it answers itself (`connection`).
//!
//! Then the probes and `/metrics` are answered; the API routes and unmatched paths go on
//! (`api`):
//! 5. metrics: duration histogram by method, route and status; in-flight gauge; the adaptive
//!    limiter's window. Outside everything that can answer on its own, so 429, 503, injected
//!    faults and panics are all counted.
//! 6. panic capture around every step below: 500 JSON, counted in `refserver_panics_total`, and
//!    the server keeps serving.
//! 7. timeout: the live `request_timeout_ms`; 503 `timeout` when exceeded. Its timer is made
//!    only when the inside does not answer at once.
//! 8. admission control: 429 + `Retry-After` (see `admission`).
//! 9. faults: safepoint (stop-the-world stall), added latency, injected 500s.
//! 10. the handler.
//!
//! A request travels as a `Ctx`: the request, its route, when it arrived, the settings it runs
//! under (one read of the live configuration) and the id step 1 gave it, so steps share what
//! they work out without `http::Extensions` (a map allocated per request). Only what waits
//! because it was configured to (shaping by admission, injected stalls and latency) and handlers
//! that wait are boxed.

mod api;
mod edge;
mod future;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::http::{HeaderName, HeaderValue, Request};
use axum::response::Response;
use tower::{Service, ServiceBuilder};

pub use self::future::Answer;
use crate::config::{AdmissionMode, FaultConfig};
use crate::route::Route;
use crate::state::AppState;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub static X_REFSERVER_VERSION: HeaderName = HeaderName::from_static("x-refserver-version");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The longest URI (path and query) answered; longer is a 414. hyper's own limit is 64 KiB.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// The most header bytes (names and values) a request may carry; more is a 431. hyper's own
/// limit is its read buffer, about 400 KiB.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

/// One request on its way through the onion.
pub struct Ctx<B> {
    pub req: Request<B>,
    pub route: Route,
    pub started: Instant,
    pub settings: Settings,
    /// Set by step 1.
    pub request_id: HeaderValue,
}

/// The settings a request runs under, copied out of the live configuration once (cheaper than
/// holding a reference-counted snapshot across awaits).
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeout: Duration,
    pub body_limit: usize,
    pub admission: AdmissionMode,
    pub adaptive: bool,
    pub fault: FaultConfig,
}

impl<B> Ctx<B> {
    pub fn new(state: &AppState, req: Request<B>, route: Route) -> Self {
        let started = Instant::now();
        let config = state.config.load();
        let settings = Settings {
            timeout: Duration::from_millis(config.request_timeout_ms),
            body_limit: config.body_limit_bytes,
            admission: config.admission.mode,
            adaptive: config.admission.adaptive,
            fault: config.fault.clone(),
        };
        Self { req, route, started, settings, request_id: HeaderValue::from_static("") }
    }
}

/// The onion around the two innermost services: `ops` answers the probes and `/metrics`, `api`
/// the API routes. One line per step, in the order of the module's list.
pub fn stack<B, O, H>(
    state: &'static AppState,
    ops: O,
    handler: H,
) -> impl Service<Ctx<B>, Response = Response, Error = Infallible, Future: Send>
where
    B: Send + 'static,
    O: Service<Ctx<B>, Response = Response, Error = Infallible, Future: Send>,
    H: Service<Ctx<B>, Response = Response, Error = Infallible, Future: Send> + Copy + Send + 'static,
{
    let api = ServiceBuilder::new()
        .layer(api::MetricsLayer::new(state))
        .layer(api::CatchPanicLayer::new(state))
        .layer(api::TimeoutLayer::new(state))
        .layer(api::AdmissionLayer::new(state))
        .layer(api::FaultsLayer::new(state))
        .service(handler);
    ServiceBuilder::new()
        .layer(edge::RequestIdLayer::new(state))
        .layer(edge::TraceLayer)
        .layer(edge::VersionLayer::new(state))
        .layer(edge::LimitsLayer::new(state))
        .service(edge::Split { ops, api })
}

/// A layer that hands each service it makes the shared state: every step's `Layer` half.
macro_rules! step_layer {
    ($(#[$doc:meta])* $layer:ident => $service:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy)]
        pub struct $layer {
            state: &'static crate::state::AppState,
        }

        impl $layer {
            pub fn new(state: &'static crate::state::AppState) -> Self {
                Self { state }
            }
        }

        impl<S> tower::Layer<S> for $layer {
            type Service = $service<S>;
            fn layer(&self, inner: S) -> $service<S> {
                $service { inner, state: self.state }
            }
        }

        #[derive(Clone, Copy)]
        pub struct $service<S> {
            inner: S,
            state: &'static crate::state::AppState,
        }
    };
}
use step_layer;

/// Every step is always ready (none holds capacity: admission decides per request in `call`),
/// so `poll_ready` asks the inside.
macro_rules! ready_as_inner {
    () => {
        fn poll_ready(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Infallible>> {
            self.inner.poll_ready(cx)
        }
    };
}
use ready_as_inner;

#[cfg(test)]
mod tests;
