//! Compilation: traffic configuration + service catalog + one sidecar's identity → that
//! sidecar's full [`ViewUpdate`].
//!
//! - **Hosts.** A short host (`ratings`) means `ratings.<object namespace>.svc.<domain>`,
//!   `name.ns` means `name.ns.svc.<domain>`, anything with two dots or more is taken as
//!   written. A DestinationRule's or VirtualService's host may be a wildcard
//!   (`*.default.svc.cluster.local`, `*`): for each service the most specific match applies
//!   (an exact host beats any wildcard, a longer suffix a shorter one); among equally specific
//!   ones the object in the sidecar's namespace wins, then one in the service's namespace,
//!   then the first by namespace and name.
//! - **Services.** Every catalog service with addresses becomes a [`Service`] with its ports
//!   and the TCP routes of its VirtualService (one that applies to the mesh: `gateways` empty
//!   or with `mesh`). A route keeps the `match` entries whose `sourceLabels` the sidecar's pod
//!   has (and whose `gateways` include the mesh); a route none of whose entries apply is not
//!   for this sidecar and is left out. Each kept entry becomes one [`Route`] (its `port` in
//!   `ports`, its `destinationSubnets` as written); a route without `match` becomes one that
//!   matches everything. A destination without `port` goes to the port the client connected
//!   to, so such a route becomes one [`Route`] per service port.
//! - **Clusters.** `outbound|PORT||HOST` for every port of every service (all its endpoints),
//!   plus `outbound|PORT|SUBSET|HOST` for every subset a route uses (the endpoints whose
//!   labels include the subset's). The policy is the DestinationRule's `trafficPolicy` with
//!   each field the subset's `trafficPolicy` writes replaced: load balancer, `maxConnections`,
//!   `connectTimeout`, outlier detection (as a whole: its fields have defaults), TLS.
//! - **Inbound.** The sidecar's services are those with an endpoint at one of its addresses.
//!   A namespace `Policy` targeting one of them beats the namespace-wide `Policy`, which
//!   beats the `MeshPolicy`; targets with `ports` become port-specific modes on the workload
//!   port (the endpoint's target port).
//! - **Warnings.** A route to a host without a service, to an unknown subset or port is left
//!   out and reported beside the view; so are objects whose hosts match no service.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};

use meshmeter_netconfig::{
    DestinationRule, LoadBalancer as NetLb, NetworkConfig, ObjectMeta, PeerMtlsMode, PeerPolicy,
    Subset, TcpPool, TlsMode as NetTls, TrafficPolicy, VirtualService,
};

use crate::catalog::{CatalogService, ServiceCatalog};
use crate::view::{
    Cluster, Endpoint, Inbound, InboundPort, LoadBalancer, Node, Outlier, PeerMode, Route, Service,
    ServicePort, TlsMode, ViewUpdate, WeightedCluster,
};

/// A compiled view and the problems met on the way.
#[derive(Clone, Debug, PartialEq)]
pub struct Compiled {
    /// The full view (version 0: the control plane numbers updates).
    pub update: ViewUpdate,
    /// Everything left out, and why; in the order met.
    pub warnings: Vec<Warning>,
}

