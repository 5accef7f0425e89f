//! The bounds of the gate's fields, named once: the schema attributes (`crds/src/gate.rs`) and
//! `GateSpec::validate` (used by the CLI's file reader) read them from here.

/// Checks per gate (none: the defaults of the gate's metric source).
pub const CHECKS_MAX: usize = 16;
/// A check's name is a DNS label.
pub const CHECK_NAME_MAX_LEN: usize = 63;
pub const CHECK_NAME_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
/// `prometheus.address`.
pub const ADDRESS_MAX_LEN: usize = 2048;
/// `promql.bad`, `promql.total`.
pub const PROMQL_MAX_LEN: usize = 4096;
/// `errorRate.maxRatio`, `promql.maxRatio`: a share of events.
pub const RATIO_MIN: f64 = 0.000_000_1;
pub const RATIO_MAX: f64 = 0.5;
/// `latency.quantile`, `pause.quantile`.
pub const QUANTILE_MIN: f64 = 0.5;
pub const QUANTILE_MAX: f64 = 0.9999;
/// `tolerance`: a multiple of the budget.
pub const TOLERANCE_MIN: f64 = 1.01;
pub const TOLERANCE_MAX: f64 = 1000.0;
/// `policy.falseRollbackRate`, `policy.missedDetectionRate`.
pub const ERROR_RATE_MIN: f64 = 0.0001;
pub const ERROR_RATE_MAX: f64 = 0.2;
/// `metrics.histogram`, `metrics.statusLabel`: Prometheus metric and label names.
pub const METRIC_NAME_MAX_LEN: usize = 200;
pub const METRIC_NAME_PATTERN: &str = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$";
pub const LABEL_NAME_PATTERN: &str = r"^[a-zA-Z_][a-zA-Z0-9_]*$";
/// `prometheus.headers`: at most this many, names as HTTP tokens, values printable.
pub const HEADERS_MAX: usize = 16;
pub const HEADER_NAME_MAX_LEN: usize = 128;
pub const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+.^_~-]+$";
pub const HEADER_VALUE_MAX_LEN: usize = 4096;
pub const HEADER_VALUE_PATTERN: &str = r"^[\t\x20-\x7e]*$";
