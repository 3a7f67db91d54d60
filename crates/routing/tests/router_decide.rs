//! The router's decisions on hand-written views: weights, load balancers, limits, ejection,
//! updates.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshmeter_routing::view::{
    Cluster, Endpoint, LoadBalancer, Outlier, Route, Service, ServicePort, TlsMode, ViewUpdate,
    WeightedCluster,
};
use meshmeter_routing::{Decision, ManualClock, Picked, Problem, Router};

const HOST: &str = "mongodb.default.svc.cluster.local";
const VIP: &str = "10.96.0.10:27017";

fn endpoint(address: &str, version: &str) -> Endpoint {
    Endpoint {
        address: address.to_string(),
        labels: BTreeMap::from([("version".to_string(), version.to_string())]),
        workload: format!("mongodb-{version}"),
        namespace: "default".to_string(),
        service_account: "default".to_string(),
    }
}

fn cluster(subset: &str, endpoints: Vec<Endpoint>) -> Cluster {
    Cluster {
        name: format!("outbound|27017|{subset}|{HOST}"),
        host: HOST.to_string(),
        subset: subset.to_string(),
        port: 27017,
        endpoints,
        ..Cluster::default()
    }
}

fn service(routes: Vec<Route>) -> Service {
    Service {
        host: HOST.to_string(),
        name: "mongodb".to_string(),
        namespace: "default".to_string(),
        addresses: vec!["10.96.0.10".to_string()],
        ports: vec![ServicePort {
            port: 27017,
            name: "tcp-mongo".to_string(),
        }],
        routes,
    }
}

fn route(destinations: &[(&str, u32)]) -> Route {
    Route {
        ports: vec![],
        destination_subnets: vec![],
        destinations: destinations
            .iter()
            .map(|(subset, weight)| WeightedCluster {
                cluster: format!("outbound|27017|{subset}|{HOST}"),
                weight: *weight,
            })
            .collect(),
        origin: "default/mongodb".to_string(),
    }
}

fn full(services: Vec<Service>, clusters: Vec<Cluster>) -> ViewUpdate {
    ViewUpdate {
        version: 1,
        full: true,
        services,
        clusters,
        ..ViewUpdate::default()
    }
}

/// A view with subsets v1 (two endpoints) and v2 (one), the default cluster with all three.
fn two_versions(routes: Vec<Route>) -> ViewUpdate {
    let v1 = vec![
        endpoint("10.0.0.1:27017", "v1"),
        endpoint("10.0.0.2:27017", "v1"),
    ];
    let v2 = vec![endpoint("10.0.0.3:27017", "v2")];
    let all = [v1.clone(), v2.clone()].concat();
    full(
        vec![service(routes)],
        vec![cluster("", all), cluster("v1", v1), cluster("v2", v2)],
    )
}

fn new_router(update: &ViewUpdate) -> (Router, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let router = Router::with_clock_and_seed(clock.clone(), 17);
    router.apply(update).expect("the view applies");
    (router, clock)
}

fn vip() -> SocketAddr {
    VIP.parse().unwrap()
}

fn forward(decision: Decision) -> Picked {
    match decision {
        Decision::Forward(picked) => picked,
        other => panic!("expected Forward, got {other:?}"),
    }
}

fn address(decision: Decision) -> String {
    forward(decision).address().to_string()
}

#[test]
fn addresses_outside_the_view_pass_through() {
    let (router, _) = new_router(&two_versions(vec![]));
    for original in ["10.96.0.10:80", "10.96.0.11:27017", "[2001:db8::1]:27017"] {
        assert!(
            matches!(
                router.route(original.parse().unwrap()),
                Decision::Passthrough
            ),
            "{original}"
        );
    }
}

