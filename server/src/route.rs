//! What a request's path resolves to, and what a handler gives back.

use std::future::Future;
use std::pin::Pin;

use axum::response::Response;

/// A boxed response future: a handler that waits (a body to read, the worker pool), the rare
/// case, and the extra routes tests add.
pub type BoxResponse = Pin<Box<dyn Future<Output = Response> + Send>>;

/// What a path resolves to. The label is the `http_route` of the metrics and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Healthz,
    Readyz,
    Metrics,
    Version,
    Echo,
    Work,
    Extra(usize, &'static str),
    Unmatched,
}

impl Route {
    /// The API routes (and unmatched paths) get the API pipeline: metrics, timeout, admission,
    /// faults and panic capture. Probes and `/metrics` stay cheap and unfaulted.
    pub fn is_api(self) -> bool {
        matches!(self, Route::Echo | Route::Work | Route::Extra(..) | Route::Unmatched)
    }

    pub fn label(self) -> &'static str {
        match self {
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::Version => "/version",
            Route::Echo => "/api/v1/echo",
            Route::Work => "/api/v1/work",
            Route::Extra(_, path) => path,
            Route::Unmatched => "unmatched",
        }
    }
}

/// What a handler gives back: its response, or the future of it.
pub enum Handled {
    Now(Response),
    Later(BoxResponse),
}
