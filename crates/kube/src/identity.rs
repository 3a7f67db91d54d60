//! Workload identity from pods, their owners, Services and EndpointSlices, published as a
//! [`KubeRegistry`] swapped in after every batch of changes.
//!
//! The stores keep only what identity needs (names, labels, addresses, owner, service
//! account, a few status bits), never whole objects.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use hashbrown::{DefaultHashBuilder, HashMap, HashSet, HashTable};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource, ResourceExt};
use meshmeter_attributes::StringMap;
use meshmeter_engine::RegistrySource;
use meshmeter_routing::catalog::ServiceCatalog;
use meshmeter_workloads::{Account, AccountIndex, Service, Workload, WorkloadRegistry};
use std::hash::BuildHasher;
use tokio::task::JoinHandle;

use crate::follow::{follow, Sink, SyncGroup, Synced, WatchMetrics};

mod catalog;

/// How identity is derived.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityOptions {
    /// The cluster's DNS domain: a Service's host is `NAME.NAMESPACE.svc.DOMAIN`.
    pub cluster_domain: String,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        IdentityOptions {
            cluster_domain: "cluster.local".to_owned(),
        }
    }
}

/// What a pod's controller is, as far as identity is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Controller {
    /// No controller: the pod is its own workload.
    None,
    ReplicaSet(Box<str>),
    Job(Box<str>),
    /// StatefulSet, DaemonSet, ReplicationController, anything else: API version, plural
    /// resource and name (boxed: rare, and it would make every pod's entry larger).
    Other(Box<(Box<str>, Box<str>, Box<str>)>),
}

/// What identity needs of a pod, and the workload last published for it.
#[derive(Clone, Debug)]
struct PodEntry {
    /// The pod's identity: labels, pod name, namespace, uid, service account, and (as of the
    /// last publish) its workload name, owner, the addresses it won and its services. Shared
    /// with the published registry, so a pod costs one copy however often it is published.
    workload: Arc<Workload>,
    /// Every address the pod has (another pod may win some of them).
    ips: Box<[IpAddr]>,
    controller: Controller,
    host_network: bool,
    running: bool,
    terminating: bool,
    /// Creation time, seconds since the epoch; newer wins an address.
    created: i64,
}

impl PodEntry {
    fn from_pod(pod: &Pod) -> Self {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|ips| ips.iter().filter_map(|i| i.ip.parse().ok()).collect())
            .unwrap_or_default();
        if let Some(ip) = status
            .and_then(|s| s.pod_ip.as_ref())
            .and_then(|i| i.parse().ok())
        {
            if !ips.contains(&ip) {
                ips.insert(0, ip);
            }
        }
        // Vectors grown by pushes keep room for 4: with 10,000 pods that is most of a KiB each.
        ips.shrink_to_fit();
        let (name, namespace) = (pod.name_any(), pod.namespace().unwrap_or_default());
        let mut w = Workload::new(name.clone(), namespace);
        w.uid = format!("kubernetes://{name}.{}", w.namespace);
        if let Some(labels) = &meta.labels {
            // Exactly the room needed (collecting would round it up).
            w.labels = StringMap::with_capacity(labels.len());
            for (k, v) in labels {
                w.labels.insert(k.clone(), v.clone());
            }
        }
        w.service_account = spec.and_then(|s| s.service_account_name.clone());
        PodEntry {
            workload: Arc::new(w),
            ips: ips.into_boxed_slice(),
            controller: controller(meta.owner_references.as_deref().unwrap_or(&[])),
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            running: status.and_then(|s| s.phase.as_deref()) == Some("Running"),
            terminating: meta.deletion_timestamp.is_some(),
            created: meta
                .creation_timestamp
                .as_ref()
                .map_or(0, |t| t.0.as_second()),
        }
    }

    /// Whether `other` (a new version of this pod) changes nothing identity depends on.
    fn same_facts(&self, other: &PodEntry) -> bool {
        self.workload.labels == other.workload.labels
            && self.workload.service_account == other.workload.service_account
            && self.workload.pod == other.workload.pod
            && self.workload.namespace == other.workload.namespace
            && self.ips == other.ips
            && self.controller == other.controller
            && (
                self.host_network,
                self.running,
                self.terminating,
                self.created,
            ) == (
                other.host_network,
                other.running,
                other.terminating,
                other.created,
            )
    }

    /// The order in which pods claim a shared address: a live pod (running, not being
    /// deleted) first, then one with an address of its own (not the node's), then the newest.
    fn rank(&self) -> (bool, bool, i64, &str) {
        (
            self.running && !self.terminating,
            !self.host_network,
            self.created,
            &self.workload.pod,
        )
    }
}

