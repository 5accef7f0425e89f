//! Custom query templates (`promql` checks): their variables, and a parse of the PromQL they
//! make (with `promql-parser`), so a malformed query is refused when the Rollout is read
//! instead of holding every step as "metrics unavailable".

/// A custom template's variables besides `$window`, longest first where one is a prefix.
pub const VARIABLES: [&str; 4] = ["namespace", "name", "role", "revision"];

/// What is wrong with a custom query template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("empty query")]
    Empty,
    #[error("unknown variable ${0} (known: $namespace, $name, $role, $revision, $window)")]
    UnknownVariable(String),
    #[error("not PromQL: {0}")]
    Syntax(String),
}

/// The `$name`s in a template, whole (`$namespace` is not `$name`).
pub fn variables_in(template: &str) -> impl Iterator<Item = String> + '_ {
    template
        .split('$')
        .skip(1)
        .map(|rest| rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect())
}

/// Checks a template: only known `$variables`, and PromQL once they are filled in (`$window`
/// with a duration, the others with a plain value).
pub fn validate_template(q: &str) -> Result<(), TemplateError> {
    if q.trim().is_empty() {
        return Err(TemplateError::Empty);
    }
    if let Some(unknown) = variables_in(q).find(|v| v != "window" && !VARIABLES.contains(&v.as_str())) {
        return Err(TemplateError::UnknownVariable(unknown));
    }
    let mut filled = q.replace("$window", "1m");
    for v in VARIABLES {
        filled = filled.replace(&format!("${v}"), "x");
    }
    promql_parser::parser::parse(&filled).map(|_| ()).map_err(TemplateError::Syntax)
}
