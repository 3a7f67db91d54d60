//! The server over real sockets: identity from a workloads file, duplicate reports, bad input,
//! health endpoints, hot reload of the configuration, and connections spread over runtimes.

mod common;

use std::time::Duration;

use common::{data, eventually, http_get, samples, Running};
use meshmeter_attributes::{json::bag_from_json, Bag, Manifest};
use meshmeter_server::ServerOptions;
use meshmeter_wire::{Encoding, MixerClient, ReportEncoder, ReportId};
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

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("meshmeter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn proxy_bag(sent: i64, received: i64) -> Bag<'static> {
    bag_from_json(
        &Manifest::istio(),
        &json!({
            "context.protocol": "tcp",
            "context.reporter.kind": "inbound",
            "connection.event": "continue",
            "connection.sent.bytes": sent,
            "connection.received.bytes": received,
            "source.ip": "127.0.0.2",
            "destination.ip": "127.0.0.3",
            "destination.uid": "kubernetes://mongodb-v1.default",
        }),
    )
    .unwrap()
}

fn encode(bags: &[Bag<'_>]) -> bytes::Bytes {
    bytes::Bytes::from(ReportEncoder::new(&Manifest::istio(), Encoding::Delta).encode_to_vec(bags))
}

const SEED_SERIES: &str =
    "{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"}";

#[tokio::test]
async fn identity_dedup_and_bad_input() {
    let dir = Dir::new("ingest");
    std::fs::write(dir.0.join("workloads.yaml"), WORKLOADS).unwrap();
    let server = Running::start(ServerOptions {
        config_paths: vec![data("tcp-metrics.yaml")],
        include_defaults: true,
        workloads: Some(dir.0.join("workloads.yaml")),
        log_output: Some(meshmeter_stdio::Output::File(dir.0.join("access.log"))),
        max_message_bytes: 64 * 1024,
        ..ServerOptions::default()
    })
    .await;
    assert_eq!(http_get(server.metrics, "/healthz").await.0, 200);
    assert_eq!(http_get(server.metrics, "/ready").await.0, 200);

    let client = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();
    let batch = [proxy_bag(100, 250), proxy_bag(10, 20)];
    let id = client.next_report_id();
    client.report(encode(&batch), Some(&id)).await.unwrap();
    // The same request retried (e.g. after a timeout whose answer was lost) counts once.
    client.report(encode(&batch), Some(&id)).await.unwrap();
    // A different client's request with the same sequence number is its own report.
    let other = ReportId {
        client: "other-client".into(),
        seq: id.seq,
    };
    client
        .report(encode(&[proxy_bag(1, 1)]), Some(&other))
        .await
        .unwrap();

    // Malformed protobuf, an undefined word, a wrong type and an oversized message are each
    // refused with a status that says what is wrong; nothing of them is counted.
    let status = client
        .report(bytes::Bytes::from_static(&[0x0a, 0xff]), None)
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("malformed protobuf"),
        "{}",
        status.message()
    );
    let big = bytes::Bytes::from(vec![0u8; 100 * 1024]);
    let status = client.report(big, None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("65536"), "{}", status.message());

    let text = server.scrape().await;
    let ours = samples(&text, "istio_mongo_");
    assert_eq!(
        ours[&format!("istio_mongo_sent_bytes{SEED_SERIES}")],
        111.0,
        "{text}"
    );
    assert_eq!(
        ours[&format!("istio_mongo_received_bytes{SEED_SERIES}")],
        271.0,
        "{text}"
    );
    let tcp = samples(&text, "istio_tcp_sent_bytes_total");
    assert_eq!(tcp.values().sum::<f64>(), 111.0, "{text}");
    let series = tcp.keys().next().unwrap();
    for label in [
        "destination_workload=\"mongodb-v1\"",
        "source_workload=\"ratings-v2\"",
        "destination_service=\"mongodb.default.svc.cluster.local\"",
        "reporter=\"destination\"",
    ] {
        assert!(series.contains(label), "{label} missing in {series}");
    }
    let own = samples(&text, "meshmeter_");
    assert_eq!(own["meshmeter_reports_received_total"], 2.0, "{text}");
    assert_eq!(own["meshmeter_bags_received_total"], 3.0, "{text}");
    assert_eq!(
        own["meshmeter_decode_errors_total{reason=\"malformed\"}"], 1.0,
        "{text}"
    );
    server.stop().await;
    // The access log holds one line per bag counted (the TCP access log of the defaults).
    let log = std::fs::read_to_string(dir.0.join("access.log")).unwrap();
    assert_eq!(log.lines().count(), 3, "{log}");
}

