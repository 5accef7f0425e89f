//! Configuration of `refserver`.
//!
//! Four layers, later ones winning: built-in defaults < a YAML or TOML file (`--config PATH`) <
//! environment variables (`REFSERVER_*`) < command-line flags (`--listen`, `--set key=value`).
//! The layers are merged as JSON trees, then deserialised with unknown fields rejected and
//! validated, so every error names the field (as a dotted path, e.g. `fault.error_ratio`) and the
//! reason. The same function loads the configuration at start and on every file reload.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A configuration that could not be loaded: which field (or file) and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

impl ConfigError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
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
    pub log: LogConfig,
    pub otlp: OtlpConfig,
    pub pool: PoolConfig,
    pub admission: AdmissionConfig,
    pub fault: FaultConfig,
    pub probe: ProbeConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// After SIGTERM, how long readiness reports 503 before the listener closes.
    pub drain_delay_ms: u64,
    /// How long in-flight requests may take to finish after the listener closed.
    pub grace_ms: u64,
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

// === defaults ===

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            version: env!("CARGO_PKG_VERSION").to_string(),
            request_timeout_ms: 10_000,
            body_limit_bytes: 64 * 1024,
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            otlp: OtlpConfig::default(),
            pool: PoolConfig::default(),
            admission: AdmissionConfig::default(),
            fault: FaultConfig::default(),
            probe: ProbeConfig::default(),
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { drain_delay_ms: 0, grace_ms: 10_000 }
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

    /// Checks every value that the types alone do not constrain.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.version.trim().is_empty() {
            return Err(ConfigError::field("version", "must not be empty"));
        }
        if http::HeaderValue::from_str(&self.version).is_err() {
            return Err(ConfigError::field("version", "must be visible ASCII (it is sent as a header)"));
        }
        positive_u64("request_timeout_ms", self.request_timeout_ms)?;
        if self.body_limit_bytes == 0 {
            return Err(ConfigError::field("body_limit_bytes", "must be greater than 0"));
        }
        positive_u64("shutdown.grace_ms", self.shutdown.grace_ms)?;
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
        positive_f64("admission.rate_per_sec", a.rate_per_sec)?;
        if !(a.burst.is_finite() && a.burst >= 1.0) {
            return Err(ConfigError::field("admission.burst", "must be at least 1"));
        }
        positive_f64("admission.p99_target_ms", a.p99_target_ms)?;
        ratio("admission.error_ratio_target", a.error_ratio_target)?;
        positive_f64("admission.min_rate_per_sec", a.min_rate_per_sec)?;
        if a.adaptive && a.min_rate_per_sec > a.rate_per_sec {
            return Err(ConfigError::field(
                "admission.min_rate_per_sec",
                "must not exceed admission.rate_per_sec",
            ));
        }
        positive_u64("admission.adjust_interval_ms", a.adjust_interval_ms)?;
        ratio("fault.error_ratio", self.fault.error_ratio)?;
        if self.fault.latency_ms + self.fault.latency_jitter_ms > 600_000 {
            return Err(ConfigError::field(
                "fault.latency_ms",
                "latency_ms + latency_jitter_ms must be at most 600000",
            ));
        }
        if self.fault.pause_ms > 0 {
            positive_u64("fault.pause_every_ms", self.fault.pause_every_ms)?;
            if self.fault.pause_ms >= self.fault.pause_every_ms {
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

// === layering ===

/// Every setting that an environment variable can set: `REFSERVER_` + the dotted path in upper
/// case with `.` → `_` (e.g. `fault.error_ratio` ← `REFSERVER_FAULT_ERROR_RATIO`).
pub const SETTINGS: &[&str] = &[
    "listen",
    "version",
    "request_timeout_ms",
    "body_limit_bytes",
    "shutdown.drain_delay_ms",
    "shutdown.grace_ms",
    "log.level",
    "log.format",
    "otlp.endpoint",
    "otlp.service_name",
    "pool.workers",
    "pool.target_qps",
    "pool.mean_service_ms",
    "pool.safety_factor",
    "pool.queue_capacity",
    "admission.mode",
    "admission.rate_per_sec",
    "admission.burst",
    "admission.max_delay_ms",
    "admission.adaptive",
    "admission.p99_target_ms",
    "admission.error_ratio_target",
    "admission.min_rate_per_sec",
    "admission.adjust_interval_ms",
    "fault.error_ratio",
    "fault.latency_ms",
    "fault.latency_jitter_ms",
    "fault.pause_ms",
    "fault.pause_every_ms",
    "probe.interval_ms",
];

/// Whether `name` is one of the variables the kubelet sets in every pod for each Service of its
/// namespace (service links): a Service `refserver-stable` with port 80 gives
/// `REFSERVER_STABLE_SERVICE_HOST`, `REFSERVER_STABLE_SERVICE_PORT[_<PORT NAME>]`,
/// `REFSERVER_STABLE_PORT` and `REFSERVER_STABLE_PORT_80_TCP[_PROTO|_PORT|_ADDR]`. They are
/// not settings, and a pod cannot keep them out without `enableServiceLinks: false`.
pub fn is_service_link(name: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    parts.iter().enumerate().skip(1).any(|(i, part)| {
        let rest = &parts[i + 1..];
        match *part {
            "SERVICE" => matches!(rest, ["HOST"] | ["PORT"] | ["PORT", _, ..]),
            "PORT" => match rest {
                [] => true,
                [number, protocol, tail @ ..] => {
                    !number.is_empty()
                        && number.bytes().all(|b| b.is_ascii_digit())
                        && matches!(*protocol, "TCP" | "UDP" | "SCTP")
                        && matches!(tail, [] | ["PROTO"] | ["PORT"] | ["ADDR"])
                }
                _ => false,
            },
            _ => false,
        }
    })
}

/// The environment variable that sets a dotted setting.
pub fn env_name(setting: &str) -> String {
    format!("REFSERVER_{}", setting.replace('.', "_").to_uppercase())
}

/// Where a configuration comes from, layer by layer. Kept so a file reload can rebuild the
/// whole stack with the environment and flags still on top.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub file: Option<PathBuf>,
    /// `REFSERVER_*` variables (already filtered).
    pub env: BTreeMap<String, String>,
    /// Flag overrides as dotted setting → value.
    pub flags: Vec<(String, String)>,
}

impl Sources {
    /// Picks the `REFSERVER_*` variables out of an environment. Unknown `REFSERVER_*` names are
    /// an error (a typo must not be silently ignored), except `REFSERVER_CONFIG`, the file.
    pub fn from_env(
        vars: impl IntoIterator<Item = (String, String)>,
        file: Option<PathBuf>,
        flags: Vec<(String, String)>,
    ) -> Result<Self, ConfigError> {
        let known: BTreeMap<String, &str> = SETTINGS.iter().map(|s| (env_name(s), *s)).collect();
        let mut env = BTreeMap::new();
        for (k, v) in vars {
            if !k.starts_with("REFSERVER_") || k == "REFSERVER_CONFIG" {
                continue;
            }
            if !known.contains_key(&k) {
                if is_service_link(&k) {
                    continue;
                }
                return Err(ConfigError::field(k, "unknown REFSERVER_ variable"));
            }
            env.insert(k, v);
        }
        Ok(Self { file, env, flags })
    }

    /// Builds and validates the configuration from all layers.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let defaults = serde_json::to_value(Config::default())
            .map_err(|e| ConfigError::field("(defaults)", e.to_string()))?;
        let mut tree = defaults.clone();
        if let Some(path) = &self.file {
            merge(&mut tree, read_file(path)?);
        }
        for setting in SETTINGS {
            if let Some(raw) = self.env.get(&env_name(setting)) {
                set_path(&mut tree, setting, scalar_like(get_path(&defaults, setting), raw))
                    .map_err(|reason| ConfigError::field(env_name(setting), reason))?;
            }
        }
        for (setting, raw) in &self.flags {
            if !SETTINGS.contains(&setting.as_str()) {
                return Err(ConfigError::field(setting.clone(), "unknown setting (see --help for the list)"));
            }
            set_path(&mut tree, setting, scalar_like(get_path(&defaults, setting), raw))
                .map_err(|reason| ConfigError::field(setting.clone(), reason))?;
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "(root)".to_string() } else { path };
            ConfigError::field(field, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }
}

/// Reads a YAML (`.yaml`/`.yml`) or TOML (`.toml`) file into a JSON tree.
fn read_file(path: &Path) -> Result<Value, ConfigError> {
    let file_err = |reason: String| ConfigError::File { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let value: Value = match ext {
        "toml" => toml::from_str(&text).map_err(|e| file_err(e.to_string()))?,
        "yaml" | "yml" => {
            if text.trim().is_empty() {
                Value::Object(Default::default())
            } else {
                serde_yaml::from_str(&text).map_err(|e| file_err(e.to_string()))?
            }
        }
        other => return Err(file_err(format!("unsupported extension {other:?}; use .yaml, .yml or .toml"))),
    };
    if !value.is_object() {
        return Err(file_err("must be a mapping of settings".into()));
    }
    Ok(value)
}

/// Reads a string from the environment or a flag as the type the setting has in the defaults
/// tree: a number or a boolean where the default is one, else a string. A value that does not
/// parse stays a string, so deserialisation reports the field and the expected type.
fn scalar_like(existing: Option<&Value>, raw: &str) -> Value {
    let t = raw.trim();
    match existing {
        Some(Value::Number(_)) => {
            if let Ok(i) = t.parse::<u64>() {
                return Value::from(i);
            }
            if let Ok(f) = t.parse::<f64>()
                && f.is_finite()
            {
                return Value::from(f);
            }
        }
        Some(Value::Bool(_)) => match t {
            "true" | "1" => return Value::Bool(true),
            "false" | "0" => return Value::Bool(false),
            _ => {}
        },
        _ => {}
    }
    Value::String(raw.to_string())
}

fn get_path<'a>(tree: &'a Value, dotted: &str) -> Option<&'a Value> {
    dotted.split('.').try_fold(tree, |node, part| node.get(part))
}

