//! Every validation error with its exact message and position (golden file), each bad object
//! rejected alone, and a TCP VirtualService read exactly.

use std::collections::BTreeMap;

use meshmeter_config::{Diagnostics, Input};
use meshmeter_netconfig::*;

const BROKEN: &str = include_str!("data/broken.yaml");
const GOLDEN: &str = include_str!("data/broken.txt");

#[test]
fn every_problem_is_reported_with_its_position_and_the_good_objects_load() {
    let (config, diagnostics) = load_str(&[("broken.yaml", BROKEN)]);
    let rendered = diagnostics.into_iter().collect::<Diagnostics>().to_string();
    if std::env::var_os("BLESS").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/broken.txt");
        std::fs::write(path, format!("{rendered}\n")).unwrap();
    }
    assert_eq!(format!("{rendered}\n"), GOLDEN);
    // Only the objects without errors (and the first of two definitions) are in force.
    assert_eq!(
        config,
        NetworkConfig {
            destination_rules: vec![DestinationRule {
                meta: ObjectMeta {
                    name: "ok".into(),
                    namespace: "default".into()
                },
                host: "ok".into(),
                traffic_policy: None,
                subsets: vec![],
            }],
            virtual_services: vec![],
            peer_policies: vec![PeerPolicy {
                meta: ObjectMeta {
                    name: "default".into(),
                    namespace: "db".into()
                },
                mesh_wide: false,
                targets: vec![],
                mtls: Some(PeerMtlsMode::Permissive),
            }],
        }
    );
}

const TCP: &str = "apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: mongodb
  namespace: db
spec:
  hosts: [mongodb.db.svc.cluster.local]
  gateways: [mesh]
  tcp:
  - match:
    - port: 27017
      sourceLabels: {app: ratings, version: v2}
      destinationSubnets: [10.96.0.0/12, 192.168.1.7, 10.1.2.3/16, 2001:db8::1/32]
    route:
    - destination:
        host: mongodb.db.svc.cluster.local
        subset: v1
        port: {number: 27017}
      weight: 80
    - destination: {host: mongodb.db.svc.cluster.local, subset: v2}
      weight: 20
  - route:
    - destination: {host: mongodb}
";

#[test]
fn a_tcp_virtual_service_with_matches_and_weights() {
    // The rule for the short host `mongodb` in `db` defines v1 only: routing to v2 is
    // accepted (as Istio does) with a warning.
    let rule = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: mongodb, namespace: db}\nspec:\n  host: mongodb\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    let (config, diagnostics) = load_str(&[("dr.yaml", rule), ("vs.yaml", TCP)]);
    let shown: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        ["vs.yaml:20:65: warning[N0502]: spec.tcp[0].route[1].destination.subset of VirtualService db/mongodb 'v2' is not defined: the DestinationRule of 'mongodb.db.svc.cluster.local' has no subset 'v2'
    - destination: {host: mongodb.db.svc.cluster.local, subset: v2}
                                                                ^^
  = hint: connections routed to an undefined subset fail; define it in the host's DestinationRule"]
    );
    let subnet = |a: &str, prefix| Subnet {
        addr: a.parse().unwrap(),
        prefix,
    };
    let dest = |host: &str, subset: Option<&str>, port| Destination {
        host: host.into(),
        subset: subset.map(Into::into),
        port,
    };
    let host = "mongodb.db.svc.cluster.local";
    assert_eq!(
        config.virtual_services,
        vec![VirtualService {
            meta: ObjectMeta {
                name: "mongodb".into(),
                namespace: "db".into()
            },
            hosts: vec![host.into()],
            gateways: vec!["mesh".into()],
            tcp: vec![
                TcpRoute {
                    matches: vec![L4Match {
                        port: Some(27017),
                        source_labels: BTreeMap::from([
                            ("app".into(), "ratings".into()),
                            ("version".into(), "v2".into())
                        ]),
                        destination_subnets: vec![
                            subnet("10.96.0.0", 12),
                            subnet("192.168.1.7", 32),
                            subnet("10.1.0.0", 16),
                            subnet("2001:db8::", 32),
                        ],
                        gateways: vec![],
                    }],
                    route: vec![
                        WeightedDestination {
                            destination: dest(host, Some("v1"), Some(27017)),
                            weight: 80
                        },
                        WeightedDestination {
                            destination: dest(host, Some("v2"), None),
                            weight: 20
                        },
                    ],
                },
                TcpRoute {
                    matches: vec![],
                    route: vec![WeightedDestination {
                        destination: dest("mongodb", None, None),
                        weight: 100
                    }],
                },
            ],
            http_routes: 0,
        }]
    );
}

const POLICY: &str = "apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata: {name: mongodb, namespace: db}
spec:
  host: mongodb
  trafficPolicy:
    loadBalancer: {simple: LEAST_CONN}
    connectionPool:
      tcp: {maxConnections: 100, connectTimeout: 1.5s}
    outlierDetection: {consecutiveErrors: 3, interval: 500ms, baseEjectionTime: 1m, maxEjectionPercent: 50}
  subsets:
  - name: v1
    labels: {version: v1}
    trafficPolicy:
      load_balancer: {simple: RANDOM}
      tls: {mode: SIMPLE}
---
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata: {name: default}
spec:
  peers:
  - mtls: {}
---
apiVersion: authentication.istio.io/v1alpha1
kind: Policy
metadata: {name: mongodb-plain, namespace: db}
spec:
  targets:
  - name: mongodb
    ports: [{number: 27017}]
";

