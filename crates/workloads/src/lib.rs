//! Workload identity: what Mixer's `kubernetesenv` adapter looked up in the Kubernetes API,
//! here from a registry (a file today; the Kubernetes API later, behind the same trait).
//!
//! An [`Enricher`] fills `source.*` and `destination.*` identity attributes into a bag from the
//! workload matching `source.uid`/`source.ip` (and `destination.uid`/`destination.ip`), and
//! `destination.service.*` from the service that `destination.ip` and `destination.port` reach
//! ([`WorkloadRegistry::service_for`]), never replacing attributes the bag already has.
//!
//! ## The workloads file
//!
//! ```yaml
//! workloads:
//! - name: ratings-v2                 # required: the workload (deployment) name
//!   namespace: default               # required
//!   labels: {app: ratings, version: v2}
//!   ips: [127.0.0.2]                 # addresses its traffic comes from; each IP at most once
//! - name: mongodb-v1
//!   namespace: default
//!   labels: {app: mongodb, version: v1}
//!   ips: [127.0.0.3]
//!   services: [mongodb.default.svc.cluster.local]   # the first one fills destination.service.*
//!   pod: mongodb-v1-7f8c9-abcde      # optional: *.name (default: the workload name)
//!   uid: kubernetes://mongodb-v1-7f8c9-abcde.default # optional (default kubernetes://<pod>.<namespace>)
//!   service_account: mongodb         # optional: *.serviceAccount (serviceAccount also accepted)
//!   owner: kubernetes://apis/apps/v1/namespaces/default/deployments/mongodb-v1  # optional
//! ```
//!
//! Label values may be written as YAML numbers or booleans; they are kept as text. Unknown
//! fields are errors, so typos do not pass silently.

#![warn(missing_docs)]

mod enrich;
mod file;

use std::net::IpAddr;

use hashbrown::HashMap;
use meshmeter_attributes::StringMap;

pub use enrich::{Enriched, Enricher};
pub use file::{parse, FieldProblem, FileRegistry, Watch, WorkloadError, MAX_WORKLOADS_FILE_BYTES};

/// A Kubernetes-style service a workload backs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    /// The fully qualified host (`mongodb.default.svc.cluster.local`).
    pub host: String,
    /// The short name (`mongodb`).
    pub name: String,
    /// The namespace (`default`).
    pub namespace: String,
    /// `istio://<namespace>/services/<name>`.
    pub uid: String,
}

impl Service {
    /// A service from its host: name and namespace are its first two labels; a host with fewer
    /// labels takes `default_namespace`.
    pub fn from_host(host: &str, default_namespace: &str) -> Self {
        let mut parts = host.split('.');
        let name = parts.next().unwrap_or(host).to_owned();
        let namespace = parts.next().unwrap_or(default_namespace).to_owned();
        Service {
            uid: format!("istio://{namespace}/services/{name}"),
            host: host.to_owned(),
            name,
            namespace,
        }
    }
}

/// One workload and the identity attributes it gives the traffic it sends or receives.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// `*.workload.name`.
    pub name: String,
    /// `*.workload.namespace` and `*.namespace`.
    pub namespace: String,
    /// `*.labels`.
    pub labels: StringMap<'static>,
    /// Addresses that identify it.
    pub ips: Vec<IpAddr>,
    /// Services it backs; the first fills `destination.service.*` unless the registry picks
    /// one by port ([`WorkloadRegistry::service_for`]).
    pub services: Vec<Service>,
    /// `*.name`: the pod name (the workload name when unknown).
    pub pod: String,
    /// `*.uid` (`kubernetes://<pod>.<namespace>`).
    pub uid: String,
    /// `*.workload.uid` (`istio://<namespace>/workloads/<name>`).
    pub workload_uid: String,
    /// `*.serviceAccount`.
    pub service_account: Option<String>,
    /// `*.owner`.
    pub owner: Option<String>,
}

impl Workload {
    /// A workload with the given identity and defaults for everything else.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> Self {
        let (name, namespace) = (name.into(), namespace.into());
        Workload {
            uid: format!("kubernetes://{name}.{namespace}"),
            workload_uid: format!("istio://{namespace}/workloads/{name}"),
            pod: name.clone(),
            labels: StringMap::new(),
            ips: Vec::new(),
            services: Vec::new(),
            service_account: None,
            owner: None,
            name,
            namespace,
        }
    }
}

/// Where workload identity comes from.
pub trait WorkloadRegistry: Send + Sync {
    /// The workload with address `ip` (IPv4-mapped IPv6 addresses match their IPv4 form).
    fn by_ip(&self, ip: IpAddr) -> Option<&Workload>;
    /// The workload with `uid` (`kubernetes://<pod>.<namespace>`).
    fn by_uid(&self, uid: &str) -> Option<&Workload>;
    /// The service a connection to `ip` (and `port`, when known) reaches: for a workload's
    /// address, the one of its services listening on `port`; for a service's own address (a
    /// Kubernetes ClusterIP), that service. The default is the first service of the workload at
    /// `ip`, whatever the port.
    fn service_for(&self, ip: IpAddr, port: Option<u16>) -> Option<&Service> {
        let _ = port;
        self.by_ip(ip).and_then(|w| w.services.first())
    }
}

/// A workload set indexed by IP and uid.
#[derive(Clone, Debug, Default)]
pub struct WorkloadTable {
    workloads: Vec<Workload>,
    by_ip: HashMap<IpAddr, usize>,
    by_uid: HashMap<String, usize>,
}

/// Two workloads claim one IP or uid.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// An address listed by two workloads (or twice by one).
    #[error("IP {ip} is listed by both {first} and {second}")]
    DuplicateIp {
        /// The address.
        ip: IpAddr,
        /// `name.namespace` of the first workload listing it.
        first: String,
        /// `name.namespace` of the second.
        second: String,
    },
    /// A uid given to two workloads.
    #[error("uid {uid} belongs to both {first} and {second}")]
    DuplicateUid {
        /// The uid.
        uid: String,
        /// `name.namespace` of the first workload.
        first: String,
        /// `name.namespace` of the second.
        second: String,
    },
}

pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl WorkloadTable {
    /// Indexes `workloads`.
    pub fn new(workloads: Vec<Workload>) -> Result<Self, TableError> {
        let id = |w: &Workload| format!("{}.{}", w.name, w.namespace);
        let mut by_ip = HashMap::new();
        let mut by_uid = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            for &ip in &w.ips {
                if let Some(&j) = by_ip.get(&canonical(ip)) {
                    return Err(TableError::DuplicateIp {
                        ip,
                        first: id(&workloads[j]),
                        second: id(w),
                    });
                }
                by_ip.insert(canonical(ip), i);
            }
            if let Some(&j) = by_uid.get(&w.uid) {
                return Err(TableError::DuplicateUid {
                    uid: w.uid.clone(),
                    first: id(&workloads[j]),
                    second: id(w),
                });
            }
            by_uid.insert(w.uid.clone(), i);
        }
        Ok(WorkloadTable {
            workloads,
            by_ip,
            by_uid,
        })
    }

    /// The workloads, in file order.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }
}

impl WorkloadRegistry for WorkloadTable {
    fn by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.by_ip.get(&canonical(ip)).map(|&i| &self.workloads[i])
    }

    fn by_uid(&self, uid: &str) -> Option<&Workload> {
        self.by_uid.get(uid).map(|&i| &self.workloads[i])
    }
}
