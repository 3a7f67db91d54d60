//! One routing decision (`Router::route` and dropping the `Picked`) in a view of 1,000
//! services, the routed one with 1,000 endpoints, against a plain `HashMap` lookup of the
//! same key in the same run. Also what the control plane pays per sidecar shape: compiling
//! that catalog (1,000 services, 2,000 endpoints, a DestinationRule and a TCP
//! VirtualService for each) and applying the resulting full view.

use std::collections::{BTreeMap, HashMap};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{criterion_group, criterion_main, Criterion};
use meshmeter_netconfig::{
    Destination, DestinationRule, NetworkConfig, ObjectMeta, Subset, TcpRoute, VirtualService,
    WeightedDestination,
};
use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService, ServiceCatalog};
use meshmeter_routing::compile;
use meshmeter_routing::view::Node;
use meshmeter_routing::view::{
    Cluster, Endpoint, LoadBalancer, Outlier, Route, Service, ServicePort, ViewUpdate,
    WeightedCluster,
};
use meshmeter_routing::{Decision, Router};

const SERVICES: u32 = 1_000;
const ENDPOINTS: u32 = 1_000;

fn vip(i: u32) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A60_0000 + i)), 27017)
}

fn host(i: u32) -> String {
    format!("svc{i}.default.svc.cluster.local")
}

fn endpoint(i: u32, version: &str) -> Endpoint {
    Endpoint {
        address: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0A01_0000 + i)), 27017).to_string(),
        labels: BTreeMap::from([("version".to_string(), version.to_string())]),
        workload: format!("svc-{version}"),
        namespace: "default".to_string(),
        service_account: "default".to_string(),
    }
}

fn cluster(i: u32, subset: &str, lb: LoadBalancer, endpoints: Vec<Endpoint>) -> Cluster {
    Cluster {
        name: format!("outbound|27017|{subset}|{}", host(i)),
        host: host(i),
        subset: subset.to_string(),
        port: 27017,
        load_balancer: lb as i32,
        max_connections: 10_000,
        outlier: Some(Outlier {
            consecutive_errors: 5,
            interval_ms: 10_000,
            base_ejection_ms: 30_000,
            max_ejection_percent: 10,
        }),
        endpoints,
        ..Cluster::default()
    }
}

/// 1,000 services; service 0 has 1,000 endpoints (subsets v1 and v2, 500 each) and, when
/// `weighted`, an 80/20 route between them.
fn view(lb: LoadBalancer, weighted: bool) -> ViewUpdate {
    let mut services = Vec::new();
    let mut clusters = Vec::new();
    for i in 0..SERVICES {
        let routes = if i == 0 && weighted {
            vec![Route {
                destinations: vec![
                    WeightedCluster {
                        cluster: format!("outbound|27017|v1|{}", host(0)),
                        weight: 80,
                    },
                    WeightedCluster {
                        cluster: format!("outbound|27017|v2|{}", host(0)),
                        weight: 20,
                    },
                ],
                ..Route::default()
            }]
        } else {
            vec![]
        };
        services.push(Service {
            host: host(i),
            name: format!("svc{i}"),
            namespace: "default".to_string(),
            addresses: vec![vip(i).ip().to_string()],
            ports: vec![ServicePort {
                port: 27017,
                name: "tcp".to_string(),
            }],
            routes,
        });
        if i == 0 {
            let v1: Vec<Endpoint> = (0..ENDPOINTS / 2).map(|e| endpoint(e, "v1")).collect();
            let v2: Vec<Endpoint> = (ENDPOINTS / 2..ENDPOINTS)
                .map(|e| endpoint(e, "v2"))
                .collect();
            clusters.push(cluster(0, "", lb, [v1.clone(), v2.clone()].concat()));
            clusters.push(cluster(0, "v1", lb, v1));
            clusters.push(cluster(0, "v2", lb, v2));
        } else {
            clusters.push(cluster(i, "", lb, vec![endpoint(ENDPOINTS + i, "v1")]));
        }
    }
    ViewUpdate {
        version: 1,
        full: true,
        services,
        clusters,
        ..ViewUpdate::default()
    }
}

