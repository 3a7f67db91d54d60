//! The engine end to end in one process: configuration text in, bags in, exact Prometheus
//! text and access-log lines out.

use std::sync::Arc;

use meshmeter_attributes::{json::bag_from_json, Manifest};
use meshmeter_config::{load_str, LoadOptions};
use meshmeter_engine::{DispatchOutcome, Engine, EngineOptions, Workloads};
use meshmeter_selfmetrics::SelfMetrics;
use meshmeter_stdio::Output;
use meshmeter_workloads::{Service, Workload, WorkloadTable};
use serde_json::json;

const SEED: &str = include_str!("data/tcp-metrics.yaml");

fn workload(name: &str, app: &str, version: &str, ip: &str) -> Workload {
    let mut w = Workload::new(name, "default");
    w.labels = [("app", app), ("version", version)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    w.ips = vec![ip.parse().unwrap()];
    w
}

fn table() -> WorkloadTable {
    let mut mongo = workload("mongodb-v1", "mongodb", "v1", "127.0.0.3");
    mongo.services = vec![Service::from_host(
        "mongodb.default.svc.cluster.local",
        "default",
    )];
    WorkloadTable::new(vec![
        workload("ratings-v2", "ratings", "v2", "127.0.0.2"),
        mongo,
    ])
    .unwrap()
}

fn engine(files: &[(&str, &str)], defaults: bool, log: Option<std::path::PathBuf>) -> Engine {
    let options = LoadOptions {
        include_defaults: defaults,
        ..LoadOptions::default()
    };
    let snapshot = load_str(files, &options).unwrap_or_else(|d| panic!("config: {d}"));
    Engine::new(
        Arc::new(snapshot),
        Workloads::Static(Arc::new(table())),
        Arc::new(SelfMetrics::new()),
        EngineOptions {
            log_output: log.map(Output::File),
            ..EngineOptions::default()
        },
    )
    .unwrap()
}

fn metrics(engine: &Engine) -> String {
    let mut out = String::new();
    engine.encode_metrics(&mut out);
    out
}

fn tcp_bag(sent: i64, received: i64) -> serde_json::Value {
    json!({
        "context.protocol": "tcp",
        "connection.sent.bytes": sent,
        "connection.received.bytes": received,
        "source.ip": "127.0.0.2",
        "destination.ip": "127.0.0.3",
        "destination.uid": "kubernetes://mongodb-v1.default",
    })
}

#[test]
fn seed_rule_counts_bytes_with_identity_from_the_registry() {
    let engine = engine(&[("tcp-metrics.yaml", SEED)], false, None);
    let manifest = Manifest::istio();
    for (sent, received) in [(100, 250), (7, 3)] {
        let bag = bag_from_json(&manifest, &tcp_bag(sent, received)).unwrap();
        assert_eq!(
            engine.dispatch_bag(&bag),
            DispatchOutcome {
                rules_matched: 1,
                instances: 2,
                errors: 0
            }
        );
    }
    assert_eq!(
        metrics(&engine),
        "# HELP istio_mongo_received_bytes mongo_received_bytes\n\
         # TYPE istio_mongo_received_bytes counter\n\
         istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 253\n\
         # HELP istio_mongo_sent_bytes mongo_sent_bytes\n\
         # TYPE istio_mongo_sent_bytes counter\n\
         istio_mongo_sent_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 107\n"
    );
}

#[test]
fn rules_in_a_namespace_see_only_that_namespace() {
    let engine = engine(&[("tcp-metrics.yaml", SEED)], false, None);
    let manifest = Manifest::istio();
    // Identity says the destination lives in `other`: the seed's rule (namespace default)
    // must not apply.
    let mut bag = tcp_bag(1, 1);
    bag["destination.namespace"] = json!("other");
    let outcome = engine.dispatch_bag(&bag_from_json(&manifest, &bag).unwrap());
    assert_eq!(outcome.rules_matched, 0);
    // An outbound report is scoped by its source's namespace (default, from the registry).
    bag["context.reporter.kind"] = json!("outbound");
    let outcome = engine.dispatch_bag(&bag_from_json(&manifest, &bag).unwrap());
    assert_eq!(outcome.rules_matched, 1);
}

#[test]
fn a_failing_instance_does_not_drop_the_others() {
    let broken = SEED.replace(
        "value: connection.sent.bytes | 0",
        "value: connection.sent.bytes",
    );
    let engine = engine(&[("tcp-metrics.yaml", &broken)], false, None);
    let manifest = Manifest::istio();
    let mut bag = tcp_bag(0, 9);
    bag.as_object_mut().unwrap().remove("connection.sent.bytes");
    let outcome = engine.dispatch_bag(&bag_from_json(&manifest, &bag).unwrap());
    assert_eq!(
        outcome,
        DispatchOutcome {
            rules_matched: 1,
            instances: 1,
            errors: 1
        }
    );
    let text = metrics(&engine);
    assert!(text.contains("istio_mongo_received_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 9\n"), "{text}");
    assert!(!text.contains("istio_mongo_sent_bytes{"), "{text}");
    let mut own = String::new();
    engine.self_metrics().encode(&mut own);
    assert!(
        own.contains(
            "meshmeter_dispatch_errors_total{instance=\"mongosentbytes.instance.default\"} 1\n"
        ),
        "{own}"
    );
}

#[test]
fn istio_defaults_count_connections_and_bytes_and_log_them() {
    let dir = std::env::temp_dir().join(format!("meshmeter-engine-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("access.log");
    let _ = std::fs::remove_file(&log);
    let engine = engine(&[("tcp-metrics.yaml", SEED)], true, Some(log.clone()));
    let manifest = Manifest::istio();
    for (event, sent, received) in [("open", 0, 0), ("continue", 10, 20), ("close", 5, 1)] {
        let mut bag = tcp_bag(sent, received);
        bag["connection.event"] = json!(event);
        bag["context.reporter.kind"] = json!("inbound");
        engine.dispatch_bag(&bag_from_json(&manifest, &bag).unwrap());
    }
    let text = metrics(&engine);
    for line in [
        "istio_tcp_connections_opened_total{",
        "istio_tcp_connections_closed_total{",
    ] {
        let sample = text
            .lines()
            .find(|l| l.starts_with(line))
            .unwrap_or_else(|| panic!("{line} missing in\n{text}"));
        assert!(sample.ends_with(" 1"), "{sample}");
        assert!(
            sample.contains("destination_workload=\"mongodb-v1\""),
            "{sample}"
        );
        assert!(
            sample.contains("source_workload=\"ratings-v2\""),
            "{sample}"
        );
    }
    let sent = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
        .unwrap();
    assert!(sent.ends_with(" 15"), "{sent}");
    let received = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_received_bytes_total{"))
        .unwrap();
    assert!(received.ends_with(" 21"), "{received}");
    engine.flush_logs();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[1]["instance"], "tcpaccesslog.logentry.istio-system");
    assert_eq!(lines[1]["connectionEvent"], "continue");
    assert_eq!(lines[1]["sentBytes"], 10);
    assert_eq!(lines[1]["sourceWorkload"], "ratings-v2");
    assert_eq!(
        lines[1]["destinationServiceHost"],
        "mongodb.default.svc.cluster.local"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_keeps_unchanged_counters() {
    let engine = engine(&[("tcp-metrics.yaml", SEED)], false, None);
    let manifest = Manifest::istio();
    engine.dispatch_bag(&bag_from_json(&manifest, &tcp_bag(100, 250)).unwrap());
    // Same metrics, a new description on one and a changed label set on the other.
    let changed = SEED
        .replacen(
            "- name: mongo_sent_bytes # Prometheus metric name",
            "- name: mongo_sent_bytes\n      description: bytes to clients",
            1,
        )
        .replace(
            "      - source_service\n      - source_version\n      - destination_version\n---\n# Rule",
            "      - source_service\n      - source_version\n---\n# Rule",
        )
        .replace(
            "    value: connection.received.bytes | 0 # uses a TCP-specific attribute\n    dimensions:\n      source_service: source.workload.name | \"unknown\"\n      source_version: source.labels[\"version\"] | \"unknown\"\n      destination_version: destination.labels[\"version\"] | \"unknown\"",
            "    value: connection.received.bytes | 0\n    dimensions:\n      source_service: source.workload.name | \"unknown\"\n      source_version: source.labels[\"version\"] | \"unknown\"",
        );
    let snapshot = load_str(
        &[("tcp-metrics.yaml", &changed)],
        &LoadOptions {
            include_defaults: false,
            ..LoadOptions::default()
        },
    )
    .unwrap_or_else(|d| panic!("{d}"));
    engine.apply(Arc::new(snapshot), 2).unwrap();
    engine.dispatch_bag(&bag_from_json(&manifest, &tcp_bag(1, 1)).unwrap());
    assert_eq!(
        metrics(&engine),
        "# HELP istio_mongo_received_bytes mongo_received_bytes\n\
         # TYPE istio_mongo_received_bytes counter\n\
         istio_mongo_received_bytes{source_service=\"ratings-v2\",source_version=\"v2\"} 1\n\
         # HELP istio_mongo_sent_bytes bytes to clients\n\
         # TYPE istio_mongo_sent_bytes counter\n\
         istio_mongo_sent_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"} 101\n"
    );
}

#[test]
fn access_log_losses_are_exported_per_output() {
    let engine = engine(
        &[("tcp-metrics.yaml", SEED)],
        true,
        Some("/dev/full".into()),
    );
    let manifest = Manifest::istio();
    let mut bag = tcp_bag(1, 2);
    bag["connection.event"] = json!("close");
    bag["context.reporter.kind"] = json!("inbound");
    engine.dispatch_bag(&bag_from_json(&manifest, &bag).unwrap());
    engine.flush_logs();
    let mut text = String::new();
    engine.self_metrics().encode(&mut text);
    assert!(
        text.contains("\nmeshmeter_access_log_dropped_lines_total{output=\"/dev/full\"} 0\n"),
        "{text}"
    );
    let errors = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("meshmeter_access_log_write_errors_total{output=\"/dev/full\"} ")
        })
        .unwrap_or_else(|| panic!("write errors missing in\n{text}"));
    // /dev/full refuses every flush; how many flushes ran depends on the writer's batching.
    assert_ne!(errors, "0", "{text}");
}
