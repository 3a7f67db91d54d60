//! The mesh's trust bundle in every namespace: the CA's root certificate(s) in a ConfigMap
//! [`TRUST_BUNDLE_CONFIGMAP`] that injected sidecars mount (`MESHMETER_CA_ROOT`).
//!
//! The publisher watches namespaces and, for each one listed or added, creates the ConfigMap
//! or brings its [`TRUST_BUNDLE_KEY`] up to date (get, then replace with the read
//! resourceVersion; retried on conflict). It owns only ConfigMaps carrying its label
//! [`MANAGED_BY_LABEL`]: one of the same name that someone else made is left alone, and
//! said so in a warning.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use tokio::task::JoinHandle;

use crate::WatchMetrics;

/// The ConfigMap holding the trust bundle in every namespace.
pub const TRUST_BUNDLE_CONFIGMAP: &str = "meshmeter-ca-root";
/// Its key holding the root certificate(s), PEM.
pub const TRUST_BUNDLE_KEY: &str = "root-cert.pem";
/// The label (name, value) marking the ConfigMaps the publisher made and may update.
pub const MANAGED_BY_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", "meshmeter-ca");

/// Times a namespace whose publishing failed is tried again (about 25 minutes in all).
pub const TRUST_BUNDLE_RETRIES: u32 = 30;

/// Read-modify-write rounds tried before giving up on a namespace.
const ATTEMPTS: u32 = 5;

/// What publishing into one namespace did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// The ConfigMap did not exist and was created.
    Created,
    /// Ours, with another bundle: replaced.
    Updated,
    /// Ours, already with this bundle: nothing written.
    Unchanged,
    /// A ConfigMap of that name without our label: left alone.
    Foreign,
}

/// The bundle could not be published into a namespace.
#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    /// The API server refused or could not be reached.
    #[error("ConfigMap {namespace}/{TRUST_BUNDLE_CONFIGMAP}: {source}")]
    Api {
        /// The namespace.
        namespace: String,
        /// kube's error.
        source: Box<kube::Error>,
    },
    /// The ConfigMap kept changing (or appearing) under us.
    #[error("ConfigMap {namespace}/{TRUST_BUNDLE_CONFIGMAP}: still conflicting after {attempts} attempts")]
    Conflict {
        /// The namespace.
        namespace: String,
        /// How many rounds were tried.
        attempts: u32,
    },
}

/// Publishes one trust bundle into [`TRUST_BUNDLE_CONFIGMAP`] of namespaces.
#[derive(Clone)]
pub struct TrustBundlePublisher {
    client: kube::Client,
    bundle: Arc<str>,
}

impl std::fmt::Debug for TrustBundlePublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustBundlePublisher")
            .field("bundle_len", &self.bundle.len())
            .finish_non_exhaustive()
    }
}

fn is_ours(cm: &ConfigMap) -> bool {
    cm.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(MANAGED_BY_LABEL.0))
        .is_some_and(|v| v == MANAGED_BY_LABEL.1)
}

impl TrustBundlePublisher {
    /// Publishes `bundle` (PEM) through `client`.
    pub fn new(client: kube::Client, bundle: &str) -> Self {
        TrustBundlePublisher {
            client,
            bundle: Arc::from(bundle),
        }
    }

