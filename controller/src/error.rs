//! The controller's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("traffic router: {0}")]
    Router(String),
    #[error("metrics provider: {0}")]
    Metrics(#[from] crate::metrics_provider::prometheus::ClientError),
    #[error("metrics provider: {0}")]
    Query(#[from] crate::metrics_provider::QueryError),
    /// An object the Rollout owns (or would own) could not be written.
    #[error(transparent)]
    Owned(#[from] crate::owned::WriteError),
}

impl Error {
    /// Short label for the `rollgate_reconcile_errors_total{kind}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Json(_) => "encoding",
            Error::Router(_) => "router",
            Error::Metrics(_) | Error::Query(_) => "metrics",
            Error::Owned(crate::owned::WriteError::Conflict { .. }) => "conflict",
            Error::Owned(crate::owned::WriteError::Rejected { .. }) => "rejected",
            Error::Owned(crate::owned::WriteError::Failed { .. }) => "write",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
