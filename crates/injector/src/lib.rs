//! `meshmeter injector`: the mutating admission webhook that adds the transparent sidecar to
//! pods as they are created.
//!
//! - [`review`]: an `admission.k8s.io/v1` AdmissionReview in, one out, with the JSON Patch of
//!   [`meshmeter_inject::inject_json`] (the transformation `meshmeter inject` applies to
//!   files). Every review is allowed; a pod that cannot be injected gets a warning instead.
//! - [`serve`]: HTTPS on `POST /inject`, `GET /healthz`, `GET /ready`, with the TLS
//!   configuration of [`meshmeter_certs::https_server_config`] (rustls with ring, HTTP/1.1).
//! - [`keep_certificates`]: a CA generated at start ([`meshmeter_certs::Authority`]), serving
//!   certificates it signs renewed before expiry into a [`meshmeter_certs::CertStore`], and the CA published into the MutatingWebhookConfiguration's `caBundle` by
//!   a [`CaBundlePublisher`] (through the Kubernetes API: `meshmeter_kube::WebhookCaBundle`,
//!   wired in by the binary; this crate talks to no API server).

#![warn(missing_docs)]

mod publish;
mod review;
mod rotate;
mod server;

pub use publish::{CaBundlePublisher, NoPublish};
pub use review::{base64, review, Decision, ReviewError};
pub use rotate::{keep_certificates, CertConfig, CertError};
pub use server::{handle, serve, Shared, INJECT_PATH, MAX_BODY};

#[cfg(test)]
mod tests;
