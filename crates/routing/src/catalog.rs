//! What the control plane knows about services and their endpoints, whatever the source
//! (Kubernetes Services, EndpointSlices and pods, or the workloads file): the input of
//! compilation next to the traffic configuration.

use std::collections::BTreeMap;
use std::net::IpAddr;

/// Every known service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceCatalog {
    /// The services, in no particular order; hosts are unique.
    pub services: Vec<CatalogService>,
}

/// One service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogService {
    /// The fully qualified host (`mongodb.default.svc.cluster.local`).
    pub host: String,
    /// The short name (`mongodb`).
    pub name: String,
    /// The namespace.
    pub namespace: String,
    /// The service's own addresses (ClusterIPs); empty for a headless service, whose
    /// connections go to endpoint addresses directly and are not routed.
    pub addresses: Vec<IpAddr>,
    /// The service ports.
    pub ports: Vec<CatalogPort>,
    /// The endpoints (ready ones only).
    pub endpoints: Vec<CatalogEndpoint>,
}

/// One service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogPort {
    /// The port clients connect to.
    pub port: u16,
    /// Its name (may be empty).
    pub name: String,
}

/// One endpoint: a workload instance backing the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogEndpoint {
    /// The instance's address.
    pub ip: IpAddr,
    /// For each service port the endpoint serves, the port on the instance
    /// (`service port → target port`), already resolved from named target ports.
    pub ports: BTreeMap<u16, u16>,
    /// The workload's labels (subset membership).
    pub labels: BTreeMap<String, String>,
    /// The workload name.
    pub workload: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account; empty when unknown.
    pub service_account: String,
}
