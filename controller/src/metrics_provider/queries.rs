//! PromQL for each check kind, with every interpolated value escaped.
//!
//! Series carry the labels the Prometheus scrape config in `manifests/` copies from pods:
//! `namespace`, `rollout`, `role` and `revision`. A count over the window is the counter's sum now
//! minus its sum at the window's start, where a series that did not exist yet counts as zero:
//! `(sum(C) or vector(0)) - (sum(C offset W) or vector(0))`. `increase()` would miss the events
//! that create a series (a status code's first 5xx starts its series at 1, and `increase` takes
//! that first sample as the baseline), which at low traffic hides exactly the errors that matter.
//! Pods of one revision are started fresh, so counter resets are rare; a reset under-counts.

use std::time::Duration;

use rollgate_crds::gate::{Check, PausePreset};

/// Which pods' series to count.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub namespace: String,
    pub rollout: String,
    pub role: &'static str,
    pub revision: String,
}

impl Selector {
    fn matchers(&self) -> String {
        format!(
            "namespace=\"{}\",rollout=\"{}\",role=\"{}\",revision=\"{}\"",
            escape(&self.namespace),
            escape(&self.rollout),
            escape(self.role),
            escape(&self.revision)
        )
    }
}

/// A check that cannot be turned into queries.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("check {check}: {reason}")]
pub struct QueryError {
    pub check: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Bad {
    /// A query counting bad events (a template).
    Query(String),
    /// Bad = total − this query (good events, e.g. a histogram bucket).
    TotalMinus(String),
}

/// The two queries of one check, as templates with `$selector` and `$window`.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckQueries {
    pub total: String,
    pub bad: Bad,
    pub budget: f64,
    pub tolerance: f64,
    pub unit: &'static str,
    /// Custom templates use `$namespace` etc. instead of `$selector`.
    custom: bool,
}

const REQUESTS: &str = "http_server_request_duration_seconds";

pub fn for_check(check: &Check) -> Result<CheckQueries, QueryError> {
    let err = |reason: String| QueryError { check: check.name.clone(), reason };
    let tolerance_or = |d: f64| check.tolerance.unwrap_or(d);
    if let Some(e) = &check.error_rate {
        return Ok(CheckQueries {
            total: delta(&format!("{REQUESTS}_count{{$selector}}")),
            bad: Bad::Query(delta(&format!(
                "{REQUESTS}_count{{$selector,http_response_status_code=~\"5..\"}}"
            ))),
            budget: e.max_ratio,
            tolerance: tolerance_or(rollgate_crds::defaults::ERROR_TOLERANCE),
            unit: "requests",
            custom: false,
        });
    }
    if let Some(l) = &check.latency {
        return Ok(histogram(REQUESTS, l.quantile, l.max.as_secs_f64(), tolerance_or, "requests"));
    }
    if let Some(p) = &check.pause {
        let base = match p.preset {
            PausePreset::Refserver => "runtime_pause_seconds",
            PausePreset::Go => "go_sched_pauses_total_gc_seconds",
            PausePreset::Jvm => "jvm_gc_duration_seconds",
        };
        return Ok(histogram(base, p.quantile, p.max.as_secs_f64(), tolerance_or, "pauses"));
    }
    if let Some(q) = &check.promql {
        validate_template(&q.bad).map_err(|r| err(format!("promql.bad: {r}")))?;
        validate_template(&q.total).map_err(|r| err(format!("promql.total: {r}")))?;
        return Ok(CheckQueries {
            total: q.total.clone(),
            bad: Bad::Query(q.bad.clone()),
            budget: q.max_ratio,
            tolerance: tolerance_or(rollgate_crds::defaults::SHARE_TOLERANCE),
            unit: "events",
            custom: true,
        });
    }
    Err(err("no check kind is set".into()))
}

