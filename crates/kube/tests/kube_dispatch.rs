//! The engine with identity from the stand-in API server: what a transparent sidecar reports
//! for an outbound connection to a Service's cluster IP (kube-proxy translates it on the node,
//! not in the pod) is labelled with that Service, and with no destination workload.

use std::sync::Arc;

use meshmeter_attributes::{json::bag_from_json, Manifest};
use meshmeter_config::{load_str, LoadOptions};
use meshmeter_engine::{DispatchOutcome, Engine, EngineOptions, Workloads};
use meshmeter_kube::standin::StandIn;
use meshmeter_kube::{IdentityOptions, IdentitySource, WatchMetrics};
use meshmeter_selfmetrics::SelfMetrics;
use serde_json::json;

const SEED: &str = include_str!("../../engine/tests/data/tcp-metrics.yaml");

#[tokio::test]
async fn an_outbound_report_to_a_cluster_ip_is_labelled_with_its_service() {
    let api = StandIn::start().await;
    api.apply_list("pods", include_str!("data/pods.json"));
    api.apply_list("replicasets", include_str!("data/replicasets.json"));
    api.apply_list("services", include_str!("data/services.json"));
    api.apply_list("endpointslices", include_str!("data/endpointslices.json"));
    let metrics = WatchMetrics::new(Arc::new(SelfMetrics::new()));
    let source = IdentitySource::start(api.client(), IdentityOptions::default(), &metrics);
    source.synced().wait().await;

    let options = LoadOptions {
        include_defaults: true,
        ..LoadOptions::default()
    };
    let snapshot = load_str(&[("tcp-metrics.yaml", SEED)], &options).expect("seed config loads");
    let engine = Engine::new(
        Arc::new(snapshot),
        Workloads::Dynamic(source.registry()),
        Arc::new(SelfMetrics::new()),
        EngineOptions::default(),
    )
    .expect("engine");
    let manifest = Manifest::istio();
    // ratings-v2's sidecar: its connection to mongodb's cluster IP, as it saw it.
    let bag = bag_from_json(
        &manifest,
        &json!({
            "context.protocol": "tcp",
            "context.reporter.kind": "outbound",
            "connection.sent.bytes": 120,
            "connection.received.bytes": 45,
            "source.ip": "10.244.0.12",
            "destination.ip": "10.96.119.29",
            "destination.port": 27017,
        }),
    )
    .expect("bag");
    assert_eq!(
        engine.dispatch_bag(&bag),
        // The seed's rule (two metrics) and Istio's default TCP rules (two metrics, the
        // access log; the kubernetes attributes rule and the connection-event rules with
        // nothing to do for a report without an event).
        DispatchOutcome {
            rules_matched: 5,
            instances: 5,
            errors: 0
        }
    );
    let mut text = String::new();
    engine.encode_metrics(&mut text);
    let sent = text
        .lines()
        .find(|l| l.starts_with("istio_tcp_sent_bytes_total{"))
        .unwrap_or_else(|| panic!("no istio_tcp_sent_bytes_total in\n{text}"));
    assert_eq!(
        sent,
        "istio_tcp_sent_bytes_total{connection_security_policy=\"unknown\",\
         destination_app=\"unknown\",destination_principal=\"unknown\",\
         destination_service=\"mongodb.default.svc.cluster.local\",\
         destination_service_name=\"mongodb\",destination_service_namespace=\"default\",\
         destination_version=\"unknown\",destination_workload=\"unknown\",\
         destination_workload_namespace=\"unknown\",reporter=\"source\",response_flags=\"-\",\
         source_app=\"ratings\",source_principal=\"unknown\",source_version=\"v2\",\
         source_workload=\"ratings-v2\",source_workload_namespace=\"default\"} 120"
    );
    // The seed's own metrics count it too, with the source's identity.
    assert!(
        text.contains("istio_mongo_sent_bytes{destination_version=\"unknown\",source_service=\"ratings-v2\",source_version=\"v2\"} 120\n"),
        "{text}"
    );
}
