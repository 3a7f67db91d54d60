//! The per-connection routing decision, from the view the control plane sent.
//!
//! A [`Router`] holds an immutable routing table behind an [`ArcSwap`]: a decision loads the
//! current table (no lock), finds the service port the client connected to, the first route
//! whose destination subnets match, a cluster by the route's weights, and an endpoint by the
//! cluster's load balancer. Mutable state (open connections, round-robin position, connect
//! failures, ejections) lives in atomics that a table shares with its successor, so an
//! update keeps the counts and ejections of the clusters and endpoints it does not remove.
//!
//! ## Outlier detection
//!
//! An endpoint is ejected after `consecutive_errors` consecutive connect failures reported
//! with [`Picked::connect_failed`] (a [`Picked::connected`] resets the count; 0 turns
//! detection off). The n-th ejection lasts `n × base_ejection_ms`; n decreases by one for
//! every `interval_ms` the endpoint spent back in service before its next ejection (Envoy
//! decrements it on every interval sweep that finds the host healthy). An ejected endpoint
//! returns exactly when its ejection ends; there is no sweep timer, the decision compares the
//! clock with the ejection's end.
//!
//! `max_ejection_percent` caps ejections as Envoy documents it ("will eject at least one host
//! regardless of the value"): when no endpoint of the cluster is ejected, one may always be;
//! otherwise an ejection happens only if afterwards at most that percentage of the cluster's
//! endpoints is ejected. With 3 endpoints and 10 %, one endpoint can be ejected, never two.
//! A refused ejection leaves the failure count as it is, so the next failure tries again.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use meshmeter_netconfig::Subnet;

use crate::clock::{Clock, MonotonicClock};
use crate::rng::{default_seed, Rng};
use crate::view::{self, Inbound, LoadBalancer, TlsMode, ViewUpdate};

/// Where a new connection goes.
#[derive(Debug)]
pub enum Decision {
    /// The original destination is not a service address and port of the view: forward the
    /// connection to it unchanged.
    Passthrough,
    /// Connect to the picked endpoint.
    Forward(Picked),
    /// The chosen cluster is at its `max_connections`: refuse the connection (`UO`).
    Overflow(Refused),
    /// The chosen cluster has no endpoint in service (none, or all ejected): refuse the
    /// connection (`UH`).
    NoEndpoint(Refused),
}

impl Decision {
    /// The destination service the decision is about (for reports); `None` for
    /// [`Decision::Passthrough`].
    pub fn service(&self) -> Option<&ServiceInfo> {
        match self {
            Decision::Passthrough => None,
            Decision::Forward(picked) => Some(picked.service()),
            Decision::Overflow(refused) | Decision::NoEndpoint(refused) => Some(refused.service()),
        }
    }

    /// The response flag a refused decision reports (`UO`, `UH`); `None` otherwise.
    pub fn response_flag(&self) -> Option<&'static str> {
        match self {
            Decision::Overflow(_) => Some("UO"),
            Decision::NoEndpoint(_) => Some("UH"),
            Decision::Passthrough | Decision::Forward(_) => None,
        }
    }
}

/// The service a cluster belongs to, as reports name it (`destination.service.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// `destination.service.host`.
    pub host: String,
    /// `destination.service.name`.
    pub name: String,
    /// `destination.service.namespace`.
    pub namespace: String,
}

/// One endpoint of a cluster, as reports name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointInfo {
    /// The address to connect to.
    pub address: SocketAddr,
    /// The workload's labels (`version`).
    pub labels: BTreeMap<String, String>,
    /// The workload name.
    pub workload: String,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's service account; empty when unknown.
    pub service_account: String,
}

/// A connection the router accepted: the endpoint to connect to and how, and a slot in the
/// cluster's and the endpoint's open connections, released when this is dropped (keep it as
/// long as the connection is open).
pub struct Picked {
    cluster: Arc<ClusterState>,
    /// Index into `cluster.endpoints`; `None` under `PASSTHROUGH` load balancing.
    endpoint: Option<usize>,
    address: SocketAddr,
}

