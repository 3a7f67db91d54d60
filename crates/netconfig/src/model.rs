//! The validated objects. Hosts are kept as written (`ratings`, `mongodb.default.svc.cluster.local`,
//! `*.example.com`); [`ObjectMeta::namespace`] is what short names are resolved against.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

/// Where an object came from, for diagnostics and for resolving short hosts.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectMeta {
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace` (the file's default or `default` when absent).
    pub namespace: String,
}

/// An IP network (`destinationSubnets: [10.0.0.0/8, 192.168.1.7]`; a bare address is `/32`
/// or `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    /// The network address, host bits zero.
    pub addr: IpAddr,
    /// The prefix length.
    pub prefix: u8,
}

impl Subnet {
    /// Whether `ip` is inside (IPv4-mapped IPv6 addresses match their IPv4 form).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// `trafficPolicy.loadBalancer.simple`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum LoadBalancer {
    /// `ROUND_ROBIN` (Istio's default).
    #[default]
    RoundRobin,
    /// `LEAST_CONN`: the endpoint with the fewest open connections (of two picked at random,
    /// as Envoy does).
    LeastConn,
    /// `RANDOM`.
    Random,
    /// `PASSTHROUGH`: the connection goes to the address the client asked for.
    Passthrough,
}

/// `trafficPolicy.tls.mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// `DISABLE`: plaintext (the default when no rule says otherwise).
    #[default]
    Disable,
    /// `ISTIO_MUTUAL`: mutual TLS with the mesh's workload certificates.
    IstioMutual,
    /// `SIMPLE` or `MUTUAL` with certificates named in the rule: accepted and reported, not
    /// originated (meshmeter originates only `ISTIO_MUTUAL`).
    Other,
}

/// `trafficPolicy.connectionPool.tcp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpPool {
    /// `maxConnections`: open connections to the host (or subset) across its endpoints;
    /// beyond it a new connection is refused with `UO`. `None`: unlimited.
    pub max_connections: Option<u32>,
    /// `connectTimeout`. `None`: the proxy's default.
    pub connect_timeout: Option<Duration>,
}

/// `trafficPolicy.outlierDetection`, as it applies to TCP (connect failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OutlierDetection {
    /// `consecutiveErrors` (default 5): consecutive connect failures that eject an endpoint.
    pub consecutive_errors: u32,
    /// `interval` (default 10 s): how often ejections are reconsidered.
    pub interval: Duration,
    /// `baseEjectionTime` (default 30 s): the first ejection's length; the n-th lasts n times
    /// as long.
    pub base_ejection_time: Duration,
    /// `maxEjectionPercent` (default 10): at most this share of the endpoints is ejected at
    /// once.
    pub max_ejection_percent: u32,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_errors: 5,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }
}

/// `trafficPolicy` (of a rule, or of a subset, where it replaces the rule's field by field).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct TrafficPolicy {
    /// `loadBalancer.simple`; `None` when not written.
    pub load_balancer: Option<LoadBalancer>,
    /// `connectionPool.tcp`; `None` when not written.
    pub tcp_pool: Option<TcpPool>,
    /// `outlierDetection`; `None` when not written.
    pub outlier_detection: Option<OutlierDetection>,
    /// `tls.mode`; `None` when not written.
    pub tls: Option<TlsMode>,
}

/// One of a rule's `subsets`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Subset {
    /// `name` (`v1`).
    pub name: String,
    /// `labels` an endpoint must all have to belong.
    pub labels: BTreeMap<String, String>,
    /// `trafficPolicy` overriding the rule's.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// A `DestinationRule`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DestinationRule {
    /// Name and namespace.
    pub meta: ObjectMeta,
    /// `host` as written.
    pub host: String,
    /// `trafficPolicy`.
    pub traffic_policy: Option<TrafficPolicy>,
    /// `subsets`, in order; names are unique.
    pub subsets: Vec<Subset>,
}

/// `destination` of a route.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Destination {
    /// `host` as written.
    pub host: String,
    /// `subset`: a subset name of the host's DestinationRule.
    pub subset: Option<String>,
    /// `port.number`: required when the host has several ports.
    pub port: Option<u16>,
}

/// One of a TCP route's `route` entries.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WeightedDestination {
    /// Where.
    pub destination: Destination,
    /// `weight` (percent). A route with one destination may omit it (100); the weights of a
    /// route with several sum to 100.
    pub weight: u32,
}

/// One of a TCP route's `match` entries; every field written must match.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct L4Match {
    /// `port`: the port the client connected to.
    pub port: Option<u16>,
    /// `sourceLabels`: labels the client workload must all have.
    pub source_labels: BTreeMap<String, String>,
    /// `destinationSubnets`: the address the client connected to is in one of them.
    pub destination_subnets: Vec<Subnet>,
    /// `gateways`, kept for diagnostics; only the mesh (`mesh`, or none) applies to sidecars.
    pub gateways: Vec<String>,
}

/// One of a VirtualService's `tcp` routes: the first whose `match` matches a connection
/// decides (no `match` matches every connection).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpRoute {
    /// `match`; empty matches every connection.
    pub matches: Vec<L4Match>,
    /// `route`: one or more weighted destinations.
    pub route: Vec<WeightedDestination>,
}

/// A `VirtualService`'s TCP part.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VirtualService {
    /// Name and namespace.
    pub meta: ObjectMeta,
    /// `hosts` as written.
    pub hosts: Vec<String>,
    /// `gateways` (sidecars apply objects with none, or with `mesh`).
    pub gateways: Vec<String>,
    /// `tcp` routes in order.
    pub tcp: Vec<TcpRoute>,
    /// How many `http` routes the object had (kept, ignored: this is a TCP mesh).
    pub http_routes: usize,
}

/// `peers[].mtls.mode` of a `MeshPolicy` or `Policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerMtlsMode {
    /// `STRICT` (the default of `mtls: {}`): only mutual TLS.
    Strict,
    /// `PERMISSIVE`: mutual TLS and plaintext on the same port.
    Permissive,
}

/// One `targets` entry of a namespace `Policy`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyTarget {
    /// `name`: a service name in the policy's namespace.
    pub name: String,
    /// `ports[].number`; empty: every port.
    pub ports: Vec<u16>,
}

/// A `MeshPolicy` (mesh-wide, named `default`) or a namespace `Policy`: whether inbound
/// connections must, may, or need not use mutual TLS.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerPolicy {
    /// Name and namespace (a MeshPolicy's namespace is empty).
    pub meta: ObjectMeta,
    /// Whether it is a `MeshPolicy`.
    pub mesh_wide: bool,
    /// `targets`; empty: the whole namespace (or mesh).
    pub targets: Vec<PolicyTarget>,
    /// `peers: [{mtls: ...}]`; `None`: no peer authentication (plaintext).
    pub mtls: Option<PeerMtlsMode>,
}

/// Every accepted traffic object at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkConfig {
    /// `DestinationRule`s.
    pub destination_rules: Vec<DestinationRule>,
    /// `VirtualService`s.
    pub virtual_services: Vec<VirtualService>,
    /// `MeshPolicy` and `Policy` objects.
    pub peer_policies: Vec<PeerPolicy>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_contains() {
        let net = Subnet {
            addr: "10.1.0.0".parse().unwrap(),
            prefix: 16,
        };
        assert!(net.contains("10.1.255.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        let all = Subnet {
            addr: "0.0.0.0".parse().unwrap(),
            prefix: 0,
        };
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        assert!(!all.contains("2001:db8::1".parse().unwrap()));
    }
}
