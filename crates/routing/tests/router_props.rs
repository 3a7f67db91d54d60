//! Arbitrary update sequences never panic the router, decisions never panic, and every
//! slot a decision takes is given back.

use std::sync::Arc;
use std::time::Duration;

use meshmeter_routing::view::{
    Cluster, Endpoint, Outlier, Route, Service, ServicePort, ViewUpdate, WeightedCluster,
};
use meshmeter_routing::{Decision, ManualClock, Router};
use proptest::prelude::*;

const HOSTS: [&str; 3] = ["a.ns.svc.cluster.local", "b.ns.svc.cluster.local", "c"];
const ADDRESSES: [&str; 4] = ["10.0.0.1", "10.0.0.2", "::1", "bogus"];
const PORTS: [u32; 4] = [80, 27017, 0, 70_000];
const ENDPOINTS: [&str; 5] = [
    "10.1.0.1:80",
    "10.1.0.2:80",
    "10.1.0.3:27017",
    "[::2]:80",
    "10.1.0.4",
];

/// Six default clusters (three hosts, two valid ports), then two names no service uses.
fn cluster_name(i: usize) -> String {
    let port = PORTS[(i / HOSTS.len()) % 2];
    let host = HOSTS.get(i % 8).copied().unwrap_or("orphan");
    format!(
        "outbound|{port}||{}",
        if i < 6 { HOSTS[i % HOSTS.len()] } else { host }
    )
}

/// Mostly valid indices, sometimes the invalid tail of the table.
fn index(valid: usize, all: usize) -> impl Strategy<Value = usize> {
    prop_oneof![9 => 0..valid, 1 => 0..all]
}

/// A service of `HOSTS[host]`: usually its own address (`ADDRESSES[host]`), sometimes
/// another service's or an invalid one; usually valid, distinct ports.
fn service(host: usize) -> impl Strategy<Value = Service> {
    (
        prop_oneof![9 => Just(host), 1 => 0..ADDRESSES.len()],
        prop_oneof![
            9 => prop::sample::subsequence(vec![PORTS[0], PORTS[1]], 0..=2),
            1 => prop::collection::vec(prop::sample::select(PORTS.to_vec()), 0..3),
        ],
        prop::collection::vec(
            (
                prop::collection::vec((0..8usize, prop_oneof![9 => 1..3u32, 1 => Just(0)]), 0..3),
                prop::collection::vec(index(2, PORTS.len()), 0..2),
                prop::option::of(Just("10.0.0.0/8".to_string())),
            ),
            0..3,
        ),
    )
        .prop_map(move |(address, ports, routes)| Service {
            host: HOSTS[host].to_string(),
            name: "svc".to_string(),
            namespace: "ns".to_string(),
            addresses: vec![ADDRESSES[address].to_string()],
            ports: ports
                .into_iter()
                .map(|port| ServicePort {
                    port,
                    name: String::new(),
                })
                .collect(),
            routes: routes
                .into_iter()
                .map(|(destinations, ports, subnet)| Route {
                    ports: ports.iter().map(|p| PORTS[*p]).collect(),
                    destination_subnets: subnet.into_iter().collect(),
                    destinations: destinations
                        .into_iter()
                        .map(|(c, weight)| WeightedCluster {
                            cluster: cluster_name(c),
                            weight,
                        })
                        .collect(),
                    origin: "ns/vs".to_string(),
                })
                .collect(),
        })
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        0..8usize,
        prop::collection::vec(index(4, ENDPOINTS.len()), 0..4),
        prop_oneof![9 => 0..4i32, 1 => 0..6i32],
        0..3u32,
        prop::option::of((0..3u32, 0..3u32, 0..101u32)),
    )
        .prop_map(|(i, endpoints, lb, max, outlier)| Cluster {
            name: cluster_name(i),
            host: HOSTS[i % HOSTS.len()].to_string(),
            port: PORTS[(i / HOSTS.len()) % 2],
            load_balancer: lb,
            max_connections: max,
            outlier: outlier.map(|(errors, base, percent)| Outlier {
                consecutive_errors: errors,
                interval_ms: 1_000,
                base_ejection_ms: u64::from(base) * 1_000,
                max_ejection_percent: percent,
            }),
            endpoints: endpoints
                .iter()
                .map(|e| Endpoint {
                    address: ENDPOINTS[*e].to_string(),
                    ..Endpoint::default()
                })
                .collect(),
            ..Cluster::default()
        })
}

fn update() -> impl Strategy<Value = ViewUpdate> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::sample::subsequence(vec![0, 1, 2], 0..=3)
            .prop_flat_map(|hosts| hosts.into_iter().map(service).collect::<Vec<_>>()),
        prop::collection::vec(cluster(), 0..6),
        prop::collection::vec(0..HOSTS.len(), 0..2),
        prop::collection::vec(0..8usize, 0..2),
    )
        .prop_map(
            |(full, complete, services, mut clusters, removed_s, removed_c)| {
                // Often every default cluster, so that services are routable.
                clusters.dedup_by(|a, b| a.name == b.name);
                if complete {
                    for i in 0..6 {
                        if !clusters.iter().any(|c| c.name == cluster_name(i)) {
                            clusters.push(Cluster {
                                name: cluster_name(i),
                                endpoints: vec![Endpoint {
                                    address: ENDPOINTS[i % 4].to_string(),
                                    ..Endpoint::default()
                                }],
                                ..Cluster::default()
                            });
                        }
                    }
                }
                ViewUpdate {
                    version: 1,
                    full,
                    services,
                    removed_services: removed_s.iter().map(|h| HOSTS[*h].to_string()).collect(),
                    clusters,
                    removed_clusters: removed_c.into_iter().map(cluster_name).collect(),
                    inbound: None,
                }
            },
        )
}

static FORWARDED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

proptest! {
    #[test]
    fn updates_and_decisions_never_panic_and_release_every_slot(
        updates in prop::collection::vec(update(), 1..6),
        actions in prop::collection::vec((0..ADDRESSES.len(), 0..PORTS.len(), 0..4u8), 0..40),
    ) {
        let clock = Arc::new(ManualClock::new());
        let router = Router::with_clock_and_seed(clock.clone(), 3);
        let mut held = Vec::new();
        let mut forwarded = 0;
        for update in &updates {
            let before = router.view();
            if router.apply(update).is_err() {
                prop_assert_eq!(router.view(), before);
            }
            for (address, port, action) in &actions {
                let Ok(ip) = ADDRESSES[*address].parse() else { continue };
                let port = u16::try_from(PORTS[*port]).unwrap_or(1);
                if let Decision::Forward(picked) = router.route(std::net::SocketAddr::new(ip, port)) {
                    match action {
                        0 => picked.connect_failed(),
                        1 => picked.connected(),
                        2 => clock.advance(Duration::from_millis(700)),
                        _ => {}
                    }
                    held.push(picked);
                }
            }
        }
        forwarded += held.len();
        drop(held);
        for cluster in router.view().clusters {
            let stats = router.cluster_stats(&cluster.name).unwrap();
            prop_assert_eq!(stats.open, 0);
            prop_assert!(stats.endpoints.iter().all(|e| e.open == 0));
        }
        FORWARDED.fetch_add(forwarded, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn the_generated_views_route_connections() {
    // The property above is only meaningful if the generated views forward connections.
    updates_and_decisions_never_panic_and_release_every_slot();
    assert!(FORWARDED.load(std::sync::atomic::Ordering::Relaxed) > 100);
}
