//! Compilation of the seed's DestinationRules (`destination-rule-all.yaml`, by hand: the
//! YAML loader is another crate) with TCP VirtualServices into one sidecar's view.

use std::collections::BTreeMap;
use std::time::Duration;

use meshmeter_netconfig::{
    Destination, DestinationRule, L4Match, LoadBalancer as NetLb, NetworkConfig, ObjectMeta,
    OutlierDetection, PeerMtlsMode, PeerPolicy, PolicyTarget, Subnet, Subset, TcpPool, TcpRoute,
    TlsMode as NetTls, TrafficPolicy, VirtualService, WeightedDestination,
};
use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService, ServiceCatalog};
use meshmeter_routing::view::{
    Cluster, Endpoint, Inbound, InboundPort, LoadBalancer, Node, Outlier, PeerMode, Route, Service,
    ServicePort, TlsMode, WeightedCluster,
};
use meshmeter_routing::{compile, Compiled, Decision, Router, Warning};

const DOMAIN: &str = "cluster.local";
const RATINGS: &str = "ratings.default.svc.cluster.local";
const MONGODB: &str = "mongodb.default.svc.cluster.local";

fn meta(namespace: &str, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: name.to_string(),
        namespace: namespace.to_string(),
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn subset(name: &str) -> Subset {
    Subset {
        name: name.to_string(),
        labels: labels(&[("version", name)]),
        traffic_policy: None,
    }
}

/// `destination-rule-all.yaml` (`mtls`: its `-mtls` variant).
fn seed_destination_rules(mtls: bool) -> Vec<DestinationRule> {
    let policy = mtls.then(|| TrafficPolicy {
        tls: Some(NetTls::IstioMutual),
        ..TrafficPolicy::default()
    });
    let rule = |host: &str, subsets: &[&str]| DestinationRule {
        meta: meta("default", host),
        host: host.to_string(),
        traffic_policy: policy.clone(),
        subsets: subsets.iter().map(|s| subset(s)).collect(),
    };
    vec![
        rule("productpage", &["v1"]),
        rule("reviews", &["v1", "v2", "v3"]),
        rule("ratings", &["v1", "v2", "v2-mysql", "v2-mysql-vm"]),
        rule("details", &["v1", "v2"]),
    ]
}

fn endpoint(ip: &str, port: u16, target: u16, workload: &str, version: &str) -> CatalogEndpoint {
    CatalogEndpoint {
        ip: ip.parse().unwrap(),
        ports: BTreeMap::from([(port, target)]),
        labels: labels(&[
            ("app", workload.split('-').next().unwrap()),
            ("version", version),
        ]),
        workload: workload.to_string(),
        namespace: "default".to_string(),
        service_account: format!("bookinfo-{}", workload.split('-').next().unwrap()),
    }
}

/// ratings (v1, v2) and mongodb (v1, v2, serving 27017 on 27018), plus a headless service.
fn catalog() -> ServiceCatalog {
    ServiceCatalog {
        services: vec![
            CatalogService {
                host: RATINGS.to_string(),
                name: "ratings".to_string(),
                namespace: "default".to_string(),
                addresses: vec!["10.96.0.20".parse().unwrap()],
                ports: vec![CatalogPort {
                    port: 9080,
                    name: "http".to_string(),
                }],
                endpoints: vec![
                    endpoint("10.1.0.21", 9080, 9080, "ratings-v1", "v1"),
                    endpoint("10.1.0.22", 9080, 9080, "ratings-v2", "v2"),
                ],
            },
            CatalogService {
                host: MONGODB.to_string(),
                name: "mongodb".to_string(),
                namespace: "default".to_string(),
                addresses: vec!["10.96.0.10".parse().unwrap()],
                ports: vec![CatalogPort {
                    port: 27017,
                    name: "mongo".to_string(),
                }],
                endpoints: vec![
                    endpoint("10.1.0.12", 27017, 27018, "mongodb-v2", "v2"),
                    endpoint("10.1.0.11", 27017, 27018, "mongodb-v1", "v1"),
                ],
            },
            CatalogService {
                host: "cache.default.svc.cluster.local".to_string(),
                name: "cache".to_string(),
                namespace: "default".to_string(),
                addresses: vec![],
                ports: vec![CatalogPort {
                    port: 6379,
                    name: "redis".to_string(),
                }],
                endpoints: vec![endpoint("10.1.0.31", 6379, 6379, "cache-v1", "v1")],
            },
        ],
    }
}

/// ratings-v2's sidecar.
fn ratings_v2() -> Node {
    Node {
        id: "ratings-v2-abc.default".to_string(),
        namespace: "default".to_string(),
        labels: labels(&[("app", "ratings"), ("version", "v2")]),
        ips: vec!["10.1.0.22".to_string()],
        service_account: "bookinfo-ratings".to_string(),
    }
}

fn destination(
    host: &str,
    subset: Option<&str>,
    port: Option<u16>,
    weight: u32,
) -> WeightedDestination {
    WeightedDestination {
        destination: Destination {
            host: host.to_string(),
            subset: subset.map(str::to_string),
            port,
        },
        weight,
    }
}

fn virtual_service(name: &str, hosts: &[&str], tcp: Vec<TcpRoute>) -> VirtualService {
    VirtualService {
        meta: meta("default", name),
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        gateways: vec![],
        tcp,
        http_routes: 0,
    }
}

/// The seed's MongoDB: ratings v2 reaches mongodb v1, other clients get 80/20 v1/v2.
fn mongodb_vs() -> VirtualService {
    virtual_service(
        "mongodb",
        &["mongodb"],
        vec![
            TcpRoute {
                matches: vec![L4Match {
                    port: Some(27017),
                    source_labels: labels(&[("app", "ratings"), ("version", "v2")]),
                    ..L4Match::default()
                }],
                route: vec![destination("mongodb", Some("v1"), Some(27017), 0)],
            },
            TcpRoute {
                matches: vec![],
                route: vec![
                    destination("mongodb.default", Some("v1"), None, 80),
                    destination(MONGODB, Some("v2"), None, 20),
                ],
            },
        ],
    )
}

fn mongodb_rule() -> DestinationRule {
    DestinationRule {
        meta: meta("default", "mongodb"),
        host: "mongodb".to_string(),
        traffic_policy: Some(TrafficPolicy {
            load_balancer: Some(NetLb::LeastConn),
            tcp_pool: Some(TcpPool {
                max_connections: Some(100),
                connect_timeout: Some(Duration::from_millis(250)),
            }),
            outlier_detection: Some(OutlierDetection::default()),
            tls: None,
        }),
        subsets: vec![
            Subset {
                traffic_policy: Some(TrafficPolicy {
                    tcp_pool: Some(TcpPool {
                        max_connections: Some(5),
                        connect_timeout: None,
                    }),
                    tls: Some(NetTls::IstioMutual),
                    ..TrafficPolicy::default()
                }),
                ..subset("v1")
            },
            subset("v2"),
        ],
    }
}

fn mongo_endpoint(ip: &str, version: &str) -> Endpoint {
    Endpoint {
        address: format!("{ip}:27018"),
        labels: labels(&[("app", "mongodb"), ("version", version)]),
        workload: format!("mongodb-{version}"),
        namespace: "default".to_string(),
        service_account: "bookinfo-mongodb".to_string(),
    }
}

fn ratings_endpoint(ip: &str, version: &str) -> Endpoint {
    Endpoint {
        address: format!("{ip}:9080"),
        labels: labels(&[("app", "ratings"), ("version", version)]),
        workload: format!("ratings-{version}"),
        namespace: "default".to_string(),
        service_account: "bookinfo-ratings".to_string(),
    }
}

fn mongo_cluster(
    subset: &str,
    max_connections: u32,
    tls: TlsMode,
    endpoints: Vec<Endpoint>,
) -> Cluster {
    Cluster {
        name: format!("outbound|27017|{subset}|{MONGODB}"),
        host: MONGODB.to_string(),
        subset: subset.to_string(),
        port: 27017,
        load_balancer: LoadBalancer::LeastConn as i32,
        max_connections,
        connect_timeout_ms: 250,
        outlier: Some(Outlier {
            consecutive_errors: 5,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 10,
        }),
        tls: tls as i32,
        endpoints,
        service_name: "mongodb".to_string(),
        service_namespace: "default".to_string(),
    }
}

fn ratings_cluster(subset: &str, endpoints: Vec<Endpoint>, tls: TlsMode) -> Cluster {
    Cluster {
        name: format!("outbound|9080|{subset}|{RATINGS}"),
        host: RATINGS.to_string(),
        subset: subset.to_string(),
        port: 9080,
        tls: tls as i32,
        endpoints,
        service_name: "ratings".to_string(),
        service_namespace: "default".to_string(),
        ..Cluster::default()
    }
}

fn weighted(port: u16, subset: &str, weight: u32) -> WeightedCluster {
    WeightedCluster {
        cluster: format!("outbound|{port}|{subset}|{MONGODB}"),
        weight,
    }
}

fn seed_config(mtls: bool) -> NetworkConfig {
    let mut destination_rules = seed_destination_rules(mtls);
    destination_rules.push(mongodb_rule());
    NetworkConfig {
        destination_rules,
        virtual_services: vec![mongodb_vs()],
        peer_policies: vec![],
    }
}

fn hosts_without_service() -> Vec<Warning> {
    ["productpage", "reviews", "details"]
        .iter()
        .map(|name| Warning::HostWithoutService {
            kind: "DestinationRule",
            origin: format!("default/{name}"),
            host: format!("{name}.default.svc.cluster.local"),
        })
        .collect()
}

#[test]
fn the_seed_rules_and_a_tcp_route_compile_to_the_expected_view() {
    let Compiled { update, warnings } =
        compile(&seed_config(false), &catalog(), &ratings_v2(), DOMAIN);
    assert_eq!(warnings, hosts_without_service());
    assert_eq!(update.version, 0);
    assert!(update.full);
    assert_eq!(
        update.services,
        [
            Service {
                host: MONGODB.to_string(),
                name: "mongodb".to_string(),
                namespace: "default".to_string(),
                addresses: vec!["10.96.0.10".to_string()],
                ports: vec![ServicePort {
                    port: 27017,
                    name: "mongo".to_string()
                }],
                routes: vec![
                    Route {
                        ports: vec![27017],
                        destination_subnets: vec![],
                        destinations: vec![weighted(27017, "v1", 100)],
                        origin: "default/mongodb".to_string(),
                    },
                    Route {
                        ports: vec![27017],
                        destination_subnets: vec![],
                        destinations: vec![weighted(27017, "v1", 80), weighted(27017, "v2", 20)],
                        origin: "default/mongodb".to_string(),
                    },
                ],
            },
            Service {
                host: RATINGS.to_string(),
                name: "ratings".to_string(),
                namespace: "default".to_string(),
                addresses: vec!["10.96.0.20".to_string()],
                ports: vec![ServicePort {
                    port: 9080,
                    name: "http".to_string()
                }],
                routes: vec![],
            },
        ]
    );
    let v1 = mongo_endpoint("10.1.0.11", "v1");
    let v2 = mongo_endpoint("10.1.0.12", "v2");
    assert_eq!(
        update.clusters,
        [
            // `|` sorts after the subset names.
            mongo_cluster("v1", 5, TlsMode::IstioMutual, vec![v1.clone()]),
            mongo_cluster("v2", 100, TlsMode::Disable, vec![v2.clone()]),
            mongo_cluster("", 100, TlsMode::Disable, vec![v1, v2]),
            ratings_cluster(
                "",
                vec![
                    ratings_endpoint("10.1.0.21", "v1"),
                    ratings_endpoint("10.1.0.22", "v2")
                ],
                TlsMode::Disable
            ),
        ]
    );
    assert_eq!(
        update.inbound,
        Some(Inbound {
            default_mode: PeerMode::Disable as i32,
            ports: vec![],
        })
    );

    // The view routes as it says: ratings-v2 reaches mongodb v1 only.
    let router = Router::from_view(&update).expect("a compiled view applies");
    for _ in 0..10 {
        match router.route("10.96.0.10:27017".parse().unwrap()) {
            Decision::Forward(picked) => {
                assert_eq!(picked.address().to_string(), "10.1.0.11:27018");
                assert_eq!(picked.endpoint().unwrap().labels["version"], "v1");
                assert_eq!(picked.tls(), TlsMode::IstioMutual);
            }
            other => panic!("expected Forward, got {other:?}"),
        }
    }
}

#[test]
fn other_clients_get_the_weighted_route_only() {
    let mut node = ratings_v2();
    node.labels = labels(&[("app", "reviews"), ("version", "v1")]);
    let Compiled { update, .. } = compile(&seed_config(false), &catalog(), &node, DOMAIN);
    let routes = &update.services[0].routes;
    assert_eq!(routes.len(), 1);
    assert_eq!(
        routes[0].destinations,
        [weighted(27017, "v1", 80), weighted(27017, "v2", 20)]
    );
}

#[test]
fn the_mtls_variant_sets_istio_mutual_on_every_cluster_of_its_hosts() {
    let Compiled { update, warnings } =
        compile(&seed_config(true), &catalog(), &ratings_v2(), DOMAIN);
    assert_eq!(warnings, hosts_without_service());
    let ratings = update.clusters.iter().find(|c| c.host == RATINGS).unwrap();
    assert_eq!(ratings.tls, TlsMode::IstioMutual as i32);
}

#[test]
fn unknown_subsets_hosts_and_ports_drop_the_route_with_a_warning() {
    let config = NetworkConfig {
        destination_rules: seed_destination_rules(false),
        virtual_services: vec![virtual_service(
            "ratings",
            &["ratings"],
            vec![
                TcpRoute {
                    matches: vec![],
                    route: vec![destination("ratings", Some("v9"), None, 0)],
                },
                TcpRoute {
                    matches: vec![],
                    route: vec![destination("nowhere", None, None, 0)],
                },
                TcpRoute {
                    matches: vec![],
                    route: vec![destination("ratings", None, Some(9999), 0)],
                },
                TcpRoute {
                    matches: vec![],
                    route: vec![destination("ratings", Some("v2"), None, 0)],
                },
            ],
        )],
        peer_policies: vec![],
    };
    let Compiled { update, warnings } = compile(&config, &catalog(), &ratings_v2(), DOMAIN);
    let origin = "default/ratings".to_string();
    assert_eq!(
        warnings[3..],
        [
            Warning::UnknownSubset {
                origin: origin.clone(),
                host: RATINGS.to_string(),
                subset: "v9".to_string(),
            },
            Warning::UnknownHost {
                origin: origin.clone(),
                host: "nowhere.default.svc.cluster.local".to_string(),
            },
            Warning::UnknownPort {
                origin: origin.clone(),
                host: RATINGS.to_string(),
                port: 9999,
            },
        ]
    );
    assert_eq!(
        warnings.iter().map(Warning::code).collect::<Vec<_>>(),
        [
            "host_without_service",
            "host_without_service",
            "host_without_service",
            "unknown_subset",
            "unknown_host",
            "unknown_port"
        ]
    );
    assert_eq!(
        warnings[2].to_string(),
        "DestinationRule default/details: host \"details.default.svc.cluster.local\" has no service"
    );
    let ratings = update.services.iter().find(|s| s.host == RATINGS).unwrap();
    assert_eq!(
        ratings.routes,
        [Route {
            ports: vec![9080],
            destination_subnets: vec![],
            destinations: vec![WeightedCluster {
                cluster: format!("outbound|9080|v2|{RATINGS}"),
                weight: 100,
            }],
            origin,
        }]
    );
    let v2 = update
        .clusters
        .iter()
        .find(|c| c.name == format!("outbound|9080|v2|{RATINGS}"))
        .unwrap();
    assert_eq!(v2.endpoints, [ratings_endpoint("10.1.0.22", "v2")]);
    Router::from_view(&update).expect("a compiled view applies");
}

#[test]
fn matches_keep_port_and_subnets_and_foreign_gateways_do_not_apply() {
    let mut gateway_only = mongodb_vs();
    gateway_only.meta = meta("default", "mongodb-gateway");
    gateway_only.gateways = vec!["bookinfo-gateway".to_string()];
    let subnet = Subnet {
        addr: "10.96.0.0".parse().unwrap(),
        prefix: 16,
    };
    let vs = virtual_service(
        "mongodb",
        &[MONGODB],
        vec![TcpRoute {
            matches: vec![
                L4Match {
                    port: Some(27017),
                    destination_subnets: vec![subnet],
                    ..L4Match::default()
                },
                L4Match {
                    gateways: vec!["bookinfo-gateway".to_string()],
                    ..L4Match::default()
                },
            ],
            route: vec![destination("mongodb", Some("v2"), Some(27017), 0)],
        }],
    );
    let mut config = seed_config(false);
    config.virtual_services = vec![gateway_only, vs];
    let Compiled { update, .. } = compile(&config, &catalog(), &ratings_v2(), DOMAIN);
    assert_eq!(
        update.services[0].routes,
        [Route {
            ports: vec![27017],
            destination_subnets: vec!["10.96.0.0/16".to_string()],
            destinations: vec![weighted(27017, "v2", 100)],
            origin: "default/mongodb".to_string(),
        }]
    );
}

#[test]
fn the_most_specific_rule_applies_then_the_sidecars_namespace() {
    let rule = |namespace: &str, name: &str, host: &str, lb: NetLb| DestinationRule {
        meta: meta(namespace, name),
        host: host.to_string(),
        traffic_policy: Some(TrafficPolicy {
            load_balancer: Some(lb),
            ..TrafficPolicy::default()
        }),
        subsets: vec![],
    };
    let config = NetworkConfig {
        destination_rules: vec![
            rule("istio-system", "everything", "*", NetLb::Passthrough),
            rule(
                "default",
                "default-ns",
                "*.default.svc.cluster.local",
                NetLb::Random,
            ),
            rule(
                "other",
                "other-ns",
                "*.default.svc.cluster.local",
                NetLb::RoundRobin,
            ),
            rule("other", "mongodb", "mongodb.default", NetLb::LeastConn),
        ],
        ..NetworkConfig::default()
    };
    let Compiled { update, warnings } = compile(&config, &catalog(), &ratings_v2(), DOMAIN);
    assert_eq!(warnings, []);
    let lb = |host: &str| {
        update
            .clusters
            .iter()
            .find(|c| c.host == host)
            .unwrap()
            .load_balancer
    };
    assert_eq!(lb(MONGODB), LoadBalancer::LeastConn as i32);
    assert_eq!(lb(RATINGS), LoadBalancer::Random as i32);

    // A sidecar in another namespace prefers that namespace's equally specific rule.
    let mut node = ratings_v2();
    node.namespace = "other".to_string();
    let Compiled { update, .. } = compile(&config, &catalog(), &node, DOMAIN);
    let ratings = update.clusters.iter().find(|c| c.host == RATINGS).unwrap();
    assert_eq!(ratings.load_balancer, LoadBalancer::RoundRobin as i32);
}

#[test]
fn headless_services_get_no_service_but_can_be_route_destinations() {
    let config = NetworkConfig {
        virtual_services: vec![virtual_service(
            "ratings",
            &["ratings"],
            vec![TcpRoute {
                matches: vec![],
                route: vec![destination("cache", None, Some(6379), 0)],
            }],
        )],
        ..NetworkConfig::default()
    };
    let Compiled { update, warnings } = compile(&config, &catalog(), &ratings_v2(), DOMAIN);
    assert_eq!(warnings, []);
    assert!(update.services.iter().all(|s| s.name != "cache"));
    let router = Router::from_view(&update).expect("a compiled view applies");
    match router.route("10.96.0.20:9080".parse().unwrap()) {
        Decision::Forward(picked) => {
            assert_eq!(picked.address().to_string(), "10.1.0.31:6379");
            assert_eq!(picked.service().name, "cache");
            assert_eq!(picked.service().host, "cache.default.svc.cluster.local");
        }
        other => panic!("expected Forward, got {other:?}"),
    }
}

fn policy(
    namespace: &str,
    name: &str,
    mesh_wide: bool,
    targets: Vec<PolicyTarget>,
    mtls: Option<PeerMtlsMode>,
) -> PeerPolicy {
    PeerPolicy {
        meta: meta(namespace, name),
        mesh_wide,
        targets,
        mtls,
    }
}

#[test]
fn inbound_policy_service_target_beats_namespace_beats_mesh() {
    let mongodb_v1 = Node {
        id: "mongodb-v1-xyz.default".to_string(),
        namespace: "default".to_string(),
        labels: labels(&[("app", "mongodb"), ("version", "v1")]),
        ips: vec!["10.1.0.11".to_string()],
        service_account: "bookinfo-mongodb".to_string(),
    };
    let mesh = policy("", "default", true, vec![], Some(PeerMtlsMode::Permissive));
    let namespace = policy(
        "default",
        "default",
        false,
        vec![],
        Some(PeerMtlsMode::Strict),
    );
    let target = |ports: Vec<u16>| PolicyTarget {
        name: "mongodb".to_string(),
        ports,
    };
    let inbound = |policies: Vec<PeerPolicy>| {
        let config = NetworkConfig {
            peer_policies: policies,
            ..NetworkConfig::default()
        };
        compile(&config, &catalog(), &mongodb_v1, DOMAIN)
            .update
            .inbound
            .unwrap()
    };
    let mode = |m: PeerMode| m as i32;

    assert_eq!(inbound(vec![]).default_mode, mode(PeerMode::Disable));
    assert_eq!(
        inbound(vec![mesh.clone()]).default_mode,
        mode(PeerMode::Permissive)
    );
    assert_eq!(
        inbound(vec![mesh.clone(), namespace.clone()]).default_mode,
        mode(PeerMode::Strict)
    );
    // A Policy of the service without ports: plaintext for the whole workload.
    let service_wide = policy(
        "default",
        "mongodb-plain",
        false,
        vec![target(vec![])],
        None,
    );
    assert_eq!(
        inbound(vec![mesh.clone(), namespace.clone(), service_wide]).default_mode,
        mode(PeerMode::Disable)
    );
    // A port target: the service port 27017 is the workload port 27018.
    let port = policy(
        "default",
        "mongodb-port",
        false,
        vec![target(vec![27017])],
        Some(PeerMtlsMode::Permissive),
    );
    assert_eq!(
        inbound(vec![mesh, namespace, port]),
        Inbound {
            default_mode: mode(PeerMode::Strict),
            ports: vec![InboundPort {
                port: 27018,
                mode: mode(PeerMode::Permissive),
            }],
        }
    );
    // A policy for a service of another workload does not apply.
    let other = policy(
        "default",
        "ratings-strict",
        false,
        vec![PolicyTarget {
            name: "ratings".to_string(),
            ports: vec![],
        }],
        Some(PeerMtlsMode::Strict),
    );
    assert_eq!(inbound(vec![other]).default_mode, mode(PeerMode::Disable));
}

#[test]
fn a_destination_without_port_gives_one_route_per_service_port() {
    let mut catalog = catalog();
    let ratings = &mut catalog.services[0];
    ratings.ports.push(CatalogPort {
        port: 9443,
        name: "tls".to_string(),
    });
    for endpoint in &mut ratings.endpoints {
        endpoint.ports.insert(9443, 8443);
    }
    let config = NetworkConfig {
        destination_rules: seed_destination_rules(false),
        virtual_services: vec![virtual_service(
            "ratings",
            &["ratings"],
            vec![TcpRoute {
                matches: vec![],
                route: vec![destination("ratings", Some("v1"), None, 0)],
            }],
        )],
        peer_policies: vec![],
    };
    let Compiled { update, .. } = compile(&config, &catalog, &ratings_v2(), DOMAIN);
    let service = update.services.iter().find(|s| s.host == RATINGS).unwrap();
    let route = |port: u16| Route {
        ports: vec![u32::from(port)],
        destination_subnets: vec![],
        destinations: vec![WeightedCluster {
            cluster: format!("outbound|{port}|v1|{RATINGS}"),
            weight: 100,
        }],
        origin: "default/ratings".to_string(),
    };
    assert_eq!(service.routes, [route(9080), route(9443)]);
    let names: Vec<&str> = update
        .clusters
        .iter()
        .filter(|c| c.host == RATINGS)
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "outbound|9080|v1|ratings.default.svc.cluster.local",
            "outbound|9080||ratings.default.svc.cluster.local",
            "outbound|9443|v1|ratings.default.svc.cluster.local",
            "outbound|9443||ratings.default.svc.cluster.local",
        ]
    );
    let router = Router::from_view(&update).expect("a compiled view applies");
    match router.route("10.96.0.20:9443".parse().unwrap()) {
        Decision::Forward(picked) => assert_eq!(picked.address().to_string(), "10.1.0.21:8443"),
        other => panic!("expected Forward, got {other:?}"),
    }
}

