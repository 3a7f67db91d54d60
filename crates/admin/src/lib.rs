//! The admin HTTP endpoint shared by the proxy and the server: `/metrics`, `/healthz`,
//! `/ready`.
//!
//! ```no_run
//! use meshmeter_admin::{AdminServer, Readiness};
//!
//! # async fn run() -> Result<(), meshmeter_admin::AdminError> {
//! let ready = Readiness::new();
//! let server = AdminServer::bind(
//!     "127.0.0.1:0".parse().unwrap(),
//!     |out: &mut String| out.push_str("meshmeter_up 1\n"),
//!     ready.clone(),
//! )
//! .await?;
//! println!("serving on {}", server.local_addr());
//! ready.set(true);
//! server.serve(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

#![warn(missing_docs)]

mod body;
mod conn;
mod server;

pub use body::{MetricsBody, CHUNK_BYTES};
pub use server::{
    AdminError, AdminServer, MetricsSource, Readiness, Streamed, METRICS_CONTENT_TYPE,
};