fn controller(owners: &[OwnerReference]) -> Controller {
    let Some(o) = owners.iter().find(|o| o.controller == Some(true)) else {
        return Controller::None;
    };
    match (o.api_version.as_str(), o.kind.as_str()) {
        ("apps/v1", "ReplicaSet") => Controller::ReplicaSet(o.name.as_str().into()),
        ("batch/v1", "Job") => Controller::Job(o.name.as_str().into()),
        (api, kind) => Controller::Other(Box::new((
            api.into(),
            plural(kind).into(),
            o.name.as_str().into(),
        ))),
    }
}

/// The resource name of a kind, as Kubernetes forms it for the kinds that own pods.
fn plural(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if lower.ends_with('s') {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

type Key = (Box<str>, Box<str>);

/// TCP ports by name (a port without a name has the empty one): a Service's own ports, or an
/// EndpointSlice's (the target ports its endpoints listen on).
type Ports = Box<[(Box<str>, u16)]>;

/// The Services (namespace, name) behind one address, each with its target ports and its own
/// ports there.
type ServicesAt<'a> = BTreeMap<(&'a str, &'a str), [Vec<u16>; 2]>;

/// What identity needs of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
struct ServiceEntry {
    /// Its virtual addresses (none when headless or `ExternalName`).
    cluster_ips: Box<[IpAddr]>,
    ports: Ports,
}

/// What identity needs of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SliceEntry {
    /// The Service it belongs to (label `kubernetes.io/service-name`).
    service: Box<str>,
    /// Addresses of its endpoints that are not known to be unready.
    ips: Vec<IpAddr>,
    ports: Ports,
}

/// Ports of `protocol` TCP (the default): the ones a TCP connection can reach.
fn tcp_ports<'a>(
    ports: impl Iterator<Item = (Option<&'a str>, Option<i32>, Option<&'a str>)>,
) -> Ports {
    ports
        .filter(|(_, _, protocol)| protocol.is_none_or(|p| p == "TCP"))
        .filter_map(|(name, port, _)| {
            let port = u16::try_from(port?).ok()?;
            Some((name.unwrap_or("").into(), port))
        })
        .collect()
}

fn key<K: Resource>(o: &K) -> Key {
    (
        o.meta().namespace.as_deref().unwrap_or("").into(),
        o.meta().name.as_deref().unwrap_or("").into(),
    )
}

/// What the identity watches know; each map is replaced wholesale when its watch relists.
#[derive(Debug, Default)]
struct Stores {
    /// Pods by uid (`metadata.uid`): two pods may share a name briefly (a StatefulSet's pod
    /// being replaced), never a uid.
    pods: HashMap<Box<str>, PodEntry>,
    /// ReplicaSet → the Deployment that controls it.
    replica_sets: HashMap<Key, Option<Box<str>>>,
    /// Job → the CronJob that controls it.
    jobs: HashMap<Key, Option<Box<str>>>,
    /// Services that exist.
    services: HashMap<Key, ServiceEntry>,
    /// EndpointSlices, by their own name.
    slices: HashMap<Key, SliceEntry>,
}

