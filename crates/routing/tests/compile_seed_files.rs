//! The seed's own files (`destination-rule-all.yaml`, its mTLS variant,
//! `virtual-service-ratings-db.yaml`) read by `meshmeter-netconfig`, with a TCP
//! DestinationRule and VirtualService for MongoDB, compile to a view that routes as written.

use std::collections::BTreeMap;

use meshmeter_netconfig::load_str;
use meshmeter_routing::catalog::{CatalogEndpoint, CatalogPort, CatalogService, ServiceCatalog};
use meshmeter_routing::view::{LoadBalancer, Node, Outlier, Route, TlsMode, WeightedCluster};
use meshmeter_routing::{compile, Decision, Router, Warning};

const RULES: &str = include_str!("../../netconfig/tests/data/destination-rule-all.yaml");
const RULES_MTLS: &str = include_str!("../../netconfig/tests/data/destination-rule-all-mtls.yaml");
const RATINGS_DB: &str = include_str!("../../netconfig/tests/data/virtual-service-ratings-db.yaml");

const MONGODB_TCP: &str = "\
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: mongodb
spec:
  host: mongodb
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 2
        connectTimeout: 250ms
    outlierDetection:
      consecutiveErrors: 3
      interval: 5s
      baseEjectionTime: 15s
      maxEjectionPercent: 50
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
    trafficPolicy:
      loadBalancer:
        simple: LEAST_CONN
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: mongodb
spec:
  hosts:
  - mongodb
  tcp:
  - match:
    - port: 27017
      sourceLabels:
        app: ratings
    route:
    - destination:
        host: mongodb
        subset: v1
      weight: 80
    - destination:
        host: mongodb
        subset: v2
      weight: 20
";

const RATINGS: &str = "ratings.default.svc.cluster.local";
const MONGODB: &str = "mongodb.default.svc.cluster.local";

fn endpoint(ip: &str, port: u16, app: &str, version: &str) -> CatalogEndpoint {
    CatalogEndpoint {
        ip: ip.parse().unwrap(),
        ports: BTreeMap::from([(port, port)]),
        labels: BTreeMap::from([
            ("app".to_string(), app.to_string()),
            ("version".to_string(), version.to_string()),
        ]),
        workload: format!("{app}-{version}"),
        namespace: "default".to_string(),
        service_account: format!("bookinfo-{app}"),
    }
}

fn service(name: &str, vip: &str, port: u16, endpoints: Vec<CatalogEndpoint>) -> CatalogService {
    CatalogService {
        host: format!("{name}.default.svc.cluster.local"),
        name: name.to_string(),
        namespace: "default".to_string(),
        addresses: vec![vip.parse().unwrap()],
        ports: vec![CatalogPort {
            port,
            name: "tcp".to_string(),
        }],
        endpoints,
    }
}

fn catalog() -> ServiceCatalog {
    ServiceCatalog {
        services: vec![
            service(
                "ratings",
                "10.96.0.20",
                9080,
                vec![
                    endpoint("10.1.0.21", 9080, "ratings", "v1"),
                    endpoint("10.1.0.22", 9080, "ratings", "v2"),
                ],
            ),
            service(
                "mongodb",
                "10.96.0.10",
                27017,
                vec![
                    endpoint("10.1.0.11", 27017, "mongodb", "v1"),
                    endpoint("10.1.0.12", 27017, "mongodb", "v2"),
                ],
            ),
        ],
    }
}

fn ratings_v2() -> Node {
    Node {
        id: "ratings-v2-0.default".to_string(),
        namespace: "default".to_string(),
        labels: BTreeMap::from([
            ("app".to_string(), "ratings".to_string()),
            ("version".to_string(), "v2".to_string()),
        ]),
        ips: vec!["10.1.0.22".to_string()],
        service_account: "bookinfo-ratings".to_string(),
    }
}

