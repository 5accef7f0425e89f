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

/// Which series a query counts: label matchers, and values for a custom query's variables.
pub trait SeriesSelector: Send + Sync {
    /// PromQL label matchers, without braces (`namespace="shop",role="canary"`).
    fn matchers(&self) -> String;
    /// The value of a custom template's `$variable` (other than `$window`), unescaped.
    fn variable(&self, name: &str) -> Option<String>;
}

/// A Rollout's pods of one role and revision.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub namespace: String,
    pub rollout: String,
    pub role: &'static str,
    pub revision: String,
}

impl SeriesSelector for Selector {
    fn matchers(&self) -> String {
        format!(
            "namespace=\"{}\",rollout=\"{}\",role=\"{}\",revision=\"{}\"",
            escape(&self.namespace),
            escape(&self.rollout),
            escape(self.role),
            escape(&self.revision)
        )
    }

    fn variable(&self, name: &str) -> Option<String> {
        match name {
            "namespace" => Some(self.namespace.clone()),
            "name" => Some(self.rollout.clone()),
            "role" => Some(self.role.to_string()),
            "revision" => Some(self.revision.clone()),
            _ => None,
        }
    }
}

/// Series chosen by label matchers given by a person (`rollgate gate eval --selector`), checked
/// by `LabelMatchers::parse`. Custom templates may only use `$window` with it.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelMatchers(String);

/// Label matchers that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("empty; expected label matchers such as app=\"web\",version=\"v2\"")]
    Empty,
    #[error("expected a label name at {0:?}")]
    LabelName(String),
    #[error("label {0}: expected =, !=, =~ or !~")]
    Operator(String),
    #[error("label {0}: the value must be in double quotes")]
    Unquoted(String),
    #[error("label {0}: unterminated value")]
    Unterminated(String),
    #[error("expected a comma at {0:?}")]
    Comma(String),
}

impl LabelMatchers {
    /// Accepts `name="value"` pairs separated by commas, with `=`, `!=`, `=~` or `!~`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut rest = text.trim();
        if rest.is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut out = Vec::new();
        while !rest.is_empty() {
            let name_len =
                rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
            let name = &rest[..name_len];
            if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(SelectorError::LabelName(rest.to_string()));
            }
            rest = rest[name_len..].trim_start();
            let op = ["=~", "!~", "!=", "="].into_iter().find(|op| rest.starts_with(op));
            let Some(op) = op else {
                return Err(SelectorError::Operator(name.to_string()));
            };
            rest = rest[op.len()..].trim_start();
            let Some(body) = rest.strip_prefix('"') else {
                return Err(SelectorError::Unquoted(name.to_string()));
            };
            let mut end = None;
            let mut escaped = false;
            for (i, c) in body.char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return Err(SelectorError::Unterminated(name.to_string()));
            };
            out.push(format!("{name}{op}\"{}\"", &body[..end]));
            rest = body[end + 1..].trim_start();
            if let Some(r) = rest.strip_prefix(',') {
                rest = r.trim_start();
            } else if !rest.is_empty() {
                return Err(SelectorError::Comma(rest.to_string()));
            }
        }
        Ok(Self(out.join(",")))
    }
}

impl SeriesSelector for LabelMatchers {
    fn matchers(&self) -> String {
        self.0.clone()
    }