fn set_path(tree: &mut Value, dotted: &str, value: Value) -> Result<(), String> {
    let mut node = tree;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let map = node.as_object_mut().ok_or_else(|| format!("{part} is not inside a section"))?;
        if parts.peek().is_none() {
            map.insert(part.to_string(), value);
            return Ok(());
        }
        node = map.entry(part.to_string()).or_insert_with(|| Value::Object(Default::default()));
    }
    Ok(())
}

/// Deep-merges `top` onto `base`: objects merge key by key, everything else replaces.
fn merge(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(b), Value::Object(t)) => {
            for (k, v) in t {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, t) => *slot = t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(env: &[(&str, &str)], flags: &[(&str, &str)]) -> Result<Sources, ConfigError> {
        Sources::from_env(
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
            None,
            flags.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        )
    }

    #[test]
    fn defaults_are_valid() {
        let c = sources(&[], &[]).and_then(|s| s.load()).expect("defaults load");
        assert_eq!(c, Config::default());
        // 500 qps × 10 ms × 4 = 20
        assert_eq!(c.derived_queue_capacity(), 20);
    }

    #[test]
    fn the_kubelets_service_links_are_not_taken_for_typos() {
        let links = [
            ("REFSERVER_STABLE_SERVICE_HOST", "10.96.0.12"),
            ("REFSERVER_STABLE_SERVICE_PORT", "80"),
            ("REFSERVER_STABLE_SERVICE_PORT_HTTP", "80"),
            ("REFSERVER_STABLE_PORT", "tcp://10.96.0.12:80"),
            ("REFSERVER_STABLE_PORT_80_TCP", "tcp://10.96.0.12:80"),
            ("REFSERVER_STABLE_PORT_80_TCP_PROTO", "tcp"),
            ("REFSERVER_STABLE_PORT_80_TCP_PORT", "80"),
            ("REFSERVER_STABLE_PORT_80_TCP_ADDR", "10.96.0.12"),
            ("REFSERVER_SERVICE_HOST", "10.96.0.13"),
            ("REFSERVER_PORT_8080_UDP", "udp://10.96.0.13:8080"),
            ("REFSERVER_VERSION", "v2"),
        ];
        let s = sources(&links, &[]).expect("service links are skipped");
        assert_eq!(s.env.keys().collect::<Vec<_>>(), ["REFSERVER_VERSION"]);
        // Typos still fail, even ones that end like a link's parts.
        for typo in [
            "REFSERVER_VERSON",
            "REFSERVER_FAULT_LATENCY",
            "REFSERVER_PORT_HTTP",
            "REFSERVER_X_PORT_80_TCP_HOST",
        ] {
            let e = sources(&[(typo, "1")], &[]).expect_err(typo);
            assert!(e.to_string().contains("unknown REFSERVER_ variable"), "{e}");
        }
    }

    #[test]
    fn every_setting_has_a_distinct_env_name() {
        let names: std::collections::BTreeSet<_> = SETTINGS.iter().map(|s| env_name(s)).collect();
        assert_eq!(names.len(), SETTINGS.len());
        assert_eq!(env_name("fault.pause_every_ms"), "REFSERVER_FAULT_PAUSE_EVERY_MS");
    }

    #[test]
    fn every_setting_exists_in_the_defaults() {
        let tree = serde_json::to_value(Config::default()).expect("serialises");
        for s in SETTINGS {
            let mut node = &tree;
            for part in s.split('.') {
                node = node.get(part).unwrap_or_else(|| panic!("{s} missing from defaults"));
            }
        }
    }

    #[test]
    fn flags_beat_env() {
        let c = sources(&[("REFSERVER_FAULT_ERROR_RATIO", "0.5")], &[("fault.error_ratio", "0.25")])
            .and_then(|s| s.load())
            .expect("loads");
        assert_eq!(c.fault.error_ratio, 0.25);
    }

    #[test]
    fn unknown_env_is_named() {
        let err = sources(&[("REFSERVER_FAULT_EROR_RATIO", "0.5")], &[]).expect_err("rejected");
        assert_eq!(err.field_name(), Some("REFSERVER_FAULT_EROR_RATIO"));
    }

    #[test]
    fn type_errors_name_the_field() {
        let err = sources(&[("REFSERVER_FAULT_LATENCY_MS", "soon")], &[])
            .and_then(|s| s.load())
            .expect_err("rejected");
        assert_eq!(err.field_name(), Some("fault.latency_ms"), "{err}");
    }

    #[test]
    fn range_errors_name_the_field() {
        for (flag, value, field) in [
            ("fault.error_ratio", "1.5", "fault.error_ratio"),
            ("listen", "nowhere", "listen"),
            ("pool.safety_factor", "0", "pool.safety_factor"),
            ("fault.pause_ms", "2000", "fault.pause_ms"),
            ("admission.mode", "maybe", "admission.mode"),
            ("log.level", "info,[", "log.level"),
        ] {
            let err = sources(&[], &[(flag, value)]).and_then(|s| s.load()).expect_err(flag);
            assert_eq!(err.field_name(), Some(field), "{flag}={value}: {err}");
        }
    }

    #[test]
    fn scalars_take_the_type_of_the_setting() {
        let n = Value::from(1u64);
        assert_eq!(scalar_like(Some(&n), "3"), Value::from(3u64));
        assert_eq!(scalar_like(Some(&n), "0.5"), Value::from(0.5));
        assert_eq!(scalar_like(Some(&Value::Bool(false)), "true"), Value::Bool(true));
        // A version that looks like a number is still a string.
        assert_eq!(scalar_like(Some(&Value::from("x")), "2"), Value::from("2"));
        let c = sources(&[("REFSERVER_VERSION", "2")], &[]).and_then(|s| s.load()).expect("loads");
        assert_eq!(c.version, "2");
    }

    #[test]
    fn restart_only_fields_are_reported() {
        let a = Config::default();
        let mut b = a.clone();
        b.listen = "127.0.0.1:1".parse().expect("addr");
        b.fault.error_ratio = 0.5;
        assert_eq!(a.restart_only_changes(&b), vec!["listen"]);
    }
}
