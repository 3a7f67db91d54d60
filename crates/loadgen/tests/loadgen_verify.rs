//! The load generator against meshmeter's own server: everything it sends is counted exactly.

use std::time::Duration;

use meshmeter_loadgen::{run, BagShape, LoadOptions};
use meshmeter_server::{ServerOptions, TelemetryServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_what_it_sends_and_verifies_it() {
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/tcp-metrics.yaml"
    );
    let server = TelemetryServer::start(ServerOptions {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        config_paths: vec![config.into()],
        include_defaults: false,
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let (grpc, metrics) = (server.grpc_addr(), server.metrics_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    // One connection per sender, and three senders multiplexed on one connection.
    // The last pass sends a deduplication key per request: none may be taken for a retry.
    for (shape, connections, report_id) in [
        (BagShape::Small, None, false),
        (BagShape::Full, None, false),
        (BagShape::Small, Some(1), false),
        (BagShape::Small, None, true),
    ] {
        let summary = run(LoadOptions {
            target: grpc.to_string(),
            metrics: Some(format!("http://{metrics}/metrics")),
            batch: 10,
            concurrency: 3,
            duration: Some(Duration::from_secs(30)),
            requests: Some(200),
            shape,
            connections,
            report_id,
            ..LoadOptions::default()
        })
        .await
        .unwrap();
        assert_eq!(summary.requests, 200, "{summary:?}");
        assert_eq!(summary.bags, 2000);
        assert_eq!(summary.errors, 0, "{summary:?}");
        assert!(summary.verified, "{summary:?}");
        assert_eq!(summary.observed, Some(summary.expected as f64));
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
