//! How the controller is let into a Prometheus: the address with the headers, credentials and
//! CA the gate names, already read from their Secrets and ConfigMaps. Two gates with equal
//! access share one client; a rotated Secret makes a new one.

use std::fmt;

/// Credentials sent with every query.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Credentials {
    Bearer(String),
    Basic { username: String, password: String },
}

/// Everything needed to query one Prometheus.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Access {
    pub address: String,
    pub headers: Vec<(String, String)>,
    pub credentials: Option<Credentials>,
    /// PEM CA certificates that must sign the server's certificate (instead of the system's).
    pub ca_pem: Option<Vec<u8>>,
}

impl Access {
    /// An address with nothing else (the CLI's `--prometheus`).
    pub fn address(address: impl Into<String>) -> Self {
        Self { address: address.into(), headers: Vec::new(), credentials: None, ca_pem: None }
    }
}

// Secrets stay out of logs and error messages.
impl fmt::Debug for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let credentials = match &self.credentials {
            None => "none",
            Some(Credentials::Bearer(_)) => "bearer (redacted)",
            Some(Credentials::Basic { .. }) => "basic (redacted)",
        };
        f.debug_struct("Access")
            .field("address", &self.address)
            .field("headers", &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>())
            .field("credentials", &credentials)
            .field("ca_pem", &self.ca_pem.as_ref().map(|p| p.len()))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_a_secret() {
        let a = Access {
            address: "https://p".into(),
            headers: vec![("X-Scope-OrgID".into(), "team-a".into())],
            credentials: Some(Credentials::Basic { username: "u".into(), password: "hunter2".into() }),
            ca_pem: None,
        };
        let shown = format!("{a:?}");
        assert!(!shown.contains("hunter2") && !shown.contains("team-a"), "{shown}");
        assert!(shown.contains("basic (redacted)"), "{shown}");
    }
}
