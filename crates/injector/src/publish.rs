//! Publishing the CA where the webhook's client trusts it (for Kubernetes, the
//! MutatingWebhookConfiguration's `caBundle`: `meshmeter_kube::WebhookCaBundle`, which the
//! binary wires in). Behind a trait, so that this crate talks to no API server.

use std::future::Future;

/// Makes the webhook's client (the API server) trust a CA.
pub trait CaBundlePublisher: Send + Sync {
    /// Why publishing failed (logged, then retried with backoff).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Puts `ca_pem` first among the trusted CAs (keeping the CAs of other replicas).
    fn publish(&self, ca_pem: &str) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// Publishes nothing: for running outside Kubernetes (the caller distributes the CA).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoPublish;

impl CaBundlePublisher for NoPublish {
    type Error = std::convert::Infallible;

    async fn publish(&self, _ca_pem: &str) -> Result<(), Self::Error> {
        Ok(())
    }
}
