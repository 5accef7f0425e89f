//! The state every handler and middleware shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use axum::http::HeaderValue;
use parking_lot::Mutex;

use crate::admission::{Admission, WindowRecorder};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::WorkerPool;

/// Where the process is in its life; `/readyz` answers 200 only in `Ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Lifecycle {
    Starting = 0,
    Ready = 1,
    Draining = 2,
}

/// Shared state: one `Arc`, so the per-request clones made by extractors and middleware cost one
/// atomic increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    /// The live configuration; a reload swaps it atomically.
    pub config: ArcSwap<Config>,
    pub metrics: Metrics,
    pub pool: WorkerPool,
    /// Locks that cannot be poisoned: a panic while one is held must not turn admission off
    /// for every later request.
    pub admission: Mutex<Admission>,
    pub window: Mutex<WindowRecorder>,
    /// The stop-the-world gate: requests and the runtime probe pass it; an injected stall closes
    /// it (see `runtime_probe`).
    pub safepoint: tokio::sync::RwLock<()>,
    lifecycle: AtomicU8,
    /// `x-refserver-version`, made once (the version changes only on restart).
    pub version_header: HeaderValue,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    #[allow(clippy::new_ret_no_self)]
    pub fn new(config: Config, metrics: Metrics) -> std::io::Result<Self> {
        let pool = WorkerPool::new(config.worker_count(), config.derived_queue_capacity(), metrics.clone())?;
        let admission = Admission::new(&config.admission, Instant::now());
        metrics.admission_rate.set(admission.gauge());
        // Leaked once per process (the version changes only on restart) so that the per-response
        // clone is a pointer copy, not a shared reference count bumped from every core.
        let version: &'static str = Box::leak(config.version.clone().into_boxed_str());
        // `from_static` panics on anything but visible ASCII; the configuration refuses such a
        // version, and this check keeps a start that skipped validation from panicking.
        let version_header = if !version.is_empty() && version.bytes().all(|b| b.is_ascii_graphic()) {
            HeaderValue::from_static(version)
        } else {
            HeaderValue::from_static("invalid")
        };
        Ok(Self(Arc::new(Shared {
            config: ArcSwap::from_pointee(config),
            metrics,
            pool,
            admission: Mutex::new(admission),
            window: Mutex::new(WindowRecorder::default()),
            safepoint: tokio::sync::RwLock::new(()),
            lifecycle: AtomicU8::new(Lifecycle::Starting as u8),
            version_header,
        })))
    }

    pub fn lifecycle(&self) -> Lifecycle {
        match self.lifecycle.load(Ordering::Acquire) {
            0 => Lifecycle::Starting,
            1 => Lifecycle::Ready,
            _ => Lifecycle::Draining,
        }
    }

    pub fn set_lifecycle(&self, l: Lifecycle) {
        self.lifecycle.store(l as u8, Ordering::Release);
    }

    /// Swaps in a new configuration and re-tunes what depends on it.
    pub fn apply_config(&self, next: Config) {
        {
            let mut a = self.admission.lock();
            a.reconfigure(&next.admission, Instant::now());
            self.metrics.admission_rate.set(a.gauge());
        }
        crate::profiling::apply_heap_profiling(next.debug.heap_profiling);
        self.config.store(Arc::new(next));
    }
}