#[test]
fn weights_80_20_split_10000_decisions_within_3_sigma() {
    let (router, _) = new_router(&two_versions(vec![route(&[("v1", 80), ("v2", 20)])]));
    let mut v1 = 0;
    let mut v2 = 0;
    for _ in 0..10_000 {
        let picked = forward(router.route(vip()));
        match picked.subset() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => panic!("unexpected subset {other:?}"),
        }
    }
    // Binomial(10,000, 0.8): mean 8,000, sigma 40.
    assert_eq!(v1 + v2, 10_000);
    assert!((7_880..=8_120).contains(&v1), "v1 got {v1}, v2 {v2}");
}

#[test]
fn subsets_pick_only_their_endpoints_and_report_them() {
    let (router, _) = new_router(&two_versions(vec![route(&[("v2", 100)])]));
    for _ in 0..20 {
        let picked = forward(router.route(vip()));
        assert_eq!(picked.address().to_string(), "10.0.0.3:27017");
        let endpoint = picked.endpoint().expect("an endpoint");
        assert_eq!(endpoint.labels["version"], "v2");
        assert_eq!(endpoint.workload, "mongodb-v2");
        assert_eq!(picked.service().host, HOST);
        assert_eq!(picked.service().name, "mongodb");
        assert_eq!(picked.service().namespace, "default");
        assert_eq!(picked.cluster(), format!("outbound|27017|v2|{HOST}"));
    }
}

#[test]
fn without_a_route_the_default_cluster_round_robins_in_order() {
    let (router, _) = new_router(&two_versions(vec![]));
    let picks: Vec<String> = (0..6).map(|_| address(router.route(vip()))).collect();
    assert_eq!(
        picks,
        [
            "10.0.0.1:27017",
            "10.0.0.2:27017",
            "10.0.0.3:27017",
            "10.0.0.1:27017",
            "10.0.0.2:27017",
            "10.0.0.3:27017"
        ]
    );
}

#[test]
fn ipv4_mapped_destinations_route_like_ipv4() {
    let (router, _) = new_router(&two_versions(vec![route(&[("v2", 100)])]));
    let picked = forward(router.route("[::ffff:10.96.0.10]:27017".parse().unwrap()));
    assert_eq!(picked.address().to_string(), "10.0.0.3:27017");
}

#[test]
fn destination_subnets_select_the_route() {
    let mut to_v2 = route(&[("v2", 100)]);
    to_v2.destination_subnets = vec!["10.96.0.0/16".to_string()];
    let mut elsewhere = route(&[("v1", 100)]);
    elsewhere.destination_subnets = vec!["192.168.0.0/16".to_string()];
    let (router, _) = new_router(&two_versions(vec![elsewhere.clone(), to_v2]));
    assert_eq!(forward(router.route(vip())).subset(), "v2");

    let (router, _) = new_router(&two_versions(vec![elsewhere]));
    assert_eq!(forward(router.route(vip())).subset(), "");
}

#[test]
fn routes_for_another_port_do_not_apply() {
    let mut other_port = route(&[("v2", 100)]);
    other_port.ports = vec![27018];
    let (router, _) = new_router(&two_versions(vec![other_port]));
    assert_eq!(forward(router.route(vip())).subset(), "");
}

#[test]
fn max_connections_overflow_until_a_slot_is_released() {
    let mut view = two_versions(vec![]);
    view.clusters[0].max_connections = 2;
    view.clusters[0].connect_timeout_ms = 1_500;
    view.clusters[0].tls = TlsMode::IstioMutual as i32;
    let (router, _) = new_router(&view);
    let first = forward(router.route(vip()));
    assert_eq!(first.connect_timeout(), Some(Duration::from_millis(1_500)));
    assert_eq!(first.tls(), TlsMode::IstioMutual);
    let second = forward(router.route(vip()));
    let default = format!("outbound|27017||{HOST}");
    let overflow = router.route(vip());
    assert_eq!(overflow.response_flag(), Some("UO"));
    assert_eq!(overflow.service().map(|s| s.name.as_str()), Some("mongodb"));
    match overflow {
        Decision::Overflow(refused) => {
            assert_eq!(refused.cluster(), default);
            assert_eq!(refused.service().name, "mongodb");
        }
        other => panic!("expected Overflow, got {other:?}"),
    }
    assert_eq!(router.cluster_stats(&default).unwrap().open, 2);
    drop(first);
    assert_eq!(router.cluster_stats(&default).unwrap().open, 1);
    let third = forward(router.route(vip()));
    assert!(matches!(router.route(vip()), Decision::Overflow(_)));
    drop((second, third));
    let stats = router.cluster_stats(&default).unwrap();
    assert_eq!(stats.open, 0);
    assert!(stats.endpoints.iter().all(|e| e.open == 0), "{stats:?}");
}