fn decide(c: &mut Criterion) {
    let mut group = c.benchmark_group("decide");
    let target = vip(0);
    for (name, lb, weighted) in [
        ("round_robin", LoadBalancer::RoundRobin, false),
        ("round_robin_80_20", LoadBalancer::RoundRobin, true),
        ("least_conn_80_20", LoadBalancer::LeastConn, true),
        ("random", LoadBalancer::Random, false),
    ] {
        let router = Router::from_view(&view(lb, weighted)).expect("the view applies");
        group.bench_function(name, |b| {
            b.iter(|| match router.route(black_box(target)) {
                Decision::Forward(picked) => black_box(picked.address()),
                other => panic!("{other:?}"),
            })
        });
    }
    let router = Router::from_view(&view(LoadBalancer::RoundRobin, false)).expect("applies");
    let outside = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 443);
    group.bench_function("passthrough", |b| {
        b.iter(|| matches!(router.route(black_box(outside)), Decision::Passthrough))
    });

    // Baseline: the lookup alone, a std HashMap from the original destination to an index.
    let map: HashMap<SocketAddr, u32> = (0..SERVICES).map(|i| (vip(i), i)).collect();
    group.bench_function("baseline_hashmap_lookup", |b| {
        b.iter(|| black_box(map.get(&black_box(target)).copied()))
    });
    group.finish();
}

/// 1,000 services with endpoints v1 and v2 each; a rule with both subsets and an 80/20
/// route for every service.
fn config_and_catalog() -> (NetworkConfig, ServiceCatalog) {
    let meta = |i: u32| ObjectMeta {
        name: format!("svc{i}"),
        namespace: "default".to_string(),
    };
    let subset = |v: &str| Subset {
        name: v.to_string(),
        labels: BTreeMap::from([("version".to_string(), v.to_string())]),
        traffic_policy: None,
    };
    let to = |i: u32, v: &str, weight: u32| WeightedDestination {
        destination: Destination {
            host: format!("svc{i}"),
            subset: Some(v.to_string()),
            port: None,
        },
        weight,
    };
    let mut config = NetworkConfig::default();
    let mut catalog = ServiceCatalog::default();
    for i in 0..SERVICES {
        config.destination_rules.push(DestinationRule {
            meta: meta(i),
            host: format!("svc{i}"),
            traffic_policy: None,
            subsets: vec![subset("v1"), subset("v2")],
        });
        config.virtual_services.push(VirtualService {
            meta: meta(i),
            hosts: vec![format!("svc{i}")],
            gateways: vec![],
            tcp: vec![TcpRoute {
                matches: vec![],
                route: vec![to(i, "v1", 80), to(i, "v2", 20)],
            }],
            http_routes: 0,
        });
        let endpoint = |n: u32, v: &str| CatalogEndpoint {
            ip: IpAddr::V4(Ipv4Addr::from(0x0A01_0000 + n)),
            ports: BTreeMap::from([(27017, 27017)]),
            labels: BTreeMap::from([("version".to_string(), v.to_string())]),
            workload: format!("svc{i}-{v}"),
            namespace: "default".to_string(),
            service_account: "default".to_string(),
        };
        catalog.services.push(CatalogService {
            host: host(i),
            name: format!("svc{i}"),
            namespace: "default".to_string(),
            addresses: vec![vip(i).ip()],
            ports: vec![CatalogPort {
                port: 27017,
                name: "tcp".to_string(),
            }],
            endpoints: vec![endpoint(2 * i, "v1"), endpoint(2 * i + 1, "v2")],
        });
    }
    (config, catalog)
}

fn compile_and_apply(c: &mut Criterion) {
    let (config, catalog) = config_and_catalog();
    let node = Node {
        namespace: "default".to_string(),
        ..Node::default()
    };
    let mut group = c.benchmark_group("view_1000_services");
    group.sample_size(20);
    group.bench_function("compile", |b| {
        b.iter(|| compile(&config, &catalog, &node, "cluster.local"))
    });
    let compiled = compile(&config, &catalog, &node, "cluster.local");
    assert!(compiled.warnings.is_empty(), "{:?}", compiled.warnings);
    let router = Router::new();
    group.bench_function("apply_full", |b| {
        b.iter(|| router.apply(&compiled.update).expect("applies"))
    });
    group.finish();
}

criterion_group!(benches, decide, compile_and_apply);
criterion_main!(benches);
