//! Live profiling on its own listener (`debug.listen`, off by default, never the public port):
//! an on-demand CPU profile and a jemalloc heap profile, both as pprof protobuf that
//! `go tool pprof` and `pprof` read; and the allocator's statistics as metrics on `/metrics`.
//!
//! - `GET /debug/pprof/profile?seconds=N` samples every thread's stack 99 times a second for N
//!   seconds (1 to 60, default 10), one profile at a time.
//! - `GET /debug/pprof/heap` dumps jemalloc's sampled live allocations (gzipped). Sampling is
//!   compiled in but inactive (it costs nothing) until `debug.heap_profiling` turns it on,
//!   live; a reload that turns it off stops it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use pprof::protos::Message;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::error::ApiError;
use crate::state::AppState;

/// Samples per second of a CPU profile: not a multiple of common timer periods, as Go does.
const CPU_FREQUENCY: i32 = 99;
const MAX_SECONDS: u64 = 60;

/// Set while a CPU profile is being taken: the profiler is one per process.
static CPU_BUSY: AtomicBool = AtomicBool::new(false);

/// Serves the profiling routes on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, state: AppState) -> std::io::Result<()> {
    let app = Router::new()
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/heap", get(heap_profile))
        .with_state(state);
    axum::serve(listener, app).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfileParams {
    seconds: Option<u64>,
}

async fn cpu_profile(
    State(state): State<AppState>,
    params: Result<Query<ProfileParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let seconds = match params {
        Ok(Query(p)) => p.seconds.unwrap_or(10),
        Err(e) => return ApiError::bad_request(format!("seconds: {}", e.body_text())).into_response(),
    };
    if !(1..=MAX_SECONDS).contains(&seconds) {
        return ApiError::bad_request(format!("seconds: must be between 1 and {MAX_SECONDS}, got {seconds}"))
            .into_response();
    }
    if CPU_BUSY.swap(true, Ordering::AcqRel) {
        return ApiError::new(
            StatusCode::CONFLICT,
            "profile_running",
            "a CPU profile is already being taken",
        )
        .into_response();
    }
    let _busy = Busy;
    let guard = match pprof::ProfilerGuardBuilder::default()
        .frequency(CPU_FREQUENCY)
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
    {
        Ok(g) => g,
        Err(e) => return internal(format!("starting the CPU profiler: {e}")),
    };
    tracing::info!(seconds, "CPU profile started");
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    // Building the report resolves symbols: blocking work, off the async threads.
    let built = tokio::task::spawn_blocking(move || {
        let report = guard.report().build().map_err(|e| e.to_string())?;
        let profile = report.pprof().map_err(|e| e.to_string())?;
        Ok::<_, String>(profile.encode_to_vec())
    })
    .await;
    state.metrics.profiles_taken.inc();
    match built {
        Ok(Ok(bytes)) => protobuf(bytes, "cpu.pb"),
        Ok(Err(e)) => internal(format!("building the CPU profile: {e}")),
        Err(e) => internal(format!("building the CPU profile: {e}")),
    }
}

/// Clears `CPU_BUSY` however the request ends (also when its client hangs up).
struct Busy;

impl Drop for Busy {
    fn drop(&mut self) {
        CPU_BUSY.store(false, Ordering::Release);
    }
}

async fn heap_profile(State(state): State<AppState>) -> Response {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        return ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "heap_profiling_unavailable",
            "this build's allocator has no heap profiling",
        )
        .into_response();
    };
    let ctl = ctl.clone();
    let dumped = tokio::task::spawn_blocking(move || {
        let mut ctl = ctl.blocking_lock();
        if !ctl.activated() {
            return Err(None);
        }
        ctl.dump_pprof().map_err(|e| Some(e.to_string()))
    })
    .await;
    match dumped {
        Ok(Ok(bytes)) => {
            state.metrics.profiles_taken.inc();
            protobuf(bytes, "heap.pb.gz")
        }
        Ok(Err(None)) => ApiError::new(
            StatusCode::CONFLICT,
            "heap_profiling_off",
            "heap profiling is off: set debug.heap_profiling to true, then ask again once allocations have been sampled",
        )
        .into_response(),
        Ok(Err(Some(e))) => internal(format!("dumping the heap profile: {e}")),
        Err(e) => internal(format!("dumping the heap profile: {e}")),
    }
}

fn protobuf(bytes: Vec<u8>, name: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{name}\"")),
        ],
        bytes,
    )
        .into_response()
}

fn internal(message: String) -> Response {
    tracing::error!(error = %message, "profiling");
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message).into_response()
}

/// Turns jemalloc's heap sampling on or off to match `debug.heap_profiling`; at start and after
/// every reload.
pub fn apply_heap_profiling(wanted: bool) {
    let Some(ctl) = jemalloc_pprof::PROF_CTL.as_ref() else {
        if wanted {
            tracing::warn!("debug.heap_profiling is on but this build's allocator cannot profile");
        }
        return;
    };
    let Ok(mut ctl) = ctl.try_lock() else {
        // A dump is running; the next reload applies it.
        return;
    };
    let result = match (wanted, ctl.activated()) {
        (true, false) => ctl.activate(),
        (false, true) => ctl.deactivate(),
        _ => return,
    };
    match result {
        Ok(()) => tracing::info!(active = wanted, "heap profiling"),
        Err(e) => tracing::warn!(error = %e, "switching heap profiling"),
    }
}

/// The allocator's figures, in bytes, after refreshing jemalloc's statistics: what the
/// application has allocated, the pages those live in, what is resident, mapped, and kept
/// (retained) for reuse.
pub fn allocator_bytes() -> Option<[(AllocatorKind, u64); 5]> {
    use tikv_jemalloc_ctl::{epoch, stats};
    epoch::advance().ok()?;
    Some([
        (AllocatorKind::allocated, stats::allocated::read().ok()? as u64),
        (AllocatorKind::active, stats::active::read().ok()? as u64),
        (AllocatorKind::resident, stats::resident::read().ok()? as u64),
        (AllocatorKind::mapped, stats::mapped::read().ok()? as u64),
        (AllocatorKind::retained, stats::retained::read().ok()? as u64),
    ])
}

/// The `kind` label of `refserver_allocator_bytes`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum AllocatorKind {
    allocated,
    active,
    resident,
    mapped,
    retained,
}
