//! The state every handler and middleware shares.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;

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

#[derive(Clone)]
pub struct AppState {
    /// The live configuration; a reload swaps it atomically.
    pub config: Arc<ArcSwap<Config>>,
    pub metrics: Metrics,
    pub pool: WorkerPool,
    pub admission: Arc<Mutex<Admission>>,
    pub window: Arc<Mutex<WindowRecorder>>,
    /// The stop-the-world gate: requests and the runtime probe pass it; an injected stall closes
    /// it (see `runtime_probe`).
    pub safepoint: Arc<tokio::sync::RwLock<()>>,
    lifecycle: Arc<AtomicU8>,
}

impl AppState {
    pub fn new(config: Config, metrics: Metrics) -> std::io::Result<Self> {
        let pool = WorkerPool::new(config.worker_count(), config.derived_queue_capacity(), metrics.clone())?;
        let admission = Admission::new(&config.admission, Instant::now());
        metrics.admission_rate.set(admission_gauge(&admission));
        Ok(Self {
            config: Arc::new(ArcSwap::from_pointee(config)),
            metrics,
            pool,
            admission: Arc::new(Mutex::new(admission)),
            window: Arc::new(Mutex::new(WindowRecorder::default())),
            safepoint: Arc::new(tokio::sync::RwLock::new(())),
            lifecycle: Arc::new(AtomicU8::new(Lifecycle::Starting as u8)),
        })
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
        if let Ok(mut a) = self.admission.lock() {
            a.reconfigure(&next.admission, Instant::now());
            self.metrics.admission_rate.set(admission_gauge(&a));
        }
        self.config.store(Arc::new(next));
    }
}

pub fn admission_gauge(a: &Admission) -> f64 {
    match a.mode() {
        crate::config::AdmissionMode::Off => 0.0,
        _ => a.rate(),
    }
}
