//! The workload's side: a key generated locally, its CSR, and the certificate issued for it.

use std::sync::Arc;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::inspect::{spiffe_id_of, validity_of, IdentityError, Validity};
use crate::spiffe::SpiffeId;

/// A workload certificate that cannot be made or used.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadCertError {
    /// Generating the key or the CSR failed.
    #[error("cannot generate the workload key or CSR: {0}")]
    Generate(String),
    /// The CA returned no certificate.
    #[error("the CA returned an empty certificate chain")]
    EmptyChain,
    /// The certificate's identity cannot be read.
    #[error("the issued certificate: {0}")]
    Identity(#[from] IdentityError),
    /// The certificate names someone else.
    #[error("the issued certificate is for '{got}', not '{wanted}'")]
    WrongIdentity {
        /// The identity asked for.
        wanted: String,
        /// The identity in the certificate.
        got: String,
    },
    /// The certificate does not match the key, or rustls refuses it.
    #[error("the issued certificate cannot be used with the workload key: {0}")]
    Unusable(String),
    /// The CA refused.
    #[error("the CA did not issue: {0}")]
    Issue(String),
}

/// A freshly generated key pair (ECDSA P-256) waiting for its certificate. The private key
/// stays in this process: only the CSR goes to the CA.
pub struct PendingKey {
    key: KeyPair,
    identity: SpiffeId,
}

impl std::fmt::Debug for PendingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingKey")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl PendingKey {
    /// A new key for `identity`.
    pub fn generate(identity: SpiffeId) -> Result<Self, WorkloadCertError> {
        let key = KeyPair::generate().map_err(|e| WorkloadCertError::Generate(e.to_string()))?;
        Ok(PendingKey { key, identity })
    }

    /// The identity the key is for.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// A DER certificate signing request naming the identity as its URI SAN.
    pub fn csr_der(&self) -> Result<Vec<u8>, WorkloadCertError> {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = self
            .identity
            .uri()
            .as_str()
            .try_into()
            .map_err(|e: rcgen::Error| WorkloadCertError::Generate(e.to_string()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params
            .serialize_request(&self.key)
            .map_err(|e| WorkloadCertError::Generate(e.to_string()))?;
        Ok(csr.der().to_vec())
    }

    /// Pairs the key with the chain the CA issued (workload certificate first), checking the
    /// certificate is for this identity and this key.
    pub fn into_workload_cert(
        self,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<WorkloadCert, WorkloadCertError> {
        let leaf = chain.first().ok_or(WorkloadCertError::EmptyChain)?;
        let got = spiffe_id_of(leaf)?;
        if got != self.identity {
            return Err(WorkloadCertError::WrongIdentity {
                wanted: self.identity.to_string(),
                got: got.to_string(),
            });
        }
        let validity = validity_of(leaf)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()));
        let certified = CertifiedKey::from_der(chain, key, &crate::provider())
            .map_err(|e| WorkloadCertError::Unusable(e.to_string()))?;
        Ok(WorkloadCert {
            certified: Arc::new(certified),
            identity: self.identity,
            validity,
        })
    }
}

/// A workload's key and certificate chain, ready for rustls, with what it says.
#[derive(Clone, Debug)]
pub struct WorkloadCert {
    certified: Arc<CertifiedKey>,
    identity: SpiffeId,
    validity: Validity,
}

impl WorkloadCert {
    /// The key and chain as rustls uses them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// The identity the certificate proves.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// When the certificate is valid.
    pub fn validity(&self) -> Validity {
        self.validity
    }
}