fn histogram(
    base: &str,
    quantile: f64,
    limit_s: f64,
    tolerance_or: impl Fn(f64) -> f64,
    unit: &'static str,
) -> CheckQueries {
    CheckQueries {
        total: delta(&format!("{base}_count{{$selector}}")),
        bad: Bad::TotalMinus(format!("{base}_bucket{{$selector,le=~\"{}\"}}", le_regex(limit_s))),
        budget: 1.0 - quantile,
        tolerance: tolerance_or(rollgate_crds::defaults::SHARE_TOLERANCE),
        unit,
        custom: false,
    }
}

/// The change of a counter's sum over `$window`, series born inside the window counted from 0.
fn delta(counter: &str) -> String {
    format!("clamp_min((sum({counter}) or vector(0)) - (sum({counter} offset $window) or vector(0)), 0)")
}

impl CheckQueries {
    pub fn total(&self, sel: &Selector, window: Duration) -> String {
        self.render(&self.total, sel, window)
    }

    pub fn bad_query(&self, sel: &Selector, window: Duration) -> String {
        match &self.bad {
            Bad::Query(q) => self.render(q, sel, window),
            Bad::TotalMinus(bucket) => self.render(&delta(bucket), sel, window),
        }
    }

    /// For bucket-based checks: the bucket's current sum, which is empty when no bucket has the
    /// limit as its bound.
    pub fn bucket_presence(&self, sel: &Selector, window: Duration) -> Option<String> {
        match &self.bad {
            Bad::TotalMinus(bucket) => Some(self.render(&format!("sum({bucket})"), sel, window)),
            Bad::Query(_) => None,
        }
    }

    fn render(&self, template: &str, sel: &Selector, window: Duration) -> String {
        let window = format!("{}s", window.as_secs().max(1));
        if self.custom {
            template
                .replace("$namespace", &escape(&sel.namespace))
                .replace("$name", &escape(&sel.rollout))
                .replace("$role", &escape(sel.role))
                .replace("$revision", &escape(&sel.revision))
                .replace("$window", &window)
        } else {
            template.replace("$selector", &sel.matchers()).replace("$window", &window)
        }
    }
}

/// Escapes a value for a double-quoted PromQL string.
pub fn escape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Matches a bucket bound however it was printed (`0.3`, `0.30`, `1`, `1.0`, `1e+00` is not
/// produced by the client libraries this supports).
fn le_regex(limit_s: f64) -> String {
    let s = format!("{limit_s}");
    match s.split_once('.') {
        Some((int, frac)) => format!("{int}\\\\.{frac}0*"),
        None => format!("{s}(\\\\.0*)?"),
    }
}

/// A light syntax check of a custom query template: balanced brackets outside strings,
/// terminated strings, only known `$variables`. Catches the malformed query before it is sent.
pub fn validate_template(q: &str) -> Result<(), String> {
    if q.trim().is_empty() {
        return Err("empty query".into());
    }
    let mut stack = Vec::new();
    let mut chars = q.chars().peekable();
    let mut in_string: Option<char> = None;
    while let Some(c) = chars.next() {
        if c == '$' {
            // Variables are replaced everywhere, inside strings too.
            let name: String =
                std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_')).collect();
            if !matches!(name.as_str(), "namespace" | "name" | "role" | "revision" | "window") {
                return Err(format!(
                    "unknown variable ${name} (known: $namespace, $name, $role, $revision, $window)"
                ));
            }
            continue;
        }
        if let Some(quote) = in_string {
            match c {
                '\\' => {
                    chars.next();
                }
                c if c == quote => in_string = None,
                _ => {}
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => in_string = Some(c),
            '(' | '[' | '{' => stack.push(c),
            ')' | ']' | '}' => {
                let open = stack.pop();
                let expected = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                if open != Some(expected) {
                    return Err(format!("unbalanced {c:?}"));
                }
            }
            _ => {}
        }
    }
    if in_string.is_some() {
        return Err("unterminated string".into());
    }
    if let Some(open) = stack.pop() {
        return Err(format!("unclosed {open:?}"));
    }
    Ok(())
}
