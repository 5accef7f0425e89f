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
    Metrics(String),
}

impl Error {
    /// Short label for the `rollgate_reconcile_errors_total{kind}` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Json(_) => "encoding",
            Error::Router(_) => "router",
            Error::Metrics(_) => "metrics",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