impl Picked {
    /// The address to connect to (under `PASSTHROUGH` load balancing: the original
    /// destination).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The cluster's connect timeout; `None`: the proxy's default.
    pub fn connect_timeout(&self) -> Option<Duration> {
        self.cluster.connect_timeout
    }

    /// TLS towards the endpoint.
    pub fn tls(&self) -> TlsMode {
        self.cluster.tls
    }

    /// The endpoint's identity; `None` under `PASSTHROUGH` load balancing.
    pub fn endpoint(&self) -> Option<&EndpointInfo> {
        self.endpoint.map(|i| &self.cluster.endpoints[i].info)
    }

    /// The destination service.
    pub fn service(&self) -> &ServiceInfo {
        &self.cluster.service
    }

    /// The cluster's name (`outbound|27017|v1|mongodb.default.svc.cluster.local`).
    pub fn cluster(&self) -> &str {
        &self.cluster.spec.name
    }

    /// The subset's name; empty for the whole host.
    pub fn subset(&self) -> &str {
        &self.cluster.spec.subset
    }

    /// Reports that the connection to the endpoint was established (resets its consecutive
    /// failures).
    pub fn connected(&self) {
        if let Some(i) = self.endpoint {
            self.cluster.endpoints[i]
                .counters
                .failures
                .store(0, Ordering::Relaxed);
        }
    }

    /// Reports that connecting to the endpoint failed (refused, unreachable, timed out): it
    /// counts towards the endpoint's ejection.
    pub fn connect_failed(&self) {
        if let Some(i) = self.endpoint {
            self.cluster.connect_failed(i);
        }
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        self.cluster.counters.open.fetch_sub(1, Ordering::AcqRel);
        if let Some(i) = self.endpoint {
            self.cluster.endpoints[i]
                .counters
                .open
                .fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl fmt::Debug for Picked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Picked")
            .field("cluster", &self.cluster.spec.name)
            .field("address", &self.address)
            .finish()
    }
}

/// A connection the router refused: which cluster refused it (for the report).
pub struct Refused {
    cluster: Arc<ClusterState>,
}

impl Refused {
    /// The destination service.
    pub fn service(&self) -> &ServiceInfo {
        &self.cluster.service
    }

    /// The cluster's name.
    pub fn cluster(&self) -> &str {
        &self.cluster.spec.name
    }
}

impl fmt::Debug for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Refused")
            .field("cluster", &self.cluster.spec.name)
            .finish()
    }
}

/// A counter snapshot of one cluster ([`Router::cluster_stats`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterStats {
    /// Open connections (slots held by [`Picked`]s).
    pub open: u32,
    /// The endpoints, in the view's order.
    pub endpoints: Vec<EndpointStats>,
}

/// A counter snapshot of one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointStats {
    /// Its address.
    pub address: SocketAddr,
    /// Open connections.
    pub open: u32,
    /// Connect failures since the last success or ejection.
    pub consecutive_failures: u32,
    /// Whether it is ejected now.
    pub ejected: bool,
}