/// Something compilation left out of a view. None of them fails the view.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Warning {
    /// A route's destination host has no service; the route is left out.
    #[error("{origin}: route destination {host:?} has no service; route left out")]
    UnknownHost {
        /// `<namespace>/<name>` of the VirtualService.
        origin: String,
        /// The resolved host.
        host: String,
    },
    /// A route's destination subset is not in the host's DestinationRule; the route is left
    /// out.
    #[error("{origin}: host {host:?} has no subset {subset:?}; route left out")]
    UnknownSubset {
        /// `<namespace>/<name>` of the VirtualService.
        origin: String,
        /// The resolved host.
        host: String,
        /// The subset's name.
        subset: String,
    },
    /// A route's destination port is not a port of the host; the route is left out.
    #[error("{origin}: host {host:?} has no port {port}; route left out")]
    UnknownPort {
        /// `<namespace>/<name>` of the VirtualService.
        origin: String,
        /// The resolved host.
        host: String,
        /// The port.
        port: u16,
    },
    /// A VirtualService or DestinationRule host (not a wildcard) matches no service.
    #[error("{kind} {origin}: host {host:?} has no service")]
    HostWithoutService {
        /// `VirtualService` or `DestinationRule`.
        kind: &'static str,
        /// `<namespace>/<name>` of the object.
        origin: String,
        /// The resolved host.
        host: String,
    },
    /// Two objects apply to one host equally; the first (by namespace and name) is used.
    #[error("{kind}s {used} and {ignored} both apply to {host:?}; {ignored} ignored")]
    Ambiguous {
        /// `VirtualService` or `DestinationRule`.
        kind: &'static str,
        /// The host.
        host: String,
        /// `<namespace>/<name>` of the object used.
        used: String,
        /// `<namespace>/<name>` of the object ignored.
        ignored: String,
    },
    /// A rule asks for `SIMPLE` or `MUTUAL` TLS, which the sidecar does not originate: its
    /// clusters use plaintext.
    #[error("DestinationRule {origin}: only ISTIO_MUTUAL TLS is originated; plaintext used")]
    TlsNotOriginated {
        /// `<namespace>/<name>` of the DestinationRule.
        origin: String,
    },
}

impl Warning {
    /// A stable, label-safe name of the warning's kind (for counters and logs).
    pub fn code(&self) -> &'static str {
        match self {
            Warning::UnknownHost { .. } => "unknown_host",
            Warning::UnknownSubset { .. } => "unknown_subset",
            Warning::UnknownPort { .. } => "unknown_port",
            Warning::HostWithoutService { .. } => "host_without_service",
            Warning::Ambiguous { .. } => "ambiguous",
            Warning::TlsNotOriginated { .. } => "tls_not_originated",
        }
    }
}

/// The fully qualified form of `host`, written in an object of `namespace`.
pub fn resolve_host(host: &str, namespace: &str, domain: &str) -> String {
    let host = host.trim_end_matches('.');
    if host.starts_with('*') {
        return host.to_string();
    }
    match host.matches('.').count() {
        0 => format!("{host}.{namespace}.svc.{domain}"),
        1 => format!("{host}.svc.{domain}"),
        _ => host.to_string(),
    }
}

/// How specifically `pattern` (resolved) names `host`: `None` when it does not; an exact
/// host beats every wildcard, and a longer wildcard suffix a shorter one.
fn specificity(pattern: &str, host: &str) -> Option<usize> {
    if pattern == host {
        return Some(usize::MAX);
    }
    if pattern == "*" {
        return Some(0);
    }
    let suffix = pattern.strip_prefix('*')?;
    (suffix.starts_with('.') && host.ends_with(suffix) && host.len() > suffix.len())
        .then_some(suffix.len())
}

fn origin(meta: &ObjectMeta) -> String {
    format!("{}/{}", meta.namespace, meta.name)
}

/// Picks, among `candidates` (object meta, specificity), the one that applies: the most
/// specific, then in the node's namespace, then in the service's, then the first by
/// namespace and name. Reports a tie on all of these as [`Warning::Ambiguous`].
fn most_specific<'a, T>(
    kind: &'static str,
    host: &str,
    candidates: Vec<(&'a T, &'a ObjectMeta, usize)>,
    node_ns: &str,
    service_ns: &str,
    warnings: &mut Vec<Warning>,
) -> Option<&'a T> {
    let rank = |meta: &ObjectMeta, spec: usize| {
        let place = if meta.namespace == node_ns {
            2
        } else if meta.namespace == service_ns {
            1
        } else {
            0
        };
        (spec, place)
    };
    let mut sorted = candidates;
    sorted.sort_by_key(|(_, meta, spec)| {
        (
            Reverse(rank(meta, *spec)),
            meta.namespace.clone(),
            meta.name.clone(),
        )
    });
    let (best, best_meta, best_spec) = *sorted.first()?;
    if let Some((_, meta, spec)) = sorted.get(1) {
        if rank(meta, *spec) == rank(best_meta, best_spec) {
            push_once(
                warnings,
                Warning::Ambiguous {
                    kind,
                    host: host.to_string(),
                    used: origin(best_meta),
                    ignored: origin(meta),
                },
            );
        }
    }
    Some(best)
}

