//! The sidecar TCP proxy: listeners, upstream connect, byte-counting forwarding, connection
//! reports.
//!
//! A [`Proxy`] accepts downstream connections on one listener, connects each to its upstream,
//! and forwards bytes in both directions unchanged (half-close and resets propagate). While a
//! connection lives it produces [`ConnectionReport`]s (`open`, `continue` every report
//! interval, `close`) and hands them to a [`ReportSink`]. The usual sink is a [`ReportQueue`]
//! drained by a [`ReportSender`] that batches reports to a telemetry server over a
//! [`ReportTransport`]; the data path never waits for it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use meshmeter_proxy::{Identity, ListenerConfig, Proxy, ProxyStats, ReportQueue};
//!
//! let stats = Arc::new(ProxyStats::default());
//! let queue = Arc::new(ReportQueue::new(100_000, Arc::clone(&stats)));
//! let config = ListenerConfig::new("127.0.0.1:27018".parse()?, "127.0.0.1:27017".parse()?);
//! let proxy = Proxy::bind(config, Arc::new(Identity::default()), queue, stats).await?;
//! let (_shutdown, signal) = tokio::sync::watch::channel(false);
//! proxy.run(signal, std::time::Duration::from_secs(30)).await;
//! # Ok(()) }
//! ```

mod config;
mod forward;
mod id;
mod identity;
mod listener;
mod meter;
mod mixer;
mod queue;
mod report;
mod sender;
mod splice;
mod stats;

pub use config::{ConfigError, ListenerConfig, ReportInterval, MIN_REPORT_INTERVAL};
pub use forward::{forward, CopyMode, ForwardError, ForwardOptions, Side};
pub use id::ConnectionIds;
pub use identity::{Identity, InvalidLabel, ReporterKind, UnknownReporterKind};
pub use listener::{BindError, Proxy};
pub use meter::{ByteMeter, DeltaCursor, Deltas};
pub use mixer::{MixerAddrError, MixerTransport};
pub use queue::ReportQueue;
pub use report::{
    ConnectionEvent, ConnectionReport, ErrorFlag, MissingAttribute, ReportSchema, ReportSink,
};
pub use sender::{ReportBatch, ReportSender, ReportTransport, SenderConfig, TransportError};
pub use stats::ProxyStats;