/// Why an update was refused (the router keeps its previous table).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("view update {version} refused: {}", join(.problems))]
pub struct UpdateError {
    /// The refused update's version.
    pub version: u64,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// One inconsistency of a view.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Problem {
    /// Two services with one host, or two clusters with one name, in one update.
    #[error("{kind} {key:?} appears twice")]
    Duplicate {
        /// `service` or `cluster`.
        kind: &'static str,
        /// The host or name.
        key: String,
    },
    /// A service address that is not an IP address.
    #[error("service {host:?}: address {address:?} is not an IP address")]
    BadServiceAddress {
        /// The service.
        host: String,
        /// The address as sent.
        address: String,
    },
    /// A port outside 1..=65535.
    #[error("{owner:?}: port {port} is out of range")]
    BadPort {
        /// The service or cluster.
        owner: String,
        /// The port as sent.
        port: u32,
    },
    /// A route leads to a cluster the view does not have.
    #[error("service {host:?}: route from {origin:?} leads to unknown cluster {cluster:?}")]
    UnknownCluster {
        /// The service.
        host: String,
        /// The route's origin.
        origin: String,
        /// The missing cluster.
        cluster: String,
    },
    /// A service port without its default cluster `outbound|PORT||HOST`.
    #[error("service {host:?}: default cluster {cluster:?} is missing")]
    MissingDefaultCluster {
        /// The service.
        host: String,
        /// The missing cluster.
        cluster: String,
    },
    /// A route whose weights sum to zero.
    #[error("service {host:?}: route from {origin:?} has no destination with a weight")]
    EmptyRoute {
        /// The service.
        host: String,
        /// The route's origin.
        origin: String,
    },
    /// A destination subnet that is not `ADDR/PREFIX` or `ADDR`.
    #[error("service {host:?}: destination subnet {subnet:?} is not ADDR/PREFIX")]
    BadSubnet {
        /// The service.
        host: String,
        /// The subnet as sent.
        subnet: String,
    },
    /// An endpoint address that is not `IP:PORT`.
    #[error("cluster {cluster:?}: endpoint address {address:?} is not IP:PORT")]
    BadEndpointAddress {
        /// The cluster.
        cluster: String,
        /// The address as sent.
        address: String,
    },
    /// An enumeration value this router does not know.
    #[error("cluster {cluster:?}: unknown {field} value {value}")]
    UnknownEnum {
        /// The cluster.
        cluster: String,
        /// `load_balancer` or `tls`.
        field: &'static str,
        /// The value as sent.
        value: i32,
    },
    /// Two services claim one address and port.
    #[error("address {address} belongs to both {first:?} and {second:?}")]
    AddressConflict {
        /// The address and port.
        address: SocketAddr,
        /// One service.
        first: String,
        /// The other.
        second: String,
    },
}

impl Problem {
    /// A stable, label-safe name of the problem's kind (for nack counters and logs).
    pub fn code(&self) -> &'static str {
        match self {
            Problem::Duplicate { .. } => "duplicate",
            Problem::BadServiceAddress { .. } => "bad_service_address",
            Problem::BadPort { .. } => "bad_port",
            Problem::UnknownCluster { .. } => "unknown_cluster",
            Problem::MissingDefaultCluster { .. } => "missing_default_cluster",
            Problem::EmptyRoute { .. } => "empty_route",
            Problem::BadSubnet { .. } => "bad_subnet",
            Problem::BadEndpointAddress { .. } => "bad_endpoint_address",
            Problem::UnknownEnum { .. } => "unknown_enum",
            Problem::AddressConflict { .. } => "address_conflict",
        }
    }
}

/// Routes new connections by the current view; cheap to share (`Arc<Router>`), lock-free to
/// query.
pub struct Router {
    table: ArcSwap<Table>,
    /// Serialises updates (each builds on the table the previous one left).
    updates: Mutex<()>,
    rng: Rng,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.load();
        f.debug_struct("Router")
            .field("version", &table.version)
            .field("services", &table.services.len())
            .field("clusters", &table.clusters.len())
            .finish()
    }
}

impl Default for Router {
    fn default() -> Self {
        Self::new()
    }
}

impl Router {
    /// A router with an empty view (every connection passes through), the monotonic clock
    /// and a random seed.
    pub fn new() -> Self {
        Self::with_clock_and_seed(Arc::new(MonotonicClock::new()), default_seed())
    }

    /// A router with an empty view, ejections timed by `clock`, and load balancing and
    /// weighted choices drawn from a generator seeded with `seed` (the same seed and the same
    /// calls on one thread give the same choices).
    pub fn with_clock_and_seed(clock: Arc<dyn Clock>, seed: u64) -> Self {
        Router {
            table: ArcSwap::from_pointee(Table::default()),
            updates: Mutex::new(()),
            rng: Rng::new(seed),
            clock,
        }
    }

    /// A router built from a full view.
    pub fn from_view(update: &ViewUpdate) -> Result<Self, UpdateError> {
        let router = Self::new();
        router.apply(update)?;
        Ok(router)
    }