fn push_once(warnings: &mut Vec<Warning>, warning: Warning) {
    if !warnings.contains(&warning) {
        warnings.push(warning);
    }
}

/// The view of the sidecar `node`: see the [module documentation](self) for the rules.
pub fn compile(
    config: &NetworkConfig,
    catalog: &ServiceCatalog,
    node: &Node,
    domain: &str,
) -> Compiled {
    Compiler {
        config,
        catalog,
        node,
        domain,
        by_host: catalog
            .services
            .iter()
            .map(|s| (s.host.as_str(), s))
            .collect(),
        rules: HostIndex::new(
            config
                .destination_rules
                .iter()
                .map(|r| (resolve_host(&r.host, &r.meta.namespace, domain), r, &r.meta)),
        ),
        virtual_services: HostIndex::new(
            config
                .virtual_services
                .iter()
                .filter(|vs| applies_to_mesh(&vs.gateways))
                .flat_map(|vs| {
                    vs.hosts
                        .iter()
                        .map(move |h| (resolve_host(h, &vs.meta.namespace, domain), vs, &vs.meta))
                }),
        ),
        clusters: BTreeMap::new(),
        warnings: Vec::new(),
    }
    .run()
}

struct Compiler<'a> {
    config: &'a NetworkConfig,
    catalog: &'a ServiceCatalog,
    node: &'a Node,
    domain: &'a str,
    by_host: BTreeMap<&'a str, &'a CatalogService>,
    rules: HostIndex<'a, DestinationRule>,
    virtual_services: HostIndex<'a, VirtualService>,
    clusters: BTreeMap<String, Cluster>,
    warnings: Vec<Warning>,
}

/// Objects by their resolved hosts: exact hosts hashed, wildcards scanned.
struct HostIndex<'a, T> {
    exact: HashMap<String, Vec<(&'a T, &'a ObjectMeta)>>,
    wildcards: Vec<(String, &'a T, &'a ObjectMeta)>,
}

impl<'a, T> HostIndex<'a, T> {
    fn new(entries: impl Iterator<Item = (String, &'a T, &'a ObjectMeta)>) -> Self {
        let mut index = HostIndex {
            exact: HashMap::new(),
            wildcards: Vec::new(),
        };
        for (host, object, meta) in entries {
            if host.starts_with('*') {
                index.wildcards.push((host, object, meta));
            } else {
                index.exact.entry(host).or_default().push((object, meta));
            }
        }
        index
    }

    /// The objects naming `host`, each once with its best specificity.
    fn candidates(&self, host: &str) -> Vec<(&'a T, &'a ObjectMeta, usize)> {
        let mut found: Vec<(&'a T, &'a ObjectMeta, usize)> = Vec::new();
        let exact = self.exact.get(host).into_iter().flatten();
        let exact = exact.map(|(o, m)| (*o, *m, usize::MAX));
        let wild = self
            .wildcards
            .iter()
            .filter_map(|(p, o, m)| specificity(p, host).map(|s| (*o, *m, s)));
        for (object, meta, spec) in exact.chain(wild) {
            match found.iter_mut().find(|(o, _, _)| std::ptr::eq(*o, object)) {
                Some(entry) => entry.2 = entry.2.max(spec),
                None => found.push((object, meta, spec)),
            }
        }
        found
    }
}

/// A route destination, resolved and checked.
struct Target<'a> {
    service: &'a CatalogService,
    subset: Option<&'a Subset>,
    port: Option<u16>,
    weight: u32,
}

