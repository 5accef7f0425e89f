//! The GC-equivalent pause of an async runtime, measured and injected.
//!
//! A Rust service has no garbage collector, but it has the same failure: stretches of time in
//! which ready work cannot run (a blocking call on a runtime thread, CPU starvation, a
//! stop-the-world section). The probe asks to be woken every `probe.interval_ms` and records how
//! late it actually ran in `runtime_pause_seconds`: that lateness is exactly the time ready work
//! waited. A stall also swallows the ticks that were due during it; each is recorded as the wait
//! work ready at its time had (`waits`), so an observation stands for one interval of wall time
//! and a stall weighs by its length: a 200 ms stall every two seconds is 7.5 % of the time past
//! a 50 ms limit, not one late tick in two hundred.
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
        for wait in waits(late, interval) {
            state.metrics.runtime_pause.observe(wait.as_secs_f64());
        }
    }
}

/// Most observations one tick stands for: a minute of 10 ms intervals.
const MAX_WAITS: u32 = 6000;

/// What a tick `late` past its time stands for: its own lateness, and for every earlier tick
/// the stall swallowed, the shorter wait work ready at that tick's time had (HdrHistogram's
/// correction for coordinated omission).
pub fn waits(late: Duration, interval: Duration) -> impl Iterator<Item = Duration> {
    let swallowed = if interval.is_zero() { 0 } else { (late.as_nanos() / interval.as_nanos()) as u32 };
    (0..=swallowed.min(MAX_WAITS)).map(move |k| late.saturating_sub(interval * k))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn a_tick_on_time_is_one_observation() {
        assert_eq!(waits(ms(3), ms(10)).collect::<Vec<_>>(), vec![ms(3)]);
        assert_eq!(waits(Duration::ZERO, ms(10)).collect::<Vec<_>>(), vec![Duration::ZERO]);
    }

    #[test]
    fn a_stall_stands_for_every_interval_it_swallowed() {
        let w: Vec<Duration> = waits(ms(205), ms(10)).collect();
        assert_eq!(w.len(), 21);
        assert_eq!((w[0], w[20]), (ms(205), ms(5)));
        // Past a 50 ms limit: 16 intervals of the 205 ms.
        assert_eq!(w.iter().filter(|d| **d > ms(50)).count(), 16);
    }

    #[test]
    fn a_very_long_stall_is_bounded_and_a_zero_interval_does_not_divide() {
        assert_eq!(waits(Duration::from_secs(3600), ms(10)).count(), MAX_WAITS as usize + 1);
        assert_eq!(waits(ms(500), Duration::ZERO).count(), 1);
    }
}