    /// Applies a full or incremental update. An inconsistent update (a route to a cluster
    /// the result would not have, an unparsable address, ...) is refused whole and the
    /// current table stays.
    pub fn apply(&self, update: &ViewUpdate) -> Result<(), UpdateError> {
        let _serial = self.updates.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.table.load_full();
        let table = Table::build(&old, update, &self.clock).map_err(|problems| UpdateError {
            version: update.version,
            problems,
        })?;
        self.table.store(Arc::new(table));
        Ok(())
    }

    /// The version of the last update applied (0 before any).
    pub fn version(&self) -> u64 {
        self.table.load().version
    }

    /// The inbound peer authentication of the current view.
    pub fn inbound(&self) -> Option<Inbound> {
        self.table.load().inbound.clone()
    }

    /// The current view as one full update (what a reconnecting sidecar holds).
    pub fn view(&self) -> ViewUpdate {
        let table = self.table.load();
        ViewUpdate {
            version: table.version,
            full: true,
            services: table.services.values().cloned().collect(),
            removed_services: Vec::new(),
            clusters: table.clusters.values().map(|c| c.spec.clone()).collect(),
            removed_clusters: Vec::new(),
            inbound: table.inbound.clone(),
        }
    }

    /// The counters of one cluster of the current view.
    pub fn cluster_stats(&self, name: &str) -> Option<ClusterStats> {
        let table = self.table.load();
        let cluster = table.clusters.get(name)?;
        let now = self.clock.now();
        Some(ClusterStats {
            open: cluster.counters.open.load(Ordering::Acquire),
            endpoints: cluster
                .endpoints
                .iter()
                .map(|e| EndpointStats {
                    address: e.info.address,
                    open: e.counters.open.load(Ordering::Acquire),
                    consecutive_failures: e.counters.failures.load(Ordering::Relaxed),
                    ejected: cluster.outlier.is_some()
                        && e.counters.ejected_until_ms.load(Ordering::Acquire) > millis(now),
                })
                .collect(),
        })
    }

    /// Decides where a new connection to `original` (its original destination) goes.
    pub fn route(&self, original: SocketAddr) -> Decision {
        let original = unmap(original);
        let table = self.table.load();
        let Some(entry) = table.by_addr.get(&original) else {
            return Decision::Passthrough;
        };
        let cluster = entry.choose(original.ip(), &self.rng);
        cluster.pick(original, &self.rng)
    }
}

/// IPv4-mapped IPv6 destinations (a dual-stack listener's view of IPv4) as IPv4.
fn unmap(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), addr.port()),
            None => addr,
        },
        IpAddr::V4(_) => addr,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Default)]
struct Table {
    version: u64,
    services: BTreeMap<String, view::Service>,
    clusters: BTreeMap<String, Arc<ClusterState>>,
    by_addr: HashMap<SocketAddr, PortEntry>,
    inbound: Option<Inbound>,
}

/// What a service address and port lead to.
struct PortEntry {
    /// The routes that apply to this port, in order.
    routes: Box<[CompiledRoute]>,
    default: Arc<ClusterState>,
}

struct CompiledRoute {
    /// Empty: any destination address.
    subnets: Box<[Subnet]>,
    /// Clusters with their cumulative weights (strictly increasing, the last is the total).
    choices: Box<[(u64, Arc<ClusterState>)]>,
}

impl PortEntry {
    fn choose(&self, ip: IpAddr, rng: &Rng) -> &Arc<ClusterState> {
        let Some(route) = self
            .routes
            .iter()
            .find(|r| r.subnets.is_empty() || r.subnets.iter().any(|s| s.contains(ip)))
        else {
            return &self.default;
        };
        if let [(_, only)] = &*route.choices {
            return only;
        }
        let total = route.choices.last().map_or(1, |(w, _)| *w);
        let r = rng.below(total);
        route
            .choices
            .iter()
            .find(|(cumulative, _)| r < *cumulative)
            .map_or(&self.default, |(_, c)| c)
    }
}

