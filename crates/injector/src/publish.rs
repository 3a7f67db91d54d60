//! Publishing the CA into the MutatingWebhookConfiguration's `caBundle`, so the API server
//! trusts the certificates the injector generates. Behind a trait: the Kubernetes API
//! implementation, and anything a test or another platform needs.

use std::future::Future;

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

/// Most CA certificates kept in a `caBundle`: the injector's own and those of other replicas
/// (or of its previous runs, whose keys are gone and which sign nothing any more).
pub const MAX_BUNDLE_CAS: usize = 4;

/// The CA could not be published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The API server refused or could not be reached.
    #[error("MutatingWebhookConfiguration {name}: {source}")]
    Api {
        /// The configuration's name.
        name: String,
        /// kube's error.
        source: Box<kube::Error>,
    },
    /// The configuration kept changing under us.
    #[error("MutatingWebhookConfiguration {name}: still conflicting after {attempts} attempts")]
    Conflict {
        /// The configuration's name.
        name: String,
        /// How many read-modify-write rounds were tried.
        attempts: u32,
    },
}

/// Makes the API server trust a CA for the webhook.
pub trait CaBundlePublisher: Send + Sync {
    /// Puts `ca_pem` first in the trusted bundle (keeping at most [`MAX_BUNDLE_CAS`]).
    fn publish(&self, ca_pem: &str) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Publishes nothing: for running outside Kubernetes (the caller distributes the CA).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPublish;

impl CaBundlePublisher for NoPublish {
    async fn publish(&self, _ca_pem: &str) -> Result<(), PublishError> {
        Ok(())
    }
}

/// Writes the bundle into every webhook of one MutatingWebhookConfiguration through the
/// Kubernetes API (get, then update with the read resourceVersion; retried on conflict).
#[derive(Clone)]
pub struct KubePublisher {
    api: Api<MutatingWebhookConfiguration>,
    name: String,
}

impl KubePublisher {
    /// For the configuration `name`, through `client`.
    pub fn new(client: kube::Client, name: impl Into<String>) -> KubePublisher {
        KubePublisher {
            api: Api::all(client),
            name: name.into(),
        }
    }

    fn error(&self, e: kube::Error) -> PublishError {
        PublishError::Api {
            name: self.name.clone(),
            source: Box::new(e),
        }
    }
}

/// Splits a PEM bundle into its certificate blocks (normalised: one block, trailing newline).
pub fn pem_blocks(bundle: &str) -> Vec<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find(BEGIN) {
        let Some(len) = rest[start..].find(END) else {
            break;
        };
        let end = start + len + END.len();
        out.push(format!("{}\n", &rest[start..end]));
        rest = &rest[end..];
    }
    out
}

/// `ca_pem` first, then the other certificates of `existing` not equal to it, at most
/// [`MAX_BUNDLE_CAS`] in all.
pub fn merge_bundle(existing: &str, ca_pem: &str) -> String {
    let own = pem_blocks(ca_pem);
    let mut blocks = own.clone();
    for b in pem_blocks(existing) {
        if !blocks.contains(&b) {
            blocks.push(b);
        }
    }
    blocks.truncate(MAX_BUNDLE_CAS.max(own.len()));
    blocks.concat()
}

impl CaBundlePublisher for KubePublisher {
    async fn publish(&self, ca_pem: &str) -> Result<(), PublishError> {
        const ATTEMPTS: u32 = 5;
        for _ in 0..ATTEMPTS {
            let mut config = self.api.get(&self.name).await.map_err(|e| self.error(e))?;
            let mut changed = false;
            for hook in config.webhooks.iter_mut().flatten() {
                let existing = hook
                    .client_config
                    .ca_bundle
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .unwrap_or_default();
                let merged = merge_bundle(&existing, ca_pem);
                if merged != existing {
                    hook.client_config.ca_bundle = Some(ByteString(merged.into_bytes()));
                    changed = true;
                }
            }
            if !changed {
                return Ok(());
            }
            // The resourceVersion read above makes this a compare-and-swap: another replica's
            // write in between gives 409 and we merge again on top of it.
            match self
                .api
                .replace(&self.name, &PostParams::default(), &config)
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(e) => return Err(self.error(e)),
            }
        }
        Err(PublishError::Conflict {
            name: self.name.clone(),
            attempts: ATTEMPTS,
        })
    }
}
