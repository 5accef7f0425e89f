//! The GC-equivalent pause of an async runtime, measured and injected.
//!
//! A Rust service has no garbage collector, but it has the same failure: stretches of time in
//! which ready work cannot run (a blocking call on a runtime thread, CPU starvation, a
//! stop-the-world section). The probe asks to be woken every `probe.interval_ms` and records how
//! late it actually ran in `runtime_pause_seconds`: that lateness is exactly the time ready work
//! waited.
//!
//! The injected stall (`fault.pause_ms` every `fault.pause_every_ms`) models a stop-the-world
//! collector: it closes the `safepoint` gate that every API request and the probe pass, the way
//! JVM threads stop at safepoints, so requests arriving during the stall wait it out and the probe
//! reports it. The probe still also sees real stalls, which never touch the gate.

use std::time::{Duration, Instant};

use crate::metrics::FaultKind;
use crate::state::AppState;

/// Records the lateness of every tick until the task is dropped.
pub async fn probe_loop(state: AppState) {
    loop {
        let interval = Duration::from_millis(state.config.load().probe.interval_ms);
        let due = Instant::now() + interval;
        tokio::time::sleep_until(due.into()).await;
        drop(state.safepoint.read().await);
        let late = Instant::now().saturating_duration_since(due);
        state.metrics.runtime_pause.observe(late.as_secs_f64());
    }
}

/// Injects the configured stall periodically (re-reading the live configuration every period).
pub async fn stall_loop(state: AppState) {
    loop {
        let fault = state.config.load().fault.clone();
        tokio::time::sleep(Duration::from_millis(fault.pause_every_ms.max(1))).await;
        // Re-read: the stall may have been switched off while waiting.
        let pause_ms = state.config.load().fault.pause_ms;
        if pause_ms == 0 {
            continue;
        }
        let _world_stopped = state.safepoint.write().await;
        state.metrics.fault(FaultKind::pause);
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
    }
}
