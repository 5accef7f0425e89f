//! The server's Prometheus metrics.
//!
//! The names of the first two families are a contract: rollgate's built-in checks read them.
//! - `http_server_request_duration_seconds` (histogram; labels `http_request_method`,
//!   `http_route`, `http_response_status_code`), OpenTelemetry semantic-convention names as
//!   Prometheus exposes them. Buckets include 0.3 s exactly, so "slower than 300 ms" is a bucket
//!   boundary and not an interpolation.
//! - `runtime_pause_seconds` (histogram): how late the periodic runtime probe woke up, the
//!   GC-equivalent pause. Buckets include 0.05 s exactly.
//!
//! The rest are the server's own (`refserver_*`) and the async runtime's (`tokio_*`).

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::connection::Closed;
use crate::sharded::{ShardedGauge, ShardedHistogram};

/// Request-duration buckets (seconds).
pub const REQUEST_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
    10.0,
];

/// Runtime-pause buckets (seconds).
pub const PAUSE_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.2, 0.5, 1.0, 2.5];

/// The labels of `http_server_request_duration_seconds`. Static strings: a route is one of the
/// server's own (or `unmatched`), a method one of the standard ones (or `_OTHER`, as the
/// OpenTelemetry conventions say), so the label set stays bounded whatever clients send.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub http_request_method: &'static str,
    pub http_route: &'static str,
    pub http_response_status_code: u16,
}

/// The method label: the standard methods by name, anything else `_OTHER`.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// Each thread keeps the histogram handles it used, so the hot path finds its histogram
/// without hashing the labels or taking the family's lock. Keyed by the `Metrics` instance
/// (tests run several in one process); bounded, past the bound the family is asked directly.
const HANDLE_CACHE_LIMIT: usize = 64;

thread_local! {
    static HANDLES: RefCell<Vec<(u64, RequestLabels, ShardedHistogram)>> = const { RefCell::new(Vec::new()) };
}

static NEXT_METRICS_ID: AtomicU64 = AtomicU64::new(1);

/// Why a request was turned away before its handler ran.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum RejectReason {
    rate_limited,
    shaper_full,
    pool_full,
    timeout,
    body_too_large,
    bad_request,
    uri_too_long,
    headers_too_large,
    /// Not HTTP that hyper could parse; hyper answered it itself.
    malformed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub reason: RejectReason,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ReloadResult {
    applied,
    rejected,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub result: ReloadResult,
}

