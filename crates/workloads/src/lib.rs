//! Workload identity: what Mixer's `kubernetesenv` adapter looked up in the Kubernetes API,
//! here from a registry (a file today; the Kubernetes API later, behind the same trait).
//!
//! An [`Enricher`] fills `source.*` and `destination.*` identity attributes into a bag from the
//! workload matching `source.uid`/`source.ip` (and `destination.uid`/`destination.ip`), and
//! `destination.service.*` from the service that `destination.ip` and `destination.port` reach
//! ([`WorkloadRegistry::service_for`]), never replacing attributes the bag already has.
//!
//! ## Identity from the principal
//!
//! When a side's address does not say who it is — unknown to the registry (NAT, a node's
//! address), shared by several workloads ([`WorkloadRegistry::ip_shared`]: host-network pods),
//! or held by a workload that the principal contradicts (another namespace or service
//! account) — its mTLS principal (`source.principal`, `destination.principal`:
//! `cluster.local/ns/N/sa/S` or `spiffe://cluster.local/ns/N/sa/S`) names it instead: the
//! workloads of namespace `N` running as service account `S`
//! ([`WorkloadRegistry::by_service_account`]). Exactly one: its whole identity is filled as if
//! its address had matched. Several: only what they all have in common ([`AccountGroup`]):
//! `*.namespace`, `*.workload.namespace` and `*.serviceAccount` always, `*.workload.name`,
//! `*.workload.uid` and `*.owner` when they are replicas of one workload, and `*.labels`
//! holding the labels (name and value) every one of them carries; never `*.uid` or `*.name`,
//! which name one pod. None: the address's workload, if any and not contradicted, as before.
//! A `*.uid` in the bag still wins over both; the trust domain is not compared (the sidecar
//! verified the peer against the mesh's trust bundle).
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
//!
//! ### Services
//!
//! An optional top-level `services` list declares services the way a Kubernetes Service
//! does, for TCP routing off Kubernetes (the control plane's [`ServiceCatalog`], from
//! [`WorkloadTable::catalog`]) and for telemetry of traffic sent to a service address:
//!
//! ```yaml
//! services:
//! - host: mongodb.default.svc.cluster.local   # required; name and namespace are its first two labels
//!   addresses: [10.96.0.20]                   # optional: its own addresses (a ClusterIP)
//!   ports:                                    # required, at least one
//!   - {port: 27017, name: tcp-mongo, targetPort: 27018}  # targetPort: the workloads' port (default: port)
//! ```
//!
//! The service's endpoints are the addresses of the workloads that list its host in their
//! `services`, with their labels (subsets select on them) and service account. A connection to
//! a service address resolves to that service ([`WorkloadRegistry::service_for`]); a
//! connection to a workload address on a declared target port resolves to the service with
//! that port. A host declared twice, an address given to two services, or a service address
//! that is also a workload's, is an error.

#![warn(missing_docs)]

mod enrich;
mod file;

use std::collections::BTreeMap;
use std::net::IpAddr;

use hashbrown::HashMap;
use meshmeter_attributes::StringMap;
use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService, ServiceCatalog};

pub use enrich::{principal_account, Enriched, Enricher};
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

/// What the workloads of one namespace running as one service account all have in common:
/// the identity a principal gives when several workloads run as it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountGroup {
    /// `*.namespace` and `*.workload.namespace`.
    pub namespace: String,
    /// `*.serviceAccount`.
    pub service_account: String,
    /// How many workloads run as it.
    pub workloads: usize,
    /// `*.workload.name`, when every one has the same (replicas of one Deployment).
    pub workload_name: Option<String>,
    /// `*.workload.uid`, when every one has the same.
    pub workload_uid: Option<String>,
    /// `*.owner`, when every one has the same.
    pub owner: Option<String>,
    /// `*.labels`: the labels, name and value, that every one carries.
    pub labels: StringMap<'static>,
}

impl AccountGroup {
    /// What `workloads` have in common, taking namespace and service account from the first;
    /// `None` when there is none.
    pub fn common<'w>(workloads: impl IntoIterator<Item = &'w Workload>) -> Option<Self> {
        let mut workloads = workloads.into_iter();
        let first = workloads.next()?;
        let mut group = AccountGroup {
            namespace: first.namespace.clone(),
            service_account: first.service_account.clone().unwrap_or_default(),
            workloads: 1,
            workload_name: Some(first.name.clone()),
            workload_uid: Some(first.workload_uid.clone()),
            owner: first.owner.clone(),
            labels: StringMap::new(),
        };
        let mut labels: Vec<(&str, &str)> = first.labels.iter().collect();
        for w in workloads {
            group.workloads += 1;
            let keep = |field: &mut Option<String>, value: Option<&String>| {
                if field.as_ref() != value {
                    *field = None;
                }
            };
            keep(&mut group.workload_name, Some(&w.name));
            keep(&mut group.workload_uid, Some(&w.workload_uid));
            keep(&mut group.owner, w.owner.as_ref());
            labels.retain(|(k, v)| w.labels.get(k) == Some(*v));
        }
        group.labels = StringMap::with_capacity(labels.len());
        for (k, v) in labels {
            group.labels.insert(k.to_owned(), v.to_owned());
        }
        Some(group)
    }
}

