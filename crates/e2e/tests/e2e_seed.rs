//! The whole seed, in one process with real sockets: the demo's chain (server with the seed's
//! configuration and Istio's defaults, sidecar, MongoDB stand-in, ratings client). Every
//! metric must equal what the client itself counted.

use std::time::Duration;

use meshmeter_demo::{run, DemoOptions};

fn sum(summary: &meshmeter_demo::DemoSummary, name: &str) -> f64 {
    summary
        .samples
        .iter()
        .filter(|(k, _)| k.starts_with(name) && k[name.len()..].starts_with('{'))
        .map(|(_, v)| v)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_metrics_equal_the_bytes_and_connections_moved() {
    let dir = std::env::temp_dir().join(format!("meshmeter-e2e-seed-{}", std::process::id()));
    let mut out = Vec::new();
    let summary = run(
        DemoOptions {
            duration: Some(Duration::from_secs(5)),
            work_dir: Some(dir.clone()),
            refresh: Duration::from_millis(500),
            ..DemoOptions::default()
        },
        &mut out,
        std::future::pending(),
    )
    .await
    .expect("demo runs");
    let text = String::from_utf8(out).unwrap();
    assert!(summary.agree, "{text}");
    assert!(
        summary.client_sent > 0 && summary.connections >= 3,
        "{summary:?}"
    );

    let series = "{destination_version=\"v1\",source_service=\"ratings-v2\",source_version=\"v2\"}";
    assert_eq!(
        summary
            .received_bytes
            .get(&format!("istio_mongo_received_bytes{series}")),
        Some(&(summary.client_sent as f64)),
        "{summary:?}"
    );
    assert_eq!(
        summary
            .sent_bytes
            .get(&format!("istio_mongo_sent_bytes{series}")),
        Some(&(summary.client_received as f64))
    );
    // Istio's default TCP metrics, from the same reports.
    assert_eq!(
        sum(&summary, "istio_tcp_connections_opened_total"),
        summary.connections as f64
    );
    assert_eq!(
        sum(&summary, "istio_tcp_connections_closed_total"),
        summary.connections as f64
    );
    assert_eq!(
        sum(&summary, "istio_tcp_received_bytes_total"),
        summary.client_sent as f64
    );
    assert_eq!(
        sum(&summary, "istio_tcp_sent_bytes_total"),
        summary.client_received as f64
    );
    // Identity comes from the workloads file. (Istio's default config labels the connection
    // metrics' destination_service with the service's short name, the byte metrics with its
    // host.)
    for (metric, service) in [
        ("istio_tcp_connections_opened_total{", "mongodb"),
        (
            "istio_tcp_sent_bytes_total{",
            "mongodb.default.svc.cluster.local",
        ),
    ] {
        let series = summary
            .samples
            .keys()
            .find(|k| k.starts_with(metric))
            .unwrap();
        for label in [
            "destination_workload=\"mongodb-v1\"".to_owned(),
            "destination_version=\"v1\"".to_owned(),
            "source_workload=\"ratings-v2\"".to_owned(),
            "source_version=\"v2\"".to_owned(),
            format!("destination_service=\"{service}\""),
            "reporter=\"destination\"".to_owned(),
        ] {
            assert!(series.contains(&label), "{label} missing in {series}");
        }
    }
    // The access log has one line per report: an open and a close per connection at least.
    let log = std::fs::read_to_string(dir.join("access.log")).unwrap();
    let events = |e: &str| {
        log.lines()
            .filter(|l| l.contains(&format!("\"connectionEvent\":\"{e}\"")))
            .count() as u64
    };
    assert_eq!(events("open"), summary.connections);
    assert_eq!(events("close"), summary.connections);
    let _ = std::fs::remove_dir_all(&dir);
}
