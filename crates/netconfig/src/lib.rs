//! Istio 1.1's traffic configuration as it applies to TCP: `DestinationRule` and
//! `VirtualService` (`networking.istio.io/v1alpha3`), and the peer-authentication part of
//! `MeshPolicy` and `Policy` (`authentication.istio.io/v1alpha1`).
//!
//! [`model`] holds the validated, typed objects; everything downstream (the routing compiler,
//! the control plane) reads only these types, never YAML.

#![warn(missing_docs)]

pub mod model;

pub use model::*;
