//! Validation of a whole configuration: every value the types alone do not constrain, each
//! error naming the field.

use std::net::SocketAddr;

use super::{Config, ConfigError};

impl Config {
    /// Checks every value that the types alone do not constrain. Every duration and size has an
    /// upper bound: arithmetic on them cannot overflow, and a drain or grace period cannot be
    /// so long that SIGTERM never finishes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version.trim().is_empty() {
            return Err(ConfigError::field("version", "must not be empty"));
        }
        if self.version.len() > 128 || !self.version.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ConfigError::field(
                "version",
                "must be 1 to 128 visible ASCII characters without spaces (it is sent as a header)",
            ));
        }
        ms_between("request_timeout_ms", self.request_timeout_ms, 1, HOUR_MS)?;
        size_between("body_limit_bytes", self.body_limit_bytes, 1, 1 << 30)?;
        ms_between("shutdown.drain_delay_ms", self.shutdown.drain_delay_ms, 0, HOUR_MS)?;
        ms_between("shutdown.grace_ms", self.shutdown.grace_ms, 1, HOUR_MS)?;
        ms_between("shutdown.idle_close_ms", self.shutdown.idle_close_ms, 0, HOUR_MS)?;
        let c = &self.connections;
        size_between("connections.max", c.max, 0, 1_000_000)?;
        ms_between("connections.idle_timeout_ms", c.idle_timeout_ms, 1, DAY_MS)?;
        ms_between("connections.header_read_timeout_ms", c.header_read_timeout_ms, 1, HOUR_MS)?;
        self.validate_tls()?;
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::field("log.level", format!("not a valid filter: {e}")));
        }
        let endpoint = &self.otlp.endpoint;
        if !(endpoint.is_empty() || endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ConfigError::field("otlp.endpoint", "must start with http:// or https://"));
        }
        if self.pool.workers > 1024 {
            return Err(ConfigError::field("pool.workers", "must be at most 1024"));
        }
        positive_f64("pool.target_qps", self.pool.target_qps)?;
        positive_f64("pool.mean_service_ms", self.pool.mean_service_ms)?;
        positive_f64("pool.safety_factor", self.pool.safety_factor)?;
        if self.derived_queue_capacity() > 1_000_000 {
            return Err(ConfigError::field(
                "pool.queue_capacity",
                "derived capacity is over 1000000; lower target_qps, mean_service_ms or safety_factor",
            ));
        }
        let a = &self.admission;
        rate_between("admission.rate_per_sec", a.rate_per_sec)?;
        if !(a.burst.is_finite() && (1.0..=MAX_RATE).contains(&a.burst)) {
            return Err(ConfigError::field("admission.burst", format!("must be between 1 and {MAX_RATE}")));
        }
        ms_between("admission.max_delay_ms", a.max_delay_ms, 0, MINUTE_MS)?;
        positive_f64("admission.p99_target_ms", a.p99_target_ms)?;
        ratio("admission.error_ratio_target", a.error_ratio_target)?;
        rate_between("admission.min_rate_per_sec", a.min_rate_per_sec)?;
        if a.adaptive && a.min_rate_per_sec > a.rate_per_sec {
            return Err(ConfigError::field(
                "admission.min_rate_per_sec",
                "must not exceed admission.rate_per_sec",
            ));
        }
        ms_between("admission.adjust_interval_ms", a.adjust_interval_ms, 1, HOUR_MS)?;
        let f = &self.fault;
        ratio("fault.error_ratio", f.error_ratio)?;
        ms_between("fault.latency_ms", f.latency_ms, 0, MAX_FAULT_LATENCY_MS)?;
        ms_between("fault.latency_jitter_ms", f.latency_jitter_ms, 0, MAX_FAULT_LATENCY_MS)?;
        if f.latency_ms + f.latency_jitter_ms > MAX_FAULT_LATENCY_MS {
            return Err(ConfigError::field(
                "fault.latency_ms",
                format!("latency_ms + latency_jitter_ms must be at most {MAX_FAULT_LATENCY_MS}"),
            ));
        }
        ms_between("fault.pause_ms", f.pause_ms, 0, MINUTE_MS)?;
        ms_between("fault.pause_every_ms", f.pause_every_ms, 0, HOUR_MS)?;
        if f.pause_ms > 0 {
            positive_u64("fault.pause_every_ms", f.pause_every_ms)?;
            if f.pause_ms >= f.pause_every_ms {
                return Err(ConfigError::field(
                    "fault.pause_ms",
                    "must be shorter than fault.pause_every_ms",
                ));
            }
        }
        if !(1..=10_000).contains(&self.probe.interval_ms) {
            return Err(ConfigError::field("probe.interval_ms", "must be between 1 and 10000"));
        }
        Ok(())
    }
}

