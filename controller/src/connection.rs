//! How every command that talks to Kubernetes reaches the cluster, as kubectl does (the CLI and
//! `rollgate controller` alike): one set of global flags (`--kubeconfig`, `--context`,
//! `-n/--namespace`), before or after the subcommand.

use std::path::PathBuf;

use clap::Args;
use kube::Config;
use kube::config::{KubeConfigOptions, Kubeconfig};

#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
}

/// A cluster configuration that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--kubeconfig {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error("no cluster configuration found (in-cluster or KUBECONFIG): {0}")]
    Infer(#[source] kube::config::InferConfigError),
}

impl KubeArgs {
    /// The first flag that is set, for commands that do not connect.
    pub fn first_set(&self) -> Option<&'static str> {
        if self.kubeconfig.is_some() {
            Some("--kubeconfig")
        } else if self.context.is_some() {
            Some("--context")
        } else if self.namespace.is_some() {
            Some("--namespace")
        } else {
            None
        }
    }

    /// The configuration these flags select: the file and context given, else what kubectl
    /// would use (KUBECONFIG, ~/.kube/config), else in-cluster.
    pub async fn config(&self) -> Result<Config, ConfigError> {
        let options = KubeConfigOptions { context: self.context.clone(), ..Default::default() };
        match &self.kubeconfig {
            Some(path) => {
                let kc = Kubeconfig::read_from(path)
                    .map_err(|source| ConfigError::Read { path: path.display().to_string(), source })?;
                Config::from_custom_kubeconfig(kc, &options).await.map_err(ConfigError::Kubeconfig)
            }
            None if self.context.is_some() => {
                Config::from_kubeconfig(&options).await.map_err(ConfigError::Kubeconfig)
            }
            None => Config::infer().await.map_err(ConfigError::Infer),
        }
    }
}
