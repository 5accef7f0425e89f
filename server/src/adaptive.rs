//! The adaptive admission loop: every `admission.adjust_interval_ms` it hands the limiter the
//! window of requests admitted since the last look (`admission::Admission::adapt`).

use std::time::Duration;

use crate::state::AppState;

/// The adaptive limiter's control loop: one adjustment per interval.
pub async fn adapt_loop(state: AppState) {
    loop {
        let interval = Duration::from_millis(state.config.load().admission.adjust_interval_ms);
        tokio::time::sleep(interval).await;
        let window = state.window.lock().take();
        let cfg = state.config.load();
        {
            let mut a = state.admission.lock();
            let before = a.rate();
            a.adapt(&cfg.admission, &window);
            if a.rate() != before {
                tracing::info!(
                    before,
                    after = a.rate(),
                    p99_ms = window.p99_ms,
                    error_ratio = window.error_ratio(),
                    "adaptive admission rate changed"
                );
            }
            state.metrics.admission_rate.set(a.gauge());
        }
    }
}