#[test]
fn ties_and_unoriginated_tls_are_reported() {
    let rule = |name: &str, tls: NetTls| DestinationRule {
        meta: meta("istio-system", name),
        host: RATINGS.to_string(),
        traffic_policy: Some(TrafficPolicy {
            tls: Some(tls),
            ..TrafficPolicy::default()
        }),
        subsets: vec![],
    };
    let config = NetworkConfig {
        destination_rules: vec![rule("b", NetTls::IstioMutual), rule("a", NetTls::Other)],
        ..NetworkConfig::default()
    };
    let Compiled { update, warnings } = compile(&config, &catalog(), &ratings_v2(), DOMAIN);
    assert_eq!(
        warnings,
        [
            Warning::Ambiguous {
                kind: "DestinationRule",
                host: RATINGS.to_string(),
                used: "istio-system/a".to_string(),
                ignored: "istio-system/b".to_string(),
            },
            Warning::TlsNotOriginated {
                origin: "istio-system/a".to_string(),
            },
        ]
    );
    assert_eq!(
        warnings[0].to_string(),
        "DestinationRules istio-system/a and istio-system/b both apply to \
         \"ratings.default.svc.cluster.local\"; istio-system/b ignored"
    );
    let ratings = update.clusters.iter().find(|c| c.host == RATINGS).unwrap();
    assert_eq!(ratings.tls, TlsMode::Disable as i32);
}

#[test]
fn a_wildcard_virtual_service_routes_every_matching_service() {
    let config = NetworkConfig {
        destination_rules: vec![mongodb_rule()],
        virtual_services: vec![virtual_service(
            "all-to-mongodb-v2",
            &["*.default.svc.cluster.local"],
            vec![TcpRoute {
                matches: vec![],
                route: vec![destination("mongodb", Some("v2"), Some(27017), 0)],
            }],
        )],
        ..NetworkConfig::default()
    };
    let Compiled { update, warnings } = compile(&config, &catalog(), &ratings_v2(), DOMAIN);
    assert_eq!(warnings, []);
    for service in &update.services {
        assert_eq!(
            service.routes[0].destinations,
            [weighted(27017, "v2", 100)],
            "{}",
            service.host
        );
    }
    let router = Router::from_view(&update).expect("a compiled view applies");
    match router.route("10.96.0.20:9080".parse().unwrap()) {
        Decision::Forward(picked) => assert_eq!(picked.address().to_string(), "10.1.0.12:27018"),
        other => panic!("expected Forward, got {other:?}"),
    }
}
