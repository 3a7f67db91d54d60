//! A bad configuration object never blocks the good ones, over real sockets: a new file with
//! good objects and a broken one applies the good ones, `/metrics` shows the rejected count,
//! a broken edit of a counted metric's handler keeps counting with the previous version, and
//! the fix applies.

mod common;

use std::time::Duration;

use common::{data, eventually, samples, Running};
use meshmeter_attributes::{json::bag_from_json, Bag, Manifest};
use meshmeter_server::ServerOptions;
use meshmeter_wire::{Encoding, MixerClient, ReportEncoder};
use serde_json::json;

const WORKLOADS: &str = "workloads:
- name: ratings-v2
  namespace: default
  labels: {app: ratings, version: v2}
  ips: [127.0.0.2]
- name: mongodb-v1
  namespace: default
  labels: {app: mongodb, version: v1}
  ips: [127.0.0.3]
  services: [mongodb.default.svc.cluster.local]
";

const SEED_SENT: &str = "istio_mongo_sent_bytes{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"}";

/// Three good objects (a report counter) and a broken instance (a misspelt attribute).
const GOOD: &str = "apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: mongoreports
  namespace: default
spec:
  compiledTemplate: metric
  params:
    value: \"1\"
    dimensions:
      event: connection.event | \"unknown\"
---
apiVersion: config.istio.io/v1alpha2
kind: handler
metadata:
  name: eventhandler
  namespace: default
spec:
  compiledAdapter: prometheus
  params:
    metrics:
    - name: mongo_reports
      instance_name: mongoreports.instance.default
      kind: COUNTER
      label_names: [event]
---
apiVersion: config.istio.io/v1alpha2
kind: rule
metadata:
  name: eventrule
  namespace: default
spec:
  actions:
  - handler: eventhandler
    instances: [mongoreports]
";

const BROKEN: &str = "---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: broken
  namespace: default
spec:
  compiledTemplate: metric
  params:
    value: connection.sent.byte | 0
";

