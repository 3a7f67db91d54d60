//! The current workload certificate, swapped atomically on rotation.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::workload::WorkloadCert;

/// Holds the workload certificate every new handshake presents, on both the server side
/// ([`ResolvesServerCert`]) and the client side ([`ResolvesClientCert`]).
///
/// [`CertStore::install`] replaces it: handshakes that start afterwards use the new one, and
/// connections already established are untouched (TLS does not look at the certificate again).
/// Until a certificate is installed, handshakes fail.
#[derive(Default)]
pub struct CertStore {
    current: ArcSwapOption<WorkloadCert>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("CertStore")
            .field(
                "identity",
                &current.as_ref().map(|c| c.identity().to_string()),
            )
            .finish()
    }
}

impl CertStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store holding `cert`.
    pub fn with(cert: WorkloadCert) -> Self {
        let store = Self::new();
        store.install(cert);
        store
    }

    /// Makes `cert` the one new handshakes present.
    pub fn install(&self, cert: WorkloadCert) {
        self.current.store(Some(Arc::new(cert)));
    }

    /// The certificate new handshakes present, if any.
    pub fn current(&self) -> Option<Arc<WorkloadCert>> {
        self.current.load_full()
    }

    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.certified_key())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        self.current.load().is_some()
    }
}