#[test]
fn traffic_policies_and_peer_policies() {
    use std::time::Duration;
    let (config, diagnostics) = load_str(&[("p.yaml", POLICY)]);
    assert_eq!(diagnostics, vec![]);
    let rule = &config.destination_rules[0];
    assert_eq!(
        rule.traffic_policy,
        Some(TrafficPolicy {
            load_balancer: Some(LoadBalancer::LeastConn),
            tcp_pool: Some(TcpPool {
                max_connections: Some(100),
                connect_timeout: Some(Duration::from_millis(1500)),
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_errors: 3,
                interval: Duration::from_millis(500),
                base_ejection_time: Duration::from_secs(60),
                max_ejection_percent: 50,
            }),
            tls: None,
        })
    );
    assert_eq!(
        rule.subsets[0].traffic_policy,
        Some(TrafficPolicy {
            load_balancer: Some(LoadBalancer::Random),
            tls: Some(TlsMode::Other),
            ..TrafficPolicy::default()
        })
    );
    assert_eq!(
        config.peer_policies,
        vec![
            PeerPolicy {
                meta: ObjectMeta {
                    name: "default".into(),
                    namespace: String::new()
                },
                mesh_wide: true,
                targets: vec![],
                mtls: Some(PeerMtlsMode::Strict),
            },
            PeerPolicy {
                meta: ObjectMeta {
                    name: "mongodb-plain".into(),
                    namespace: "db".into()
                },
                mesh_wide: false,
                targets: vec![PolicyTarget {
                    name: "mongodb".into(),
                    ports: vec![27017]
                }],
                mtls: None,
            },
        ]
    );
}

fn file(text: &str) -> Input {
    Input::File {
        path: "rules.yaml".into(),
        text: text.into(),
    }
}

#[test]
fn a_rejected_object_keeps_its_previous_version_and_a_deleted_one_goes() {
    let v1 = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: db}\nspec:\n  host: mongodb\n  subsets: [{name: v1, labels: {version: v1}}]\n---\napiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: other}\nspec: {host: other}\n";
    let mut loader = Loader::new();
    let loaded = loader.load(vec![file(v1)]);
    assert_eq!(loaded.problems, vec![]);
    loader.commit(&loaded);
    // The first object broken, the second changed: the first keeps v1, the second is new.
    let broken = v1
        .replace("name: v1,", "name: v1, labls: {},")
        .replace("host: other", "host: other2");
    let loaded = loader.load(vec![file(&broken)]);
    assert_eq!(loaded.problems.len(), 1);
    let p = &loaded.problems[0];
    assert_eq!(
        (p.kind.as_str(), p.namespace.as_str(), p.name.as_str()),
        ("DestinationRule", "default", "db")
    );
    assert!(p.previous_in_force);
    assert_eq!(p.source.to_string(), "rules.yaml:3:18");
    assert_eq!(
        p.diagnostics.iter().next().unwrap().to_string().lines().next().unwrap(),
        "rules.yaml:6:24: error[C0011]: unknown field 'labls' in spec.subsets[0] of DestinationRule default/db"
    );
    let hosts: Vec<&str> = loaded
        .config
        .destination_rules
        .iter()
        .map(|r| r.host.as_str())
        .collect();
    assert_eq!(hosts, ["mongodb", "other2"]);
    assert_eq!(loaded.config.destination_rules[0].subsets[0].name, "v1");
    loader.commit(&loaded);
    // A file that cannot be read keeps its objects.
    let loaded = loader.load(vec![Input::Unreadable {
        path: "rules.yaml".into(),
        error: "permission denied".into(),
    }]);
    assert_eq!(loaded.config.destination_rules.len(), 2);
    assert!(loaded.problems[0].previous_in_force);
    loader.commit(&loaded);
    // Deleted from the file: gone.
    let loaded = loader.load(vec![file("")]);
    assert_eq!(loaded.config, NetworkConfig::default());
    assert_eq!(loaded.problems, vec![]);
}

#[test]
fn wildcard_rules_define_subsets_for_the_hosts_they_cover() {
    let rule = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: all, namespace: db}\nspec:\n  host: '*.db.svc.cluster.local'\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    let vs = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: m, namespace: db}\nspec:\n  hosts: [mongodb]\n  tcp:\n  - route:\n    - destination: {host: mongodb, subset: v1}\n      weight: 50\n    - destination: {host: mongodb, subset: v9}\n      weight: 50\n";
    let (config, diagnostics) = load_str(&[("dr.yaml", rule), ("vs.yaml", vs)]);
    assert_eq!(config.virtual_services.len(), 1);
    let shown: Vec<String> = diagnostics
        .iter()
        .map(|d| d.to_string().lines().next().unwrap().to_owned())
        .collect();
    assert_eq!(
        shown,
        ["vs.yaml:10:44: warning[N0502]: spec.tcp[0].route[1].destination.subset of VirtualService db/m 'v9' is not defined: the DestinationRule of 'mongodb' has no subset 'v9'"]
    );
}

#[test]
fn hosts_are_qualified_as_the_routing_compiler_does_for_the_subset_check() {
    let rule = "apiVersion: networking.istio.io/v1alpha3\nkind: DestinationRule\nmetadata: {name: m, namespace: db}\nspec:\n  host: mongodb.db.svc.cluster.local\n  subsets: [{name: v1, labels: {version: v1}}]\n";
    let vs = "apiVersion: networking.istio.io/v1alpha3\nkind: VirtualService\nmetadata: {name: m, namespace: default}\nspec:\n  hosts: [mongodb.db]\n  tcp:\n  - route:\n    - destination: {host: mongodb.db, subset: v1}\n";
    let (config, diagnostics) = load_str(&[("dr.yaml", rule), ("vs.yaml", vs)]);
    assert_eq!(config.virtual_services.len(), 1);
    assert_eq!(diagnostics, vec![]);
}