impl Stores {
    /// The workload name and owner of `pod`.
    fn workload_of(&self, pod: &PodEntry) -> (String, String) {
        let (name, ns) = (&pod.workload.pod, &pod.workload.namespace);
        let key = |n: &str| -> Key { (ns.as_str().into(), n.into()) };
        let owned = |api: &str, plural: &str, name: &str| {
            (
                name.to_owned(),
                format!("kubernetes://apis/{api}/namespaces/{ns}/{plural}/{name}"),
            )
        };
        match &pod.controller {
            Controller::None => owned("v1", "pods", name),
            Controller::ReplicaSet(rs) => match self.replica_sets.get(&key(rs)) {
                Some(Some(d)) => owned("apps/v1", "deployments", d),
                _ => owned("apps/v1", "replicasets", rs),
            },
            Controller::Job(job) => match self.jobs.get(&key(job)) {
                Some(Some(cron)) => owned("batch/v1", "cronjobs", cron),
                _ => owned("batch/v1", "jobs", job),
            },
            Controller::Other(other) => owned(&other.0, &other.1, &other.2),
        }
    }

    /// Brings every pod's published workload up to date and indexes the winners: every pod
    /// by its uid string, every address to the pod that ranks first for it, every Service by
    /// its cluster IPs. A pod whose identity did not change keeps its `Arc`.
    fn registry(&mut self, options: &IdentityOptions) -> KubeRegistry {
        let host = |ns: &str, name: &str| format!("{name}.{ns}.svc.{}", options.cluster_domain);
        // Services behind each address, from the EndpointSlices of existing Services, in
        // order of namespace and name, each with the ports that reach it there: the target
        // ports (the slice's) and the Service's own ports of the same names.
        let mut services_at: HashMap<IpAddr, ServicesAt<'_>> = HashMap::new();
        for ((ns, _), slice) in &self.slices {
            let Some(service) = self.services.get(&(ns.clone(), slice.service.clone())) else {
                continue;
            };
            for ip in &slice.ips {
                let [targets, ports] = services_at
                    .entry(canonical(*ip))
                    .or_default()
                    .entry((ns, &slice.service))
                    .or_default();
                targets.extend(slice.ports.iter().map(|(_, p)| *p));
                ports.extend(
                    service
                        .ports
                        .iter()
                        .filter(|(name, _)| slice.ports.iter().any(|(n, _)| n == name))
                        .map(|(_, p)| *p),
                );
            }
        }
        let mut by_uid: HashMap<&str, (&Box<str>, &PodEntry)> = HashMap::new();
        for (key, pod) in &self.pods {
            match by_uid.get(pod.workload.uid.as_str()) {
                Some((_, other)) if other.rank() >= pod.rank() => {}
                _ => {
                    by_uid.insert(&pod.workload.uid, (key, pod));
                }
            }
        }
        let mut owner_of_ip: HashMap<IpAddr, &PodEntry> = HashMap::new();
        // Addresses that do not tell one pod: claimed twice, or a node's (host network).
        let mut shared_ips: HashSet<IpAddr> = HashSet::new();
        for (_, pod) in by_uid.values() {
            for &ip in &pod.ips {
                if pod.host_network || owner_of_ip.contains_key(&ip) {
                    shared_ips.insert(canonical(ip));
                }
                match owner_of_ip.get(&ip) {
                    Some(other) if other.rank() >= pod.rank() => {}
                    _ => {
                        owner_of_ip.insert(ip, pod);
                    }
                }
            }
        }
        let mut updates: Vec<(Box<str>, Arc<Workload>)> = Vec::new();
        // (address, port) → index of the service in the pod's list, for pods with several.
        let mut service_ports: HashMap<(IpAddr, u16), u32> = HashMap::new();
        let mut winners: Vec<Box<str>> = Vec::with_capacity(by_uid.len());
        for (key, pod) in by_uid.values() {
            winners.push((*key).clone());
            let (name, owner) = self.workload_of(pod);
            let mut ips: Vec<IpAddr> = pod
                .ips
                .iter()
                .copied()
                .filter(|ip| owner_of_ip.get(ip).is_some_and(|p| std::ptr::eq(*p, *pod)))
                .collect();
            ips.shrink_to_fit();
            let mut services: Vec<Service> = Vec::new();
            for ip in &ips {
                for (ns, svc) in services_at
                    .get(&canonical(*ip))
                    .into_iter()
                    .flatten()
                    .map(|(k, _)| k)
                {
                    let host = host(ns, svc);
                    if !services.iter().any(|s| s.host == host) {
                        services.push(Service::from_host(&host, ns));
                    }
                }
            }
            services.shrink_to_fit();
            if services.len() > 1 {
                // Target ports before Service ports (a connection to a pod's address uses the
                // target port), and within each the first Service by namespace and name.
                for kind in 0..2 {
                    for ip in &ips {
                        let at = services_at.get(&canonical(*ip)).into_iter().flatten();
                        for ((ns, svc), ports) in at {
                            let Some(index) = services
                                .iter()
                                .position(|s| s.name == *svc && s.namespace == *ns)
                            else {
                                continue;
                            };
                            for &port in &ports[kind] {
                                service_ports
                                    .entry((canonical(*ip), port))
                                    .or_insert(index as u32);
                            }
                        }
                    }
                }
            }
            let w = &pod.workload;
            if w.name != name
                || w.owner.as_deref() != Some(owner.as_str())
                || w.ips != ips
                || w.services != services
            {
                let mut w = Workload::clone(w);
                w.workload_uid = format!("istio://{}/workloads/{name}", w.namespace);
                w.name = name;
                w.owner = Some(owner);
                w.ips = ips;
                w.services = services;
                updates.push(((*key).clone(), Arc::new(w)));
            }
        }
        drop((by_uid, owner_of_ip, services_at));
        let mut cluster_ips: HashMap<IpAddr, Arc<Service>> = HashMap::new();
        for ((ns, name), service) in &self.services {
            if service.cluster_ips.is_empty() {
                continue;
            }
            let s = Arc::new(Service::from_host(&host(ns, name), ns));
            for &ip in &service.cluster_ips {
                cluster_ips.insert(canonical(ip), Arc::clone(&s));
            }
        }
        for (key, w) in updates {
            if let Some(pod) = self.pods.get_mut(&key) {
                pod.workload = w;
            }
        }
        shared_ips.shrink_to_fit();
        let mut registry = KubeRegistry {
            service_ports,
            cluster_ips,
            shared_ips,
            ..KubeRegistry::default()
        };
        let pods: Vec<&PodEntry> = winners.iter().filter_map(|k| self.pods.get(k)).collect();
        for pod in &pods {
            registry.insert(&pod.workload);
        }
        // A principal names the running pods of its account (a finished Job's pod under the
        // same account does not make it ambiguous), or, when none runs, every pod of it.
        fn account(p: &PodEntry) -> Option<(&str, &str)> {
            let w = &p.workload;
            w.service_account
                .as_deref()
                .map(|sa| (w.namespace.as_str(), sa))
        }
        let running: HashSet<(&str, &str)> = pods
            .iter()
            .filter(|p| p.running)
            .filter_map(|p| account(p))
            .collect();
        registry.by_account = AccountIndex::new(
            pods.iter()
                .filter(|p| p.running || account(p).is_some_and(|a| !running.contains(&a)))
                .map(|p| (&*p.workload, Arc::clone(&p.workload))),
        );
        registry
    }
}