/// The workloads a principal's namespace and service account name.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Account<'a> {
    /// Exactly one workload runs as it.
    One(&'a Workload),
    /// Several do; what they share.
    Several(&'a AccountGroup),
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
    /// Whether `ip` does not tell one workload by itself: several claim it, or it is a node's
    /// address (host-network pods) that other traffic leaves from too. [`Self::by_ip`] still
    /// answers the likeliest one; a principal, when the bag has one, is preferred. The default:
    /// no address is shared.
    fn ip_shared(&self, ip: IpAddr) -> bool {
        let _ = ip;
        false
    }
    /// The workloads of `namespace` running as `service_account`. The default knows none.
    fn by_service_account(&self, namespace: &str, service_account: &str) -> Option<Account<'_>> {
        let _ = (namespace, service_account);
        None
    }
}

/// Workloads by namespace and service account, for [`WorkloadRegistry::by_service_account`].
/// Workloads without a service account are not in it.
#[derive(Clone, Debug)]
pub struct AccountIndex<T> {
    by_namespace: HashMap<String, HashMap<String, Accounted<T>>>,
}

#[derive(Clone, Debug)]
enum Accounted<T> {
    One(T),
    Several(Box<AccountGroup>),
}

impl<T> Default for AccountIndex<T> {
    fn default() -> Self {
        AccountIndex {
            by_namespace: HashMap::new(),
        }
    }
}

impl<T> AccountIndex<T> {
    /// Indexes `workloads`, each with the handle the index answers for it (an index in a
    /// table, a shared pointer, ...): one per account keeps its handle, several their
    /// [`AccountGroup`].
    pub fn new<'w>(workloads: impl IntoIterator<Item = (&'w Workload, T)>) -> Self {
        let mut grouped: HashMap<(&str, &str), Vec<(&Workload, T)>> = HashMap::new();
        for (w, handle) in workloads {
            if let Some(sa) = &w.service_account {
                grouped
                    .entry((w.namespace.as_str(), sa.as_str()))
                    .or_default()
                    .push((w, handle));
            }
        }
        let mut index = AccountIndex::default();
        for ((ns, sa), mut members) in grouped {
            let entry = if members.len() == 1 {
                match members.pop() {
                    Some((_, handle)) => Accounted::One(handle),
                    None => continue,
                }
            } else {
                match AccountGroup::common(members.iter().map(|(w, _)| *w)) {
                    Some(group) => Accounted::Several(Box::new(group)),
                    None => continue,
                }
            };
            index
                .by_namespace
                .entry(ns.to_owned())
                .or_insert_with(HashMap::new)
                .insert(sa.to_owned(), entry);
        }
        index
    }

    /// The workloads of `namespace` running as `service_account`, the one's handle resolved
    /// by `resolve`.
    pub fn get<'a>(
        &'a self,
        namespace: &str,
        service_account: &str,
        resolve: impl FnOnce(&'a T) -> Option<&'a Workload>,
    ) -> Option<Account<'a>> {
        match self.by_namespace.get(namespace)?.get(service_account)? {
            Accounted::One(handle) => resolve(handle).map(Account::One),
            Accounted::Several(group) => Some(Account::Several(group)),
        }
    }

    /// How many accounts it holds.
    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }

    /// Whether it holds no account.
    pub fn is_empty(&self) -> bool {
        self.by_namespace.is_empty()
    }
}

/// A service declared in the workloads file's `services` list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredService {
    /// Its identity (`destination.service.*`).
    pub service: Service,
    /// Its own addresses (a ClusterIP); empty for a service reached at its workloads'
    /// addresses only.
    pub addresses: Vec<IpAddr>,
    /// Its ports.
    pub ports: Vec<DeclaredPort>,
}

/// One port of a [`DeclaredService`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredPort {
    /// The port clients connect to.
    pub port: u16,
    /// Its name (may be empty).
    pub name: String,
    /// The port on the workloads.
    pub target_port: u16,
}