async fn report(client: &MixerClient, sent: i64) {
    let bag = bag_from_json(
        &Manifest::istio(),
        &json!({
            "context.protocol": "tcp",
            "context.reporter.kind": "inbound",
            "connection.event": "continue",
            "connection.sent.bytes": sent,
            "connection.received.bytes": 1,
            "source.ip": "127.0.0.2",
            "destination.ip": "127.0.0.3",
            "destination.uid": "kubernetes://mongodb-v1.default",
        }),
    )
    .unwrap();
    let bags: [Bag<'_>; 1] = [bag];
    let body = ReportEncoder::new(&Manifest::istio(), Encoding::Delta).encode_to_vec(&bags);
    client.report(bytes::Bytes::from(body), None).await.unwrap();
}

/// Waits until the self-metric `name` (no labels) is `value`.
async fn wait_for(server: &Running, name: &str, value: f64) {
    eventually(Duration::from_secs(10), || async {
        let text = server.scrape().await;
        (samples(&text, name).get(name) == Some(&value)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_broken_object_is_rejected_alone_and_counted() {
    let dir = std::env::temp_dir().join(format!("meshmeter-objects-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let seed = std::fs::read_to_string(data("tcp-metrics.yaml")).unwrap();
    let seed_path = dir.join("config/tcp-metrics.yaml");
    let extra_path = dir.join("config/extra.yaml");
    std::fs::write(&seed_path, &seed).unwrap();
    std::fs::write(dir.join("workloads.yaml"), WORKLOADS).unwrap();
    let server = Running::start(ServerOptions {
        config_paths: vec![dir.join("config")],
        include_defaults: false,
        workloads: Some(dir.join("workloads.yaml")),
        reload_interval: Duration::from_millis(100),
        ..ServerOptions::default()
    })
    .await;
    let client = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();
    report(&client, 5).await;
    wait_for(&server, "meshmeter_config_rejected_objects", 0.0).await;

    // Good objects and a broken one: the good ones count, the broken one is counted.
    std::fs::write(&extra_path, format!("{GOOD}{BROKEN}")).unwrap();
    wait_for(&server, "meshmeter_config_generation", 2.0).await;
    wait_for(&server, "meshmeter_config_rejected_objects", 1.0).await;
    report(&client, 2).await;
    let text = server.scrape().await;
    assert!(
        text.contains("\nmeshmeter_config_rejected_objects 1\n"),
        "{text}"
    );
    assert_eq!(samples(&text, "istio_mongo_sent_bytes")[SEED_SENT], 7.0);
    assert_eq!(
        samples(&text, "istio_mongo_reports")["istio_mongo_reports{event=\"continue\"}"],
        1.0
    );

    // A broken edit of the seed's handler: its previous version keeps counting.
    std::fs::write(&seed_path, seed.replace("kind: COUNTER", "kind: COUNTR")).unwrap();
    wait_for(&server, "meshmeter_config_rejected_objects", 2.0).await;
    report(&client, 3).await;
    let text = server.scrape().await;
    assert_eq!(samples(&text, "istio_mongo_sent_bytes")[SEED_SENT], 10.0);
    assert_eq!(
        samples(&text, "meshmeter_config_generation")["meshmeter_config_generation"],
        2.0
    );

    // Both fixed: nothing rejected, every count went on.
    std::fs::write(&seed_path, &seed).unwrap();
    std::fs::write(&extra_path, GOOD).unwrap();
    wait_for(&server, "meshmeter_config_rejected_objects", 0.0).await;
    wait_for(&server, "meshmeter_config_generation", 3.0).await;
    report(&client, 1).await;
    let text = server.scrape().await;
    assert_eq!(samples(&text, "istio_mongo_sent_bytes")[SEED_SENT], 11.0);
    assert_eq!(
        samples(&text, "istio_mongo_reports")["istio_mongo_reports{event=\"continue\"}"],
        3.0
    );
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_broken_object_at_start_is_rejected_alone_unless_strict() {
    let dir = std::env::temp_dir().join(format!("meshmeter-objects-start-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("config")).unwrap();
    let seed = std::fs::read_to_string(data("tcp-metrics.yaml")).unwrap();
    std::fs::write(dir.join("config/tcp-metrics.yaml"), &seed).unwrap();
    std::fs::write(dir.join("config/extra.yaml"), format!("{GOOD}{BROKEN}")).unwrap();
    std::fs::write(dir.join("workloads.yaml"), WORKLOADS).unwrap();
    let options = || ServerOptions {
        config_paths: vec![dir.join("config")],
        include_defaults: false,
        workloads: Some(dir.join("workloads.yaml")),
        reload_interval: Duration::from_millis(100),
        ..ServerOptions::default()
    };

    // Strict: the broken instance refuses the whole configuration at start.
    let err = meshmeter_server::TelemetryServer::start(ServerOptions {
        strict_config: true,
        ..options()
    })
    .await
    .expect_err("a strict start refuses a broken object");
    assert!(
        err.to_string().contains("connection.sent.byte") || format!("{err:?}").contains("E101"),
        "{err}"
    );

    // By default: the good objects (the seed's and the report counter) count from the start.
    let server = Running::start(options()).await;
    let client = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();
    report(&client, 5).await;
    wait_for(&server, "meshmeter_config_rejected_objects", 1.0).await;
    let text = server.scrape().await;
    assert_eq!(samples(&text, "istio_mongo_sent_bytes")[SEED_SENT], 5.0);
    assert_eq!(
        samples(&text, "istio_mongo_reports")["istio_mongo_reports{event=\"continue\"}"],
        1.0
    );
    assert_eq!(
        samples(&text, "meshmeter_config_generation")["meshmeter_config_generation"],
        1.0
    );

    // The fix applies like any change.
    std::fs::write(dir.join("config/extra.yaml"), GOOD).unwrap();
    wait_for(&server, "meshmeter_config_rejected_objects", 0.0).await;
    server.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