/// Identity from the API server: every pod by uid (`kubernetes://POD.NAMESPACE`), by each
/// address it won and by its namespace and service account, every Service by its cluster IPs. Workloads are shared with the stores
/// that built it.
#[derive(Debug, Default)]
pub struct KubeRegistry {
    by_ip: HashMap<IpAddr, Arc<Workload>>,
    by_uid: HashTable<Arc<Workload>>,
    hasher: DefaultHashBuilder,
    /// For pods behind several Services: (address, port) → index in the pod's `services`.
    service_ports: HashMap<(IpAddr, u16), u32>,
    /// Services by their virtual addresses.
    cluster_ips: HashMap<IpAddr, Arc<Service>>,
    /// Addresses claimed by several pods, or by a host-network pod (the node's).
    shared_ips: HashSet<IpAddr>,
    /// Pods by namespace and service account.
    by_account: AccountIndex<Arc<Workload>>,
}

impl KubeRegistry {
    fn insert(&mut self, w: &Arc<Workload>) {
        for &ip in &w.ips {
            self.by_ip.insert(canonical(ip), Arc::clone(w));
        }
        let hash = self.hasher.hash_one(w.uid.as_str());
        let hasher = &self.hasher;
        self.by_uid
            .insert_unique(hash, Arc::clone(w), |v| hasher.hash_one(v.uid.as_str()));
    }

