//! A server certificate for DNS names (an HTTPS endpoint such as the admission webhook), as
//! opposed to a workload's SPIFFE certificate.

use std::sync::Arc;

use rcgen::KeyPair;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

use crate::inspect::{validity_of, Validity};
use crate::store::Presented;

/// A serving certificate and key, ready for rustls, with the names it serves.
#[derive(Clone, Debug)]
pub struct ServingCert {
    certified: Arc<CertifiedKey>,
    dns_names: Vec<String>,
    validity: Validity,
}

impl ServingCert {
    /// Pairs `key` with `chain` (its certificate first).
    pub(crate) fn new(
        chain: Vec<CertificateDer<'static>>,
        key: &KeyPair,
        dns_names: Vec<String>,
    ) -> Result<Self, String> {
        let leaf = chain.first().ok_or("an empty certificate chain")?;
        let validity = validity_of(leaf).map_err(|e| e.to_string())?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let certified =
            CertifiedKey::from_der(chain, key, &crate::provider()).map_err(|e| e.to_string())?;
        Ok(ServingCert {
            certified: Arc::new(certified),
            dns_names,
            validity,
        })
    }

    /// The key and chain (the certificate, then its CA chain up to the root) as rustls uses
    /// them.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.certified)
    }

    /// The DNS names the certificate serves.
    pub fn dns_names(&self) -> &[String] {
        &self.dns_names
    }

    /// When the certificate is valid.
    pub fn validity(&self) -> Validity {
        self.validity
    }
}

impl Presented for ServingCert {
    fn certified_key(&self) -> Arc<CertifiedKey> {
        ServingCert::certified_key(self)
    }

    fn subject(&self) -> String {
        self.dns_names.join(",")
    }
}
