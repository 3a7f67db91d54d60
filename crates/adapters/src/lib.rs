//! Handlers: Prometheus metrics, stdio access logs, workload identity registry.
//!
//! - [`prometheus`]: metric specs become a [`prometheus::Registry`] whose per-metric handles
//!   the engine records into; the registry renders the text exposition format.
//! - [`stdio`]: logentry instances as JSON lines, written off the caller's thread.
//! - [`workloads`]: workload identity from a file, filled into bags by an
//!   [`workloads::Enricher`].
//! - [`selfmetrics`]: meshmeter's own `meshmeter_*` counters and gauges.

#![warn(missing_docs)]

pub mod prometheus;
pub mod selfmetrics;
pub mod stdio;
pub mod workloads;
