//! The current certificate, swapped atomically on rotation.

use std::sync::Arc;

use arc_swap::ArcSwapOption;
use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;

use crate::workload::WorkloadCert;

/// A certificate a [`CertStore`] can present: a [`WorkloadCert`] (mutual TLS between
/// workloads) or a [`ServingCert`](crate::ServingCert) (an HTTPS endpoint reached by name).
pub trait Presented: std::fmt::Debug + Send + Sync + 'static {
    /// The key and chain as rustls uses them.
    fn certified_key(&self) -> Arc<CertifiedKey>;
    /// Who the certificate names, for logs and `Debug`.
    fn subject(&self) -> String;
}

impl Presented for WorkloadCert {
    fn certified_key(&self) -> Arc<CertifiedKey> {
        WorkloadCert::certified_key(self)
    }

    fn subject(&self) -> String {
        self.identity().to_string()
    }
}

/// Holds the certificate every new handshake presents, on both the server side
/// ([`ResolvesServerCert`]) and the client side ([`ResolvesClientCert`]): a workload
/// certificate by default, or a [`ServingCert`](crate::ServingCert).
///
/// [`CertStore::install`] replaces it: handshakes that start afterwards use the new one, and
/// connections already established are untouched (TLS does not look at the certificate again).
/// Until a certificate is installed, handshakes fail.
pub struct CertStore<C = WorkloadCert> {
    current: ArcSwapOption<C>,
}

impl<C> Default for CertStore<C> {
    fn default() -> Self {
        CertStore {
            current: ArcSwapOption::empty(),
        }
    }
}

impl<C: Presented> std::fmt::Debug for CertStore<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.current.load();
        f.debug_struct("CertStore")
            .field("subject", &current.as_ref().map(|c| c.subject()))
            .finish()
    }
}

// `new` and `with` name the default type, so that `CertStore::new()` needs no annotation.
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
}

impl<C: Presented> CertStore<C> {
    /// Makes `cert` the one new handshakes present.
    pub fn install(&self, cert: C) {
        self.current.store(Some(Arc::new(cert)));
    }

    /// The certificate new handshakes present, if any.
    pub fn current(&self) -> Option<Arc<C>> {
        self.current.load_full()
    }

    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.current.load().as_ref().map(|c| c.certified_key())
    }
}

impl<C: Presented> ResolvesServerCert for CertStore<C> {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}

impl<C: Presented> ResolvesClientCert for CertStore<C> {
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
