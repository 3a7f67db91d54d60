//! The webhook's certificates: a CA generated at start (its PEM is the `caBundle` the API server
//! trusts) and short-lived serving certificates it signs, swapped into the TLS server without a
//! restart.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

/// Certificates could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen refused the parameters or failed to sign.
    #[error("generating a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the generated key.
    #[error("loading the generated key: {0}")]
    Key(#[from] rustls::Error),
}

/// Clock skew tolerated between this pod and the API server: certificates start this early.
const SKEW: Duration = Duration::from_secs(300);

/// A signing CA held in memory only (never written anywhere).
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
    der: CertificateDer<'static>,
    not_after: OffsetDateTime,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// A serving certificate and when it stops being valid.
#[derive(Debug, Clone)]
pub struct Leaf {
    /// Chain (leaf, CA) and key, as rustls serves them.
    pub key: Arc<CertifiedKey>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl Authority {
    /// A new CA valid for `validity` from now (less the clock-skew margin before).
    pub fn generate(common_name: &str, validity: Duration) -> Result<Authority, CertError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = now - SKEW;
        params.not_after = now + validity;
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Authority {
            pem: cert.pem(),
            der: cert.der().clone(),
            not_after: params.not_after,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM: what goes into the webhook configuration's `caBundle`.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER (for a client's root store).
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// End of the CA's validity.
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }

    /// A serving certificate for `dns_names`, valid for `validity` from now.
    pub fn issue(&self, dns_names: &[String], validity: Duration) -> Result<Leaf, CertError> {
        let now = OffsetDateTime::now_utc();
        let mut params = CertificateParams::new(dns_names.to_vec())?;
        if let Some(first) = dns_names.first() {
            params
                .distinguished_name
                .push(DnType::CommonName, first.as_str());
        }
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - SKEW;
        // Never past the CA: a chain is only as valid as its shortest link.
        params.not_after = (now + validity).min(self.not_after);
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = rustls::crypto::ring::sign::any_supported_type(&der)?;
        Ok(Leaf {
            key: Arc::new(CertifiedKey::new(
                vec![cert.der().clone(), self.der.clone()],
                signer,
            )),
            not_before: params.not_before,
            not_after: params.not_after,
        })
    }
}

/// The certificate the TLS server presents, replaceable while it serves: every new handshake
/// gets the current one.
#[derive(Debug, Default)]
pub struct CertStore {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl CertStore {
    /// Presents `key` from the next handshake on.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(key);
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The rustls crypto provider: *ring*, the workspace's choice (it builds with a plain C
/// compiler; aws-lc-rs needs cmake). rustls 0.23.48 deprecated it for lacking post-quantum key
/// exchange, which the API-server-to-webhook hop on the cluster network does not need.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS server configuration (HTTP/1.1 only) presenting whatever `store` holds.
pub fn server_config(store: Arc<CertStore>) -> Arc<rustls::ServerConfig> {
    let provider = provider();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(store);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}