impl Config {
    /// Whether the TLS listener runs (a certificate is configured).
    pub fn tls_enabled(&self) -> bool {
        !self.tls.cert_file.as_os_str().is_empty()
    }

    /// The profiling listener's address, when it is on.
    pub fn debug_listen(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.debug.listen.is_empty() {
            return Ok(None);
        }
        self.debug.listen.parse().map(Some).map_err(|_| {
            ConfigError::field(
                "debug.listen",
                format!("not an address like 127.0.0.1:6060: {:?}", self.debug.listen),
            )
        })
    }

    fn validate_tls(&self) -> Result<(), ConfigError> {
        let t = &self.tls;
        match (t.cert_file.as_os_str().is_empty(), t.key_file.as_os_str().is_empty()) {
            (false, true) => {
                return Err(ConfigError::field("tls.key_file", "must be set with tls.cert_file"));
            }
            (true, false) => {
                return Err(ConfigError::field("tls.cert_file", "must be set with tls.key_file"));
            }
            (true, true) if t.http3 => {
                return Err(ConfigError::field("tls.http3", "needs tls.cert_file and tls.key_file"));
            }
            _ => {}
        }
        if self.tls_enabled() && t.listen == self.listen && t.listen.port() != 0 {
            return Err(ConfigError::field("tls.listen", "must differ from listen (the plain listener)"));
        }
        ms_between("tls.reload_interval_ms", t.reload_interval_ms, 100, HOUR_MS)?;
        if let Some(debug) = self.debug_listen()? {
            let public = [Some(self.listen), self.tls_enabled().then_some(t.listen)];
            if debug.port() != 0 && public.contains(&Some(debug)) {
                return Err(ConfigError::field("debug.listen", "must differ from listen and tls.listen"));
            }
        }
        if !(1..=10_000).contains(&self.http2.max_concurrent_streams) {
            return Err(ConfigError::field(
                "http2.max_concurrent_streams",
                format!("must be between 1 and 10000, got {}", self.http2.max_concurrent_streams),
            ));
        }
        Ok(())
    }
}

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;
const DAY_MS: u64 = 24 * HOUR_MS;
const MAX_FAULT_LATENCY_MS: u64 = 600_000;
/// Rates in requests per second. The lower bound keeps one request's spacing (`1 / rate`)
/// within a day, so it is a valid `Duration`.
const MIN_RATE: f64 = 1e-3;
const MAX_RATE: f64 = 1e9;

fn ms_between(field: &str, v: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if !(min..=max).contains(&v) {
        return Err(ConfigError::field(field, format!("must be between {min} and {max} (ms), got {v}")));
    }
    Ok(())
}

fn size_between(field: &str, v: usize, min: usize, max: usize) -> Result<(), ConfigError> {
    if !(min..=max).contains(&v) {
        return Err(ConfigError::field(field, format!("must be between {min} and {max}, got {v}")));
    }
    Ok(())
}

fn rate_between(field: &str, v: f64) -> Result<(), ConfigError> {
    if !(v.is_finite() && (MIN_RATE..=MAX_RATE).contains(&v)) {
        return Err(ConfigError::field(
            field,
            format!("must be between {MIN_RATE} and {MAX_RATE} requests per second, got {v}"),
        ));
    }
    Ok(())
}

fn positive_u64(field: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        return Err(ConfigError::field(field, "must be greater than 0"));
    }
    Ok(())
}

fn positive_f64(field: &str, v: f64) -> Result<(), ConfigError> {
    if !(v.is_finite() && v > 0.0) {
        return Err(ConfigError::field(field, format!("must be a positive number, got {v}")));
    }
    Ok(())
}

fn ratio(field: &str, v: f64) -> Result<(), ConfigError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(ConfigError::field(field, format!("must be between 0 and 1, got {v}")));
    }
    Ok(())
}
