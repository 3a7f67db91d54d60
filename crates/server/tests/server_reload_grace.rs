//! Hot reloads that remove a metric or catch a file mid-rewrite, over real sockets: counters
//! continue when the metric comes back within --removed-metric-grace, restart after it, and a
//! truncate-then-rewrite of the configuration loses no count.

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

const SERIES: &str =
    "{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"}";

/// The received-bytes metric's entry in the seed's handler, and its instance in the rule.
const RECEIVED_METRIC: &str = "    - name: mongo_received_bytes # Prometheus metric name
      instance_name: mongoreceivedbytes.instance.default # Mixer instance name (fully-qualified)
      kind: COUNTER
      label_names:
      - source_service
      - source_version
      - destination_version
";

struct Setup {
    dir: std::path::PathBuf,
    seed: String,
    server: Running,
    client: MixerClient,
}

impl Setup {
    async fn start(name: &str, grace: Duration) -> Setup {
        let dir = std::env::temp_dir().join(format!("meshmeter-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("config")).unwrap();
        let seed = std::fs::read_to_string(data("tcp-metrics.yaml")).unwrap();
        assert!(seed.contains(RECEIVED_METRIC));
        std::fs::write(dir.join("config/tcp-metrics.yaml"), &seed).unwrap();
        std::fs::write(dir.join("workloads.yaml"), WORKLOADS).unwrap();
        let server = Running::start(ServerOptions {
            config_paths: vec![dir.join("config")],
            include_defaults: false,
            workloads: Some(dir.join("workloads.yaml")),
            reload_interval: Duration::from_millis(100),
            removed_metric_grace: grace,
            ..ServerOptions::default()
        })
        .await;
        let client = MixerClient::connect(&server.grpc.to_string())
            .await
            .unwrap();
        Setup {
            dir,
            seed,
            server,
            client,
        }
    }

    fn write_config(&self, text: &str) {
        std::fs::write(self.dir.join("config/tcp-metrics.yaml"), text).unwrap();
    }

    /// The seed without the received-bytes metric (and its instance in the rule).
    fn without_received(&self) -> String {
        self.seed
            .replace(RECEIVED_METRIC, "")
            .replace("    - mongoreceivedbytes\n", "")
    }

    async fn report(&self, sent: i64, received: i64) {
        let bag = bag_from_json(
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
        .unwrap();
        let bags: [Bag<'_>; 1] = [bag];
        let body = ReportEncoder::new(&Manifest::istio(), Encoding::Delta).encode_to_vec(&bags);
        self.client
            .report(bytes::Bytes::from(body), None)
            .await
            .unwrap();
    }

    async fn wait_generation(&self, generation: f64) {
        eventually(Duration::from_secs(10), || async {
            let text = self.server.scrape().await;
            (samples(&text, "meshmeter_config_generation")
                .values()
                .next()
                == Some(&generation))
            .then_some(())
        })
        .await;
    }

    /// (sent, received) of the seed series; `None` for a metric not exposed.
    async fn counts(&self) -> (Option<f64>, Option<f64>) {
        let text = self.server.scrape().await;
        let get = |name: &str| {
            samples(&text, name)
                .get(&format!("{name}{SERIES}"))
                .copied()
        };
        (
            get("istio_mongo_sent_bytes"),
            get("istio_mongo_received_bytes"),
        )
    }

    async fn stop(self) {
        self.server.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn a_metric_restored_within_the_grace_continues_its_counter() {
    let s = Setup::start("grace-restore", Duration::from_secs(60)).await;
    s.report(5, 7).await;
    assert_eq!(s.counts().await, (Some(5.0), Some(7.0)));

    s.write_config(&s.without_received());
    s.wait_generation(2.0).await;
    s.report(1, 1).await;
    assert_eq!(s.counts().await, (Some(6.0), None), "removed: not exposed");

    s.write_config(&s.seed);
    s.wait_generation(3.0).await;
    s.report(1, 1).await;
    assert_eq!(s.counts().await, (Some(7.0), Some(8.0)), "7 + 1: continued");
    s.stop().await;
}

#[tokio::test]
async fn a_metric_restored_after_the_grace_starts_again() {
    let s = Setup::start("grace-expired", Duration::from_millis(200)).await;
    s.report(5, 7).await;
    assert_eq!(s.counts().await, (Some(5.0), Some(7.0)));

    s.write_config(&s.without_received());
    s.wait_generation(2.0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    s.write_config(&s.seed);
    s.wait_generation(3.0).await;
    s.report(1, 1).await;
    assert_eq!(
        s.counts().await,
        (Some(6.0), Some(1.0)),
        "dropped after the grace"
    );
    s.stop().await;
}

#[tokio::test]
async fn truncating_then_rewriting_the_configuration_loses_nothing() {
    let s = Setup::start("grace-truncate", Duration::from_secs(60)).await;
    s.report(5, 7).await;

    // Truncated and left empty for many polls: refused, the counts go on in the meantime.
    s.write_config("");
    eventually(Duration::from_secs(10), || async {
        let text = s.server.scrape().await;
        (samples(&text, "meshmeter_config_errors_total")
            .values()
            .sum::<f64>()
            == 1.0)
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    s.report(1, 1).await;
    assert_eq!(s.counts().await, (Some(6.0), Some(8.0)));

    // Half written (the instances, not yet the handler and rule) long enough to be loaded:
    // the metrics are held, not dropped.
    let half = &s.seed[..s
        .seed
        .find("apiVersion: config.istio.io/v1alpha2\nkind: handler")
        .unwrap()];
    s.write_config(half);
    s.wait_generation(2.0).await;
    assert_eq!(s.counts().await, (None, None));

    // The rewrite completes: every count is still there and goes on.
    s.write_config(&s.seed);
    s.wait_generation(3.0).await;
    assert_eq!(s.counts().await, (Some(6.0), Some(8.0)));
    s.report(1, 1).await;
    assert_eq!(s.counts().await, (Some(7.0), Some(9.0)));
    s.stop().await;
}
