//! Report requests recorded from Istio 1.1.7's own clients, replayed byte for byte: the
//! metrics must equal, sample for sample, what Istio's Mixer served for the same requests.

mod common;

use common::{data, samples, Running};
use meshmeter_server::ServerOptions;
use meshmeter_wire::MixerClient;

async fn replay(scenario: &str, requests: &[&str]) {
    let server = Running::start(ServerOptions {
        config_paths: vec![data("tcp-metrics-crd.yaml")],
        include_defaults: false,
        ..ServerOptions::default()
    })
    .await;
    assert_eq!(
        server
            .scrape()
            .await
            .lines()
            .filter(|l| l.starts_with("istio_"))
            .count(),
        0
    );
    let client = MixerClient::connect(&server.grpc.to_string())
        .await
        .unwrap();
    for r in requests {
        let bytes = std::fs::read(data(&format!("{scenario}/{r}"))).unwrap();
        client
            .report(bytes::Bytes::from(bytes), None)
            .await
            .unwrap_or_else(|s| panic!("{scenario}/{r}: {s}"));
    }
    let ours = server.scrape().await;
    let expected =
        std::fs::read_to_string(data(&format!("{scenario}/expected-metrics.txt"))).unwrap();
    assert_eq!(
        samples(&ours, "istio_"),
        samples(&expected, "istio_"),
        "ours:\n{ours}"
    );
    // The metadata lines too: the same HELP and TYPE for every metric.
    let meta = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("# HELP istio_") || l.starts_with("# TYPE istio_"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(meta(&ours), meta(&expected));
    server.stop().await;
}

#[tokio::test]
async fn mixc_single_bag() {
    replay("seed-single", &["0001.pb"]).await;
}

#[tokio::test]
async fn delta_encoded_batches_without_global_dictionary() {
    replay("seed-batch-nodict", &["0001.pb", "0002.pb", "0003.pb"]).await;
}
