//! Dispatch cost per bag with identity from the Kubernetes registry (10,002 pods, filled by
//! the watches from the stand-in API server) against identity from a workloads-file table of
//! the same two workloads: the seed's TCP report through the seed's rule. A third case sends
//! the report from an address no pod has (NAT) with the source's principal, which then names
//! the source.

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshmeter_attributes::{json::bag_from_json, Bag, Manifest};
use meshmeter_config::{load_str, LoadOptions};
use meshmeter_engine::{Engine, EngineOptions, Workloads};
use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{IdentityOptions, IdentitySource, WatchMetrics};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_workloads::{Service, Workload, WorkloadTable};
use serde_json::json;

const SEED: &str = include_str!("../../engine/tests/data/tcp-metrics.yaml");

fn engine(workloads: Workloads) -> Engine {
    let options = LoadOptions {
        include_defaults: false,
        ..LoadOptions::default()
    };
    let snapshot = load_str(&[("tcp-metrics.yaml", SEED)], &options).expect("seed config loads");
    Engine::new(
        Arc::new(snapshot),
        workloads,
        Arc::new(SelfMetrics::new()),
        EngineOptions::default(),
    )
    .expect("engine")
}

fn file_table() -> WorkloadTable {
    let mut ratings = Workload::new("ratings-v2", "default");
    ratings.pod = "ratings-v2-66648f8776-kxshs".into();
    ratings.labels = [("app", "ratings"), ("version", "v2")]
        .into_iter()
        .collect();
    ratings.ips = vec!["10.244.0.12".parse().unwrap()];
    let mut mongo = Workload::new("mongodb-v1", "default");
    mongo.pod = "mongodb-v1-5b85cdf57c-vf44b".into();
    mongo.uid = "kubernetes://mongodb-v1-5b85cdf57c-vf44b.default".into();
    mongo.labels = [("app", "mongodb"), ("version", "v1")]
        .into_iter()
        .collect();
    mongo.ips = vec!["10.244.0.13".parse().unwrap()];
    mongo.services = vec![Service::from_host(
        "mongodb.default.svc.cluster.local",
        "default",
    )];
    WorkloadTable::new(vec![ratings, mongo]).unwrap()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (_api, source) = rt.block_on(async {
        let api = StandIn::start().await;
        api.apply_list("pods", include_str!("../tests/data/pods.json"));
        api.apply_list("replicasets", include_str!("../tests/data/replicasets.json"));
        api.apply_list("services", include_str!("../tests/data/services.json"));
        api.apply_list("endpointslices", include_str!("../tests/data/endpointslices.json"));
        for i in 0..10_000u32 {
            api.apply("pods", json!({"metadata": {"name": format!("p-{i:05}"), "namespace": "bulk", "labels": {"app": "bulk"}},
                "spec": {"containers": []}, "status": {"phase": "Running", "podIP": format!("10.250.{}.{}", i / 256, i % 256)}}));
        }
        let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
        let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
        tokio::time::timeout(Duration::from_secs(120), source.synced().wait())
            .await
            .expect("synced");
        (api, source)
    });
    assert_eq!(source.current().len(), 10_002);

    let manifest = Manifest::istio();
    let bag = bag_from_json(
        &manifest,
        &json!({
            "context.protocol": "tcp",
            "connection.event": "continue",
            "connection.sent.bytes": 100,
            "connection.received.bytes": 250,
            "source.ip": "10.244.0.12",
            "destination.ip": "10.244.0.13",
            "destination.port": 27017,
            "destination.uid": "kubernetes://mongodb-v1-5b85cdf57c-vf44b.default",
            "context.reporter.kind": "inbound",
        }),
    )
    .unwrap();
    let by_principal = bag_from_json(
        &manifest,
        &json!({
            "context.protocol": "tcp",
            "connection.event": "continue",
            "connection.sent.bytes": 100,
            "connection.received.bytes": 250,
            "source.ip": "192.168.0.1",
            "source.principal": "cluster.local/ns/default/sa/bookinfo-ratings-v2",
            "destination.ip": "10.244.0.13",
            "destination.port": 27017,
            "destination.uid": "kubernetes://mongodb-v1-5b85cdf57c-vf44b.default",
            "context.reporter.kind": "inbound",
        }),
    )
    .unwrap();
    let mut group = c.benchmark_group("dispatch_identity");
    group.throughput(Throughput::Elements(1));
    for (name, workloads, bag) in [
        (
            "workloads_file_table",
            Workloads::Static(Arc::new(file_table())),
            &bag,
        ),
        (
            "kubernetes_registry_10k_pods",
            Workloads::Dynamic(source.registry()),
            &bag,
        ),
        (
            "kubernetes_registry_10k_pods_by_principal",
            Workloads::Dynamic(source.registry()),
            &by_principal,
        ),
    ] {
        let engine = engine(workloads);
        let runtime = engine.runtime();
        let table = engine.workloads().current();
        let mut b = Bag::new(&manifest);
        for (id, value) in bag.iter() {
            b.set(id, value.borrowed());
        }
        // Both identities give the seed's series.
        engine.dispatch(&runtime, &table, &mut b);
        let mut text = String::new();
        let mut exposition = runtime.prometheus().exposition();
        while exposition.next_chunk(&mut text, 1 << 16) {}
        assert!(
            text.contains("istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 250"),
            "{name}:\n{text}"
        );
        group.bench_function(name, |bench| {
            bench.iter(|| engine.dispatch(&runtime, &table, &mut b));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
