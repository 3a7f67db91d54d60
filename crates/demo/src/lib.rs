//! The seed's scenario on one machine: Istio's "Collecting Metrics for TCP Services" task,
//! with meshmeter's own components and real sockets.
//!
//! - a telemetry server loaded with the seed's `tcp-metrics.yaml` plus Istio's default TCP
//!   telemetry, and a workloads file naming the Bookinfo workloads;
//! - a MongoDB stand-in (`mongodb-v1`, on 127.0.0.3) behind an inbound sidecar proxy that
//!   reports every second;
//! - a `ratings-v2` client (on 127.0.0.2) that queries it steadily and opens a short-lived
//!   connection every two seconds;
//! - optionally a real Prometheus scraping the server as job `istio-mesh`.
//!
//! While it runs it prints the Prometheus samples the seed shows, next to the byte counts the
//! client itself saw; at the end it waits for the final reports and checks that the two agree.

#![warn(missing_docs)]

mod client;
mod mongo;
mod prometheus;
mod run;

pub use client::ClientCounts;
pub use run::{run, DemoError, DemoOptions, DemoSummary, SEED_CONFIG};
