//! The control plane's push API: one component watches the inputs (networking configuration,
//! services and endpoints) and streams every sidecar its compiled view, so that sidecars
//! never watch the Kubernetes API themselves.
//!
//! ```text
//! service meshmeter.control.v1.Discovery { rpc Stream(stream Subscribe) returns (stream ViewUpdate); }
//! ```
//! (messages in [`meshmeter_routing::view`]).
//!
//! - [`ControlServer`]: the first `Subscribe` of a stream names the sidecar's `Node`; the
//!   server sends the full view, then, whenever the inputs change, an incremental update
//!   (resources upserted and removed by key, computed against what that stream last
//!   received). Bursts of changes within 50 ms become one push. Views come from a
//!   [`ViewSource`] and are compiled once per [`Shape`] (namespace, labels, and whatever else
//!   the source says a view depends on, such as the services the pod backs) and change, so a
//!   thousand sidecars of ten workloads cost ten compilations. A sidecar that reconnects
//!   with the version it holds gets only what differs, or nothing.
//! - [`ControlClient`]: the sidecar's side: connects, names its node, hands updates to a
//!   callback, acknowledges or refuses them, and reconnects with capped backoff while the
//!   caller keeps its last view.
//! - [`View`]: the keyed resource set both sides hold, its diff and its `apply`.
//!
//! A version names one compiled view: sidecars of one shape receive the same versions, and
//! versions only grow (they start at the clock when the control plane starts, so a restarted
//! control plane never takes a version of its predecessor for its own and resends the view
//! in full instead).
//!
//! ```no_run
//! use std::sync::Arc;
//! use meshmeter_control::{ClientConfig, ControlClient, ControlServer, ServerConfig, View, WatchSource};
//! use meshmeter_routing::view::Node;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The control plane: views compiled from whatever the inputs are (here a number).
//! let (inputs, rx) = tokio::sync::watch::channel(Arc::new(1u32));
//! let source = WatchSource::new(rx, |_n: &u32, _node: &Node| View::default());
//! let metrics = meshmeter_selfmetrics::SelfMetrics::new();
//! let server = ControlServer::new(Arc::new(source), &metrics, ServerConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:15010").await?;
//! tokio::spawn(server.serve(listener, std::future::pending()));
//! inputs.send_replace(Arc::new(2)); // every connected sidecar gets what changed
//!
//! // A sidecar.
//! let node = Node { id: "ratings-v2-abc.default".into(), namespace: "default".into(), ..Default::default() };
//! let client = ControlClient::new(ClientConfig::new("127.0.0.1:15010", node))?;
//! let mut view = View::default();
//! client
//!     .run(|update| view.apply(update).map_err(|e| e.to_string()), std::future::pending())
//!     .await;
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod client;
mod server;
mod source;
mod view;

pub use client::{ClientConfig, ClientError, ClientStatus, ControlClient};
pub use server::{ControlServer, ControlStats, Refusal, ServerConfig};
pub use source::{Changes, CompileFn, Shape, ShapeFn, ViewSource, WatchSource};
pub use view::{ApplyError, View};
