//! Admission control: a token-bucket limiter, a leaky-bucket shaper and an adaptive rate.
//!
//! - `limit` (token bucket): `burst` tokens refill at `rate` per second; a request takes one or
//!   is answered 429 with `Retry-After` (seconds until the next token).
//! - `shape` (leaky bucket): requests leave at `rate` per second, evenly spaced; a request waits
//!   for its slot when the wait is at most `max_delay_ms`, else 429.
//! - `adaptive`: every `adjust_interval_ms` the rate is re-computed from the last interval's
//!   admitted requests: multiplied by 0.7 (down to `min_rate_per_sec`) while p99 latency or the
//!   error ratio is over target, raised by 10 % of the configured rate (up to it) otherwise.
//!
//! The clock is passed in, so the arithmetic is tested without waiting.

use std::time::{Duration, Instant};

use crate::config::{AdmissionConfig, AdmissionMode};

/// What the admission controller says about one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admit {
    /// Go ahead now.
    Now,
    /// Go ahead after waiting this long (shaper).
    After(Duration),
    /// Refuse; the client may retry after this long.
    Reject { retry_after: Duration, shaped: bool },
}

/// The state of the limiter, behind one mutex in the server (a few arithmetic operations per
/// request).
#[derive(Debug)]
pub struct Admission {
    mode: AdmissionMode,
    configured_rate: f64,
    rate: f64,
    burst: f64,
    max_delay: Duration,
    tokens: f64,
    refilled_at: Instant,
    /// Shaper: the earliest time the next request may leave.
    next_slot: Instant,
}

impl Admission {
    pub fn new(cfg: &AdmissionConfig, now: Instant) -> Self {
        Self {
            mode: cfg.mode,
            configured_rate: cfg.rate_per_sec,
            rate: cfg.rate_per_sec,
            burst: cfg.burst,
            max_delay: Duration::from_millis(cfg.max_delay_ms),
            tokens: cfg.burst,
            refilled_at: now,
            next_slot: now,
        }
    }

    /// Applies a reloaded configuration, keeping the current rate when only the targets changed.
    pub fn reconfigure(&mut self, cfg: &AdmissionConfig, now: Instant) {
        let rate_changed = cfg.rate_per_sec != self.configured_rate || cfg.mode != self.mode;
        self.mode = cfg.mode;
        self.burst = cfg.burst;
        self.max_delay = Duration::from_millis(cfg.max_delay_ms);
        self.configured_rate = cfg.rate_per_sec;
        if rate_changed || !cfg.adaptive {
            self.rate = cfg.rate_per_sec;
        }
        self.tokens = self.tokens.min(self.burst);
        if self.next_slot < now {
            self.next_slot = now;
        }
    }

    pub fn mode(&self) -> AdmissionMode {
        self.mode
    }

    /// The currently admitted rate (requests per second).
    /// What `refserver_admission_rate_per_second` shows: the admitted rate, 0 when off.
    pub fn gauge(&self) -> f64 {
        match self.mode {
            AdmissionMode::Off => 0.0,
            _ => self.rate(),
        }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.mode {
            AdmissionMode::Off => Admit::Now,
            AdmissionMode::Limit => {
                let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
                self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
                self.refilled_at = now;
                if self.tokens >= 1.0 {
                    self.tokens -= 1.0;
                    Admit::Now
                } else {
                    let wait = (1.0 - self.tokens) / self.rate;
                    Admit::Reject { retry_after: bounded_secs(wait), shaped: false }
                }
            }
            AdmissionMode::Shape => {
                let slot = self.next_slot.max(now);
                let wait = slot - now;
                if wait > self.max_delay {
                    return Admit::Reject { retry_after: wait, shaped: true };
                }
                self.next_slot = slot + bounded_secs(1.0 / self.rate);
                if wait.is_zero() { Admit::Now } else { Admit::After(wait) }
            }
        }
    }

    /// Adaptive step: tighten while over target, relax after.
    pub fn adapt(&mut self, cfg: &AdmissionConfig, window: &WindowStats) {
        if !cfg.adaptive || self.mode == AdmissionMode::Off || window.count == 0 {
            return;
        }
        let over = window.p99_ms > cfg.p99_target_ms || window.error_ratio() > cfg.error_ratio_target;
        self.rate = if over {
            (self.rate * 0.7).max(cfg.min_rate_per_sec)
        } else {
            (self.rate + 0.1 * cfg.rate_per_sec).min(cfg.rate_per_sec)
        };
    }
}

/// Seconds as a `Duration`, at most a day: the configuration bounds the rates so that the
/// spacing of requests stays far below that, and this keeps the arithmetic from panicking (and
/// the limiter from failing) if a rate ever gets past it.
fn bounded_secs(secs: f64) -> Duration {
    const DAY: Duration = Duration::from_secs(86_400);
    Duration::try_from_secs_f64(secs).map_or(DAY, |d| d.min(DAY))
}

/// What happened to admitted requests over one adjustment interval.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WindowStats {
    pub count: u64,
    pub errors: u64,
    pub p99_ms: f64,
}

impl WindowStats {
    pub fn error_ratio(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.errors as f64 / self.count as f64 }
    }
}

/// Collects latencies and errors of one interval for the adaptive mode (bounded memory: keeps at
/// most `cap` latencies, a uniform reservoir sample beyond that).
#[derive(Debug)]
pub struct WindowRecorder {
    latencies_ms: Vec<f64>,
    count: u64,
    errors: u64,
    cap: usize,
    seed: u64,
}

