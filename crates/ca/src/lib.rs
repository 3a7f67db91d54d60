//! The mesh's certificate authority and its clients.
//!
//! - [`CaServer`]: the CSR service (`istio.v1.auth.IstioCertificateService/CreateCertificate`,
//!   messages in [`proto`]): the caller proves who it is with a bearer token
//!   ([`Authenticator`]; [`BootstrapTokens`] off Kubernetes), sends a CSR, and gets a
//!   certificate for *its own* SPIFFE identity only; the private key never leaves the caller.
//! - [`CaClient`]: the sidecar's side: key generated locally, CSR sent, chain received.
//! - [`Rotator`]: issues the first certificate at start and renews it at two thirds of its
//!   lifetime into a [`meshmeter_certs::CertStore`], retrying with backoff while the CA is
//!   away and keeping the current certificate meanwhile.
//!
//! On Kubernetes, `meshmeter_kube::TokenReviewer` plugs in behind [`Authenticator`]: the API
//! server's TokenReview says which service account a projected token belongs to.

#![warn(missing_docs)]

mod auth;
mod client;
pub mod proto;
mod rotate;
mod server;
mod tls;

pub use auth::{
    AuthError, AuthFuture, Authenticator, BootstrapTokens, Caller, TokenFileError, MIN_TOKEN_LEN,
};
pub use client::{CaClient, CaClientError, IssuedCert};
pub use rotate::{Backoff, RotateError, RotationStats, Rotator, ROTATE_AT};
pub use server::{CaServer, CaStats, Refusal, TtlPolicy, DEFAULT_WORKLOAD_TTL};
pub use tls::{ca_identity, CA_NAMESPACE, CA_SERVICE_ACCOUNT};
