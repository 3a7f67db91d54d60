//! Building a client: in-cluster credentials by default, or a kubeconfig file.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Where the API server is and how to authenticate to it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientOptions {
    /// A kubeconfig file, or several separated by `:` (merged, the first to set a field
    /// winning); `None` uses the pod's service account (in-cluster). The caller resolves
    /// `KUBECONFIG` (see `meshmeter mixer --kubeconfig`).
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use instead of its `current-context`.
    pub context: Option<String>,
}

/// Why no client could be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The kubeconfig file cannot be read or parsed.
    #[error("cannot read kubeconfig {path}: {source}")]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: kube::config::KubeconfigError,
    },
    /// No in-cluster credentials (not running in a pod, or no service account token).
    #[error("no in-cluster Kubernetes credentials ({0}); give --kubeconfig outside a cluster")]
    InCluster(#[source] kube::config::InClusterError),
    /// The client cannot be built from the configuration (TLS material, proxy, ...).
    #[error("cannot build a Kubernetes client: {0}")]
    Build(#[source] kube::Error),
}

/// The client configuration for `options`, without connecting.
pub async fn client_config(options: &ClientOptions) -> Result<Config, ClientError> {
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    match &options.kubeconfig {
        Some(path) => {
            let err = |source| ClientError::Kubeconfig {
                path: path.clone(),
                source,
            };
            // `KUBECONFIG` may list several files: the first to set a field wins.
            let mut merged: Option<Kubeconfig> = None;
            for one in std::env::split_paths(path).filter(|p| !p.as_os_str().is_empty()) {
                let file =
                    Kubeconfig::read_from(&one).map_err(|source| ClientError::Kubeconfig {
                        path: one.clone(),
                        source,
                    })?;
                merged = Some(match merged {
                    Some(m) => m.merge(file).map_err(err)?,
                    None => file,
                });
            }
            let file = merged.unwrap_or_default();
            Config::from_custom_kubeconfig(file, &kube_options)
                .await
                .map_err(err)
        }
        None => Config::incluster().map_err(ClientError::InCluster),
    }
}

/// A client for `options`. Nothing is requested yet: the first request is the first list.
pub async fn connect(options: &ClientOptions) -> Result<Client, ClientError> {
    let config = client_config(options).await?;
    Client::try_from(config).map_err(ClientError::Build)
}