#[test]
fn least_conn_prefers_the_endpoint_with_fewer_open_connections() {
    let mut view = two_versions(vec![route(&[("v1", 100)])]);
    view.clusters[1].load_balancer = LoadBalancer::LeastConn as i32;
    let (router, _) = new_router(&view);
    // With two endpoints both are always the two choices: picks alternate by load.
    let held: Vec<Picked> = (0..10).map(|_| forward(router.route(vip()))).collect();
    let on_first = held
        .iter()
        .filter(|p| p.address().to_string() == "10.0.0.1:27017")
        .count();
    assert_eq!(on_first, 5);
    let stats = router
        .cluster_stats(&format!("outbound|27017|v1|{HOST}"))
        .unwrap();
    assert_eq!(
        stats.endpoints.iter().map(|e| e.open).collect::<Vec<_>>(),
        [5, 5]
    );
}

#[test]
fn random_spreads_evenly() {
    let mut view = two_versions(vec![]);
    view.clusters[0].load_balancer = LoadBalancer::Random as i32;
    let (router, _) = new_router(&view);
    let mut counts = BTreeMap::new();
    for _ in 0..3_000 {
        *counts.entry(address(router.route(vip()))).or_insert(0) += 1;
    }
    // Binomial(3,000, 1/3): mean 1,000, sigma 25.8.
    assert_eq!(counts.len(), 3);
    for (address, count) in counts {
        assert!((923..=1_077).contains(&count), "{address}: {count}");
    }
}

#[test]
fn passthrough_load_balancing_connects_to_the_original_destination() {
    let mut view = two_versions(vec![]);
    view.clusters[0].load_balancer = LoadBalancer::Passthrough as i32;
    let (router, _) = new_router(&view);
    let picked = forward(router.route(vip()));
    assert_eq!(picked.address(), vip());
    assert!(picked.endpoint().is_none());
    assert_eq!(picked.service().name, "mongodb");
}

fn outlier(consecutive_errors: u32, max_ejection_percent: u32) -> Option<Outlier> {
    Some(Outlier {
        consecutive_errors,
        interval_ms: 10_000,
        base_ejection_ms: 30_000,
        max_ejection_percent,
    })
}

/// Fails connections to `target` until `failures` of them were reported.
fn fail(router: &Router, target: &str, failures: u32) {
    let mut reported = 0;
    for _ in 0..1_000 {
        let picked = forward(router.route(vip()));
        if picked.address().to_string() == target {
            picked.connect_failed();
            reported += 1;
            if reported == failures {
                return;
            }
        } else {
            picked.connected();
        }
    }
    panic!("{target} was picked only {reported} times");
}

