//! Which Rollouts one controller installation acts on: the namespaces it watches
//! (`--watch-namespace`, default all) and its instance id (`--instance`): a Rollout labelled
//! `rollgate.dev/instance: <id>` belongs to the installation with that id, an unlabelled one to
//! the installation without. Two installations whose scopes do not overlap never touch each
//! other's objects, and each writes under its own field manager and Lease.

use std::sync::OnceLock;

use rollgate_crds::labels::INSTANCE;

/// The default field manager and Lease name.
const BASE: &str = "rollgate";

/// A controller's scope, checked at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    /// Empty: every namespace.
    pub namespaces: Vec<String>,
    pub instance: Option<String>,
}

/// A scope flag that cannot be used, naming the flag and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScopeError {
    #[error("--watch-namespace {0:?}: {1}")]
    Namespace(String, &'static str),
    #[error("--instance {0:?}: {1}")]
    Instance(String, &'static str),
}

// === impl Scope ===

impl Scope {
    /// Checks the flags: namespace names as the API server accepts them, an instance id that
    /// can be a label value (and fits in a Lease and field-manager name); duplicates dropped.
    pub fn new(mut namespaces: Vec<String>, instance: Option<String>) -> Result<Scope, ScopeError> {
        for ns in &namespaces {
            if let Some(why) = dns_label_problem(ns, 63) {
                return Err(ScopeError::Namespace(ns.clone(), why));
            }
        }
        namespaces.sort();
        namespaces.dedup();
        let instance = instance.filter(|i| !i.is_empty());
        if let Some(id) = &instance
            && let Some(why) = dns_label_problem(id, 40)
        {
            return Err(ScopeError::Instance(id.clone(), why));
        }
        Ok(Scope { namespaces, instance })
    }

    /// The label selector of this installation's Rollouts.
    pub fn rollout_selector(&self) -> String {
        match &self.instance {
            Some(id) => format!("{INSTANCE}={id}"),
            None => format!("!{INSTANCE}"),
        }
    }

    /// Whether a Rollout in `namespace` with `labels` is this installation's.
    pub fn covers(&self, namespace: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        let in_namespace = self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace);
        in_namespace && labels.get(INSTANCE) == self.instance.as_ref()
    }

    /// The field manager of every write, and the name of the leader-election Lease.
    pub fn manager(&self) -> String {
        match &self.instance {
            Some(id) => format!("{BASE}-{id}"),
            None => BASE.to_string(),
        }
    }

    pub fn lease_name(&self) -> String {
        format!("{}-controller", self.manager())
    }

    /// The namespaces to watch, one by one; `[None]` (all at once) when unscoped.
    pub fn watched(&self) -> Vec<Option<&str>> {
        if self.namespaces.is_empty() {
            return vec![None];
        }
        self.namespaces.iter().map(|ns| Some(ns.as_str())).collect()
    }
}

/// Why `s` is not an RFC 1123 label of at most `max` characters, if it is not.
fn dns_label_problem(s: &str, max: usize) -> Option<&'static str> {
    if s.is_empty() {
        return Some("must not be empty");
    }
    if s.len() > max {
        return Some(if max == 63 { "longer than 63 characters" } else { "longer than 40 characters" });
    }
    if !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        return Some("only lowercase letters, digits and '-' are allowed");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Some("must start and end with a letter or digit");
    }
    None
}

// === the process's field manager ===

static MANAGER: OnceLock<String> = OnceLock::new();

/// Sets the field manager of this process's writes (once, at start; later calls are ignored).
pub fn set_field_manager(scope: &Scope) {
    let _ = MANAGER.set(scope.manager());
}

/// The field manager of this process's writes: `rollgate`, or `rollgate-<instance>`.
pub fn field_manager() -> &'static str {
    MANAGER.get().map(String::as_str).unwrap_or(BASE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(instance: Option<&str>) -> std::collections::BTreeMap<String, String> {
        instance.map(|i| (INSTANCE.to_string(), i.to_string())).into_iter().collect()
    }

    #[test]
    fn an_unscoped_controller_takes_every_namespace_but_only_unlabelled_rollouts() {
        let scope = Scope::new(vec![], None).expect("scope");
        assert_eq!(scope.rollout_selector(), "!rollgate.dev/instance");
        assert!(scope.covers("anywhere", &labels(None)));
        assert!(!scope.covers("anywhere", &labels(Some("blue"))));
        assert_eq!((scope.manager(), scope.lease_name()), ("rollgate".into(), "rollgate-controller".into()));
    }

    #[test]
    fn an_instance_takes_only_its_labelled_rollouts_in_its_namespaces() {
        let scope =
            Scope::new(vec!["shop".into(), "web".into(), "shop".into()], Some("blue".into())).expect("scope");
        assert_eq!(scope.namespaces, ["shop", "web"]);
        assert_eq!(scope.rollout_selector(), "rollgate.dev/instance=blue");
        assert!(scope.covers("shop", &labels(Some("blue"))));
        assert!(!scope.covers("shop", &labels(None)));
        assert!(!scope.covers("shop", &labels(Some("green"))));
        assert!(!scope.covers("other", &labels(Some("blue"))));
        assert_eq!(scope.lease_name(), "rollgate-blue-controller");
    }

    #[test]
    fn bad_flags_are_refused_naming_the_flag_and_the_reason() {
        assert_eq!(
            Scope::new(vec!["Shop".into()], None),
            Err(ScopeError::Namespace("Shop".into(), "only lowercase letters, digits and '-' are allowed"))
        );
        let err = Scope::new(vec![], Some("blue-".into())).expect_err("refused");
        assert_eq!(err.to_string(), "--instance \"blue-\": must start and end with a letter or digit");
        assert!(Scope::new(vec![], Some("x".repeat(41))).is_err());
        assert_eq!(Scope::new(vec![], Some(String::new())).map(|s| s.instance), Ok(None));
    }
}
