//! The Prometheus handler: metric specs become a [`prometheus::Registry`] whose per-metric
//! handles the engine records into; the registry renders the text exposition format.
//!
//! The stdio handler is `meshmeter-stdio`, workload identity is `meshmeter-workloads` and
//! meshmeter's own metrics are `meshmeter-selfmetrics`.

#![warn(missing_docs)]

pub mod prometheus;
