//! The four layers of the configuration and how they merge: defaults < file < environment <
//! flags, as JSON trees, then deserialised and validated (see the module above).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{Config, ConfigError};

/// Every setting that an environment variable can set: `REFSERVER_` + the dotted path in upper
/// case with `.` → `_` (e.g. `fault.error_ratio` ← `REFSERVER_FAULT_ERROR_RATIO`).
pub const SETTINGS: &[&str] = &[
    "listen",
    "version",
    "request_timeout_ms",
    "body_limit_bytes",
    "shutdown.drain_delay_ms",
    "shutdown.grace_ms",
    "shutdown.idle_close_ms",
    "connections.max",
    "connections.idle_timeout_ms",
    "connections.header_read_timeout_ms",
    "connections.max_requests",
    "tls.listen",
    "tls.cert_file",
    "tls.key_file",
    "tls.reload_interval_ms",
    "tls.http3",
    "http2.enabled",
    "http2.h2c",
    "http2.max_concurrent_streams",
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
    "debug.listen",
    "debug.heap_profiling",
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

    /// Builds and validates the configuration from all layers, at start: an empty file sets
    /// nothing.
    pub fn load(&self) -> Result<Config, ConfigError> {
        self.build(Empty::SetsNothing)
    }

    /// The same, for a reload of the file: an empty file is refused, since a file truncated by
    /// a write in progress is read empty, and taking it for "all defaults" would reset every
    /// setting the file held. (`{}` is an intentionally empty YAML file.)
    pub fn reload(&self) -> Result<Config, ConfigError> {
        self.build(Empty::Refused)
    }

    fn build(&self, empty: Empty) -> Result<Config, ConfigError> {
        let defaults = serde_json::to_value(Config::default())
            .map_err(|e| ConfigError::field("(defaults)", e.to_string()))?;
        let mut tree = defaults.clone();
        if let Some(path) = &self.file {
            merge(&mut tree, read_file(path, empty)?);
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

/// What an empty configuration file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Empty {
    SetsNothing,
    Refused,
}

/// Reads a YAML (`.yaml`/`.yml`) or TOML (`.toml`) file into a JSON tree. A key written twice is
/// an error (TOML says so; for YAML the text goes through `serde_yaml::Value`, whose mappings
/// refuse duplicates, instead of straight into a JSON map where the last one would win).
fn read_file(path: &Path, empty: Empty) -> Result<Value, ConfigError> {
    let file_err = |reason: String| ConfigError::File { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    if text.trim().is_empty() {
        return match empty {
            Empty::SetsNothing => Ok(Value::Object(Default::default())),
            Empty::Refused => Err(file_err(
                "is empty (a write still in progress?); keeping the running configuration. \
                 Write `{}` for an intentionally empty YAML file"
                    .into(),
            )),
        };
    }
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default();
    let value: Value = match ext {
        "toml" => toml::from_str(&text).map_err(|e| file_err(e.to_string()))?,
        "yaml" | "yml" => {
            let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| file_err(e.to_string()))?;
            serde_json::to_value(yaml).map_err(|e| file_err(e.to_string()))?
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
    fn every_setting_is_in_the_documentation() {
        let docs = include_str!("../../../docs/refserver.md");
        for s in SETTINGS {
            // The table names a setting alone or in a group (`a.x`, `a.y`, …).
            assert!(docs.contains(&format!("`{s}`")), "docs/refserver.md does not describe {s}");
        }
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

    fn with_file(ext: &str, text: &str) -> (tempfile::TempDir, Sources) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(format!("refserver.{ext}"));
        std::fs::write(&path, text).expect("write");
        let s = Sources { file: Some(path), ..Sources::default() };
        (dir, s)
    }

    #[test]
    fn a_key_written_twice_is_an_error_not_the_last_one_winning() {
        let (_dir, s) = with_file("yaml", "fault:\n  error_ratio: 0.1\n  error_ratio: 0.9\n");
        let e = s.load().expect_err("duplicate key");
        assert!(e.to_string().contains("duplicate"), "{e}");
        let (_dir, s) = with_file("toml", "[fault]\nerror_ratio = 0.1\nerror_ratio = 0.9\n");
        let e = s.load().expect_err("duplicate key");
        assert!(e.to_string().contains("duplicate"), "{e}");
        let (_dir, s) = with_file("yaml", "fault:\n  error_ratio: 0.1\n");
        assert_eq!(s.load().expect("loads").fault.error_ratio, 0.1);
    }

    #[test]
    fn an_empty_file_sets_nothing_at_start_and_is_refused_on_reload() {
        let (_dir, s) = with_file("yaml", "  \n");
        assert_eq!(s.load().expect("empty at start"), Config::default());
        let e = s.reload().expect_err("empty on reload");
        assert!(e.to_string().contains("is empty"), "{e}");
        let (_dir, s) = with_file("yaml", "{}\n");
        assert_eq!(s.reload().expect("explicitly empty"), Config::default());
    }

    #[test]
    fn every_duration_and_size_is_bounded() {
        let huge = u64::MAX.to_string();
        for setting in [
            "request_timeout_ms",
            "body_limit_bytes",
            "shutdown.drain_delay_ms",
            "shutdown.grace_ms",
            "shutdown.idle_close_ms",
            "connections.max",
            "connections.idle_timeout_ms",
            "connections.header_read_timeout_ms",
            "admission.max_delay_ms",
            "admission.adjust_interval_ms",
            "fault.latency_ms",
            "fault.latency_jitter_ms",
            "fault.pause_ms",
            "fault.pause_every_ms",
        ] {
            let e = sources(&[], &[(setting, &huge)]).and_then(|s| s.load()).expect_err(setting);
            assert_eq!(e.field_name(), Some(setting), "{setting}: {e}");
        }
        // Both near the bound: their sum must not wrap around and pass.
        let e = sources(&[], &[("fault.latency_ms", "600000"), ("fault.latency_jitter_ms", "600000")])
            .and_then(|s| s.load())
            .expect_err("sum over the bound");
        assert_eq!(e.field_name(), Some("fault.latency_ms"), "{e}");
    }

    #[test]
    fn a_rate_too_small_to_space_requests_is_refused() {
        for setting in ["admission.rate_per_sec", "admission.min_rate_per_sec"] {
            let e = sources(&[], &[(setting, "1e-20")]).and_then(|s| s.load()).expect_err(setting);
            assert_eq!(e.field_name(), Some(setting), "{e}");
        }
        let c = sources(&[], &[("admission.rate_per_sec", "0.001"), ("admission.min_rate_per_sec", "0.001")])
            .and_then(|s| s.load())
            .expect("the smallest rate loads");
        assert_eq!(c.admission.rate_per_sec, 0.001);
    }

    #[test]
    fn a_version_that_cannot_be_a_header_is_refused() {
        for bad in ["v2é", "v 2", "\u{7f}", &"x".repeat(129)] {
            let e = sources(&[("REFSERVER_VERSION", bad)], &[]).and_then(|s| s.load()).expect_err(bad);
            assert_eq!(e.field_name(), Some("version"), "{bad:?}: {e}");
        }
    }
}
