//! The Kubernetes API server as a source of telemetry configuration and workload identity.
//!
//! This crate is the only part of meshmeter that talks to an API server. It lists and
//! watches (kube's `watcher`, with bookmarks, paging and backoff) and keeps what it needs in
//! compact in-memory stores; nothing here is asked of the API server per report.
//!
//! - [`ConfigSource`]: the `config.istio.io/v1alpha2` objects the configuration loader
//!   understands (`rule`, `instance`, `handler`, `attributemanifest` and the legacy kinds),
//!   rendered as documents named `kubernetes:NAMESPACE/KIND/NAME` for the loader.
//! - [`TrafficSource`]: the traffic objects (`DestinationRule`, `VirtualService`,
//!   `MeshPolicy`, `Policy`) rendered the same way for `meshmeter-netconfig`'s loader.
//! - [`IdentitySource`]: pods, their owners (ReplicaSet → Deployment, Job → CronJob, ...),
//!   Services and EndpointSlices, published as a [`KubeRegistry`] that the engine reads
//!   lock-free (`meshmeter_engine::Workloads::Dynamic`).
//! - [`TokenReviewer`]: the certificate authority's authenticator on Kubernetes (a caller's
//!   projected service-account token, checked by TokenReview). Asked once per certificate
//!   request, not per report.
//! - [`TrustBundlePublisher`]: the CA's root certificate(s) in the ConfigMap
//!   [`TRUST_BUNDLE_CONFIGMAP`] of every namespace (watched), for injected sidecars; only
//!   ConfigMaps it labelled are ever updated.
//! - [`WebhookCaBundle`]: the sidecar injector's CA merged into its
//!   MutatingWebhookConfiguration's `caBundle` (read, merge, compare-and-swap write).
//!
//! A watch that breaks is restarted with backoff (a 410 Gone relists); the stores keep what
//! they had meanwhile, so an outage of the API server changes nothing that is being served.
//! Every restart is counted in `meshmeter_kubernetes_watch_restarts_total{resource}`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use meshmeter_selfmetrics::SelfMetrics;
//! use meshmeter_workloads::WorkloadRegistry;
//! use meshmeter_kube::{connect, ClientOptions, ConfigSource, IdentityOptions, IdentitySource, WatchMetrics};
//!
//! # async fn run() -> Result<(), meshmeter_kube::ClientError> {
//! let client = connect(&ClientOptions::default()).await?; // in-cluster credentials
//! let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
//! let config = ConfigSource::start(client.clone(), &[], &metrics);
//! let identity = IdentitySource::start(client, IdentityOptions::default(), &metrics);
//! config.synced().wait().await;
//! identity.synced().wait().await;
//! for object in config.documents().borrow().iter() {
//!     println!("{}", object.display_name()); // kubernetes:default/rule/mongoprom, ...
//! }
//! let registry = identity.current();
//! if let Some(w) = registry.by_ip("10.244.0.12".parse().unwrap()) {
//!     println!("{} {} {:?}", w.name, w.namespace, w.owner);
//! }
//! // A Service's cluster IP and port: the Service (and no pod).
//! if let Some(s) = registry.service_for("10.96.119.29".parse().unwrap(), Some(27017)) {
//!     println!("{}", s.host); // mongodb.default.svc.cluster.local
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod client;
mod config;
mod events;
mod follow;
mod identity;
#[cfg(feature = "stand-in")]
pub mod standin;
mod tokenreview;
mod traffic;
mod trustbundle;
mod webhook;

pub use client::{client_config, connect, ClientError, ClientOptions};
pub use config::{render_document, ConfigDocuments, ConfigSource, CONFIG_RESOURCES};
pub use events::{ProblemEvents, EVENT_COMPONENT};
pub use follow::{Synced, WatchMetrics};
pub use identity::{IdentityOptions, IdentitySource, KubeRegistry};
pub use tokenreview::{TokenReviewer, DEFAULT_TOKEN_AUDIENCE};
pub use traffic::{TrafficSource, TRAFFIC_RESOURCES};
pub use trustbundle::{
    Published, TrustBundleError, TrustBundlePublisher, MANAGED_BY_LABEL, TRUST_BUNDLE_CONFIGMAP,
    TRUST_BUNDLE_KEY, TRUST_BUNDLE_RETRIES,
};
pub use webhook::{merge_bundle, pem_blocks, CaBundleError, WebhookCaBundle, MAX_BUNDLE_CAS};

/// Re-exported so that callers (and tests) can build a client without naming kube's version.
pub use kube::Client;