impl<'a> Compiler<'a> {
    fn run(mut self) -> Compiled {
        self.unmatched_hosts();
        let mut addressed: Vec<&CatalogService> = self
            .catalog
            .services
            .iter()
            .filter(|s| !s.addresses.is_empty())
            .collect();
        addressed.sort_by(|a, b| a.host.cmp(&b.host));
        let mut services = Vec::new();
        for service in addressed {
            for port in &service.ports {
                self.ensure_cluster(service, port.port, None);
            }
            let routes = self.routes(service);
            services.push(Service {
                host: service.host.clone(),
                name: service.name.clone(),
                namespace: service.namespace.clone(),
                addresses: service.addresses.iter().map(ToString::to_string).collect(),
                ports: service
                    .ports
                    .iter()
                    .map(|p| ServicePort {
                        port: u32::from(p.port),
                        name: p.name.clone(),
                    })
                    .collect(),
                routes,
            });
        }
        let inbound = self.inbound();
        Compiled {
            update: ViewUpdate {
                version: 0,
                full: true,
                services,
                removed_services: Vec::new(),
                clusters: std::mem::take(&mut self.clusters).into_values().collect(),
                removed_clusters: Vec::new(),
                inbound: Some(inbound),
            },
            warnings: self.warnings,
        }
    }

    /// Warns about objects whose (non-wildcard) hosts name no service.
    fn unmatched_hosts(&mut self) {
        for vs in &self.config.virtual_services {
            if !applies_to_mesh(&vs.gateways) {
                continue;
            }
            for host in &vs.hosts {
                let host = resolve_host(host, &vs.meta.namespace, self.domain);
                if !host.starts_with('*') && !self.by_host.contains_key(host.as_str()) {
                    self.warnings.push(Warning::HostWithoutService {
                        kind: "VirtualService",
                        origin: origin(&vs.meta),
                        host,
                    });
                }
            }
        }
        for dr in &self.config.destination_rules {
            let host = resolve_host(&dr.host, &dr.meta.namespace, self.domain);
            if !host.starts_with('*') && !self.by_host.contains_key(host.as_str()) {
                self.warnings.push(Warning::HostWithoutService {
                    kind: "DestinationRule",
                    origin: origin(&dr.meta),
                    host,
                });
            }
        }
    }

