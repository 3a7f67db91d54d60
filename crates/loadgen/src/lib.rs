//! A load generator for Mixer v1 telemetry servers (meshmeter's or Istio's).
//!
//! It sends `Report` requests of realistic TCP bags (the 8 attributes `mixc` sends for the
//! seed, or the ~28 a sidecar sends per connection report, with identity), encoded as Istio's
//! proxies encode them (global dictionary, delta encoding), from several concurrent
//! connections. It measures bags per second and request latency, then scrapes the target's
//! `/metrics` and checks that the seed's counter grew by exactly the bytes it reported.

#![warn(missing_docs)]

mod bags;
mod run;

pub use bags::{BagShape, Workload};
pub use run::{run, LoadError, LoadOptions, LoadSummary};