    /// Creates or updates the ConfigMap of `namespace`; a foreign one is left alone.
    pub async fn publish(&self, namespace: &str) -> Result<Published, TrustBundleError> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), namespace);
        let error = |e: kube::Error| TrustBundleError::Api {
            namespace: namespace.to_owned(),
            source: Box::new(e),
        };
        let data = BTreeMap::from([(TRUST_BUNDLE_KEY.to_owned(), self.bundle.to_string())]);
        for _ in 0..ATTEMPTS {
            match api.get_opt(TRUST_BUNDLE_CONFIGMAP).await.map_err(error)? {
                None => {
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(TRUST_BUNDLE_CONFIGMAP.to_owned()),
                            namespace: Some(namespace.to_owned()),
                            labels: Some(BTreeMap::from([(
                                MANAGED_BY_LABEL.0.to_owned(),
                                MANAGED_BY_LABEL.1.to_owned(),
                            )])),
                            ..ObjectMeta::default()
                        },
                        data: Some(data.clone()),
                        ..ConfigMap::default()
                    };
                    match api.create(&PostParams::default(), &cm).await {
                        Ok(_) => return Ok(Published::Created),
                        // Made by someone else in between: look at it again.
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(e) => return Err(error(e)),
                    }
                }
                Some(cm) if !is_ours(&cm) => return Ok(Published::Foreign),
                Some(cm) if cm.data.as_ref() == Some(&data) => return Ok(Published::Unchanged),
                Some(mut cm) => {
                    cm.data = Some(data.clone());
                    // The resourceVersion read above makes this a compare-and-swap.
                    match api
                        .replace(TRUST_BUNDLE_CONFIGMAP, &PostParams::default(), &cm)
                        .await
                    {
                        Ok(_) => return Ok(Published::Updated),
                        Err(kube::Error::Api(status)) if status.code == 409 => continue,
                        Err(e) => return Err(error(e)),
                    }
                }
            }
        }
        Err(TrustBundleError::Conflict {
            namespace: namespace.to_owned(),
            attempts: ATTEMPTS,
        })
    }

    /// Watches namespaces and publishes into each one listed or added (again after every
    /// relist). A namespace whose publishing fails is retried on its own with backoff (1 s,
    /// doubling, at most 60 s apart, [`TRUST_BUNDLE_RETRIES`] times), each failure logged;
    /// watch restarts are counted in `metrics`. Aborting the returned task stops the watch,
    /// not retries already under way.
    pub fn start(self, metrics: &WatchMetrics) -> JoinHandle<()> {
        let restarts = metrics.restarts("namespaces");
        // Namespaces with a retry under way: a relist during an outage starts no second one.
        let retrying: Arc<std::sync::Mutex<std::collections::HashSet<String>>> = Arc::default();
        let api: Api<Namespace> = Api::all(self.client.clone());
        tokio::spawn(async move {
            let mut stream = watcher::watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = stream.next().await {
                let ns = match event {
                    Ok(Event::Apply(ns) | Event::InitApply(ns)) => ns,
                    Ok(_) => continue,
                    Err(e) => {
                        restarts.inc();
                        tracing::warn!(error = %e, "namespace watch failed; retrying");
                        continue;
                    }
                };
                let Some(name) = ns.metadata.name else {
                    continue;
                };
                if ns.metadata.deletion_timestamp.is_some() {
                    continue;
                }
                match self.publish(&name).await {
                    Ok(Published::Created) => {
                        tracing::info!(namespace = %name, "trust bundle published")
                    }
                    Ok(Published::Updated) => {
                        tracing::info!(namespace = %name, "trust bundle updated")
                    }
                    Ok(Published::Unchanged) => {}
                    Ok(Published::Foreign) => tracing::warn!(
                        namespace = %name,
                        configmap = TRUST_BUNDLE_CONFIGMAP,
                        "a ConfigMap of this name not made by the CA (no {}={} label) is left alone; sidecars of this namespace may not trust the mesh's root",
                        MANAGED_BY_LABEL.0,
                        MANAGED_BY_LABEL.1,
                    ),
                    Err(e) => {
                        tracing::warn!(namespace = %name, error = %e, "cannot publish the trust bundle; retrying");
                        let fresh = retrying
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(name.clone());
                        if fresh {
                            let (publisher, retrying) = (self.clone(), Arc::clone(&retrying));
                            tokio::spawn(async move {
                                publisher.retry(&name).await;
                                retrying
                                    .lock()
                                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                                    .remove(&name);
                            });
                        }
                    }
                }
            }
        })
    }

    /// Publishes into `namespace` again with backoff until it works (at most
    /// [`TRUST_BUNDLE_RETRIES`] tries).
    async fn retry(&self, namespace: &str) {
        let mut delay = std::time::Duration::from_secs(1);
        for _ in 0..TRUST_BUNDLE_RETRIES {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(60));
            match self.publish(namespace).await {
                Ok(outcome) => {
                    tracing::info!(namespace = %namespace, ?outcome, "trust bundle published after a retry");
                    return;
                }
                Err(e) => {
                    tracing::warn!(namespace = %namespace, error = %e, "cannot publish the trust bundle; retrying")
                }
            }
        }
        tracing::error!(namespace = %namespace, "trust bundle not published: gave up; sidecars of this namespace get no mTLS until the CA restarts");
    }
}
