//! Workload certificates and mutual TLS for the mesh, on rustls with *ring* (no OpenSSL).
//!
//! - [`SpiffeId`]: `spiffe://cluster.local/ns/N/sa/S`, and Istio 1.1's principal form
//!   `cluster.local/ns/N/sa/S`;
//! - [`Authority`]: a CA (a generated root, or a certificate and key from files, possibly an
//!   intermediate with its chain) that signs CSRs with the caller's SPIFFE URI SAN;
//! - [`PendingKey`] / [`WorkloadCert`]: the sidecar's side: a key made locally, its CSR, the
//!   certificate issued for it;
//! - [`CertStore`]: the current certificate, hot-swapped on rotation (new handshakes use the
//!   new one, established connections are untouched);
//! - [`ServingCert`]: a server certificate for DNS names ([`Authority::issue_serving`]), for an
//!   HTTPS endpoint such as the admission webhook ([`https_server_config`]);
//! - [`server_config`] / [`client_config`]: TLS 1.3 with mandatory client certificates, both
//!   peers verified against a [`TrustBundle`] (or a [`SharedBundle`], replaceable while the
//!   configurations are in use) and identified by their SPIFFE URI SAN;
//!   [`peer_identity`] reads it back after the handshake, [`HandshakeFailure`] classifies a
//!   refusal.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use meshmeter_certs::{Authority, CertStore, ExpectedPeer, SpiffeId, TrustBundle};
//!
//! let ca = Authority::generate_root("cluster.local", Duration::from_secs(3600)).unwrap();
//! let bundle = TrustBundle::new(vec![ca.root().clone()], "the CA").unwrap();
//! let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/mongodb".parse().unwrap();
//! let store = Arc::new(CertStore::with(ca.issue_workload(&id, Duration::from_secs(60)).unwrap()));
//! let server = meshmeter_certs::server_config(
//!     &bundle,
//!     Arc::clone(&store),
//!     ExpectedPeer::TrustDomain("cluster.local".into()),
//! ).unwrap();
//! let client = meshmeter_certs::client_config(&bundle, store, ExpectedPeer::OneOf(vec![id])).unwrap();
//! # let _ = (server, client);
//! ```

#![warn(missing_docs)]

mod authority;
mod inspect;
mod pem;
mod serving;
mod sessions;
mod spiffe;
mod store;
mod tls;
mod workload;

pub use authority::{Authority, AuthorityError, IssueError, Issued};
pub use inspect::{spiffe_id_of, validity_of, IdentityError, Validity};
pub use pem::{
    certificates_from_pem, certificates_to_pem, private_key_from_pem, PemError, SharedBundle,
    TrustBundle,
};
pub use serving::ServingCert;
pub use spiffe::{SpiffeId, SpiffeIdError, DEFAULT_TRUST_DOMAIN};
pub use store::{CertStore, Presented};
pub use tls::{
    client_config, https_server_config, peer_identity, provider, server_config, server_name,
    service_client_config, service_server_config, ExpectedPeer, HandshakeFailure,
    PeerIdentityError, TlsConfigError,
};
pub use workload::{PendingKey, WorkloadCert, WorkloadCertError};

pub use rustls;
