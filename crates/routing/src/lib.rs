//! TCP routing for the outbound sidecar.
//!
//! The control plane compiles, for each sidecar, a [`view::View`]: the services it may call
//! (their addresses and ports), the TCP routes that apply to it (already narrowed to its own
//! labels), and the clusters those routes lead to (endpoints with their labels, load
//! balancing, connection limits, outlier detection, TLS). The view's messages are the control
//! plane's wire format too (hand-written prost structs, no `protoc`).

#![warn(missing_docs)]

pub mod catalog;
pub mod clock;
pub mod compile;
mod rng;
pub mod router;
pub mod view;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use compile::{compile, Compiled, Warning};
pub use router::{
    ClusterStats, Decision, EndpointInfo, EndpointStats, Picked, Problem, Refused, Router,
    ServiceInfo, UpdateError,
};
