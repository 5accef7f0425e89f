//! Configuration of `refserver`.
//!
//! Four layers, later ones winning: built-in defaults < a YAML or TOML file (`--config PATH`) <
//! environment variables (`REFSERVER_*`) < command-line flags (`--listen`, `--set key=value`).
//! The layers are merged as JSON trees, then deserialised with unknown fields rejected and
//! validated, so every error names the field (as a dotted path, e.g. `fault.error_ratio`) and the
//! reason. The same function loads the configuration at start and on every file reload.

mod sources;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use sources::{SETTINGS, Sources, env_name, is_service_link};

/// A configuration that could not be loaded: which field (or file) and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

impl ConfigError {
    pub(crate) fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Field { field: field.into(), reason: reason.into() }
    }

    /// The dotted field name, when the error is about one field.
    pub fn field_name(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } => Some(field),
            Self::File { .. } => None,
        }
    }
}

/// The whole configuration. Every field has a default; see `docs/refserver.md`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Version reported by `/version` and the `x-refserver-version` header.
    pub version: String,
    /// Requests slower than this are answered 503 (`reason: timeout`).
    pub request_timeout_ms: u64,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    pub shutdown: ShutdownConfig,
    pub connections: ConnectionsConfig,
    pub tls: TlsConfig,
    pub http2: Http2Config,
    pub log: LogConfig,
    pub otlp: OtlpConfig,
    pub pool: PoolConfig,
    pub admission: AdmissionConfig,
    pub fault: FaultConfig,
    pub probe: ProbeConfig,
    pub debug: DebugConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long readiness reports 503 before the listener closes.
    pub drain_delay_ms: u64,
    /// How long in-flight requests may take to finish after the listener closed.
    pub grace_ms: u64,
    /// After the listener closed, a keep-alive connection with no request in flight is closed
    /// once it has been idle this long; until then its next request is still served (with
    /// `Connection: close`).
    pub idle_close_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConnectionsConfig {
    /// Most connections open at once; past it the listener waits (new clients queue in the
    /// kernel's backlog). 0 = the process' open-file limit less 64 kept for other files.
    pub max: usize,
    /// A connection with no request in flight and nothing received for this long is closed.
    /// Longer than the idle timeout of the proxies in front (Traefik 90 s, nginx and AWS load
    /// balancers 60 s), so that it is they who close an idle connection, never a request in
    /// flight towards this server.
    pub idle_timeout_ms: u64,
    /// Once the first byte of a request has arrived, its whole head must follow within this long
    /// (slow clients holding connections open: slowloris).
    pub header_read_timeout_ms: u64,
    /// Close a connection after this many requests (`Connection: close` on the last response);
    /// 0 = no limit.
    pub max_requests: u64,
}

/// The TLS listener: TLS 1.3 only, HTTP/2 and HTTP/1.1 offered by ALPN, and (experimental)
/// HTTP/3 over QUIC on the same port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Address of the TLS listener (TCP, and UDP for HTTP/3); used only with a certificate.
    pub listen: SocketAddr,
    /// PEM certificate chain, leaf first; empty = no TLS listener. Re-read when it changes.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_file: PathBuf,
    /// How often the two files are compared with what is loaded.
    pub reload_interval_ms: u64,
    /// Experimental: HTTP/3 over QUIC on `tls.listen` (UDP), advertised to TLS clients with
    /// `Alt-Svc`.
    pub http3: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Offer HTTP/2 by ALPN on the TLS listener.
    pub enabled: bool,
    /// Accept HTTP/2 with prior knowledge (h2c) on the plain listener as well as HTTP/1.1.
    pub h2c: bool,
    /// Streams a client may have open at once on one HTTP/2 or HTTP/3 connection.
    pub max_concurrent_streams: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing `EnvFilter` directive, e.g. `info` or `refserver=debug,info`.
    pub level: String,
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP/HTTP traces endpoint (e.g. `http://127.0.0.1:4318/v1/traces`); empty = no export.
    pub endpoint: String,
    pub service_name: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Worker threads for CPU work (`/api/v1/work`); 0 = one per available core.
    pub workers: usize,
    /// Expected peak rate of CPU-work requests, used to size the queue.
    pub target_qps: f64,
    /// Expected mean service time of one CPU-work request.
    pub mean_service_ms: f64,
    /// Head-room multiplier on the Little's-law queue size.
    pub safety_factor: f64,
    /// Explicit queue capacity; 0 = derived from the three figures above.
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdmissionConfig {
    pub mode: AdmissionMode,
    /// Sustained admitted requests per second.
    pub rate_per_sec: f64,
    /// Token-bucket burst (mode `limit`).
    pub burst: f64,
    /// Longest a request may be held back to smooth the rate (mode `shape`).
    pub max_delay_ms: u64,
    /// Adapt the rate to latency and errors (AIMD).
    pub adaptive: bool,
    /// Adaptive: p99 latency target.
    pub p99_target_ms: f64,
    /// Adaptive: error-ratio target (5xx among admitted requests).
    pub error_ratio_target: f64,
    /// Adaptive: the rate never goes below this.
    pub min_rate_per_sec: f64,
    /// Adaptive: how often the rate is re-computed.
    pub adjust_interval_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdmissionMode {
    /// Everything is admitted.
    Off,
    /// Token bucket: over the rate (plus burst) → 429 at once.
    Limit,
    /// Leaky bucket: requests are spaced to the rate, waiting up to `max_delay_ms`, then 429.
    Shape,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Share of API requests answered 500 on purpose (0..=1).
    pub error_ratio: f64,
    /// Latency added to every API request.
    pub latency_ms: u64,
    /// Uniform jitter added on top of `latency_ms` (0..=jitter).
    pub latency_jitter_ms: u64,
    /// Length of a periodic stop-the-world stall; 0 = none.
    pub pause_ms: u64,
    /// Period of the stall.
    pub pause_every_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProbeConfig {
    /// Period of the runtime pause probe.
    pub interval_ms: u64,
}

/// Live profiling, on a listener of its own (never the public port).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DebugConfig {
    /// Address of the profiling listener (`/debug/pprof/*`), e.g. `127.0.0.1:6060`; empty = off.
    pub listen: String,
    /// Sample live allocations for `/debug/pprof/heap` (jemalloc, one sample per 512 KiB
    /// allocated on average).
    pub heap_profiling: bool,
}

// === defaults ===

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            version: env!("CARGO_PKG_VERSION").to_string(),
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            shutdown: ShutdownConfig::default(),
            connections: ConnectionsConfig::default(),
            tls: TlsConfig::default(),
            http2: Http2Config::default(),
            log: LogConfig::default(),
            otlp: OtlpConfig::default(),
            pool: PoolConfig::default(),
            admission: AdmissionConfig::default(),
            fault: FaultConfig::default(),
            probe: ProbeConfig::default(),
            debug: DebugConfig::default(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_delay_ms: 0, grace_ms: 10_000, idle_close_ms: 1_000 }
    }
}

