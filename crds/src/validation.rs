//! `GateSpec::validate`: the rules of the gate's schema, for a spec that has not been through the
//! API server (a file given to the CLI). Bounds come from `bounds`, as the schema's do.

use crate::bounds::*;
use crate::gate::{Check, GateSpec};

/// A field whose value the schema refuses: its path (`checks[0].errorRate.maxRatio`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

impl FieldError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }

    /// The same error one level down (`checks[0]` + `.errorRate.maxRatio`).
    fn under(self, parent: &str) -> Self {
        Self { field: format!("{parent}.{}", self.field), reason: self.reason }
    }
}

fn within(field: &str, v: f64, min: f64, max: f64) -> Result<(), FieldError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(FieldError::new(field, format!("{v} must be in [{min}, {max}]")))
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= CHECK_NAME_MAX_LEN
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl GateSpec {
    /// What the API server's schema and CEL rules would refuse, with the field named.
    pub fn validate(&self) -> Result<(), FieldError> {
        let address = &self.prometheus.address;
        if !(address.starts_with("http://") || address.starts_with("https://")) {
            return Err(FieldError::new(
                "prometheus.address",
                format!("{address:?} must be an http:// or https:// URL"),
            ));
        }
        if address.len() > ADDRESS_MAX_LEN {
            return Err(FieldError::new(
                "prometheus.address",
                format!("longer than {ADDRESS_MAX_LEN} characters"),
            ));
        }
        if self.checks.len() < CHECKS_MIN {
            return Err(FieldError::new("checks", "at least one check is needed"));
        }
        if self.checks.len() > CHECKS_MAX {
            return Err(FieldError::new(
                "checks",
                format!("at most {CHECKS_MAX} checks, not {}", self.checks.len()),
            ));
        }
        for (i, c) in self.checks.iter().enumerate() {
            let at = format!("checks[{i}]");
            c.validate().map_err(|e| e.under(&at))?;
            if self.checks[..i].iter().any(|d| d.name == c.name) {
                return Err(FieldError::new(format!("{at}.name"), format!("{:?} is used twice", c.name)));
            }
        }
        let p = &self.policy;
        within("policy.falseRollbackRate", p.false_rollback_rate, ERROR_RATE_MIN, ERROR_RATE_MAX)?;
        within("policy.missedDetectionRate", p.missed_detection_rate, ERROR_RATE_MIN, ERROR_RATE_MAX)?;
        Ok(())
    }
}

impl Check {
    /// One check's rules; fields are relative to the check.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !is_dns_label(&self.name) {
            return Err(FieldError::new(
                "name",
                format!("{:?} must be a DNS label (lowercase letters, digits, '-')", self.name),
            ));
        }
        let kinds =
            [self.error_rate.is_some(), self.latency.is_some(), self.pause.is_some(), self.promql.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(FieldError::new("exactly one of errorRate, latency, pause, promql", "must be set"));
        }
        if let Some(e) = &self.error_rate {
            within("errorRate.maxRatio", e.max_ratio, RATIO_MIN, RATIO_MAX)?;
        }
        if let Some(l) = &self.latency {
            within("latency.quantile", l.quantile, QUANTILE_MIN, QUANTILE_MAX)?;
        }
        if let Some(p) = &self.pause {
            within("pause.quantile", p.quantile, QUANTILE_MIN, QUANTILE_MAX)?;
        }
        if let Some(q) = &self.promql {
            within("promql.maxRatio", q.max_ratio, RATIO_MIN, RATIO_MAX)?;
            for (field, text) in [("promql.bad", &q.bad), ("promql.total", &q.total)] {
                if text.is_empty() || text.len() > PROMQL_MAX_LEN {
                    return Err(FieldError::new(field, format!("must be 1 to {PROMQL_MAX_LEN} characters")));
                }
            }
        }
        if let Some(t) = self.tolerance {
            within("tolerance", t, TOLERANCE_MIN, TOLERANCE_MAX)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{ErrorRateCheck, PrometheusSource};

    fn gate(checks: Vec<Check>) -> GateSpec {
        GateSpec {
            prometheus: PrometheusSource { address: "http://p:9090".into() },
            checks,
            policy: Default::default(),
        }
    }

    fn errors(name: &str) -> Check {
        Check { name: name.into(), error_rate: Some(ErrorRateCheck::default()), ..Check::empty() }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(gate(crate::defaults::checks()).validate(), Ok(()));
    }

    #[test]
    fn each_rule_names_its_field() {
        let mut too_many = gate((0..17).map(|i| errors(&format!("e{i}"))).collect());
        assert_eq!(too_many.validate().expect_err("17").field, "checks");
        too_many.checks.truncate(16);
        assert_eq!(too_many.validate(), Ok(()));
        let mut g = gate(vec![errors("e")]);
        g.checks[0].tolerance = Some(TOLERANCE_MIN - 0.01);
        assert_eq!(g.validate().expect_err("tolerance").field, "checks[0].tolerance");
        let g = gate(vec![errors("e"), errors("e")]);
        assert_eq!(g.validate().expect_err("twice").to_string(), "checks[1].name: \"e\" is used twice");
        let mut g = gate(vec![errors("e")]);
        g.policy.missed_detection_rate = ERROR_RATE_MAX * 2.0;
        assert_eq!(g.validate().expect_err("rate").field, "policy.missedDetectionRate");
    }
}
