//! Workload identity from pods, their owners, Services and EndpointSlices, published as a
//! [`WorkloadTable`] swapped in after every batch of changes.
//!
//! The stores keep only what identity needs (names, labels, addresses, owner, service
//! account, a few status bits), never whole objects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use arc_swap::ArcSwap;
use hashbrown::HashMap;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::runtime::watcher::Event;
use kube::{Api, Client, Resource, ResourceExt};
use meshmeter_adapters::workloads::{Service, Workload, WorkloadTable};
use meshmeter_attributes::StringMap;
use tokio::task::JoinHandle;

use crate::follow::{follow, Sink, SyncGroup, Synced, WatchMetrics};

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
    /// StatefulSet, DaemonSet, ReplicationController, anything else: `apis/GROUP/VERSION`
    /// path prefix, plural resource and name.
    Other {
        api: Box<str>,
        plural: Box<str>,
        name: Box<str>,
    },
}

/// The fields of a pod that identity needs.
#[derive(Clone, Debug, PartialEq)]
struct PodEntry {
    name: Box<str>,
    namespace: Box<str>,
    labels: StringMap<'static>,
    ips: Vec<IpAddr>,
    service_account: Option<Box<str>>,
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
        PodEntry {
            name: pod.name_any().into(),
            namespace: pod.namespace().unwrap_or_default().into(),
            labels: meta
                .labels
                .iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ips,
            service_account: spec
                .and_then(|s| s.service_account_name.as_deref())
                .map(Into::into),
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

    /// The order in which pods claim a shared address: a live pod (running, not being
    /// deleted) first, then one with an address of its own (not the node's), then the newest.
    fn rank(&self) -> (bool, bool, i64, &str) {
        (
            self.running && !self.terminating,
            !self.host_network,
            self.created,
            &self.name,
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
        (api, kind) => Controller::Other {
            api: api.into(),
            plural: plural(kind).into(),
            name: o.name.as_str().into(),
        },
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
    services: HashMap<Key, ()>,
    /// EndpointSlice → (service name, endpoint addresses).
    slices: HashMap<Key, (Box<str>, Vec<IpAddr>)>,
}

impl Stores {
    fn workload_of(&self, pod: &PodEntry) -> (String, String) {
        let ns = &*pod.namespace;
        let apps = |plural: &str, name: &str| {
            (
                name.to_owned(),
                format!("kubernetes://apis/apps/v1/namespaces/{ns}/{plural}/{name}"),
            )
        };
        let batch = |plural: &str, name: &str| {
            (
                name.to_owned(),
                format!("kubernetes://apis/batch/v1/namespaces/{ns}/{plural}/{name}"),
            )
        };
        match &pod.controller {
            Controller::None => (
                pod.name.to_string(),
                format!("kubernetes://apis/v1/namespaces/{ns}/pods/{}", pod.name),
            ),
            Controller::ReplicaSet(rs) => {
                match self.replica_sets.get(&(pod.namespace.clone(), rs.clone())) {
                    Some(Some(d)) => apps("deployments", d),
                    _ => apps("replicasets", rs),
                }
            }
            Controller::Job(job) => match self.jobs.get(&(pod.namespace.clone(), job.clone())) {
                Some(Some(cron)) => batch("cronjobs", cron),
                _ => batch("jobs", job),
            },
            Controller::Other { api, plural, name } => (
                name.to_string(),
                format!("kubernetes://apis/{api}/namespaces/{ns}/{plural}/{name}"),
            ),
        }
    }

    /// The table: every pod by its uid, every address to the pod that ranks first for it.
    fn table(&self, options: &IdentityOptions) -> WorkloadTable {
        // Services behind each address, from the EndpointSlices of existing Services.
        let mut services_at: HashMap<IpAddr, BTreeSet<(&str, &str)>> = HashMap::new();
        for ((ns, _), (service, ips)) in &self.slices {
            if !self.services.contains_key(&(ns.clone(), service.clone())) {
                continue;
            }
            for ip in ips {
                services_at.entry(*ip).or_default().insert((ns, service));
            }
        }
        // One pod per uid string (`kubernetes://POD.NAMESPACE`) and per address.
        let mut by_uid: BTreeMap<String, &PodEntry> = BTreeMap::new();
        for pod in self.pods.values() {
            let uid = format!("kubernetes://{}.{}", pod.name, pod.namespace);
            match by_uid.get(&uid) {
                Some(other) if other.rank() >= pod.rank() => {}
                _ => {
                    by_uid.insert(uid, pod);
                }
            }
        }
        let mut owner_of_ip: HashMap<IpAddr, &PodEntry> = HashMap::new();
        for pod in by_uid.values() {
            for &ip in &pod.ips {
                match owner_of_ip.get(&ip) {
                    Some(other) if other.rank() >= pod.rank() => {}
                    _ => {
                        owner_of_ip.insert(ip, pod);
                    }
                }
            }
        }
        let workloads = by_uid
            .into_iter()
            .map(|(uid, pod)| {
                let (name, owner) = self.workload_of(pod);
                let ips: Vec<IpAddr> = pod
                    .ips
                    .iter()
                    .copied()
                    .filter(|ip| owner_of_ip.get(ip).is_some_and(|p| std::ptr::eq(*p, pod)))
                    .collect();
                let mut services: Vec<Service> = Vec::new();
                for ip in &ips {
                    for (ns, svc) in services_at.get(ip).into_iter().flatten() {
                        let host = format!("{svc}.{ns}.svc.{}", options.cluster_domain);
                        if !services.iter().any(|s| s.host == host) {
                            services.push(Service::from_host(&host, ns));
                        }
                    }
                }
                let mut w = Workload::new(name, &*pod.namespace);
                w.pod = pod.name.to_string();
                w.uid = uid;
                w.labels = pod.labels.clone();
                w.ips = ips;
                w.services = services;
                w.service_account = pod.service_account.as_deref().map(str::to_owned);
                w.owner = Some(owner);
                w
            })
            .collect();
        // Every uid and address is claimed once by construction.
        WorkloadTable::new(workloads).unwrap_or_default()
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
    type Value = ();
    fn compact(&self) -> Self::Value {}
    fn store(stores: &mut Stores) -> &mut HashMap<Key, Self::Value> {
        &mut stores.services
    }
}

impl Entry for EndpointSlice {
    type Value = (Box<str>, Vec<IpAddr>);
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
        (service.into(), ips)
    }
    fn store(stores: &mut Stores) -> &mut HashMap<Key, Self::Value> {
        &mut stores.slices
    }
}

struct Shared {
    stores: Mutex<Stores>,
    table: Arc<ArcSwap<WorkloadTable>>,
    options: IdentityOptions,
}

impl Shared {
    fn publish(&self) {
        let stores = self.stores.lock().unwrap_or_else(PoisonError::into_inner);
        self.table.store(Arc::new(stores.table(&self.options)));
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
                        let old = stores.pods.insert(uid(&p), entry.clone());
                        changed |= old.as_ref() != Some(&entry);
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
    table: Arc<ArcSwap<WorkloadTable>>,
    synced: Synced,
    tasks: Vec<JoinHandle<()>>,
}

impl IdentitySource {
    /// Starts watching pods, ReplicaSets, Jobs, Services and EndpointSlices in every
    /// namespace on the current tokio runtime.
    pub fn start(client: Client, options: IdentityOptions, metrics: &WatchMetrics) -> Self {
        let table = Arc::new(ArcSwap::from_pointee(WorkloadTable::default()));
        let shared = Arc::new(Shared {
            stores: Mutex::new(Stores::default()),
            table: Arc::clone(&table),
            options,
        });
        let (group, synced) = SyncGroup::new(5);
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
            table,
            synced,
            tasks,
        }
    }

    /// The table in force, swapped whenever a watched object changes identity.
    pub fn table(&self) -> Arc<ArcSwap<WorkloadTable>> {
        Arc::clone(&self.table)
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