#[test]
fn consecutive_failures_eject_for_base_times_n_and_the_endpoint_returns() {
    let mut view = two_versions(vec![]);
    view.clusters[0].outlier = outlier(3, 50);
    let (router, clock) = new_router(&view);
    let default = format!("outbound|27017||{HOST}");

    fail(&router, "10.0.0.1:27017", 3);
    let stats = router.cluster_stats(&default).unwrap();
    assert_eq!(
        stats
            .endpoints
            .iter()
            .map(|e| e.ejected)
            .collect::<Vec<_>>(),
        [true, false, false]
    );
    for _ in 0..30 {
        assert_ne!(address(router.route(vip())), "10.0.0.1:27017");
    }

    // The first ejection lasts base_ejection_ms.
    clock.advance(Duration::from_millis(29_999));
    assert!(router.cluster_stats(&default).unwrap().endpoints[0].ejected);
    clock.advance(Duration::from_millis(1));
    assert!(!router.cluster_stats(&default).unwrap().endpoints[0].ejected);
    let back = (0..3)
        .map(|_| address(router.route(vip())))
        .filter(|a| a == "10.0.0.1:27017")
        .count();
    assert_eq!(back, 1);

    // Ejected again at once: the second lasts twice as long.
    fail(&router, "10.0.0.1:27017", 3);
    clock.advance(Duration::from_millis(59_999));
    assert!(router.cluster_stats(&default).unwrap().endpoints[0].ejected);
    clock.advance(Duration::from_millis(1));
    assert!(!router.cluster_stats(&default).unwrap().endpoints[0].ejected);

    // After 2 intervals in service the multiplier is back to 0: the next lasts base × 1.
    clock.advance(Duration::from_millis(20_000));
    fail(&router, "10.0.0.1:27017", 3);
    clock.advance(Duration::from_millis(29_999));
    assert!(router.cluster_stats(&default).unwrap().endpoints[0].ejected);
    clock.advance(Duration::from_millis(1));
    assert!(!router.cluster_stats(&default).unwrap().endpoints[0].ejected);
}

#[test]
fn a_success_resets_the_consecutive_failures() {
    let mut view = two_versions(vec![route(&[("v2", 100)])]);
    view.clusters[2].outlier = outlier(2, 100);
    let (router, _) = new_router(&view);
    forward(router.route(vip())).connect_failed();
    forward(router.route(vip())).connected();
    forward(router.route(vip())).connect_failed();
    let stats = router
        .cluster_stats(&format!("outbound|27017|v2|{HOST}"))
        .unwrap();
    assert_eq!(stats.endpoints[0].consecutive_failures, 1);
    assert!(!stats.endpoints[0].ejected);
}

#[test]
fn ejections_stop_at_max_ejection_percent_but_one_is_always_allowed() {
    // 10 % of 3 endpoints rounds to none; Envoy still ejects one, never a second.
    let mut view = two_versions(vec![]);
    view.clusters[0].outlier = outlier(1, 10);
    let (router, _) = new_router(&view);
    let default = format!("outbound|27017||{HOST}");
    fail(&router, "10.0.0.1:27017", 1);
    fail(&router, "10.0.0.2:27017", 1);
    fail(&router, "10.0.0.2:27017", 1);
    let stats = router.cluster_stats(&default).unwrap();
    assert_eq!(
        stats
            .endpoints
            .iter()
            .map(|e| e.ejected)
            .collect::<Vec<_>>(),
        [true, false, false]
    );
    assert_eq!(stats.endpoints[1].consecutive_failures, 2);

    // 67 % allows two of three.
    let mut view = two_versions(vec![]);
    view.clusters[0].outlier = outlier(1, 67);
    let (router, _) = new_router(&view);
    fail(&router, "10.0.0.1:27017", 1);
    fail(&router, "10.0.0.2:27017", 1);
    fail(&router, "10.0.0.3:27017", 1);
    let stats = router.cluster_stats(&default).unwrap();
    assert_eq!(
        stats
            .endpoints
            .iter()
            .map(|e| e.ejected)
            .collect::<Vec<_>>(),
        [true, true, false]
    );
}

#[test]
fn a_cluster_whose_only_endpoint_is_ejected_has_no_endpoint() {
    let mut view = two_versions(vec![route(&[("v2", 100)])]);
    view.clusters[2].outlier = outlier(1, 10);
    let (router, clock) = new_router(&view);
    forward(router.route(vip())).connect_failed();
    let refused = router.route(vip());
    assert_eq!(refused.response_flag(), Some("UH"));
    match refused {
        Decision::NoEndpoint(refused) => {
            assert_eq!(refused.cluster(), format!("outbound|27017|v2|{HOST}"))
        }
        other => panic!("expected NoEndpoint, got {other:?}"),
    }
    clock.advance(Duration::from_secs(30));
    assert_eq!(address(router.route(vip())), "10.0.0.3:27017");
}