impl Default for WindowRecorder {
    fn default() -> Self {
        Self { latencies_ms: Vec::new(), count: 0, errors: 0, cap: 4096, seed: 0x2545_F491_4F6C_DD1D }
    }
}

impl WindowRecorder {
    pub fn record(&mut self, latency: Duration, server_error: bool) {
        self.count += 1;
        if server_error {
            self.errors += 1;
        }
        let ms = latency.as_secs_f64() * 1000.0;
        if self.latencies_ms.len() < self.cap {
            self.latencies_ms.push(ms);
        } else {
            // xorshift for the reservoir index: cheap and good enough for sampling.
            self.seed ^= self.seed << 13;
            self.seed ^= self.seed >> 7;
            self.seed ^= self.seed << 17;
            let j = (self.seed % self.count) as usize;
            if j < self.cap {
                self.latencies_ms[j] = ms;
            }
        }
    }

    /// Ends the interval: its statistics, and an empty recorder for the next one.
    pub fn take(&mut self) -> WindowStats {
        let mut lat = std::mem::take(&mut self.latencies_ms);
        lat.sort_by(f64::total_cmp);
        let p99_ms = if lat.is_empty() {
            0.0
        } else {
            let idx = ((lat.len() as f64) * 0.99).ceil() as usize;
            lat[idx.saturating_sub(1).min(lat.len() - 1)]
        };
        let stats = WindowStats { count: self.count, errors: self.errors, p99_ms };
        self.count = 0;
        self.errors = 0;
        stats
    }
}

// === control loop ===

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(mode: AdmissionMode, rate: f64, burst: f64) -> AdmissionConfig {
        AdmissionConfig {
            mode,
            rate_per_sec: rate,
            burst,
            max_delay_ms: 100,
            adaptive: false,
            ..AdmissionConfig::default()
        }
    }

    #[test]
    fn off_admits_everything() {
        let t = Instant::now();
        let mut a = Admission::new(&cfg(AdmissionMode::Off, 1.0, 1.0), t);
        for _ in 0..1000 {
            assert_eq!(a.admit(t), Admit::Now);
        }
    }

    #[test]
    fn token_bucket_allows_burst_then_refills_at_rate() {
        let t = Instant::now();
        let mut a = Admission::new(&cfg(AdmissionMode::Limit, 10.0, 3.0), t);
        for _ in 0..3 {
            assert_eq!(a.admit(t), Admit::Now);
        }
        match a.admit(t) {
            Admit::Reject { retry_after, shaped } => {
                assert!(!shaped);
                assert!((retry_after.as_secs_f64() - 0.1).abs() < 1e-9, "{retry_after:?}");
            }
            other => panic!("expected reject, got {other:?}"),
        }
        // 100 ms later one token is back.
        let later = t + Duration::from_millis(100);
        assert_eq!(a.admit(later), Admit::Now);
        assert!(matches!(a.admit(later), Admit::Reject { .. }));
    }

    #[test]
    fn shaper_spaces_requests_and_rejects_past_max_delay() {
        let t = Instant::now();
        let mut a = Admission::new(&cfg(AdmissionMode::Shape, 20.0, 1.0), t);
        assert_eq!(a.admit(t), Admit::Now);
        assert_eq!(a.admit(t), Admit::After(Duration::from_millis(50)));
        assert_eq!(a.admit(t), Admit::After(Duration::from_millis(100)));
        assert!(matches!(a.admit(t), Admit::Reject { shaped: true, .. }));
    }

    #[test]
    fn adaptive_tightens_when_over_target_and_relaxes_after() {
        let t = Instant::now();
        let mut c = cfg(AdmissionMode::Limit, 100.0, 10.0);
        c.adaptive = true;
        c.min_rate_per_sec = 20.0;
        let mut a = Admission::new(&c, t);
        let slow = WindowStats { count: 100, errors: 0, p99_ms: 900.0 };
        a.adapt(&c, &slow);
        assert!((a.rate() - 70.0).abs() < 1e-9);
        for _ in 0..10 {
            a.adapt(&c, &slow);
        }
        assert_eq!(a.rate(), 20.0, "floored at min rate");
        let erroring = WindowStats { count: 100, errors: 50, p99_ms: 1.0 };
        a.adapt(&c, &erroring);
        assert_eq!(a.rate(), 20.0);
        let healthy = WindowStats { count: 100, errors: 0, p99_ms: 1.0 };
        a.adapt(&c, &healthy);
        assert!((a.rate() - 30.0).abs() < 1e-9);
        for _ in 0..20 {
            a.adapt(&c, &healthy);
        }
        assert_eq!(a.rate(), 100.0, "capped at the configured rate");
    }

    #[test]
    fn adaptive_does_nothing_without_traffic_or_when_disabled() {
        let t = Instant::now();
        let c = cfg(AdmissionMode::Limit, 100.0, 10.0);
        let mut a = Admission::new(&c, t);
        a.adapt(&c, &WindowStats { count: 10, errors: 10, p99_ms: 1e6 });
        assert_eq!(a.rate(), 100.0);
    }

    #[test]
    fn recorder_computes_p99_and_errors() {
        let mut r = WindowRecorder::default();
        for i in 1..=100 {
            r.record(Duration::from_millis(i), i > 98);
        }
        let s = r.take();
        assert_eq!(s.count, 100);
        assert_eq!(s.errors, 2);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(r.take().count, 0);
    }
}