/// A cluster of one table; its counters are shared with the same-named cluster of the
/// tables before and after it.
struct ClusterState {
    spec: view::Cluster,
    service: ServiceInfo,
    load_balancer: LoadBalancer,
    tls: TlsMode,
    connect_timeout: Option<Duration>,
    outlier: Option<view::Outlier>,
    counters: Arc<ClusterCounters>,
    endpoints: Box<[EndpointSlot]>,
    clock: Arc<dyn Clock>,
}

#[derive(Default)]
struct ClusterCounters {
    open: AtomicU32,
    round_robin: AtomicUsize,
    /// The latest end of any ejection in the cluster (clock milliseconds; 0: none ever),
    /// so that decisions read the clock only while an ejection may be running.
    ejections_end: AtomicU64,
    /// Serialises ejection decisions (they read every endpoint's state).
    ejection: Mutex<()>,
}

struct EndpointSlot {
    info: EndpointInfo,
    counters: Arc<EndpointCounters>,
}

#[derive(Default)]
struct EndpointCounters {
    open: AtomicU32,
    failures: AtomicU32,
    /// The clock's milliseconds when the current (or last) ejection ends.
    ejected_until_ms: AtomicU64,
    /// The ejection multiplier (how many times ejected, decayed by time in service).
    ejections: AtomicU32,
}

impl ClusterState {
    fn pick(self: &Arc<Self>, original: SocketAddr, rng: &Rng) -> Decision {
        // Envoy picks the host first (none: UH), then asks the pool for a slot (full: UO).
        let endpoint = if self.load_balancer == LoadBalancer::Passthrough {
            None
        } else {
            match self.select(rng) {
                Some(i) => Some(i),
                None => {
                    return Decision::NoEndpoint(Refused {
                        cluster: Arc::clone(self),
                    })
                }
            }
        };
        let max = self.spec.max_connections;
        let before = self.counters.open.fetch_add(1, Ordering::AcqRel);
        if max != 0 && before >= max {
            self.counters.open.fetch_sub(1, Ordering::AcqRel);
            return Decision::Overflow(Refused {
                cluster: Arc::clone(self),
            });
        }
        let address = match endpoint {
            Some(i) => {
                let slot = &self.endpoints[i];
                slot.counters.open.fetch_add(1, Ordering::AcqRel);
                slot.info.address
            }
            None => original,
        };
        Decision::Forward(Picked {
            cluster: Arc::clone(self),
            endpoint,
            address,
        })
    }

    fn select(&self, rng: &Rng) -> Option<usize> {
        let n = self.endpoints.len();
        if n == 0 {
            return None;
        }
        // The clock matters only while an ejection may be running.
        let ejections_end = self.counters.ejections_end.load(Ordering::Acquire);
        let now = if self.outlier.is_some() && ejections_end != 0 {
            Some(millis(self.clock.now())).filter(|now| *now < ejections_end)
        } else {
            None
        };
        let available = |i: usize| match now {
            None => true,
            Some(now) => {
                self.endpoints[i]
                    .counters
                    .ejected_until_ms
                    .load(Ordering::Acquire)
                    <= now
            }
        };
        let scan = |start: usize| (0..n).map(|k| (start + k) % n).find(|&i| available(i));
        match self.load_balancer {
            LoadBalancer::RoundRobin | LoadBalancer::Passthrough => {
                scan(self.counters.round_robin.fetch_add(1, Ordering::Relaxed) % n)
            }
            LoadBalancer::Random => scan(rng.below(n as u64) as usize),
            LoadBalancer::LeastConn => {
                if n == 1 {
                    return scan(0);
                }
                // Power of two choices: two distinct endpoints at random, the less loaded.
                let a = rng.below(n as u64) as usize;
                let mut b = rng.below(n as u64 - 1) as usize;
                if b >= a {
                    b += 1;
                }
                match (available(a), available(b)) {
                    (true, true) => {
                        let open =
                            |i: usize| self.endpoints[i].counters.open.load(Ordering::Relaxed);
                        Some(if open(b) < open(a) { b } else { a })
                    }
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    (false, false) => scan(a),
                }
            }
        }
    }