    /// How many pods it knows.
    pub fn len(&self) -> usize {
        self.by_uid.len()
    }

    /// Whether it knows no pod.
    pub fn is_empty(&self) -> bool {
        self.by_uid.is_empty()
    }
}

impl WorkloadRegistry for KubeRegistry {
    fn by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.by_ip.get(&canonical(ip)).map(|w| &**w)
    }

    fn by_uid(&self, uid: &str) -> Option<&Workload> {
        let hash = self.hasher.hash_one(uid);
        self.by_uid.find(hash, |w| w.uid == uid).map(|w| &**w)
    }

    /// A pod's address: the pod's Service whose target port (else port) is `port`, else its
    /// first by namespace and name. A cluster IP: its Service, whatever the port (an address
    /// belongs to one Service).
    fn service_for(&self, ip: IpAddr, port: Option<u16>) -> Option<&Service> {
        let ip = canonical(ip);
        if let Some(w) = self.by_ip.get(&ip) {
            let chosen = match (port, w.services.len()) {
                (Some(port), 2..) => self.service_ports.get(&(ip, port)),
                _ => None,
            };
            return chosen
                .and_then(|&i| w.services.get(i as usize))
                .or_else(|| w.services.first());
        }
        self.cluster_ips.get(&ip).map(|s| &**s)
    }

    fn ip_shared(&self, ip: IpAddr) -> bool {
        self.shared_ips.contains(&canonical(ip))
    }

    /// The running pods of the account (every pod of it when none runs).
    fn by_service_account(&self, namespace: &str, service_account: &str) -> Option<Account<'_>> {
        self.by_account
            .get(namespace, service_account, |w| Some(&**w))
    }
}

/// IPv4-mapped IPv6 addresses match their IPv4 form, as in the workloads file.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Which store an event batch goes to.
trait Entry: Resource + Clone + Sized {
    type Value;
    fn compact(&self) -> Self::Value;
    fn store(stores: &mut Stores) -> &mut HashMap<Key, Self::Value>;
}

impl Entry for ReplicaSet {
    type Value = Option<Box<str>>;
    fn compact(&self) -> Self::Value {
        self.owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "Deployment")
            .map(|o| o.name.as_str().into())
    }
    fn store(stores: &mut Stores) -> &mut HashMap<Key, Self::Value> {
        &mut stores.replica_sets
    }
}

impl Entry for Job {
    type Value = Option<Box<str>>;
    fn compact(&self) -> Self::Value {
        self.owner_references()
            .iter()
            .find(|o| o.controller == Some(true) && o.kind == "CronJob")
            .map(|o| o.name.as_str().into())
    }
    fn store(stores: &mut Stores) -> &mut HashMap<Key, Self::Value> {
        &mut stores.jobs
    }
}

impl Entry for KubeService {
    type Value = ServiceEntry;
    fn compact(&self) -> Self::Value {
        let spec = self.spec.as_ref();
        let mut cluster_ips: Vec<IpAddr> = spec
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .chain(spec.and_then(|s| s.cluster_ip.as_ref()))
            // "None" (headless) does not parse.
            .filter_map(|ip| ip.parse().ok())
            .collect();
        cluster_ips.sort_unstable();
        cluster_ips.dedup();
        let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or(&[]);
        ServiceEntry {
            cluster_ips: cluster_ips.into_boxed_slice(),
            ports: tcp_ports(
                ports
                    .iter()
                    .map(|p| (p.name.as_deref(), Some(p.port), p.protocol.as_deref())),
            ),
        }
    }
    fn store(stores: &mut Stores) -> &mut HashMap<Key, Self::Value> {
        &mut stores.services
    }
}