/// The protocol a connection speaks: the `protocol` label of `refserver_connections_opened_total`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Protocol {
    /// HTTP/1.1 on the plain listener.
    http1,
    /// HTTP/2 with prior knowledge on the plain listener.
    h2c,
    /// HTTP/1.1 over TLS.
    https1,
    /// HTTP/2 over TLS (ALPN `h2`).
    h2,
    /// HTTP/3 over QUIC.
    h3,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: Protocol,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AllocatorLabels {
    pub kind: crate::profiling::AllocatorKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InfoLabels {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    pub reason: Closed,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum FaultKind {
    error,
    latency,
    pause,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub kind: FaultKind,
}

/// The request histogram family; a fn-pointer constructor keeps the type nameable. Sharded by
/// thread, like the in-flight gauge: every request writes both (see `sharded`).
pub type RequestFamily = Family<RequestLabels, ShardedHistogram, fn() -> ShardedHistogram>;

fn request_histogram() -> ShardedHistogram {
    ShardedHistogram::new(REQUEST_BUCKETS.iter().copied())
}

/// All metric handles; cheap to clone (every handle is an `Arc` inside).
#[derive(Clone)]
pub struct Metrics {
    id: u64,
    registry: Arc<Registry>,
    pub requests: RequestFamily,
    pub runtime_pause: Histogram,
    pub rejected: Family<RejectLabels, Counter>,
    pub config_reloads: Family<ReloadLabels, Counter>,
    pub tls_reloads: Family<ReloadLabels, Counter>,
    pub connections_opened: Family<ProtocolLabels, Counter>,
    pub tls_handshake_failures: Counter,
    pub profiles_taken: Counter,
    pub allocator_bytes: Family<AllocatorLabels, Gauge>,
    pub panics: Counter,
    pub faults: Family<FaultLabels, Counter>,
    pub pool_queue_depth: Gauge,
    pub pool_queue_capacity: Gauge,
    pub pool_busy_workers: Gauge,
    pub pool_workers: Gauge,
    pub pool_jobs_abandoned: Counter,
    pub admission_rate: Gauge<f64, AtomicU64>,
    pub in_flight: ShardedGauge,
    pub connections_open: Gauge,
    pub connections_max: Gauge,
    pub connections_closed: Family<ClosedLabels, Counter>,
    pub tokio_workers: Gauge,
    pub tokio_alive_tasks: Gauge,
    pub tokio_global_queue_depth: Gauge,
}

impl Metrics {
    pub fn new(version: &str) -> Self {
        let mut registry = Registry::default();
        let requests: RequestFamily = Family::new_with_constructor(request_histogram);
        registry.register(
            "http_server_request_duration_seconds",
            "Duration of HTTP server requests",
            requests.clone(),
        );
        let runtime_pause = Histogram::new(PAUSE_BUCKETS.iter().copied());
        registry.register(
            "runtime_pause_seconds",
            "How late the periodic runtime probe woke up: time the runtime could not run ready work",
            runtime_pause.clone(),
        );
        let rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "refserver_rejected_requests",
            "Requests turned away before their handler ran, by reason",
            rejected.clone(),
        );
        let config_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "refserver_config_reloads",
            "Configuration file reloads, by result",
            config_reloads.clone(),
        );
        let tls_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "refserver_tls_reloads",
            "TLS certificate reloads after the files changed, by result",
            tls_reloads.clone(),
        );
        let connections_opened = Family::<ProtocolLabels, Counter>::default();
        registry.register(
            "refserver_connections_opened",
            "Client connections accepted, by the protocol they speak",
            connections_opened.clone(),
        );
        let tls_handshake_failures = Counter::default();
        registry.register(
            "refserver_tls_handshake_failures",
            "TLS handshakes that failed or did not finish within connections.header_read_timeout_ms",
            tls_handshake_failures.clone(),
        );
        let profiles_taken = Counter::default();
        registry.register(
            "refserver_profiles_taken",
            "CPU and heap profiles served by the profiling listener",
            profiles_taken.clone(),
        );
        let allocator_bytes = Family::<AllocatorLabels, Gauge>::default();
        registry.register(
            "refserver_allocator_bytes",
            "jemalloc's figures: allocated by the application, in active pages, resident, mapped, retained for reuse",
            allocator_bytes.clone(),
        );
        let panics = Counter::default();
        registry.register("refserver_panics", "Handler panics answered with 500", panics.clone());
        let faults = Family::<FaultLabels, Counter>::default();
        registry.register("refserver_faults_injected", "Faults injected on purpose, by kind", faults.clone());
        let pool_queue_depth = Gauge::default();
        registry.register(
            "refserver_pool_queue_depth",
            "Jobs waiting for a pool worker",
            pool_queue_depth.clone(),
        );
        let pool_queue_capacity = Gauge::default();
        registry.register(
            "refserver_pool_queue_capacity",
            "Capacity of the pool queue",
            pool_queue_capacity.clone(),
        );
        let pool_busy_workers = Gauge::default();
        registry.register(
            "refserver_pool_busy_workers",
            "Pool workers running a job",
            pool_busy_workers.clone(),
        );
        let pool_workers = Gauge::default();
        registry.register("refserver_pool_workers", "Pool worker threads", pool_workers.clone());
        let pool_jobs_abandoned = Counter::default();
        registry.register(
            "refserver_pool_jobs_abandoned",
            "Pool jobs skipped or stopped because their requester had gone (hung up, timed out)",
            pool_jobs_abandoned.clone(),
        );
        let admission_rate = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "refserver_admission_rate_per_second",
            "Currently admitted request rate (0 when admission control is off)",
            admission_rate.clone(),
        );
        let in_flight = ShardedGauge::default();
        registry.register("refserver_requests_in_flight", "API requests being served", in_flight.clone());
        let connections_open = Gauge::default();
        registry.register("refserver_connections_open", "Client connections open", connections_open.clone());
        let connections_max = Gauge::default();
        registry.register(
            "refserver_connections_max",
            "Most client connections open at once (connections.max, or derived from the open-file limit)",
            connections_max.clone(),
        );
        let connections_closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "refserver_connections_closed",
            "Client connections closed, by reason",
            connections_closed.clone(),
        );
        let tokio_workers = Gauge::default();
        registry.register(
            "tokio_runtime_workers",
            "Worker threads of the async runtime",
            tokio_workers.clone(),
        );
        let tokio_alive_tasks = Gauge::default();
        registry.register(
            "tokio_runtime_alive_tasks",
            "Tasks alive in the async runtime",
            tokio_alive_tasks.clone(),
        );
        let tokio_global_queue_depth = Gauge::default();
        registry.register(
            "tokio_runtime_global_queue_depth",
            "Tasks waiting in the runtime's global queue",
            tokio_global_queue_depth.clone(),
        );
        let info = Family::<InfoLabels, Gauge>::default();
        info.get_or_create(&InfoLabels { version: version.to_string() }).set(1);
        registry.register("refserver_build_info", "The running version", info);

        Self {
            id: NEXT_METRICS_ID.fetch_add(1, Ordering::Relaxed),
            registry: Arc::new(registry),
            requests,
            runtime_pause,
            rejected,
            config_reloads,
            tls_reloads,
            connections_opened,
            tls_handshake_failures,
            profiles_taken,
            allocator_bytes,
            panics,
            faults,
            pool_queue_depth,
            pool_queue_capacity,
            pool_busy_workers,
            pool_workers,
            pool_jobs_abandoned,
            admission_rate,
            in_flight,
            connections_open,
            connections_max,
            connections_closed,
            tokio_workers,
            tokio_alive_tasks,
            tokio_global_queue_depth,
        }
    }

    /// Records one served request in `http_server_request_duration_seconds`; `method` is a
    /// `method_label`.
    pub fn observe_request(&self, method: &'static str, route: &'static str, status: u16, elapsed: Duration) {
        let labels = RequestLabels {
            http_request_method: method,
            http_route: route,
            http_response_status_code: status,
        };
        let seconds = elapsed.as_secs_f64();
        let cached = HANDLES.with(|handles| {
            let Ok(mut handles) = handles.try_borrow_mut() else { return false };
            if let Some((_, _, h)) = handles.iter().find(|(id, l, _)| *id == self.id && *l == labels) {
                h.observe(seconds);
                return true;
            }
            if handles.len() >= HANDLE_CACHE_LIMIT {
                return false;
            }
            let h = self.requests.get_or_create(&labels).clone();
            h.observe(seconds);
            handles.push((self.id, labels.clone(), h));
            true
        });
        if !cached {
            self.requests.get_or_create(&labels).observe(seconds);
        }
    }

    pub fn reject(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }

    pub fn connection_closed(&self, reason: Closed) {
        self.connections_closed.get_or_create(&ClosedLabels { reason }).inc();
    }

    pub fn tls_reload(&self, result: ReloadResult) {
        self.tls_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    pub fn connection_opened(&self, protocol: Protocol) {
        self.connections_opened.get_or_create(&ProtocolLabels { protocol }).inc();
    }

    pub fn fault(&self, kind: FaultKind) {
        self.faults.get_or_create(&FaultLabels { kind }).inc();
    }

    pub fn reload(&self, result: ReloadResult) {
        self.config_reloads.get_or_create(&ReloadLabels { result }).inc();
    }

    /// The text exposition, with the runtime gauges sampled now.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let m = handle.metrics();
            self.tokio_workers.set(m.num_workers() as i64);
            self.tokio_alive_tasks.set(m.num_alive_tasks() as i64);
            self.tokio_global_queue_depth.set(m.global_queue_depth() as i64);
        }
        for (kind, bytes) in crate::profiling::allocator_bytes().into_iter().flatten() {
            self.allocator_bytes
                .get_or_create(&AllocatorLabels { kind })
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}