    fn connect_failed(&self, i: usize) {
        let counters = &self.endpoints[i].counters;
        let failures = counters.failures.fetch_add(1, Ordering::AcqRel) + 1;
        let Some(outlier) = self.outlier else {
            return;
        };
        if outlier.consecutive_errors == 0 || failures < outlier.consecutive_errors {
            return;
        }
        let _serial = self
            .counters
            .ejection
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let now = millis(self.clock.now());
        let ended = counters.ejected_until_ms.load(Ordering::Acquire);
        if ended > now {
            return;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|e| e.counters.ejected_until_ms.load(Ordering::Acquire) > now)
            .count() as u64;
        let total = self.endpoints.len() as u64;
        let allowed =
            ejected == 0 || (ejected + 1) * 100 <= u64::from(outlier.max_ejection_percent) * total;
        if !allowed {
            return;
        }
        let mut n = counters.ejections.load(Ordering::Relaxed);
        if n > 0 && outlier.interval_ms > 0 && now > ended {
            let healthy_intervals = (now - ended) / outlier.interval_ms;
            n = n.saturating_sub(u32::try_from(healthy_intervals).unwrap_or(u32::MAX));
        }
        n = n.saturating_add(1);
        counters.ejections.store(n, Ordering::Relaxed);
        let until = now.saturating_add(outlier.base_ejection_ms.saturating_mul(u64::from(n)));
        counters.ejected_until_ms.store(until, Ordering::Release);
        self.counters
            .ejections_end
            .fetch_max(until, Ordering::AcqRel);
        counters.failures.store(0, Ordering::Release);
    }
}

