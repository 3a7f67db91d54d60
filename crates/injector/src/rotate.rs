//! Keeping a valid serving certificate: a CA at start, its PEM published, a leaf renewed at two
//! thirds of its lifetime, and a new CA (published beside the old one first) before the CA
//! itself runs out.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshmeter_certs::{Authority, AuthorityError, CertStore, IssueError, ServingCert};

use crate::publish::CaBundlePublisher;
use crate::server::Shared;

/// The webhook's certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A CA could not be generated.
    #[error("generating the injector's CA: {0}")]
    Authority(#[from] AuthorityError),
    /// A serving certificate could not be issued.
    #[error("issuing the injector's serving certificate: {0}")]
    Issue(#[from] IssueError),
}

/// Clock skew tolerated between this pod and the API server: certificates start this early.
const SKEW: Duration = Duration::from_secs(300);

/// The name of the CA certificates the injector generates (and their "trust domain", which
/// names no workload: this CA signs serving certificates only).
const CA_NAME: &str = "meshmeter-injector CA";

/// A CA held in memory only (never written anywhere) whose PEM is the `caBundle`.
fn generate_ca(validity: Duration) -> Result<Authority, CertError> {
    let now = SystemTime::now();
    Ok(Authority::generate_root_between(
        "meshmeter-injector",
        CA_NAME,
        now - SKEW,
        now + validity,
    )?)
}

/// A serving certificate for `names` signed by `ca`, valid for `validity` from now.
fn issue(ca: &Authority, names: &[String], validity: Duration) -> Result<ServingCert, CertError> {
    let now = SystemTime::now();
    Ok(ca.issue_serving(names, now - SKEW, now + validity)?)
}

/// Lifetimes and names of the generated certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertConfig {
    /// DNS names of the serving certificate (the Service's names).
    pub dns_names: Vec<String>,
    /// How long a CA is valid; a new one is made when less than twice `cert_validity` is left.
    pub ca_validity: Duration,
    /// How long a serving certificate is valid; it is renewed at two thirds of it.
    pub cert_validity: Duration,
}

impl CertConfig {
    /// The serving names of Service `service` in `namespace`, every form a client may use.
    pub fn service_names(service: &str, namespace: &str) -> Vec<String> {
        vec![
            service.to_string(),
            format!("{service}.{namespace}"),
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.cluster.local"),
        ]
    }
}

/// Publishes `ca_pem`, retrying with backoff (1 s doubling to 30 s) until it succeeds or
/// `shutdown` completes. Returns whether it was published.
async fn publish_until_done<P: CaBundlePublisher>(
    publisher: &P,
    ca_pem: &str,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    let mut backoff = Duration::from_secs(1);
    loop {
        match publisher.publish(ca_pem).await {
            Ok(()) => {
                tracing::info!("CA bundle published");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot publish the CA bundle")
            }
        }
        tokio::select! {
            () = &mut *shutdown => return false,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Keeps `store` serving a valid certificate until `shutdown` completes; `/ready` turns true
/// once the first certificate is served and its CA published.
pub async fn keep_certificates<P: CaBundlePublisher>(
    config: CertConfig,
    store: Arc<CertStore<ServingCert>>,
    publisher: P,
    shared: Arc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CertError> {
    tokio::pin!(shutdown);
    let mut ca = generate_ca(config.ca_validity)?;
    let mut issued = SystemTime::now();
    let leaf = issue(&ca, &config.dns_names, config.cert_validity)?;
    let mut not_after = leaf.validity().not_after;
    store.install(leaf);
    if !publish_until_done(&publisher, &ca.chain_pem(), &mut shutdown).await {
        return Ok(());
    }
    shared.ready.store(true, Ordering::Release);
    loop {
        // From issuance, not from not_before (which is back-dated for clock skew); never
        // sooner than a second, so a tiny validity cannot spin.
        let lifetime = not_after.duration_since(issued).unwrap_or_default();
        let renew_at = issued + lifetime * 2 / 3;
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1));
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
        let left = ca
            .validity()
            .not_after
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        if left < config.cert_validity * 2 {
            // The new CA joins the bundle before anything it signs is served; the old one
            // stays in the bundle, so the certificate in use keeps verifying meanwhile.
            let next = generate_ca(config.ca_validity)?;
            if !publish_until_done(&publisher, &next.chain_pem(), &mut shutdown).await {
                return Ok(());
            }
            ca = next;
            tracing::info!(not_after = ?ca.validity().not_after, "CA rotated");
        }
        issued = SystemTime::now();
        let leaf = issue(&ca, &config.dns_names, config.cert_validity)?;
        not_after = leaf.validity().not_after;
        store.install(leaf);
        tracing::info!(not_after = ?not_after, "serving certificate rotated");
    }
}