#[test]
fn an_empty_cluster_has_no_endpoint() {
    let mut view = two_versions(vec![route(&[("v2", 100)])]);
    view.clusters[2].endpoints.clear();
    let (router, _) = new_router(&view);
    assert!(matches!(router.route(vip()), Decision::NoEndpoint(_)));
}

#[test]
fn incremental_updates_keep_counts_and_ejections() {
    let mut view = two_versions(vec![]);
    view.clusters[0].max_connections = 2;
    view.clusters[0].outlier = outlier(1, 50);
    let (router, _) = new_router(&view);
    let default = format!("outbound|27017||{HOST}");
    fail(&router, "10.0.0.1:27017", 1);
    let held = forward(router.route(vip()));
    let held_address = held.address().to_string();

    // Add an endpoint to the default cluster and retarget the service to v2.
    let mut changed = view.clusters[0].clone();
    changed.endpoints.push(endpoint("10.0.0.4:27017", "v3"));
    let update = ViewUpdate {
        version: 2,
        full: false,
        services: vec![service(vec![route(&[("v2", 100)])])],
        clusters: vec![changed],
        ..ViewUpdate::default()
    };
    router.apply(&update).expect("the update applies");
    assert_eq!(router.version(), 2);
    assert_eq!(forward(router.route(vip())).subset(), "v2");

    let stats = router.cluster_stats(&default).unwrap();
    assert_eq!(stats.open, 1);
    assert_eq!(stats.endpoints.len(), 4);
    assert!(stats.endpoints[0].ejected, "{stats:?}");
    let held_stats = stats
        .endpoints
        .iter()
        .find(|e| e.address.to_string() == held_address)
        .unwrap();
    assert_eq!(held_stats.open, 1);

    // The limit still counts the connection opened before the update.
    let update = ViewUpdate {
        version: 3,
        full: false,
        services: vec![service(vec![])],
        ..ViewUpdate::default()
    };
    router.apply(&update).expect("the update applies");
    let second = forward(router.route(vip()));
    assert!(matches!(router.route(vip()), Decision::Overflow(_)));
    drop((held, second));
    assert_eq!(router.cluster_stats(&default).unwrap().open, 0);
}

#[test]
fn removals_apply_and_full_updates_replace_everything() {
    let (router, _) = new_router(&two_versions(vec![route(&[("v2", 100)])]));
    let update = ViewUpdate {
        version: 2,
        full: false,
        removed_services: vec![HOST.to_string()],
        ..ViewUpdate::default()
    };
    router.apply(&update).expect("the update applies");
    assert!(matches!(router.route(vip()), Decision::Passthrough));
    assert_eq!(router.view().clusters.len(), 3);

    router
        .apply(&two_versions(vec![]))
        .expect("the view applies");
    assert_eq!(router.view().services.len(), 1);
    assert_eq!(forward(router.route(vip())).subset(), "");
}

