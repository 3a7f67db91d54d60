//! The telemetry server ("mixer"): takes Mixer v1 `Report` calls from proxies, runs every bag
//! through the Istio configuration in force, and serves the resulting metrics (plus its own
//! `meshmeter_*` self-telemetry) on `/metrics` for Prometheus to scrape.
//!
//! ```no_run
//! use meshmeter_server::{ServerOptions, TelemetryServer};
//!
//! # async fn run() -> Result<(), meshmeter_server::ServerError> {
//! let options = ServerOptions {
//!     config_paths: vec!["examples/tcp-metrics.yaml".into()],
//!     ..ServerOptions::default()
//! };
//! let server = TelemetryServer::start(options).await?;
//! println!("gRPC on {}, metrics on http://{}/metrics", server.grpc_addr(), server.metrics_addr());
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![warn(missing_docs)]

mod conn;
mod ingest;
mod limits;
mod server;
mod workers;

pub use ingest::Ingest;
pub use limits::{
    GrpcLimits, DEFAULT_BODY_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_BUFFERED_BYTES,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTION_BUFFERED_BYTES,
};
pub use server::{
    ObjectProblemHook, ServerError, ServerOptions, TelemetryServer, DEFAULT_DRAIN_TIMEOUT,
};
