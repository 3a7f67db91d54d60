//! A real Prometheus scrapes meshmeter, and promtool checks what it serves. Needs Debian's
//! `prometheus` package (prometheus and promtool); `scripts/test.sh` installs it.

use std::time::Duration;

use meshmeter_attributes::{json::bag_from_json, Manifest};
use meshmeter_demo::{run, DemoOptions};
use meshmeter_e2e::{http_get, require};
use meshmeter_server::{ServerOptions, TelemetryServer};
use meshmeter_wire::{Encoding, MixerClient, ReportEncoder};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs prometheus; run by scripts/test.sh"]
async fn prometheus_sees_the_seed_series_with_the_bytes_sent() {
    let binary = require("prometheus");
    let dir = std::env::temp_dir().join(format!("meshmeter-e2e-prom-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = Vec::new();
    let summary = run(
        DemoOptions {
            duration: Some(Duration::from_secs(6)),
            prometheus: Some(binary),
            work_dir: Some(dir.clone()),
            ..DemoOptions::default()
        },
        &mut out,
        std::future::pending(),
    )
    .await
    .expect("demo with prometheus runs");
    let display = String::from_utf8(out).unwrap();
    assert!(summary.agree, "{display}");
    let answer: serde_json::Value = serde_json::from_str(
        summary
            .prometheus_result
            .as_deref()
            .expect("prometheus answered"),
    )
    .unwrap();
    assert_eq!(answer["status"], "success", "{answer}");
    let results = answer["data"]["result"].as_array().unwrap();
    assert_eq!(results.len(), 1, "one series expected: {answer}");
    let metric = &results[0]["metric"];
    assert_eq!(metric["__name__"], "istio_mongo_received_bytes");
    assert_eq!(metric["destination_version"], "v1");
    assert_eq!(metric["source_service"], "ratings-v2");
    assert_eq!(metric["source_version"], "v2");
    assert_eq!(metric["job"], "istio-mesh");
    let instance = summary
        .metrics_url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics");
    assert_eq!(metric["instance"], instance);
    let value: f64 = results[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert_eq!(value, summary.client_sent as f64, "{display}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs promtool; run by scripts/test.sh"]
async fn promtool_accepts_what_the_server_serves() {
    let promtool = require("promtool");
    let server = TelemetryServer::start(ServerOptions {
        grpc_addr: "127.0.0.1:0".parse().unwrap(),
        metrics_addr: "127.0.0.1:0".parse().unwrap(),
        config_paths: vec![concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/tcp-metrics.yaml"
        )
        .into()],
        log_output: Some(meshmeter_stdio::Output::File(
            std::env::temp_dir().join(format!("meshmeter-e2e-promtool-{}.log", std::process::id())),
        )),
        ..ServerOptions::default()
    })
    .await
    .unwrap();
    let (grpc, metrics) = (server.grpc_addr(), server.metrics_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.run_until(async {
        let _ = stopped.await;
    }));
    // TCP bags for the counters and an HTTP bag for Istio's default histograms, with label
    // values that need escaping.
    let manifest = Manifest::istio();
    let bags = [
        json!({"context.protocol": "tcp", "connection.sent.bytes": 10, "connection.received.bytes": 20,
               "destination.service.host": "mongodb.default.svc.cluster.local", "destination.namespace": "default",
               "source.workload.name": "ratings \"v2\"\\n", "source.labels": {"version": "v2"}}),
        json!({"context.protocol": "http", "request.size": 512, "response.size": 2048, "response.code": 200,
               "response.duration": "12ms", "destination.service.host": "reviews.default.svc.cluster.local",
               "request.time": "2019-05-29T08:26:28Z", "response.time": "2019-05-29T08:26:28.012Z"}),
    ]
    .iter()
    .map(|j| bag_from_json(&manifest, j).unwrap())
    .collect::<Vec<_>>();
    let client = MixerClient::connect(&grpc.to_string()).await.unwrap();
    let request = ReportEncoder::new(&manifest, Encoding::Independent).encode_to_vec(&bags);
    client
        .report(bytes::Bytes::from(request), None)
        .await
        .unwrap();
    let (_, text) = http_get(metrics, "/metrics").await.unwrap();
    assert!(
        text.contains("istio_request_duration_seconds_bucket{"),
        "{text}"
    );
    assert!(text.contains("istio_mongo_sent_bytes{"), "{text}");

    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    // promtool's only complaints may be its naming lint about the seed's own counter names
    // (Istio's sample calls them mongo_sent_bytes, without `_total`); a format error fails.
    let complaints: Vec<&str> = report.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        complaints,
        [
            "istio_mongo_received_bytes counter metrics should have \"_total\" suffix",
            "istio_mongo_sent_bytes counter metrics should have \"_total\" suffix",
        ],
        "promtool said:\n{report}\nfor:\n{text}"
    );
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