impl Entry for EndpointSlice {
    type Value = SliceEntry;
    fn compact(&self) -> Self::Value {
        let service = self
            .labels()
            .get("kubernetes.io/service-name")
            .map_or("", String::as_str);
        let ips = self
            .endpoints
            .iter()
            .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
            .flat_map(|e| e.addresses.iter())
            .filter_map(|a| a.parse().ok())
            .collect();
        let ports = self.ports.as_deref().unwrap_or(&[]);
        SliceEntry {
            service: service.into(),
            ips,
            ports: tcp_ports(
                ports
                    .iter()
                    .map(|p| (p.name.as_deref(), p.port, p.protocol.as_deref())),
            ),
        }
    }
    fn store(stores: &mut Stores) -> &mut HashMap<Key, Self::Value> {
        &mut stores.slices
    }
}

struct Shared {
    stores: Mutex<Stores>,
    registry: Arc<ArcSwap<KubeRegistry>>,
    options: IdentityOptions,
    /// The service catalog, kept up to date only while someone follows it.
    catalog: tokio::sync::watch::Sender<Arc<ServiceCatalog>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn publish(&self) {
        let mut stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        let registry = Arc::new(stores.registry(&self.options));
        if self.catalog.receiver_count() > 0 {
            self.publish_catalog(&stores, &registry);
        }
        self.registry.store(registry);
    }

    fn publish_catalog(&self, stores: &Stores, registry: &KubeRegistry) {
        let catalog = catalog::build(stores, registry, &self.options);
        self.catalog.send_if_modified(|current| {
            let changed = **current != catalog;
            if changed {
                *current = Arc::new(catalog);
            }
            changed
        });
    }
}

/// The registry in force, for the engine.
#[derive(Debug)]
struct Published(Arc<ArcSwap<KubeRegistry>>);

impl RegistrySource for Published {
    fn current(&self) -> Arc<dyn WorkloadRegistry> {
        self.0.load_full()
    }
}

/// Applies events of a keyed store.
struct MapSink<K: Entry> {
    shared: Arc<Shared>,
    relist: Option<HashMap<Key, K::Value>>,
}

impl<K> Sink<K> for MapSink<K>
where
    K: Entry + Send + 'static,
    K::Value: Send + PartialEq,
{
    fn apply(&mut self, events: Vec<Event<K>>) {
        let mut changed = false;
        {
            let mut stores = self
                .shared
                .stores
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let map = K::store(&mut stores);
            for event in events {
                match event {
                    Event::Init => self.relist = Some(HashMap::new()),
                    Event::InitApply(o) => {
                        if let Some(r) = &mut self.relist {
                            r.insert(key(&o), o.compact());
                        }
                    }
                    Event::InitDone => {
                        if let Some(r) = self.relist.take() {
                            *map = r;
                            changed = true;
                        }
                    }
                    Event::Apply(o) => {
                        let v = o.compact();
                        let old = map.insert(key(&o), o.compact());
                        changed |= old.is_none_or(|old| old != v);
                    }
                    Event::Delete(o) => changed |= map.remove(&key(&o)).is_some(),
                }
            }
        }
        if changed {
            self.shared.publish();
        }
    }
}

/// Applies pod events.
struct PodSink {
    shared: Arc<Shared>,
    relist: Option<HashMap<Box<str>, PodEntry>>,
}

impl Sink<Pod> for PodSink {
    fn apply(&mut self, events: Vec<Event<Pod>>) {
        let uid = |p: &Pod| -> Box<str> { p.metadata.uid.as_deref().unwrap_or("").into() };
        let mut changed = false;
        {
            let mut stores = self
                .shared
                .stores
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for event in events {
                match event {
                    Event::Init => self.relist = Some(HashMap::new()),
                    Event::InitApply(p) => {
                        if let Some(r) = &mut self.relist {
                            r.insert(uid(&p), PodEntry::from_pod(&p));
                        }
                    }
                    Event::InitDone => {
                        if let Some(r) = self.relist.take() {
                            stores.pods = r;
                            changed = true;
                        }
                    }
                    Event::Apply(p) => {
                        let entry = PodEntry::from_pod(&p);
                        match stores.pods.get_mut(&uid(&p)) {
                            Some(old) if old.same_facts(&entry) => {}
                            Some(old) => {
                                *old = entry;
                                changed = true;
                            }
                            None => {
                                stores.pods.insert(uid(&p), entry);
                                changed = true;
                            }
                        }
                    }
                    Event::Delete(p) => changed |= stores.pods.remove(&uid(&p)).is_some(),
                }
            }
        }
        if changed {
            self.shared.publish();
        }
    }
}