/// A workload set indexed by IP and uid, with the services the file declares.
#[derive(Clone, Debug, Default)]
pub struct WorkloadTable {
    workloads: Vec<Workload>,
    by_ip: HashMap<IpAddr, usize>,
    by_uid: HashMap<String, usize>,
    by_account: AccountIndex<usize>,
    services: Vec<DeclaredService>,
    /// Service addresses to positions in `services`.
    by_address: HashMap<IpAddr, usize>,
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
    /// A service host declared twice.
    #[error("service {host} is declared twice")]
    DuplicateHost {
        /// The host.
        host: String,
    },
    /// An address given to two services (or twice to one).
    #[error("service address {ip} is given to both {first} and {second}")]
    DuplicateServiceAddress {
        /// The address.
        ip: IpAddr,
        /// The first service's host.
        first: String,
        /// The second's.
        second: String,
    },
    /// A service address that is also a workload's.
    #[error("service address {ip} of {host} is also an address of workload {workload}")]
    ServiceAddressOfWorkload {
        /// The address.
        ip: IpAddr,
        /// The service's host.
        host: String,
        /// `name.namespace` of the workload.
        workload: String,
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
        let by_account = AccountIndex::new(workloads.iter().zip(0..));
        Ok(WorkloadTable {
            workloads,
            by_ip,
            by_uid,
            by_account,
            services: Vec::new(),
            by_address: HashMap::new(),
        })
    }

    /// Adds the declared `services` (replacing any declared before).
    pub fn with_services(mut self, services: Vec<DeclaredService>) -> Result<Self, TableError> {
        let mut hosts = HashMap::new();
        let mut by_address = HashMap::new();
        for (i, s) in services.iter().enumerate() {
            let host = &s.service.host;
            if hosts.insert(host.clone(), i).is_some() {
                return Err(TableError::DuplicateHost { host: host.clone() });
            }
            for &ip in &s.addresses {
                if let Some(&j) = by_address.get(&canonical(ip)) {
                    let first: &DeclaredService = &services[j];
                    return Err(TableError::DuplicateServiceAddress {
                        ip,
                        first: first.service.host.clone(),
                        second: host.clone(),
                    });
                }
                if let Some(&w) = self.by_ip.get(&canonical(ip)) {
                    let w = &self.workloads[w];
                    return Err(TableError::ServiceAddressOfWorkload {
                        ip,
                        host: host.clone(),
                        workload: format!("{}.{}", w.name, w.namespace),
                    });
                }
                by_address.insert(canonical(ip), i);
            }
        }
        self.services = services;
        self.by_address = by_address;
        Ok(self)
    }

    /// The workloads, in file order.
    pub fn workloads(&self) -> &[Workload] {
        &self.workloads
    }

    /// The declared services, in file order.
    pub fn declared_services(&self) -> &[DeclaredService] {
        &self.services
    }

    /// The declared services with their endpoints (every address of every workload listing
    /// the host), the control plane's input for TCP routing. Services that workloads name but
    /// the file does not declare have no ports and are left out.
    pub fn catalog(&self) -> ServiceCatalog {
        let services = self
            .services
            .iter()
            .map(|d| {
                let ports: BTreeMap<u16, u16> =
                    d.ports.iter().map(|p| (p.port, p.target_port)).collect();
                let endpoints = self
                    .workloads
                    .iter()
                    .filter(|w| w.services.iter().any(|s| s.host == d.service.host))
                    .flat_map(|w| {
                        let labels: BTreeMap<String, String> = w
                            .labels
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_string()))
                            .collect();
                        let ports = ports.clone();
                        w.ips.iter().map(move |&ip| CatalogEndpoint {
                            ip,
                            ports: ports.clone(),
                            labels: labels.clone(),
                            workload: w.name.clone(),
                            namespace: w.namespace.clone(),
                            service_account: w.service_account.clone().unwrap_or_default(),
                        })
                    })
                    .collect();
                CatalogService {
                    host: d.service.host.clone(),
                    name: d.service.name.clone(),
                    namespace: d.service.namespace.clone(),
                    addresses: d.addresses.clone(),
                    ports: d
                        .ports
                        .iter()
                        .map(|p| CatalogPort {
                            port: p.port,
                            name: p.name.clone(),
                        })
                        .collect(),
                    endpoints,
                }
            })
            .collect();
        ServiceCatalog { services }
    }
}

impl WorkloadRegistry for WorkloadTable {
    fn by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.by_ip.get(&canonical(ip)).map(|&i| &self.workloads[i])
    }

    fn by_uid(&self, uid: &str) -> Option<&Workload> {
        self.by_uid.get(uid).map(|&i| &self.workloads[i])
    }

    fn service_for(&self, ip: IpAddr, port: Option<u16>) -> Option<&Service> {
        let ip = canonical(ip);
        if let Some(&i) = self.by_address.get(&ip) {
            return Some(&self.services[i].service);
        }
        let w = self.by_ip(ip)?;
        // The one of its declared services with this target port, else its first service.
        let by_port = port.and_then(|port| {
            w.services.iter().find(|s| {
                self.services.iter().any(|d| {
                    d.service.host == s.host && d.ports.iter().any(|p| p.target_port == port)
                })
            })
        });
        by_port.or_else(|| w.services.first())
    }

    fn by_service_account(&self, namespace: &str, service_account: &str) -> Option<Account<'_>> {
        self.by_account
            .get(namespace, service_account, |&i| self.workloads.get(i))
    }
}
