//! The sidecar TCP proxy: listeners, upstream connect, byte-counting forwarding, connection
//! reports.
//!
//! A [`Proxy`] accepts downstream connections on one listener, connects each to its upstream,
//! and forwards bytes in both directions unchanged (half-close and resets propagate). While a
//! connection lives it produces [`ConnectionReport`]s (`open`, `continue` every report
//! interval, `close`) and hands them to a [`ReportSink`]. The usual sink is a [`ReportQueue`]
//! drained by a [`ReportSender`] that batches reports to a telemetry server over a
//! [`ReportTransport`] ([`MixerTransport`]: Mixer v1 `Report` calls with compressed
//! attributes and an idempotency key); the data path never waits for it. Any other
//! [`ReportSink`] (the in-proxy configuration engine of `meshmeter-proxy-telemetry`, a test
//! recorder) can take the reports instead of, or beside, the queue. This crate knows nothing
//! of telemetry configuration: the binary wires the sinks.
//!
//! A listener forwards either to one fixed upstream ([`Upstream::Fixed`]) or, as the
//! transparent sidecar behind `meshmeter capture`, each connection to the destination its
//! client asked for before iptables redirected it ([`Upstream::OriginalDestination`]); a
//! connection that was not redirected, or that would loop back into the proxy, is reset.
//! A listener given a [`Router`] ([`Proxy::with_router`]) asks it for each new connection
//! where it goes: to its original destination ([`Decision::Passthrough`]), to one endpoint
//! of a service with that destination's connect timeout, TLS and identity
//! ([`Decision::Forward`]), or nowhere (`UO` when the destination is at its connection limit,
//! `UH` when it has no healthy endpoint). The inbound side's peer authentication can follow a
//! [`PeerPolicy`] that changes while the proxy runs.
//!
//! Byte counts are exact: the forwarder adds bytes to a [`ByteMeter`] as they are written to
//! their destination, and each report's deltas are cut from one snapshot of the running
//! totals ([`DeltaCursor`]), so a connection's deltas always sum to its totals.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use meshmeter_attributes::Manifest;
//! use meshmeter_proxy::{
//!     Identity, ListenerConfig, MixerTransport, Proxy, ProxyStats, ReportQueue, ReportSchema,
//!     ReportSender, SenderConfig,
//! };
//!
//! let stats = Arc::new(ProxyStats::default());
//! let queue = Arc::new(ReportQueue::new(100_000, Arc::clone(&stats)));
//! let transport = MixerTransport::lazy("127.0.0.1:9091", &Manifest::istio())?;
//! let sender = ReportSender::new(
//!     Arc::clone(&queue),
//!     transport,
//!     ReportSchema::istio(),
//!     SenderConfig::default(),
//!     Arc::clone(&stats),
//! );
//! let config = ListenerConfig::new("0.0.0.0:27017".parse()?, "127.0.0.1:27018".parse()?);
//! let proxy = Proxy::bind(config, Arc::new(Identity::default()), queue, stats).await?;
//!
//! let (stop_proxy, proxy_signal) = tokio::sync::watch::channel(false);
//! let (stop_sender, sender_signal) = tokio::sync::watch::channel(false);
//! let sending = tokio::spawn(sender.run(sender_signal));
//! let proxying = tokio::spawn(proxy.run(proxy_signal, Duration::from_secs(30)));
//! // ... on SIGTERM: drain connections first, then flush their close reports.
//! stop_proxy.send(true)?;
//! proxying.await?;
//! stop_sender.send(true)?;
//! sending.await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod config;
mod forward;
mod id;
mod identity;
mod lean;
mod listener;
mod meter;
mod mixer;
mod original;
mod peer;
mod queue;
mod report;
mod route;
mod sender;
mod splice;
mod stats;
mod tls;

pub use config::{ConfigError, ListenerConfig, ReportInterval, Upstream, MIN_REPORT_INTERVAL};
pub use forward::{forward, CopyMode, ForwardError, ForwardOptions, Side};
pub use id::ConnectionIds;
pub use identity::{Identity, InvalidLabel, ReporterKind, UnknownReporterKind};
pub use listener::{BindError, Proxy};
pub use meter::{ByteMeter, DeltaCursor, Deltas};
pub use mixer::{MixerAddrError, MixerTransport};
pub use peer::{PeerModes, PeerPolicy};
pub use queue::ReportQueue;
pub use report::{
    ConnectionEvent, ConnectionReport, ErrorFlag, MissingAttribute, ReportSchema, ReportSink,
};
pub use route::{ConnectOutcome, Decision, Forward, RoutedDestination, Router, UpstreamTls};
pub use sender::{ReportBatch, ReportSender, ReportTransport, SenderConfig, TransportError};
pub use stats::{ControlPlaneState, ProxyStats};
pub use tls::{
    InboundTls, ListenerTls, PeerAuthentication, TlsPeers, TlsStats, UnknownPeerAuthentication,
};