fn load(rules: &str) -> meshmeter_netconfig::NetworkConfig {
    let (config, diagnostics) = load_str(&[
        ("destination-rule-all.yaml", rules),
        ("virtual-service-ratings-db.yaml", RATINGS_DB),
        ("mongodb-tcp.yaml", MONGODB_TCP),
    ]);
    let errors: Vec<_> = diagnostics.iter().filter(|d| d.is_error()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    config
}

#[test]
fn the_seed_files_compile_and_route_ratings_v2_to_mongodb_by_weight() {
    let compiled = compile(&load(RULES), &catalog(), &ratings_v2(), "cluster.local");
    // The seed's rules for services this catalog does not have, and its HTTP-only
    // VirtualService for `reviews`, match nothing.
    assert_eq!(
        compiled.warnings,
        [
            Warning::HostWithoutService {
                kind: "VirtualService",
                origin: "default/reviews".to_string(),
                host: "reviews.default.svc.cluster.local".to_string(),
            },
            Warning::HostWithoutService {
                kind: "DestinationRule",
                origin: "default/productpage".to_string(),
                host: "productpage.default.svc.cluster.local".to_string(),
            },
            Warning::HostWithoutService {
                kind: "DestinationRule",
                origin: "default/reviews".to_string(),
                host: "reviews.default.svc.cluster.local".to_string(),
            },
            Warning::HostWithoutService {
                kind: "DestinationRule",
                origin: "default/details".to_string(),
                host: "details.default.svc.cluster.local".to_string(),
            },
        ]
    );
    let update = &compiled.update;
    let mongodb = update.services.iter().find(|s| s.host == MONGODB).unwrap();
    assert_eq!(
        mongodb.routes,
        [Route {
            ports: vec![27017],
            destination_subnets: vec![],
            destinations: vec![
                WeightedCluster {
                    cluster: format!("outbound|27017|v1|{MONGODB}"),
                    weight: 80,
                },
                WeightedCluster {
                    cluster: format!("outbound|27017|v2|{MONGODB}"),
                    weight: 20,
                },
            ],
            origin: "default/mongodb".to_string(),
        }]
    );
    // `ratings` has only HTTP routes: no TCP route.
    let ratings = update.services.iter().find(|s| s.host == RATINGS).unwrap();
    assert_eq!(ratings.routes, []);

    let cluster = |name: String| update.clusters.iter().find(|c| c.name == name).unwrap();
    let v1 = cluster(format!("outbound|27017|v1|{MONGODB}"));
    let v2 = cluster(format!("outbound|27017|v2|{MONGODB}"));
    assert_eq!(v1.endpoints.len(), 1);
    assert_eq!(v1.endpoints[0].address, "10.1.0.11:27017");
    assert_eq!(v1.load_balancer, LoadBalancer::RoundRobin as i32);
    assert_eq!(v2.load_balancer, LoadBalancer::LeastConn as i32);
    for c in [v1, v2] {
        assert_eq!(c.max_connections, 2);
        assert_eq!(c.connect_timeout_ms, 250);
        assert_eq!(
            c.outlier,
            Some(Outlier {
                consecutive_errors: 3,
                interval_ms: 5_000,
                base_ejection_ms: 15_000,
                max_ejection_percent: 50,
            })
        );
        assert_eq!(c.tls, TlsMode::Disable as i32);
    }

    // 10,000 decisions split 80/20 within 3 sigma (40), each reaching its version.
    let router = Router::with_clock_and_seed(
        std::sync::Arc::new(meshmeter_routing::ManualClock::new()),
        11,
    );
    router.apply(update).expect("a compiled view applies");
    let mut v1_count = 0;
    for _ in 0..10_000 {
        match router.route("10.96.0.10:27017".parse().unwrap()) {
            Decision::Forward(picked) => {
                let version = &picked.endpoint().unwrap().labels["version"];
                assert_eq!(*version, picked.subset());
                if version == "v1" {
                    v1_count += 1;
                }
            }
            other => panic!("expected Forward, got {other:?}"),
        }
    }
    assert!((7_880..=8_120).contains(&v1_count), "v1: {v1_count}");
}

#[test]
fn the_mtls_variant_originates_istio_mutual_to_ratings() {
    let compiled = compile(
        &load(RULES_MTLS),
        &catalog(),
        &ratings_v2(),
        "cluster.local",
    );
    let ratings = compiled
        .update
        .clusters
        .iter()
        .find(|c| c.name == format!("outbound|9080||{RATINGS}"))
        .unwrap();
    assert_eq!(ratings.tls, TlsMode::IstioMutual as i32);
    let router = Router::from_view(&compiled.update).expect("a compiled view applies");
    match router.route("10.96.0.20:9080".parse().unwrap()) {
        Decision::Forward(picked) => {
            assert_eq!(picked.tls(), TlsMode::IstioMutual);
            assert_eq!(
                picked.endpoint().unwrap().service_account,
                "bookinfo-ratings"
            );
        }
        other => panic!("expected Forward, got {other:?}"),
    }
}

#[test]
fn a_client_without_the_source_labels_gets_the_default_cluster() {
    let mut node = ratings_v2();
    node.labels.insert("app".to_string(), "reviews".to_string());
    let compiled = compile(&load(RULES), &catalog(), &node, "cluster.local");
    let mongodb = compiled
        .update
        .services
        .iter()
        .find(|s| s.host == MONGODB)
        .unwrap();
    assert_eq!(mongodb.routes, []);
}