    fn variable(&self, _name: &str) -> Option<String> {
        None
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
    /// Custom templates use `$namespace` etc. instead of `$selector`.
    custom: bool,
}

const REQUESTS: &str = "http_server_request_duration_seconds";

pub fn for_check(check: &Check) -> Result<CheckQueries, QueryError> {
    let err = |reason: String| QueryError { check: check.name.clone(), reason };
    if check.error_rate.is_some() {
        return Ok(CheckQueries {
            total: delta(&format!("{REQUESTS}_count{{$selector}}")),
            bad: Bad::Query(delta(&format!(
                "{REQUESTS}_count{{$selector,http_response_status_code=~\"5..\"}}"
            ))),
            custom: false,
        });
    }
    if let Some(l) = &check.latency {
        return Ok(histogram(REQUESTS, l.max.as_secs_f64()));
    }
    if let Some(p) = &check.pause {
        let base = match p.preset {
            PausePreset::Refserver => "runtime_pause_seconds",
            PausePreset::Go => "go_sched_pauses_total_gc_seconds",
            PausePreset::Jvm => "jvm_gc_duration_seconds",
        };
        return Ok(histogram(base, p.max.as_secs_f64()));
    }
    if let Some(q) = &check.promql {
        validate_template(&q.bad).map_err(|r| err(format!("promql.bad: {r}")))?;
        validate_template(&q.total).map_err(|r| err(format!("promql.total: {r}")))?;
        return Ok(CheckQueries { total: q.total.clone(), bad: Bad::Query(q.bad.clone()), custom: true });
    }
    Err(err("no check kind is set".into()))
}

/// Bad = all observations minus those in the bucket at the limit.
fn histogram(base: &str, limit_s: f64) -> CheckQueries {
    CheckQueries {
        total: delta(&format!("{base}_count{{$selector}}")),
        bad: Bad::TotalMinus(format!("{base}_bucket{{$selector,le=~\"{}\"}}", le_regex(limit_s))),
        custom: false,
    }
}

/// The change of a counter's sum over `$window`, series born inside the window counted from 0.
fn delta(counter: &str) -> String {
    format!("clamp_min((sum({counter}) or vector(0)) - (sum({counter} offset $window) or vector(0)), 0)")
}

impl CheckQueries {
    pub fn total(&self, sel: &dyn SeriesSelector, window: Duration) -> String {
        self.render(&self.total, sel, window)
    }

    pub fn bad_query(&self, sel: &dyn SeriesSelector, window: Duration) -> String {
        match &self.bad {
            Bad::Query(q) => self.render(q, sel, window),
            Bad::TotalMinus(bucket) => self.render(&delta(bucket), sel, window),
        }
    }

    /// For bucket-based checks: the bucket's current sum, which is empty when no bucket has the
    /// limit as its bound.
    pub fn bucket_presence(&self, sel: &dyn SeriesSelector, window: Duration) -> Option<String> {
        match &self.bad {
            Bad::TotalMinus(bucket) => Some(self.render(&format!("sum({bucket})"), sel, window)),
            Bad::Query(_) => None,
        }
    }

    /// The `$variables` of a custom template that `sel` cannot fill.
    pub fn unfilled(&self, sel: &dyn SeriesSelector) -> Vec<&'static str> {
        if !self.custom {
            return Vec::new();
        }
        let bad = match &self.bad {
            Bad::Query(q) | Bad::TotalMinus(q) => q,
        };
        let used: Vec<String> = variables_in(&self.total).chain(variables_in(bad)).collect();
        VARIABLES
            .iter()
            .copied()
            .filter(|v| used.iter().any(|u| u == v) && sel.variable(v).is_none())
            .collect()
    }

    fn render(&self, template: &str, sel: &dyn SeriesSelector, window: Duration) -> String {
        let window = format!("{}s", window.as_secs().max(1));
        if self.custom {
            // `$namespace` before `$name`, which is its prefix.
            let mut out = template.to_string();
            for v in VARIABLES {
                if let Some(value) = sel.variable(v) {
                    out = out.replace(&format!("${v}"), &escape(&value));
                }
            }
            out.replace("$window", &window)
        } else {
            template.replace("$selector", &sel.matchers()).replace("$window", &window)
        }
    }
}

/// The `$name`s in a template, whole (`$namespace` is not `$name`).
fn variables_in(template: &str) -> impl Iterator<Item = String> + '_ {
    template
        .split('$')
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
}

/// A custom template's variables besides `$window`, longest first where one is a prefix.
const VARIABLES: [&str; 4] = ["namespace", "name", "role", "revision"];

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

/// What is wrong with a custom query template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("empty query")]
    Empty,
    #[error("unknown variable ${0} (known: $namespace, $name, $role, $revision, $window)")]
    UnknownVariable(String),
    #[error("unbalanced {0:?}")]
    Unbalanced(char),
    #[error("unterminated string")]
    UnterminatedString,
    #[error("unclosed {0:?}")]
    Unclosed(char),
}

/// A light syntax check of a custom query template: balanced brackets outside strings,
/// terminated strings, only known `$variables`. Catches the malformed query before it is sent.
pub fn validate_template(q: &str) -> Result<(), TemplateError> {
    if q.trim().is_empty() {
        return Err(TemplateError::Empty);
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
                return Err(TemplateError::UnknownVariable(name));
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
                    return Err(TemplateError::Unbalanced(c));
                }
            }
            _ => {}
        }
    }
    if in_string.is_some() {
        return Err(TemplateError::UnterminatedString);
    }
    if let Some(open) = stack.pop() {
        return Err(TemplateError::Unclosed(open));
    }
    Ok(())
}