#[test]
fn inconsistent_updates_are_refused_and_the_old_table_stays() {
    let (router, _) = new_router(&two_versions(vec![route(&[("v2", 100)])]));

    // Removing the cluster a route leads to.
    let update = ViewUpdate {
        version: 2,
        full: false,
        removed_clusters: vec![format!("outbound|27017|v2|{HOST}")],
        ..ViewUpdate::default()
    };
    let error = router.apply(&update).unwrap_err();
    assert_eq!(error.version, 2);
    assert_eq!(
        error.problems,
        [Problem::UnknownCluster {
            host: HOST.to_string(),
            origin: "default/mongodb".to_string(),
            cluster: format!("outbound|27017|v2|{HOST}"),
        }]
    );
    assert_eq!(
        error.to_string(),
        "view update 2 refused: service \"mongodb.default.svc.cluster.local\": route from \
         \"default/mongodb\" leads to unknown cluster \
         \"outbound|27017|v2|mongodb.default.svc.cluster.local\""
    );
    assert_eq!(error.problems[0].code(), "unknown_cluster");
    assert_eq!(router.version(), 1);
    assert_eq!(address(router.route(vip())), "10.0.0.3:27017");

    // Every problem of a bad full view is reported.
    let mut bad = two_versions(vec![route(&[("v9", 100)])]);
    bad.version = 3;
    bad.services[0].addresses.push("not-an-ip".to_string());
    bad.clusters[1].endpoints[0].address = "10.0.0.1".to_string();
    bad.clusters.remove(0);
    let error = router.apply(&bad).unwrap_err();
    assert_eq!(
        error.problems,
        [
            Problem::BadEndpointAddress {
                cluster: format!("outbound|27017|v1|{HOST}"),
                address: "10.0.0.1".to_string(),
            },
            Problem::BadServiceAddress {
                host: HOST.to_string(),
                address: "not-an-ip".to_string(),
            },
            Problem::UnknownCluster {
                host: HOST.to_string(),
                origin: "default/mongodb".to_string(),
                cluster: format!("outbound|27017|v9|{HOST}"),
            },
            Problem::MissingDefaultCluster {
                host: HOST.to_string(),
                cluster: format!("outbound|27017||{HOST}"),
            },
        ]
    );
    assert_eq!(router.version(), 1);
    assert_eq!(address(router.route(vip())), "10.0.0.3:27017");
}

#[test]
fn a_route_whose_weights_sum_to_zero_is_refused() {
    let error = Router::from_view(&two_versions(vec![route(&[("v1", 0), ("v2", 0)])])).unwrap_err();
    assert_eq!(
        error.problems,
        [Problem::EmptyRoute {
            host: HOST.to_string(),
            origin: "default/mongodb".to_string(),
        }]
    );
}

#[test]
fn two_services_on_one_address_are_refused() {
    let mut other = service(vec![]);
    other.host = "other.default.svc.cluster.local".to_string();
    let mut view = two_versions(vec![]);
    let mut other_cluster = cluster("", vec![]);
    other_cluster.name = "outbound|27017||other.default.svc.cluster.local".to_string();
    other_cluster.host = other.host.clone();
    view.services.push(other);
    view.clusters.push(other_cluster);
    let error = Router::from_view(&view).unwrap_err();
    assert_eq!(
        error.problems,
        [Problem::AddressConflict {
            address: vip(),
            first: HOST.to_string(),
            second: "other.default.svc.cluster.local".to_string(),
        }]
    );
}

#[test]
fn routers_and_picks_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Router>();
    send_sync::<Picked>();
    send_sync::<Decision>();
}

#[test]
fn concurrent_decisions_and_updates_leave_no_slot_behind() {
    let mut view = two_versions(vec![route(&[("v1", 50), ("v2", 50)])]);
    for cluster in &mut view.clusters {
        cluster.max_connections = 1_000;
        cluster.load_balancer = LoadBalancer::LeastConn as i32;
    }
    let (router, _) = new_router(&view);
    let router = Arc::new(router);
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let router = Arc::clone(&router);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..5_000 {
                    if let Decision::Forward(p) = router.route(vip()) {
                        held.push(p);
                    }
                    if i % 3 == 0 {
                        held.clear();
                    }
                }
            })
        })
        .collect();
    for version in 2..50 {
        let mut update = view.clone();
        update.version = version;
        update.full = version % 2 == 0;
        update.clusters[2]
            .endpoints
            .truncate(if version % 3 == 0 { 0 } else { 1 });
        router.apply(&update).expect("the update applies");
    }
    for worker in workers {
        worker.join().expect("a worker finished");
    }
    for cluster in router.view().clusters {
        let stats = router.cluster_stats(&cluster.name).unwrap();
        assert_eq!(stats.open, 0, "{}", cluster.name);
        assert!(stats.endpoints.iter().all(|e| e.open == 0), "{stats:?}");
    }
}
