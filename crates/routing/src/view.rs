//! The per-sidecar view, as protobuf messages (package `meshmeter.control.v1`).
//!
//! A view is a set of named resources of two kinds, [`Service`]s (keyed by `host`) and
//! [`Cluster`]s (keyed by `name`). A [`ViewUpdate`] either replaces the whole set (`full`) or
//! upserts and removes resources by key; the sidecar applies it and acknowledges its
//! `version`.
//!
//! ```text
//! service Discovery { rpc Stream(stream Subscribe) returns (stream ViewUpdate); }
//! ```

/// The gRPC service's full name.
pub const SERVICE_NAME: &str = "meshmeter.control.v1.Discovery";
/// The streaming method's path.
pub const STREAM_PATH: &str = "/meshmeter.control.v1.Discovery/Stream";

/// Who a sidecar is: what its view depends on.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Node {
    /// A unique id for logs and metrics (`<pod>.<namespace>`).
    #[prost(string, tag = "1")]
    pub id: String,
    /// The pod's namespace (short hosts in the sidecar's own requests resolve against it).
    #[prost(string, tag = "2")]
    pub namespace: String,
    /// The pod's labels (for `sourceLabels` matches), sorted by key.
    #[prost(btree_map = "string, string", tag = "3")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The pod's addresses.
    #[prost(string, repeated, tag = "4")]
    pub ips: Vec<String>,
    /// The pod's service account.
    #[prost(string, tag = "5")]
    pub service_account: String,
}

/// Sidecar → control plane: the first message names the node; later ones acknowledge (or
/// refuse) updates.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Subscribe {
    /// Required in the first message; ignored afterwards.
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    /// The version of the last update applied (0: none; a reconnecting sidecar sends the
    /// version it holds so that an unchanged view is not resent).
    #[prost(uint64, tag = "2")]
    pub acked_version: u64,
    /// Non-empty when the last update was refused: why. The sidecar keeps its previous view.
    #[prost(string, tag = "3")]
    pub error: String,
}

/// Control plane → sidecar.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ViewUpdate {
    /// Names the view the update leads to: sidecars of one shape get the same numbers, and
    /// each sidecar sees them increase (a restarted control plane starts from its clock, so
    /// its versions are above the old ones).
    #[prost(uint64, tag = "1")]
    pub version: u64,
    /// Whether this update replaces every resource (the removals are then empty).
    #[prost(bool, tag = "2")]
    pub full: bool,
    /// Services added or replaced.
    #[prost(message, repeated, tag = "3")]
    pub services: Vec<Service>,
    /// Hosts of services removed.
    #[prost(string, repeated, tag = "4")]
    pub removed_services: Vec<String>,
    /// Clusters added or replaced.
    #[prost(message, repeated, tag = "5")]
    pub clusters: Vec<Cluster>,
    /// Names of clusters removed.
    #[prost(string, repeated, tag = "6")]
    pub removed_clusters: Vec<String>,
    /// The inbound side's peer authentication, when it changed (always in a full update).
    #[prost(message, optional, tag = "7")]
    pub inbound: Option<Inbound>,
}

/// A service a sidecar may call: how an original destination maps to routes.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Service {
    /// The fully qualified host (`mongodb.default.svc.cluster.local`): the resource key.
    #[prost(string, tag = "1")]
    pub host: String,
    /// `destination.service.name`.
    #[prost(string, tag = "2")]
    pub name: String,
    /// `destination.service.namespace`.
    #[prost(string, tag = "3")]
    pub namespace: String,
    /// The service's own addresses (ClusterIPs, or the workloads file's `addresses`): a
    /// connection to one of them on one of `ports` is routed.
    #[prost(string, repeated, tag = "4")]
    pub addresses: Vec<String>,
    /// The service ports.
    #[prost(message, repeated, tag = "5")]
    pub ports: Vec<ServicePort>,
    /// The TCP routes for this sidecar, in order (first match wins). When none matches a
    /// connection, it goes to the default cluster of its port, `outbound|PORT||HOST`.
    #[prost(message, repeated, tag = "6")]
    pub routes: Vec<Route>,
}

/// One port of a service.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ServicePort {
    /// The service port (what clients connect to).
    #[prost(uint32, tag = "1")]
    pub port: u32,
    /// Its name (`tcp-mongo`).
    #[prost(string, tag = "2")]
    pub name: String,
}

/// A TCP route narrowed to one sidecar (its `sourceLabels` already checked).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Route {
    /// Service ports it applies to; empty: every port.
    #[prost(uint32, repeated, tag = "1")]
    pub ports: Vec<u32>,
    /// `destinationSubnets` as `ADDR/PREFIX`; empty: any destination address.
    #[prost(string, repeated, tag = "2")]
    pub destination_subnets: Vec<String>,
    /// Where matching connections go, by weight.
    #[prost(message, repeated, tag = "3")]
    pub destinations: Vec<WeightedCluster>,
    /// `<namespace>/<name>` of the VirtualService, for logs.
    #[prost(string, tag = "4")]
    pub origin: String,
}

