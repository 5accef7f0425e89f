//! Durations as Kubernetes writes them (`30s`, `3m`, `1h30m`, `250ms`: Go's `time.ParseDuration`
//! format), positive, validated by the API server with CEL.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A positive duration in Go syntax.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PositiveDuration(Duration);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a positive duration such as 30s, 3m or 1h30m")]
pub struct DurationError(String);

impl PositiveDuration {
    pub fn as_std(&self) -> Duration {
        self.0
    }
    pub fn as_secs_f64(&self) -> f64 {
        self.0.as_secs_f64()
    }
}

impl From<Duration> for PositiveDuration {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl FromStr for PositiveDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || DurationError(s.to_string());
        let parsed: kube::core::Duration = s.parse().map_err(|_| err())?;
        if parsed.is_negative() {
            return Err(err());
        }
        let d: Duration = parsed.into();
        if d.is_zero() {
            return Err(err());
        }
        Ok(Self(d))
    }
}

impl fmt::Display for PositiveDuration {
    /// Go-style, shortest exact form: `3m`, `1h30m`, `250ms`, `1.5s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total_ms = self.0.as_millis();
        if !self.0.subsec_nanos().is_multiple_of(1_000_000) || total_ms == 0 {
            return write!(f, "{}ns", self.0.as_nanos());
        }
        if total_ms < 1000 {
            return write!(f, "{total_ms}ms");
        }
        if !total_ms.is_multiple_of(1000) {
            return write!(f, "{}s", self.0.as_secs_f64());
        }
        let secs = self.0.as_secs();
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PositiveDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for PositiveDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl schemars::JsonSchema for PositiveDuration {
    fn schema_name() -> Cow<'static, str> {
        "PositiveDuration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "x-kubernetes-validations": [{
                "rule": "duration(self) > duration('0s')",
                "message": "must be a positive duration such as 30s, 3m or 1h30m"
            }]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_durations() {
        for (s, ms) in
            [("30s", 30_000), ("3m", 180_000), ("1h30m", 5_400_000), ("250ms", 250), ("1.5s", 1500)]
        {
            let d: PositiveDuration = s.parse().expect(s);
            assert_eq!(d.as_std(), Duration::from_millis(ms), "{s}");
            assert_eq!(d.to_string(), s, "round trip");
        }
    }

    #[test]
    fn rejects_zero_negative_and_garbage() {
        for s in ["0s", "-5s", "", "5", "five seconds", "5 s"] {
            assert!(s.parse::<PositiveDuration>().is_err(), "{s:?}");
        }
    }
}