impl Default for ConnectionsConfig {
    fn default() -> Self {
        Self { max: 0, idle_timeout_ms: 120_000, header_read_timeout_ms: 10_000, max_requests: 0 }
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            reload_interval_ms: 5_000,
            http3: false,
        }
    }
}

impl Default for Http2Config {
    fn default() -> Self {
        Self { enabled: true, h2c: false, max_concurrent_streams: 256 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Json }
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        Self { endpoint: String::new(), service_name: "refserver".into() }
    }
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self { workers: 0, target_qps: 500.0, mean_service_ms: 10.0, safety_factor: 4.0, queue_capacity: 0 }
    }
}

impl Default for AdmissionConfig {
    fn default() -> Self {
        Self {
            mode: AdmissionMode::Off,
            rate_per_sec: 1000.0,
            burst: 100.0,
            max_delay_ms: 50,
            adaptive: false,
            p99_target_ms: 300.0,
            error_ratio_target: 0.01,
            min_rate_per_sec: 10.0,
            adjust_interval_ms: 1000,
        }
    }
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self { error_ratio: 0.0, latency_ms: 0, latency_jitter_ms: 0, pause_ms: 0, pause_every_ms: 1000 }
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self { interval_ms: 10 }
    }
}

// === impl Config ===

impl Config {
    /// The queue capacity of the worker pool: explicit, or Little's law with head-room
    /// (`target_qps × mean_service_time × safety_factor`, at least 1).
    pub fn derived_queue_capacity(&self) -> usize {
        if self.pool.queue_capacity > 0 {
            return self.pool.queue_capacity;
        }
        let figure = self.pool.target_qps * (self.pool.mean_service_ms / 1000.0) * self.pool.safety_factor;
        // Validated finite and positive; the cast saturates.
        (figure.ceil() as usize).max(1)
    }

    /// The number of pool workers, resolving 0 to the available parallelism.
    pub fn worker_count(&self) -> usize {
        if self.pool.workers > 0 {
            self.pool.workers
        } else {
            std::thread::available_parallelism().map_or(2, |n| n.get())
        }
    }

    /// Fields whose change needs a restart; a reload that changes them applies the rest and
    /// names these in a warning.
    pub fn restart_only_changes(&self, next: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != next.listen {
            changed.push("listen");
        }
        // Sent as a header made once at start; a reload that changed only `/version` would make
        // the two disagree.
        if self.version != next.version {
            changed.push("version");
        }
        if self.connections.max != next.connections.max {
            changed.push("connections.max");
        }
        // The listeners are bound at start; the certificate files' contents reload on their own.
        if self.tls != next.tls {
            changed.push("tls");
        }
        if self.debug.listen != next.debug.listen {
            changed.push("debug.listen");
        }
        if self.body_limit_bytes != next.body_limit_bytes {
            changed.push("body_limit_bytes");
        }
        if self.log != next.log {
            changed.push("log");
        }
        if self.otlp != next.otlp {
            changed.push("otlp");
        }
        if self.pool != next.pool {
            changed.push("pool");
        }
        if self.probe != next.probe {
            changed.push("probe");
        }
        changed
    }
}