/// One weighted choice of a route.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct WeightedCluster {
    /// A cluster name (`outbound|27017|v2|mongodb.default.svc.cluster.local`).
    #[prost(string, tag = "1")]
    pub cluster: String,
    /// Relative weight; the weights of a route sum to 100.
    #[prost(uint32, tag = "2")]
    pub weight: u32,
}

/// `trafficPolicy.loadBalancer.simple`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum LoadBalancer {
    /// Round robin (the default).
    RoundRobin = 0,
    /// The endpoint with fewer open connections of two chosen at random.
    LeastConn = 1,
    /// Uniformly random.
    Random = 2,
    /// To the address the client asked for.
    Passthrough = 3,
}

/// `trafficPolicy.tls.mode` as the sidecar applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum TlsMode {
    /// Plaintext.
    Disable = 0,
    /// Mutual TLS with the mesh's workload certificates.
    IstioMutual = 1,
}

/// A destination host, subset and port with its endpoints and policy.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Cluster {
    /// `outbound|PORT|SUBSET|HOST` (SUBSET empty for the whole host): the resource key.
    #[prost(string, tag = "1")]
    pub name: String,
    /// The host.
    #[prost(string, tag = "2")]
    pub host: String,
    /// The subset name; empty for every endpoint of the host.
    #[prost(string, tag = "3")]
    pub subset: String,
    /// The service port.
    #[prost(uint32, tag = "4")]
    pub port: u32,
    /// Load balancing.
    #[prost(enumeration = "LoadBalancer", tag = "5")]
    pub load_balancer: i32,
    /// The most open connections across the endpoints; 0: unlimited.
    #[prost(uint32, tag = "6")]
    pub max_connections: u32,
    /// Connect timeout in milliseconds; 0: the proxy's default.
    #[prost(uint64, tag = "7")]
    pub connect_timeout_ms: u64,
    /// Outlier detection; absent: endpoints are never ejected.
    #[prost(message, optional, tag = "8")]
    pub outlier: Option<Outlier>,
    /// TLS towards the endpoints.
    #[prost(enumeration = "TlsMode", tag = "9")]
    pub tls: i32,
    /// The endpoints (subset members only).
    #[prost(message, repeated, tag = "10")]
    pub endpoints: Vec<Endpoint>,
    /// `destination.service.name` of the host (the view may not list the host as a
    /// [`Service`], e.g. a headless one); empty: taken from the view's services, else the
    /// host's first label.
    #[prost(string, tag = "11")]
    pub service_name: String,
    /// `destination.service.namespace` of the host; empty: as for `service_name`.
    #[prost(string, tag = "12")]
    pub service_namespace: String,
}

/// Outlier detection for connect failures.
#[derive(Clone, Copy, PartialEq, Eq, Hash, prost::Message)]
pub struct Outlier {
    /// Consecutive connect failures that eject an endpoint.
    #[prost(uint32, tag = "1")]
    pub consecutive_errors: u32,
    /// How often ejections are reconsidered, milliseconds.
    #[prost(uint64, tag = "2")]
    pub interval_ms: u64,
    /// The first ejection's length, milliseconds (the n-th lasts n times as long).
    #[prost(uint64, tag = "3")]
    pub base_ejection_ms: u64,
    /// At most this percentage of the endpoints ejected at once.
    #[prost(uint32, tag = "4")]
    pub max_ejection_percent: u32,
}

/// One endpoint of a cluster.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Endpoint {
    /// `IP:PORT` to connect to (`[IPv6]:PORT`).
    #[prost(string, tag = "1")]
    pub address: String,
    /// The workload's labels (`version`), sorted by key.
    #[prost(btree_map = "string, string", tag = "2")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// The workload name (`mongodb-v1`), for logs.
    #[prost(string, tag = "3")]
    pub workload: String,
    /// The workload's namespace.
    #[prost(string, tag = "4")]
    pub namespace: String,
    /// Its service account (the SAN expected under mutual TLS); empty when unknown.
    #[prost(string, tag = "5")]
    pub service_account: String,
}

/// The inbound side's peer authentication for this sidecar (from MeshPolicy and Policy).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Inbound {
    /// The mode for ports without a port-specific entry.
    #[prost(enumeration = "PeerMode", tag = "1")]
    pub default_mode: i32,
    /// Port-specific modes (a `Policy` target with `ports`).
    #[prost(message, repeated, tag = "2")]
    pub ports: Vec<InboundPort>,
}

/// A port-specific inbound mode.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct InboundPort {
    /// The workload port.
    #[prost(uint32, tag = "1")]
    pub port: u32,
    /// Its mode.
    #[prost(enumeration = "PeerMode", tag = "2")]
    pub mode: i32,
}

/// Inbound peer authentication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PeerMode {
    /// Plaintext only (no policy).
    Disable = 0,
    /// Mutual TLS and plaintext, told apart by the first bytes.
    Permissive = 1,
    /// Mutual TLS only.
    Strict = 2,
}