    fn destination_rule(&mut self, service: &CatalogService) -> Option<&'a DestinationRule> {
        let candidates = self.rules.candidates(&service.host);
        most_specific(
            "DestinationRule",
            &service.host,
            candidates,
            &self.node.namespace,
            &service.namespace,
            &mut self.warnings,
        )
    }

    fn virtual_service(&mut self, service: &CatalogService) -> Option<&'a VirtualService> {
        let candidates = self.virtual_services.candidates(&service.host);
        most_specific(
            "VirtualService",
            &service.host,
            candidates,
            &self.node.namespace,
            &service.namespace,
            &mut self.warnings,
        )
    }

    fn routes(&mut self, service: &'a CatalogService) -> Vec<Route> {
        let Some(vs) = self.virtual_service(service) else {
            return Vec::new();
        };
        let origin = origin(&vs.meta);
        let mut routes = Vec::new();
        for tcp in &vs.tcp {
            // `None`: a route without `match`, which matches every connection.
            let applicable: Vec<Option<&meshmeter_netconfig::L4Match>> = if tcp.matches.is_empty() {
                vec![None]
            } else {
                tcp.matches
                    .iter()
                    .filter(|m| {
                        applies_to_mesh(&m.gateways)
                            && m.source_labels
                                .iter()
                                .all(|(k, v)| self.node.labels.get(k) == Some(v))
                    })
                    .map(Some)
                    .collect()
            };
            if applicable.is_empty() {
                continue;
            }
            let Some(targets) = self.targets(vs, &origin, tcp) else {
                continue;
            };
            for m in applicable {
                let subnets: Vec<String> = m
                    .map(|m| {
                        m.destination_subnets
                            .iter()
                            .map(|s| format!("{}/{}", s.addr, s.prefix))
                            .collect()
                    })
                    .unwrap_or_default();
                let match_port = m.and_then(|m| m.port);
                if targets.iter().all(|t| t.port.is_some()) {
                    let destinations = targets
                        .iter()
                        .map(|t| self.weighted(t, t.port.unwrap_or_default()))
                        .collect();
                    routes.push(Route {
                        ports: match_port.map(u32::from).into_iter().collect(),
                        destination_subnets: subnets,
                        destinations,
                        origin: origin.clone(),
                    });
                    continue;
                }
                // Some destination takes the connection's port: one route per service port.
                for port in &service.ports {
                    if match_port.is_some_and(|p| p != port.port) {
                        continue;
                    }
                    let mut missing = None;
                    for t in &targets {
                        let p = t.port.unwrap_or(port.port);
                        if !t.service.ports.iter().any(|sp| sp.port == p) {
                            missing = Some((t.service.host.clone(), p));
                        }
                    }
                    if let Some((host, port)) = missing {
                        push_once(
                            &mut self.warnings,
                            Warning::UnknownPort {
                                origin: origin.clone(),
                                host,
                                port,
                            },
                        );
                        continue;
                    }
                    let destinations = targets
                        .iter()
                        .map(|t| self.weighted(t, t.port.unwrap_or(port.port)))
                        .collect();
                    routes.push(Route {
                        ports: vec![u32::from(port.port)],
                        destination_subnets: subnets.clone(),
                        destinations,
                        origin: origin.clone(),
                    });
                }
            }
        }
        routes
    }

    /// Resolves and checks a route's destinations; `None` (with a warning) when one of them
    /// cannot be reached.
    fn targets(
        &mut self,
        vs: &'a VirtualService,
        origin: &str,
        tcp: &'a meshmeter_netconfig::TcpRoute,
    ) -> Option<Vec<Target<'a>>> {
        let single = tcp.route.len() == 1;
        let mut targets = Vec::new();
        for wd in &tcp.route {
            let d = &wd.destination;
            let host = resolve_host(&d.host, &vs.meta.namespace, self.domain);
            let Some(service) = self.by_host.get(host.as_str()).copied() else {
                push_once(
                    &mut self.warnings,
                    Warning::UnknownHost {
                        origin: origin.to_string(),
                        host,
                    },
                );
                return None;
            };
            let subset = match &d.subset {
                None => None,
                Some(name) => {
                    let found = self
                        .destination_rule(service)
                        .and_then(|dr| dr.subsets.iter().find(|s| &s.name == name));
                    let Some(subset) = found else {
                        push_once(
                            &mut self.warnings,
                            Warning::UnknownSubset {
                                origin: origin.to_string(),
                                host,
                                subset: name.clone(),
                            },
                        );
                        return None;
                    };
                    Some(subset)
                }
            };
            if let Some(port) = d.port {
                if !service.ports.iter().any(|p| p.port == port) {
                    push_once(
                        &mut self.warnings,
                        Warning::UnknownPort {
                            origin: origin.to_string(),
                            host,
                            port,
                        },
                    );
                    return None;
                }
            }
            let weight = if single && wd.weight == 0 {
                100
            } else {
                wd.weight
            };
            targets.push(Target {
                service,
                subset,
                port: d.port,
                weight,
            });
        }
        Some(targets)
    }

    fn weighted(&mut self, target: &Target<'a>, port: u16) -> WeightedCluster {
        let cluster = self.ensure_cluster(target.service, port, target.subset);
        WeightedCluster {
            cluster,
            weight: target.weight,
        }
    }

    /// Adds the cluster of `service`'s `port` (and `subset`) unless present; its name.
    fn ensure_cluster(
        &mut self,
        service: &'a CatalogService,
        port: u16,
        subset: Option<&'a Subset>,
    ) -> String {
        let subset_name = subset.map_or("", |s| s.name.as_str());
        let name = format!("outbound|{port}|{subset_name}|{}", service.host);
        if self.clusters.contains_key(&name) {
            return name;
        }
        let rule = self.destination_rule(service);
        let policy = merge(
            rule.and_then(|r| r.traffic_policy.as_ref()),
            subset.and_then(|s| s.traffic_policy.as_ref()),
        );
        let tls = match policy.tls {
            Some(NetTls::IstioMutual) => TlsMode::IstioMutual,
            Some(NetTls::Other) => {
                if let Some(rule) = rule {
                    push_once(
                        &mut self.warnings,
                        Warning::TlsNotOriginated {
                            origin: origin(&rule.meta),
                        },
                    );
                }
                TlsMode::Disable
            }
            Some(NetTls::Disable) | None => TlsMode::Disable,
        };
        let mut endpoints: Vec<(SocketAddr, Endpoint)> = service
            .endpoints
            .iter()
            .filter(|e| {
                subset.is_none_or(|s| s.labels.iter().all(|(k, v)| e.labels.get(k) == Some(v)))
            })
            .filter_map(|e| {
                let target = *e.ports.get(&port)?;
                let address = SocketAddr::new(e.ip, target);
                Some((
                    address,
                    Endpoint {
                        address: address.to_string(),
                        labels: e.labels.clone(),
                        workload: e.workload.clone(),
                        namespace: e.namespace.clone(),
                        service_account: e.service_account.clone(),
                    },
                ))
            })
            .collect();
        endpoints.sort_by_key(|(a, _)| *a);
        endpoints.dedup_by_key(|(a, _)| *a);
        let pool = policy.tcp_pool.unwrap_or_default();
        let cluster = Cluster {
            name: name.clone(),
            host: service.host.clone(),
            subset: subset_name.to_string(),
            port: u32::from(port),
            load_balancer: match policy.load_balancer.unwrap_or_default() {
                NetLb::RoundRobin => LoadBalancer::RoundRobin,
                NetLb::LeastConn => LoadBalancer::LeastConn,
                NetLb::Random => LoadBalancer::Random,
                NetLb::Passthrough => LoadBalancer::Passthrough,
            } as i32,
            max_connections: pool.max_connections.unwrap_or(0),
            connect_timeout_ms: pool
                .connect_timeout
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            outlier: policy.outlier_detection.map(|o| Outlier {
                consecutive_errors: o.consecutive_errors,
                interval_ms: u64::try_from(o.interval.as_millis()).unwrap_or(u64::MAX),
                base_ejection_ms: u64::try_from(o.base_ejection_time.as_millis())
                    .unwrap_or(u64::MAX),
                max_ejection_percent: o.max_ejection_percent,
            }),
            tls: tls as i32,
            endpoints: endpoints.into_iter().map(|(_, e)| e).collect(),
            service_name: service.name.clone(),
            service_namespace: service.namespace.clone(),
        };
        self.clusters.insert(name.clone(), cluster);
        name
    }

    fn inbound(&mut self) -> Inbound {
        let ips: BTreeSet<IpAddr> = self
            .node
            .ips
            .iter()
            .filter_map(|ip| ip.parse().ok())
            .collect();
        // The node's services, each with its endpoint at the node (for target ports).
        let mine: Vec<(&CatalogService, &crate::catalog::CatalogEndpoint)> = self
            .catalog
            .services
            .iter()
            .filter_map(|s| {
                s.endpoints
                    .iter()
                    .find(|e| ips.contains(&e.ip))
                    .map(|e| (s, e))
            })
            .collect();
        let mut policies: Vec<&PeerPolicy> = self.config.peer_policies.iter().collect();
        policies.sort_by(|a, b| a.meta.cmp(&b.meta));
        let mode = |p: &PeerPolicy| match p.mtls {
            None => PeerMode::Disable,
            Some(PeerMtlsMode::Permissive) => PeerMode::Permissive,
            Some(PeerMtlsMode::Strict) => PeerMode::Strict,
        };
        let mesh = policies
            .iter()
            .filter(|p| p.mesh_wide)
            .min_by_key(|p| p.meta.name != "default")
            .map(|p| mode(p));
        let namespace = policies
            .iter()
            .find(|p| {
                !p.mesh_wide && p.targets.is_empty() && p.meta.namespace == self.node.namespace
            })
            .map(|p| mode(p));
        let mut service_wide = None;
        let mut ports: BTreeMap<u32, PeerMode> = BTreeMap::new();
        for policy in policies.iter().filter(|p| !p.mesh_wide) {
            for target in &policy.targets {
                for (service, endpoint) in &mine {
                    if service.namespace != policy.meta.namespace || service.name != target.name {
                        continue;
                    }
                    if target.ports.is_empty() {
                        service_wide.get_or_insert(mode(policy));
                    }
                    for port in &target.ports {
                        let workload_port = endpoint.ports.get(port).copied().unwrap_or(*port);
                        ports
                            .entry(u32::from(workload_port))
                            .or_insert(mode(policy));
                    }
                }
            }
        }
        Inbound {
            default_mode: service_wide
                .or(namespace)
                .or(mesh)
                .unwrap_or(PeerMode::Disable) as i32,
            ports: ports
                .into_iter()
                .map(|(port, mode)| InboundPort {
                    port,
                    mode: mode as i32,
                })
                .collect(),
        }
    }
}

