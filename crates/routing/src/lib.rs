//! TCP routing for the outbound sidecar.
//!
//! The control plane compiles, for each sidecar, a [`view`]: the services it may call
//! (their addresses and ports), the TCP routes that apply to it (already narrowed to its own
//! labels), and the clusters those routes lead to (endpoints with their labels, load
//! balancing, connection limits, outlier detection, TLS). The view's messages are the control
//! plane's wire format too (hand-written prost structs, no `protoc`).
//!
//! - [`compile()`]: traffic configuration ([`meshmeter_netconfig::NetworkConfig`]) + the
//!   [`catalog::ServiceCatalog`] + one sidecar's [`view::Node`] → its full view, with
//!   [`Warning`]s for what it had to leave out.
//! - [`Router`]: the sidecar side. It applies full and incremental [`view::ViewUpdate`]s
//!   (refusing inconsistent ones whole) and decides, lock-free, where each new connection
//!   goes: [`Decision::Passthrough`], [`Decision::Forward`] with a [`Picked`] endpoint (a
//!   guard holding a connection slot), [`Decision::Overflow`] (`UO`) or
//!   [`Decision::NoEndpoint`] (`UH`).
//!
//! ```
//! use std::collections::BTreeMap;
//! use meshmeter_netconfig::NetworkConfig;
//! use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService, ServiceCatalog};
//! use meshmeter_routing::view::Node;
//! use meshmeter_routing::{compile, Decision, Router};
//!
//! let catalog = ServiceCatalog {
//!     services: vec![CatalogService {
//!         host: "mongodb.default.svc.cluster.local".into(),
//!         name: "mongodb".into(),
//!         namespace: "default".into(),
//!         addresses: vec!["10.96.0.10".parse()?],
//!         ports: vec![CatalogPort { port: 27017, name: "mongo".into() }],
//!         endpoints: vec![CatalogEndpoint {
//!             ip: "10.1.0.11".parse()?,
//!             ports: BTreeMap::from([(27017, 27017)]),
//!             labels: BTreeMap::from([("version".into(), "v1".into())]),
//!             workload: "mongodb-v1".into(),
//!             namespace: "default".into(),
//!             service_account: "bookinfo-mongodb".into(),
//!         }],
//!     }],
//! };
//! let node = Node { namespace: "default".into(), ..Node::default() };
//! let compiled = compile(&NetworkConfig::default(), &catalog, &node, "cluster.local");
//! assert!(compiled.warnings.is_empty());
//!
//! let router = Router::from_view(&compiled.update)?;
//! match router.route("10.96.0.10:27017".parse()?) {
//!     Decision::Forward(picked) => {
//!         assert_eq!(picked.address().to_string(), "10.1.0.11:27017");
//!         assert_eq!(picked.endpoint().unwrap().labels["version"], "v1");
//!         picked.connected();
//!         // Dropping `picked` when the connection closes releases its slot.
//!     }
//!     other => panic!("{other:?}"),
//! }
//! assert!(matches!(router.route("192.0.2.1:443".parse()?), Decision::Passthrough));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_docs)]

pub mod catalog;
pub mod clock;
pub mod compile;
mod rng;
pub mod router;
pub mod view;

pub use clock::{Clock, ManualClock, MonotonicClock};
pub use compile::{compile, Compiled, Warning};
pub use router::{
    ClusterStats, Decision, EndpointInfo, EndpointStats, Picked, Problem, Refused, Router,
    ServiceInfo, UpdateError,
};
