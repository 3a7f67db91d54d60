//! Dispatch cost per bag: the seed's TCP report through the seed's configuration plus Istio's
//! default TCP telemetry (four metrics and the seed's two), identity from a workload table.
//! The access log goes to a file so that the measurement is not of the terminal.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use meshmeter_attributes::{json::bag_from_json, Bag, Manifest};
use meshmeter_config::{load_str, LoadOptions};
use meshmeter_engine::{Engine, EngineOptions, Workloads};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_stdio::Output;
use meshmeter_workloads::{Workload, WorkloadTable};

const SEED: &str = include_str!("../tests/data/tcp-metrics.yaml");

fn engine(with_defaults: bool) -> Engine {
    let options = LoadOptions {
        include_defaults: with_defaults,
        ..LoadOptions::default()
    };
    let snapshot = load_str(&[("tcp-metrics.yaml", SEED)], &options).expect("seed config loads");
    let mut ratings = Workload::new("ratings-v2", "default");
    ratings.labels = [("app", "ratings"), ("version", "v2")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    ratings.ips = vec!["127.0.0.2".parse().unwrap()];
    let mut mongo = Workload::new("mongodb-v1", "default");
    mongo.labels = [("app", "mongodb"), ("version", "v1")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    mongo.ips = vec!["127.0.0.3".parse().unwrap()];
    mongo.services = vec![meshmeter_workloads::Service::from_host(
        "mongodb.default.svc.cluster.local",
        "default",
    )];
    let table = WorkloadTable::new(vec![ratings, mongo]).unwrap();
    let log = std::env::temp_dir().join(format!("meshmeter-bench-{}.log", std::process::id()));
    Engine::new(
        Arc::new(snapshot),
        Workloads::Static(Arc::new(table)),
        Arc::new(SelfMetrics::new()),
        EngineOptions {
            log_output: Some(Output::File(log)),
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let manifest = Manifest::istio();
    let bag = bag_from_json(
        &manifest,
        &serde_json::json!({
            "context.protocol": "tcp",
            "connection.event": "continue",
            "connection.sent.bytes": 100,
            "connection.received.bytes": 250,
            "connection.sent.bytes_total": 1000,
            "connection.received.bytes_total": 2500,
            "source.ip": "127.0.0.2",
            "destination.ip": "127.0.0.3",
            "destination.port": 27017,
            "destination.uid": "kubernetes://mongodb-v1.default",
            "context.reporter.kind": "inbound",
        }),
    )
    .unwrap();
    let mut group = c.benchmark_group("dispatch");
    group.throughput(Throughput::Elements(1));
    for (name, defaults) in [("seed_rule_only", false), ("seed_and_istio_defaults", true)] {
        let engine = engine(defaults);
        let runtime = engine.runtime();
        let table = engine.workloads().current();
        // A bag that borrows, as the decoder's do, so that identity can borrow from `table`.
        let mut b = Bag::new(&manifest);
        for (id, value) in bag.iter() {
            b.set(id, value.borrowed());
        }
        group.bench_function(name, |bench| {
            bench.iter(|| engine.dispatch(&runtime, &table, &mut b));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