impl Table {
    /// The table `update` makes of `old`, or every problem that refuses it.
    fn build(
        old: &Table,
        update: &ViewUpdate,
        clock: &Arc<dyn Clock>,
    ) -> Result<Table, Vec<Problem>> {
        let mut problems = Vec::new();

        // The resulting set of services and cluster specifications.
        let mut services: BTreeMap<String, view::Service> = if update.full {
            BTreeMap::new()
        } else {
            let mut s = old.services.clone();
            for host in &update.removed_services {
                s.remove(host);
            }
            s
        };
        let mut seen = std::collections::HashSet::new();
        for service in &update.services {
            if !seen.insert(service.host.as_str()) {
                problems.push(Problem::Duplicate {
                    kind: "service",
                    key: service.host.clone(),
                });
            }
            services.insert(service.host.clone(), service.clone());
        }
        let mut specs: BTreeMap<&str, &view::Cluster> = BTreeMap::new();
        if !update.full {
            for (name, cluster) in &old.clusters {
                specs.insert(name, &cluster.spec);
            }
            for name in &update.removed_clusters {
                specs.remove(name.as_str());
            }
        }
        let mut seen = std::collections::HashSet::new();
        for cluster in &update.clusters {
            if !seen.insert(cluster.name.as_str()) {
                problems.push(Problem::Duplicate {
                    kind: "cluster",
                    key: cluster.name.clone(),
                });
            }
            specs.insert(&cluster.name, cluster);
        }

        // Clusters: unchanged ones are kept as they are; changed and new ones share the
        // counters of their predecessor (by cluster name, endpoints by address).
        let mut clusters: BTreeMap<String, Arc<ClusterState>> = BTreeMap::new();
        for (name, spec) in &specs {
            let previous = old.clusters.get(*name);
            if let Some(previous) = previous {
                if previous.spec == **spec {
                    clusters.insert(name.to_string(), Arc::clone(previous));
                    continue;
                }
            }
            match ClusterState::new(spec, previous, &services, clock) {
                Ok(state) => {
                    clusters.insert(name.to_string(), Arc::new(state));
                }
                Err(mut p) => problems.append(&mut p),
            }
        }

        let mut by_addr: HashMap<SocketAddr, PortEntry> = HashMap::new();
        let mut owner: HashMap<SocketAddr, &str> = HashMap::new();
        for service in services.values() {
            let host = &service.host;
            let mut addresses = Vec::new();
            for address in &service.addresses {
                match address.parse::<IpAddr>() {
                    Ok(ip) => addresses.push(ip),
                    Err(_) => problems.push(Problem::BadServiceAddress {
                        host: host.clone(),
                        address: address.clone(),
                    }),
                }
            }
            let mut routes = Vec::new();
            for route in &service.routes {
                let mut subnets = Vec::new();
                for text in &route.destination_subnets {
                    match parse_subnet(text) {
                        Some(s) => subnets.push(s),
                        None => problems.push(Problem::BadSubnet {
                            host: host.clone(),
                            subnet: text.clone(),
                        }),
                    }
                }
                let mut choices = Vec::new();
                let mut cumulative = 0u64;
                let mut unknown = false;
                for d in &route.destinations {
                    match clusters.get(&d.cluster) {
                        Some(c) if d.weight > 0 => {
                            cumulative += u64::from(d.weight);
                            choices.push((cumulative, Arc::clone(c)));
                        }
                        Some(_) => {}
                        None => {
                            unknown = true;
                            problems.push(Problem::UnknownCluster {
                                host: host.clone(),
                                origin: route.origin.clone(),
                                cluster: d.cluster.clone(),
                            });
                        }
                    }
                }
                if cumulative == 0 && !unknown {
                    problems.push(Problem::EmptyRoute {
                        host: host.clone(),
                        origin: route.origin.clone(),
                    });
                }
                routes.push((route, subnets, choices));
            }
            for port in &service.ports {
                let Some(port_number) = u16::try_from(port.port).ok().filter(|p| *p != 0) else {
                    problems.push(Problem::BadPort {
                        owner: host.clone(),
                        port: port.port,
                    });
                    continue;
                };
                let default_name = format!("outbound|{port_number}||{host}");
                let Some(default) = clusters.get(&default_name) else {
                    problems.push(Problem::MissingDefaultCluster {
                        host: host.clone(),
                        cluster: default_name,
                    });
                    continue;
                };
                for ip in &addresses {
                    let address = SocketAddr::new(*ip, port_number);
                    if let Some(first) = owner.insert(address, host) {
                        problems.push(Problem::AddressConflict {
                            address,
                            first: first.to_string(),
                            second: host.clone(),
                        });
                        continue;
                    }
                    let port_routes = routes
                        .iter()
                        .filter(|(r, _, c)| {
                            !c.is_empty() && (r.ports.is_empty() || r.ports.contains(&port.port))
                        })
                        .map(|(_, subnets, choices)| CompiledRoute {
                            subnets: subnets.clone().into_boxed_slice(),
                            choices: choices.clone().into_boxed_slice(),
                        })
                        .collect();
                    by_addr.insert(
                        address,
                        PortEntry {
                            routes: port_routes,
                            default: Arc::clone(default),
                        },
                    );
                }
            }
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        let inbound = if update.full || update.inbound.is_some() {
            update.inbound.clone()
        } else {
            old.inbound.clone()
        };
        Ok(Table {
            version: update.version,
            services,
            clusters,
            by_addr,
            inbound,
        })
    }
}

impl ClusterState {
    fn new(
        spec: &view::Cluster,
        previous: Option<&Arc<ClusterState>>,
        services: &BTreeMap<String, view::Service>,
        clock: &Arc<dyn Clock>,
    ) -> Result<ClusterState, Vec<Problem>> {
        let mut problems = Vec::new();
        let load_balancer = LoadBalancer::try_from(spec.load_balancer).unwrap_or_else(|_| {
            problems.push(Problem::UnknownEnum {
                cluster: spec.name.clone(),
                field: "load_balancer",
                value: spec.load_balancer,
            });
            LoadBalancer::RoundRobin
        });
        let tls = TlsMode::try_from(spec.tls).unwrap_or_else(|_| {
            problems.push(Problem::UnknownEnum {
                cluster: spec.name.clone(),
                field: "tls",
                value: spec.tls,
            });
            TlsMode::Disable
        });
        let old_endpoints: HashMap<SocketAddr, &Arc<EndpointCounters>> = previous
            .map(|p| {
                p.endpoints
                    .iter()
                    .map(|e| (e.info.address, &e.counters))
                    .collect()
            })
            .unwrap_or_default();
        let mut endpoints = Vec::with_capacity(spec.endpoints.len());
        for e in &spec.endpoints {
            let Ok(address) = e.address.parse::<SocketAddr>() else {
                problems.push(Problem::BadEndpointAddress {
                    cluster: spec.name.clone(),
                    address: e.address.clone(),
                });
                continue;
            };
            let counters = old_endpoints
                .get(&address)
                .map_or_else(Default::default, |c| Arc::clone(c));
            endpoints.push(EndpointSlot {
                info: EndpointInfo {
                    address,
                    labels: e.labels.clone(),
                    workload: e.workload.clone(),
                    namespace: e.namespace.clone(),
                    service_account: e.service_account.clone(),
                },
                counters,
            });
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ClusterState {
            service: service_info(spec, services),
            load_balancer,
            tls,
            connect_timeout: (spec.connect_timeout_ms != 0)
                .then(|| Duration::from_millis(spec.connect_timeout_ms)),
            outlier: spec.outlier,
            counters: previous.map_or_else(Default::default, |p| Arc::clone(&p.counters)),
            endpoints: endpoints.into_boxed_slice(),
            clock: Arc::clone(clock),
            spec: spec.clone(),
        })
    }
}

/// The service a cluster reports: the cluster's own fields, else the view's service of its
/// host, else the host's first label and (for `NAME.NS.svc...`) second.
fn service_info(spec: &view::Cluster, services: &BTreeMap<String, view::Service>) -> ServiceInfo {
    let host = spec.host.clone();
    if !spec.service_name.is_empty() {
        return ServiceInfo {
            host,
            name: spec.service_name.clone(),
            namespace: spec.service_namespace.clone(),
        };
    }
    if let Some(s) = services.get(&spec.host) {
        return ServiceInfo {
            host,
            name: s.name.clone(),
            namespace: s.namespace.clone(),
        };
    }
    let mut labels = spec.host.split('.');
    let name = labels.next().unwrap_or_default().to_string();
    let namespace = match (labels.next(), labels.next()) {
        (Some(ns), Some("svc")) => ns.to_string(),
        _ => String::new(),
    };
    ServiceInfo {
        host,
        name,
        namespace,
    }
}

/// `ADDR/PREFIX` or a bare `ADDR` (a host route).
pub(crate) fn parse_subnet(text: &str) -> Option<Subnet> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
        None => (text.parse::<IpAddr>().ok()?, None),
    };
    let bits = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(bits);
    (prefix <= bits).then_some(Subnet { addr, prefix })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_with_and_without_prefix() {
        let s = parse_subnet("10.1.0.0/16").unwrap();
        assert_eq!((s.addr.to_string(), s.prefix), ("10.1.0.0".to_string(), 16));
        assert_eq!(parse_subnet("192.0.2.7").unwrap().prefix, 32);
        assert_eq!(parse_subnet("2001:db8::/32").unwrap().prefix, 32);
        assert_eq!(parse_subnet("2001:db8::1").unwrap().prefix, 128);
        assert_eq!(parse_subnet("10.0.0.0/33"), None);
        assert_eq!(parse_subnet("10.0.0.0/x"), None);
        assert_eq!(parse_subnet("ratings"), None);
    }

    #[test]
    fn service_info_falls_back_to_the_host() {
        let spec = view::Cluster {
            host: "cache.prod.svc.cluster.local".to_string(),
            ..view::Cluster::default()
        };
        let info = service_info(&spec, &BTreeMap::new());
        assert_eq!(
            (info.name.as_str(), info.namespace.as_str()),
            ("cache", "prod")
        );
        let spec = view::Cluster {
            host: "db.example.com".to_string(),
            ..view::Cluster::default()
        };
        let info = service_info(&spec, &BTreeMap::new());
        assert_eq!((info.name.as_str(), info.namespace.as_str()), ("db", ""));
    }
}
