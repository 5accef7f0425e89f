//! Which series a query counts: a Rollout's pods of one role and revision (or, at a gateway,
//! its backend Service of that role), or label matchers given by a person to the CLI.

use super::sources::{Scope, service_matchers};

/// Which series a query counts: label matchers, and values for a custom query's variables.
pub trait SeriesSelector: Send + Sync {
    /// PromQL label matchers, without braces (`namespace="shop",role="canary"`).
    fn matchers(&self) -> String;
    /// The matchers for series of `scope` (a gateway's per-backend series are selected by
    /// backend Service, not by pod labels).
    fn matchers_in(&self, scope: Scope) -> String {
        let _ = scope;
        self.matchers()
    }
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

    fn matchers_in(&self, scope: Scope) -> String {
        let service = format!("{}-{}", self.rollout, self.role);
        service_matchers(scope, &self.namespace, &service).unwrap_or_else(|| self.matchers())
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
