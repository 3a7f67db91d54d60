//! The admission webhook's `caBundle`: the injector's CA merged into every webhook of its
//! MutatingWebhookConfiguration, so that the API server trusts the certificates the injector
//! generates.

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};

/// Most CA certificates kept in a `caBundle`: the injector's own and those of other replicas
/// (or of its previous runs, whose keys are gone and which sign nothing any more).
pub const MAX_BUNDLE_CAS: usize = 4;

/// The CA could not be published into the configuration.
#[derive(Debug, thiserror::Error)]
pub enum CaBundleError {
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

/// Writes the bundle into every webhook of one MutatingWebhookConfiguration through the
/// Kubernetes API (get, then update with the read resourceVersion; retried on conflict).
#[derive(Clone)]
pub struct WebhookCaBundle {
    api: Api<MutatingWebhookConfiguration>,
    name: String,
}

impl WebhookCaBundle {
    /// For the configuration `name`, through `client`.
    pub fn new(client: kube::Client, name: impl Into<String>) -> WebhookCaBundle {
        WebhookCaBundle {
            api: Api::all(client),
            name: name.into(),
        }
    }

    fn error(&self, e: kube::Error) -> CaBundleError {
        CaBundleError::Api {
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

impl WebhookCaBundle {
    /// Puts `ca_pem` first in the `caBundle` of every webhook of the configuration, keeping
    /// the other CAs there after it (at most [`MAX_BUNDLE_CAS`] in all); writes nothing when
    /// every bundle already has it.
    pub async fn publish(&self, ca_pem: &str) -> Result<(), CaBundleError> {
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
        Err(CaBundleError::Conflict {
            name: self.name.clone(),
            attempts: ATTEMPTS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundles_put_the_new_ca_first_and_keep_at_most_four() {
        let cert =
            |n: u32| format!("-----BEGIN CERTIFICATE-----\nMII{n}\n-----END CERTIFICATE-----\n");
        let existing = format!(
            "{}junk\n{}{}{}{}",
            cert(1),
            cert(2),
            cert(3),
            cert(4),
            cert(5)
        );
        assert_eq!(pem_blocks(&existing).len(), 5);
        let merged = merge_bundle(&existing, &cert(9));
        assert_eq!(
            merged,
            format!("{}{}{}{}", cert(9), cert(1), cert(2), cert(3))
        );
        // Publishing the same CA again changes nothing.
        assert_eq!(merge_bundle(&merged, &cert(9)), merged);
        assert_eq!(merge_bundle("", &cert(9)), cert(9));
    }
}