/// Workload identity from the API server, as a table the engine reads without locks.
#[derive(Debug)]
pub struct IdentitySource {
    registry: Arc<ArcSwap<KubeRegistry>>,
    synced: Synced,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl IdentitySource {
    /// Starts watching pods, ReplicaSets, Jobs, Services and EndpointSlices in every
    /// namespace on the current tokio runtime.
    pub fn start(client: Client, options: IdentityOptions, metrics: &WatchMetrics) -> Self {
        let registry = Arc::new(ArcSwap::from_pointee(KubeRegistry::default()));
        let shared = Arc::new(Shared {
            stores: Mutex::new(Stores::default()),
            registry: Arc::clone(&registry),
            options,
            catalog: tokio::sync::watch::Sender::new(Arc::default()),
        });
        let keep = Arc::clone(&shared);
        let (group, synced) = SyncGroup::new(5, None);
        let all = || "*".to_owned();
        let tasks = vec![
            tokio::spawn(follow(
                Api::<Pod>::all(client.clone()),
                "pods",
                all(),
                metrics.clone(),
                Arc::clone(&group),
                PodSink {
                    shared: Arc::clone(&shared),
                    relist: None,
                },
            )),
            tokio::spawn(follow(
                Api::<ReplicaSet>::all(client.clone()),
                "replicasets",
                all(),
                metrics.clone(),
                Arc::clone(&group),
                MapSink::<ReplicaSet> {
                    shared: Arc::clone(&shared),
                    relist: None,
                },
            )),
            tokio::spawn(follow(
                Api::<Job>::all(client.clone()),
                "jobs",
                all(),
                metrics.clone(),
                Arc::clone(&group),
                MapSink::<Job> {
                    shared: Arc::clone(&shared),
                    relist: None,
                },
            )),
            tokio::spawn(follow(
                Api::<KubeService>::all(client.clone()),
                "services",
                all(),
                metrics.clone(),
                Arc::clone(&group),
                MapSink::<KubeService> {
                    shared: Arc::clone(&shared),
                    relist: None,
                },
            )),
            tokio::spawn(follow(
                Api::<EndpointSlice>::all(client),
                "endpointslices",
                all(),
                metrics.clone(),
                group,
                MapSink::<EndpointSlice> {
                    shared,
                    relist: None,
                },
            )),
        ];
        IdentitySource {
            registry,
            synced,
            tasks,
            shared: keep,
        }
    }

    /// The service catalog (Services with their TCP ports and cluster IPs, endpoints from
    /// their EndpointSlices with the labels, workload and service account of the pod at each
    /// address), for the control plane. The value changes whenever the catalog does; it is
    /// only computed while some receiver is alive.
    pub fn catalog(&self) -> tokio::sync::watch::Receiver<Arc<ServiceCatalog>> {
        let rx = self.shared.catalog.subscribe();
        let stores = self
            .shared
            .stores
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared.publish_catalog(&stores, &self.registry.load());
        rx
    }

    /// The registry in force now (replaced whenever a watched object changes identity).
    pub fn current(&self) -> Arc<KubeRegistry> {
        self.registry.load_full()
    }

    /// The registry in force at each moment, for the engine
    /// (`meshmeter_engine::Workloads::Dynamic`).
    pub fn registry(&self) -> Arc<dyn RegistrySource> {
        Arc::new(Published(Arc::clone(&self.registry)))
    }

    /// Turns true once every resource has been listed once.
    pub fn synced(&self) -> Synced {
        self.synced.clone()
    }
}

impl Drop for IdentitySource {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
