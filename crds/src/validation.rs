//! `GateSpec::validate`: the rules of the gate's schema, for a spec that has not been through the
//! API server (a file given to the CLI). Bounds come from `bounds`, as the schema's do.

use crate::bounds::*;
use crate::gate::{Check, GateSpec};
use crate::metrics::MetricSource;
use crate::prometheus::PrometheusSource;

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
        self.metrics.validate().map_err(|e| e.under("metrics"))?;
        self.prometheus.validate().map_err(|e| e.under("prometheus"))?;
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
        if let Some(m) = &self.metrics {
            if self.error_rate.is_none() && self.latency.is_none() {
                return Err(FieldError::new(
                    "metrics",
                    "only errorRate and latency checks read request metrics",
                ));
            }
            m.validate().map_err(|e| e.under("metrics"))?;
        }
        if let Some(t) = self.tolerance {
            within("tolerance", t, TOLERANCE_MIN, TOLERANCE_MAX)?;
        }
        Ok(())
    }
}

impl PrometheusSource {
    /// The rules of the headers, credentials and TLS; fields are relative to the source.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.headers.len() > HEADERS_MAX {
            return Err(FieldError::new(
                "headers",
                format!("at most {HEADERS_MAX}, not {}", self.headers.len()),
            ));
        }
        for (i, h) in self.headers.iter().enumerate() {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+.^_~-".contains(c);
            if h.name.is_empty() || h.name.len() > HEADER_NAME_MAX_LEN || !h.name.chars().all(token) {
                return Err(FieldError::new(
                    format!("headers[{i}].name"),
                    format!("{:?} is not an HTTP header name", h.name),
                ));
            }
            if h.name.eq_ignore_ascii_case("authorization") {
                return Err(FieldError::new(
                    format!("headers[{i}].name"),
                    "set credentials with auth, not a header",
                ));
            }
            if h.value.len() > HEADER_VALUE_MAX_LEN
                || !h.value.chars().all(|c| c == '\t' || (' '..='~').contains(&c))
            {
                return Err(FieldError::new(format!("headers[{i}].value"), "must be printable ASCII"));
            }
        }
        if let Some(a) = &self.auth
            && a.bearer.is_some() == a.basic.is_some()
        {
            return Err(FieldError::new("auth", "set exactly one of bearer and basic"));
        }
        if let Some(t) = &self.tls
            && t.ca_config_map.is_some()
            && t.ca_secret.is_some()
        {
            return Err(FieldError::new("tls", "set caConfigMap or caSecret, not both"));
        }
        Ok(())
    }
}

impl MetricSource {
    /// A source's rules; fields are relative to it.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.preset.is_some() && self.histogram.is_some() {
            return Err(FieldError::new("histogram", "set preset or histogram, not both"));
        }
        if self.status_label.is_some() && self.histogram.is_none() {
            return Err(FieldError::new("statusLabel", "is only for a custom histogram"));
        }
        if let Some(h) = &self.histogram
            && !is_name(h, true)
        {
            return Err(FieldError::new("histogram", format!("{h:?} is not a Prometheus metric name")));
        }
        if let Some(l) = &self.status_label
            && !is_name(l, false)
        {
            return Err(FieldError::new("statusLabel", format!("{l:?} is not a Prometheus label name")));
        }
        Ok(())
    }
}

/// `METRIC_NAME_PATTERN` (with colons) or `LABEL_NAME_PATTERN`, and the length bound.
fn is_name(s: &str, colons: bool) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colons && c == ':');
    !s.is_empty()
        && s.len() <= METRIC_NAME_MAX_LEN
        && s.chars().all(ok)
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::{ErrorRateCheck, PrometheusSource};

    fn gate(checks: Vec<Check>) -> GateSpec {
        GateSpec {
            prometheus: PrometheusSource::at("http://p:9090"),
            metrics: MetricSource::default(),
            checks,
            policy: Default::default(),
        }
    }

    fn errors(name: &str) -> Check {
        Check { name: name.into(), error_rate: Some(ErrorRateCheck::default()), ..Check::empty() }
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(gate(crate::defaults::checks(true)).validate(), Ok(()));
        assert_eq!(gate(Vec::new()).validate(), Ok(()), "no checks: the source's defaults");
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
        g.metrics.histogram = Some("my app".into());
        assert_eq!(g.validate().expect_err("name").field, "metrics.histogram");
        g.metrics = MetricSource { status_label: Some("code".into()), ..MetricSource::default() };
        assert_eq!(
            g.validate().expect_err("label").to_string(),
            "metrics.statusLabel: is only for a custom histogram"
        );
        let mut g = gate(vec![errors("e")]);
        g.checks[0].error_rate = None;
        g.checks[0].promql =
            Some(crate::gate::PromqlCheck { bad: "a".into(), total: "b".into(), max_ratio: 0.1 });
        g.checks[0].metrics = Some(MetricSource::default());
        assert_eq!(g.validate().expect_err("kind").field, "checks[0].metrics");
        let mut g = gate(vec![errors("e")]);
        g.prometheus
            .headers
            .push(crate::prometheus::HttpHeader { name: "Authorization".into(), value: "x".into() });
        assert_eq!(g.validate().expect_err("auth header").field, "prometheus.headers[0].name");
        g.prometheus.headers[0].name = "X-Scope-OrgID".into();
        assert_eq!(g.validate(), Ok(()));
        g.prometheus.auth = Some(crate::prometheus::PrometheusAuth { bearer: None, basic: None });
        assert_eq!(g.validate().expect_err("no credentials").field, "prometheus.auth");
        let mut g = gate(vec![errors("e")]);
        g.policy.missed_detection_rate = ERROR_RATE_MAX * 2.0;
        assert_eq!(g.validate().expect_err("rate").field, "policy.missedDetectionRate");
    }
}