fn applies_to_mesh(gateways: &[String]) -> bool {
    gateways.is_empty() || gateways.iter().any(|g| g == "mesh")
}

/// The rule's policy with every field the subset writes replaced by the subset's.
fn merge(rule: Option<&TrafficPolicy>, subset: Option<&TrafficPolicy>) -> TrafficPolicy {
    let rule = rule.cloned().unwrap_or_default();
    let Some(subset) = subset else {
        return rule;
    };
    TrafficPolicy {
        load_balancer: subset.load_balancer.or(rule.load_balancer),
        tcp_pool: match (subset.tcp_pool, rule.tcp_pool) {
            (Some(s), Some(r)) => Some(TcpPool {
                max_connections: s.max_connections.or(r.max_connections),
                connect_timeout: s.connect_timeout.or(r.connect_timeout),
            }),
            (s, r) => s.or(r),
        },
        outlier_detection: subset.outlier_detection.or(rule.outlier_detection),
        tls: subset.tls.or(rule.tls),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_resolve_against_the_namespace_and_domain() {
        let r = |h: &str| resolve_host(h, "default", "cluster.local");
        assert_eq!(r("ratings"), "ratings.default.svc.cluster.local");
        assert_eq!(r("ratings.prod"), "ratings.prod.svc.cluster.local");
        assert_eq!(
            r("ratings.prod.svc.cluster.local"),
            "ratings.prod.svc.cluster.local"
        );
        assert_eq!(r("db.example.com."), "db.example.com");
        assert_eq!(r("*.prod.svc.cluster.local"), "*.prod.svc.cluster.local");
        assert_eq!(r("*"), "*");
    }

    #[test]
    fn exact_beats_longer_wildcards_beat_shorter_ones() {
        let host = "ratings.prod.svc.cluster.local";
        let exact = specificity(host, host).unwrap();
        let ns = specificity("*.prod.svc.cluster.local", host).unwrap();
        let domain = specificity("*.svc.cluster.local", host).unwrap();
        let any = specificity("*", host).unwrap();
        assert!(exact > ns && ns > domain && domain > any);
        assert_eq!(specificity("*.other.svc.cluster.local", host), None);
        assert_eq!(specificity("*ratings.prod.svc.cluster.local", host), None);
        assert_eq!(specificity("other.prod.svc.cluster.local", host), None);
    }
}