#[tokio::test]
async fn configuration_changes_apply_without_losing_counts() {
    let dir = Dir::new("reload");
    let identity = Dir::new("reload-workloads");
    let seed = std::fs::read_to_string(data("tcp-metrics.yaml")).unwrap();
    std::fs::write(dir.0.join("tcp-metrics.yaml"), &seed).unwrap();
    std::fs::write(identity.0.join("workloads.yaml"), WORKLOADS).unwrap();
    let server = Running::start(ServerOptions {
        config_paths: vec![dir.0.clone()],
        include_defaults: false,
        workloads: Some(identity.0.join("workloads.yaml")),
        reload_interval: Duration::from_millis(100),
        ..ServerOptions::default()
    })
    .await;
    let client = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();
    client
        .report(encode(&[proxy_bag(5, 7)]), None)
        .await
        .unwrap();

    // An invalid edit is rejected: the old configuration stays in force.
    std::fs::write(
        dir.0.join("tcp-metrics.yaml"),
        seed.replace("kind: COUNTER", "kind: COUNTR"),
    )
    .unwrap();
    eventually(Duration::from_secs(10), || async {
        let text = server.scrape().await;
        (samples(&text, "meshmeter_config_errors_total")
            .values()
            .sum::<f64>()
            >= 1.0)
            .then_some(())
    })
    .await;
    client
        .report(encode(&[proxy_bag(5, 7)]), None)
        .await
        .unwrap();
    let text = server.scrape().await;
    assert_eq!(
        samples(&text, "istio_mongo_sent_bytes")[&format!("istio_mongo_sent_bytes{SEED_SERIES}")],
        10.0
    );

    // A valid edit adds a metric; the seed's counters keep their values.
    let extra = "---
apiVersion: config.istio.io/v1alpha2
kind: instance
metadata:
  name: mongoconnections
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
      instance_name: mongoconnections.instance.default
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
    instances: [mongoconnections]
";
    std::fs::write(dir.0.join("tcp-metrics.yaml"), format!("{seed}{extra}")).unwrap();
    eventually(Duration::from_secs(10), || async {
        let text = server.scrape().await;
        (samples(&text, "meshmeter_config_generation")
            .values()
            .next()
            == Some(&2.0))
        .then_some(())
    })
    .await;
    client
        .report(encode(&[proxy_bag(1, 1)]), None)
        .await
        .unwrap();
    let text = server.scrape().await;
    assert_eq!(
        samples(&text, "istio_mongo_sent_bytes")[&format!("istio_mongo_sent_bytes{SEED_SERIES}")],
        11.0,
        "{text}"
    );
    assert_eq!(
        samples(&text, "istio_mongo_reports")["istio_mongo_reports{event=\"continue\"}"],
        1.0,
        "{text}"
    );
    server.stop().await;
}

#[tokio::test]
async fn connections_spread_over_several_runtimes_are_all_counted() {
    let server = Running::start(ServerOptions {
        config_paths: vec![data("tcp-metrics.yaml")],
        include_defaults: false,
        ingest_threads: 3,
        ..ServerOptions::default()
    })
    .await;
    // Seven connections (more than the runtimes, so some runtimes serve several), each with
    // twenty requests of five bags, all in flight together.
    let batch: Vec<_> = (1..=5).map(|i| proxy_bag(i, 10 * i)).collect();
    let body = encode(&batch);
    let mut senders = Vec::new();
    for _ in 0..7 {
        let client = MixerClient::connect(&server.grpc.to_string())
            .await
            .unwrap();
        let body = body.clone();
        senders.push(tokio::spawn(async move {
            for _ in 0..20 {
                client.report(body.clone(), None).await.unwrap();
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let text = server.scrape().await;
    assert_eq!(
        samples(&text, "meshmeter_reports_received_total"),
        [("meshmeter_reports_received_total".to_owned(), 140.0)].into()
    );
    assert_eq!(
        samples(&text, "meshmeter_bags_received_total"),
        [("meshmeter_bags_received_total".to_owned(), 700.0)].into()
    );
    server.stop().await;
}
